package httpapi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pic-cell/cell/storage"
)

// peerPassword is the password firstLogin chooses in place of a one-time one.
const peerPassword = "canary-peer-own-pass-9d2f"

// firstLogin logs a peer in with its one-time password and chooses its own
// (peerPassword), as the portal makes a person do before anything else; the
// client keeps its session, now free of the gate.
func (e *env) firstLogin(name, oneTime string) *client {
	e.t.Helper()
	c := e.login(name, oneTime)
	var me userResponse
	c.must(200, "GET", "/api/auth/me", nil).json(e.t, &me)
	if !me.MustChangePassword {
		e.t.Fatalf("login with a one-time password: me = %+v, want must_change_password", me)
	}
	c.must(200, "POST", "/api/auth/change-password", map[string]string{"current_password": oneTime, "new_password": peerPassword})
	return c
}

func TestOneTimePassword(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	var cp struct {
		Username        string `json:"username"`
		OneTimePassword string `json:"one_time_password"`
	}
	a.must(201, "POST", "/api/peers", map[string]any{"name": "bob"}).json(t, &cp)
	otp := cp.OneTimePassword
	if len(otp) != 26 || strings.ToLower(otp) != otp {
		t.Fatalf("one-time password %q: want 26 lowercase base32 characters (128 bits)", otp)
	}

	// The first login works and says the password must change.
	p := e.client()
	var login userResponse
	p.must(200, "POST", "/api/auth/login", map[string]string{"username": "bob", "password": otp}).json(t, &login)
	if want := (userResponse{"bob", "peer", true}); login != want {
		t.Errorf("login = %+v, want %+v", login, want)
	}
	// A second login with it is refused: it was used up.
	if r := e.client().do("POST", "/api/auth/login", map[string]string{"username": "bob", "password": otp}); r.status != 401 || r.code() != "bad_credentials" {
		t.Errorf("second login with the one-time password: %d %s, want 401 bad_credentials", r.status, r.body)
	}

	// Until the password is changed, only the gate's routes answer.
	var tok struct{ Token string }
	p.must(200, "GET", "/api/auth/csrf-token", nil).json(t, &tok)
	p.csrf = tok.Token
	var me userResponse
	p.must(200, "GET", "/api/auth/me", nil).json(t, &me)
	if !me.MustChangePassword {
		t.Errorf("me = %+v, want must_change_password", me)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/api/peer/me"}, {"GET", "/api/peer/config"}, {"GET", "/api/peer/qr"},
		{"GET", "/api/peer/service-credentials"},
	} {
		r := p.do(tc.method, tc.path, nil)
		if r.status != 403 || r.code() != "password_change_required" || !strings.Contains(string(r.body), "choose your own password") {
			t.Errorf("%s %s before the change: %d %s, want 403 password_change_required", tc.method, tc.path, r.status, r.body)
		}
	}
	// Admin routes still say wrong_role first: the gate opens nothing.
	if r := p.do("GET", "/api/peers", nil); r.status != 403 {
		t.Errorf("GET /api/peers as a gated peer: %d", r.status)
	}
	// A wrong current password does not pass; the one-time one does.
	if r := p.do("POST", "/api/auth/change-password", map[string]string{"current_password": "not-it-at-all", "new_password": peerPassword}); r.status != 403 || r.code() != "bad_credentials" {
		t.Errorf("change with a wrong current password: %d %s", r.status, r.body)
	}
	p.must(200, "POST", "/api/auth/change-password", map[string]string{"current_password": otp, "new_password": peerPassword})
	p.must(200, "GET", "/api/auth/me", nil).json(t, &me)
	if me.MustChangePassword {
		t.Errorf("me after the change = %+v", me)
	}
	p.must(200, "GET", "/api/peer/me", nil) // the same session, now open
	p.must(200, "GET", "/api/peer/config", nil)
	// The one-time password is gone for good; the new one logs in, ungated.
	if r := e.client().do("POST", "/api/auth/login", map[string]string{"username": "bob", "password": otp}); r.status != 401 {
		t.Errorf("login with the one-time password after the change: %d", r.status)
	}
	q := e.client()
	q.must(200, "POST", "/api/auth/login", map[string]string{"username": "bob", "password": peerPassword}).json(t, &login)
	if login.MustChangePassword {
		t.Errorf("login with the own password = %+v", login)
	}
	if r := p.do("POST", "/api/auth/change-password", map[string]string{"current_password": otp, "new_password": "yet-another-pass-77"}); r.status != 403 {
		t.Errorf("change-password with the spent one-time password: %d", r.status)
	}

	// The admin's reset can issue a new one-time password: the old password
	// and sessions end, and the new one works once, gated the same way.
	var rs struct {
		OK              bool   `json:"ok"`
		Username        string `json:"username"`
		OneTimePassword string `json:"one_time_password"`
	}
	if r := a.do("POST", "/api/auth/admin/reset-password", map[string]any{"username": "bob", "one_time": true, "new_password": "both-at-once-1234"}); r.status != 400 {
		t.Errorf("reset with both: %d %s", r.status, r.body)
	}
	a.must(200, "POST", "/api/auth/admin/reset-password", map[string]any{"username": "bob", "one_time": true}).json(t, &rs)
	if !rs.OK || rs.Username != "bob" || len(rs.OneTimePassword) != 26 || rs.OneTimePassword == otp {
		t.Fatalf("one-time reset = %+v", rs)
	}
	if r := q.do("GET", "/api/peer/me", nil); r.status != 401 {
		t.Errorf("session after the reset: %d, want 401", r.status)
	}
	if r := e.client().do("POST", "/api/auth/login", map[string]string{"username": "bob", "password": peerPassword}); r.status != 401 {
		t.Errorf("old password after the reset: %d, want 401", r.status)
	}
	var users struct {
		Users []struct {
			Username string
			State    string `json:"one_time_password_state"`
		}
	}
	a.must(200, "GET", "/api/auth/users", nil).json(t, &users)
	if got := statesOf(users.Users); got != "admin: bob:unused" {
		t.Errorf("users after the reset: %s", got)
	}
	r := e.firstLogin("bob", rs.OneTimePassword)
	r.must(200, "GET", "/api/peer/me", nil)
	users.Users = nil
	a.must(200, "GET", "/api/auth/users", nil).json(t, &users)
	if got := statesOf(users.Users); got != "admin: bob:" {
		t.Errorf("users after the change: %s", got)
	}
	if r := a.do("POST", "/api/auth/admin/reset-password", map[string]any{"username": "nobody", "one_time": true}); r.status != 404 {
		t.Errorf("one-time reset of nobody: %d", r.status)
	}
	if r := a.do("POST", "/api/auth/admin/reset-password", map[string]any{"username": "admin", "one_time": true}); r.status != 403 {
		t.Errorf("one-time reset of oneself: %d", r.status)
	}

	// The audit log tells what happened, without either secret.
	var aud struct {
		Entries []struct {
			Action, Actor, Result string
			Details               map[string]string
		}
	}
	a.must(200, "GET", "/api/audit?target_id=bob&limit=100", nil).json(t, &aud)
	// Refused logins carry no session and are counted per source and minute
	// (recordRefusal): checked apart, as present.
	var got []string
	refusedLogins := 0
	for i := len(aud.Entries) - 1; i >= 0; i-- {
		en := aud.Entries[i]
		if en.Action == "auth.login" && en.Result != "ok" {
			refusedLogins++
			continue
		}
		got = append(got, en.Action+" "+en.Actor+" "+en.Result+" "+en.Details["password"]+en.Details["replaced"]+en.Details["issued"])
	}
	if refusedLogins == 0 {
		t.Error("no refused login of bob in the audit log")
	}
	want := []string{
		"peer.create admin ok ",
		"auth.login bob ok one_time",
		"auth.change_password bob bad_credentials ",
		"auth.change_password bob ok one_time_password",
		"auth.login bob ok ",
		"auth.change_password bob bad_credentials ",
		"auth.reset_password admin invalid_reset ",
		"auth.reset_password admin ok one_time_password",
		"auth.login bob ok one_time",
		"auth.change_password bob ok one_time_password",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit of bob:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Neither one-time password appears anywhere but in the answer that
	// created it: not in another response, the audit log or the logs.
	var auditText strings.Builder
	e.db.Audit().Each(func(en storage.Entry) error { fmt.Fprintf(&auditText, "%+v\n", en); return nil })
	logged := e.logText()
	if !strings.Contains(logged, "/api/auth/change-password") || !strings.Contains(auditText.String(), "one_time_password") {
		t.Fatal("the logs or the audit log scanned hold nothing of this run")
	}
	for _, secret := range []string{otp, rs.OneTimePassword, peerPassword} {
		seen := 0
		for _, b := range e.bodies {
			if strings.Contains(b, secret) {
				seen++
			}
		}
		if want := map[bool]int{true: 0, false: 1}[secret == peerPassword]; seen != want {
			t.Errorf("a password is in %d responses, want %d (its creation)", seen, want)
		}
		if strings.Contains(logged, secret) || strings.Contains(auditText.String(), secret) {
			t.Errorf("a password is in the logs or the audit log")
		}
		// Neither is stored as it is: only its SHA-256, and only until used up.
		if u, _ := e.db.Users().Get("bob"); strings.Contains(fmt.Sprintf("%+v", u), secret) || u.OneTimeHash != "" {
			t.Errorf("bob's stored account holds a password or a one-time hash after the change: %+v", u.OneTimeHash)
		}
	}
}

func statesOf(us []struct {
	Username string
	State    string `json:"one_time_password_state"`
}) string {
	var out []string
	for _, u := range us {
		out = append(out, u.Username+":"+u.State)
	}
	return strings.Join(out, " ")
}
