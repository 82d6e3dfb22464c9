package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pic-cell/cell/storage"
)

func TestLoginSessionsAndPasswords(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.client()
	r := a.must(200, "POST", "/api/auth/login", map[string]string{"username": "admin", "password": adminPassword})
	cookie := r.header.Get("Set-Cookie")
	for _, want := range []string{SessionCookie + "=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Fatalf("cookie %q lacks %q", cookie, want)
		}
	}
	first := a.http.Jar.Cookies(mustURL(e.srv.URL))[0].Value
	var me userResponse
	a.must(200, "GET", "/api/auth/me", nil).json(t, &me)
	if me.Username != "admin" || me.Role != "admin" {
		t.Fatalf("me = %+v", me)
	}
	// Logging in again rotates the id and ends the old one.
	a.must(200, "POST", "/api/auth/login", map[string]string{"username": "admin", "password": adminPassword})
	second := a.http.Jar.Cookies(mustURL(e.srv.URL))[0].Value
	if second == first {
		t.Fatal("the session id did not change at login")
	}
	if _, err := e.cell.Accounts.Session(first); err == nil {
		t.Fatal("the old session still works after login")
	}
	// Other browsers; change-password ends them but not the caller's.
	b := e.login("admin", adminPassword)
	c := e.login("admin", adminPassword)
	var tok struct{ Token string }
	c.must(200, "GET", "/api/auth/csrf-token", nil).json(t, &tok)
	if r := c.do("POST", "/api/auth/change-password", map[string]string{"current_password": "wrong password!!", "new_password": "a brand new password"}); r.status != 403 {
		t.Fatalf("wrong current password: %d", r.status)
	}
	if r := c.do("POST", "/api/auth/change-password", map[string]string{"current_password": adminPassword, "new_password": "short"}); r.status != 400 {
		t.Fatalf("short new password: %d", r.status)
	}
	c.must(200, "POST", "/api/auth/change-password", map[string]string{"current_password": adminPassword, "new_password": "a brand new password"})
	c.must(200, "GET", "/api/auth/me", nil)
	for _, other := range []*client{a, b} {
		if r := other.do("GET", "/api/auth/me", nil); r.status != 401 {
			t.Fatalf("another session survived the password change: %d", r.status)
		}
	}
	if r := e.client().do("POST", "/api/auth/login", map[string]string{"username": "admin", "password": adminPassword}); r.status != 401 {
		t.Fatalf("old password still logs in: %d", r.status)
	}
	// Admin resets a peer's password: the peer's sessions end.
	e.addPeerUser("pat", "peer password 123")
	p := e.login("pat", "peer password 123")
	c.must(200, "POST", "/api/auth/admin/reset-password", map[string]string{"username": "pat", "new_password": "reset password 456"})
	if r := p.do("GET", "/api/auth/me", nil); r.status != 401 {
		t.Fatalf("peer session survived a reset: %d", r.status)
	}
	e.login("pat", "reset password 456")
	if r := c.do("POST", "/api/auth/admin/reset-password", map[string]string{"username": "ghost", "new_password": "reset password 456"}); r.status != 404 {
		t.Fatalf("reset of a missing user: %d", r.status)
	}
	// Users lists without secrets; logout ends the session.
	r = c.must(200, "GET", "/api/auth/users", nil)
	if strings.Contains(string(r.body), "argon2") || !strings.Contains(string(r.body), `"pat"`) {
		t.Fatalf("users = %s", r.body)
	}
	c.must(200, "POST", "/api/auth/logout", nil)
	if r := c.do("GET", "/api/auth/me", nil); r.status != 401 {
		t.Fatalf("after logout: %d", r.status)
	}
}

func TestLoginThrottle(t *testing.T) {
	e := newEnv(t)
	e.setup()
	c := e.client()
	bad := map[string]string{"username": "admin", "password": "wrong password!"}
	for i := 1; i <= 10; i++ {
		if r := c.do("POST", "/api/auth/login", bad); r.status != 401 {
			t.Fatalf("failure %d: %d", i, r.status)
		}
	}
	r := c.do("POST", "/api/auth/login", bad)
	if r.status != 429 {
		t.Fatalf("11th failure: %d, want 429", r.status)
	}
	// The right password is refused too while throttled: the limit is per address
	// (login_abuse_test.go: failures elsewhere never refuse another address).
	if r := c.do("POST", "/api/auth/login", map[string]string{"username": "admin", "password": adminPassword}); r.status != 429 {
		t.Fatalf("right password while throttled: %d", r.status)
	}
	// Per source address: spraying other names hits the same wall.
	e2 := newEnv(t)
	e2.setup()
	c2 := e2.client()
	for i := 1; i <= 10; i++ {
		c2.do("POST", "/api/auth/login", map[string]string{"username": fmt.Sprintf("user%d", i), "password": "wrong password!"})
	}
	if r := c2.do("POST", "/api/auth/login", map[string]string{"username": "someone", "password": "wrong password!"}); r.status != 429 {
		t.Fatalf("11th failure from one address: %d", r.status)
	}
	// Refusals are audited.
	entries, _, _ := e.cell.Audit.Query(storage.Filter{Action: "auth.login", Result: "too_many_attempts"})
	if total := counted(entries); total < 2 || entries[0].TargetID != "admin" {
		t.Fatalf("throttled logins audited: %d %+v", total, entries)
	}
}

func TestConfigMergePatch(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	var cfg struct {
		Cell    struct{ Name, Domain string }
		Network struct {
			WGPort   int    `json:"wg_port"`
			SubnetV6 string `json:"subnet_v6"`
		}
	}
	a.must(200, "PUT", "/api/config", map[string]any{"cell": map[string]any{"name": "attic"}, "network": map[string]any{"wg_port": 51999}}).json(t, &cfg)
	if cfg.Cell.Name != "attic" || cfg.Cell.Domain != "home.example.org" || cfg.Network.WGPort != 51999 || !strings.HasPrefix(cfg.Network.SubnetV6, "fd") {
		t.Fatalf("merged config = %+v", cfg)
	}
	for _, bad := range []string{
		`{"network":{"wg_port":0}}`, `{"network":{"wg_port":"51820"}}`, `{"cell":{"name":null}}`,
		`{"network":{"subnet_v4":"8.8.8.0/24"}}`, `{"network":{"subnet_v6":"2001:db8::/64"}}`,
		`{"cell":{"name":"Bad Name"}}`, `{"unknown":{}}`, `{"health":{"interval_seconds":1}}`, `"string"`, `null`,
	} {
		if r := a.do("PUT", "/api/config", bad); r.status != 400 {
			t.Fatalf("PUT %s: %d %s", bad, r.status, r.body)
		}
	}
	a.must(200, "GET", "/api/config", nil).json(t, &cfg)
	if cfg.Cell.Name != "attic" || cfg.Network.WGPort != 51999 {
		t.Fatalf("a refused change altered the config: %+v", cfg)
	}
	entries, _, _ := e.cell.Audit.Query(storage.Filter{Action: "config.update", Result: "ok"})
	if len(entries) != 1 || entries[0].Details["cell.name"] != "attic" || entries[0].Actor != "admin" {
		t.Fatalf("audit of the change: %+v", entries)
	}
}

var hostile = []string{
	"$(reboot)", "`reboot`", "; rm -rf /", "../../etc/passwd", "a\x00b", "line\nbreak",
	"<script>alert(1)</script>", strings.Repeat("ü", 2048), "", " ", "'\"", "%00", "\u202e",
}

func TestHostileStrings(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	for _, h := range hostile {
		for _, body := range []map[string]any{
			{"step": "admin", "data": map[string]any{"username": h, "password": "a long enough password"}},
			{"step": h, "data": map[string]any{}},
		} {
			if r := c.do("POST", "/api/setup/step", body); r.status != 400 {
				t.Fatalf("setup step with %q: %d %s", h, r.status, r.body)
			}
		}
	}
	e.setup()
	a := e.login("admin", adminPassword)
	for _, h := range hostile {
		for _, body := range []map[string]any{
			{"cell": map[string]any{"name": h}}, {"cell": map[string]any{"domain": h}},
			{"network": map[string]any{"wan_interface": h}}, {"network": map[string]any{"subnet_v4": h}},
			{"network": map[string]any{"subnet_v6": h}},
		} {
			if r := a.do("PUT", "/api/config", body); r.status != 400 {
				t.Fatalf("config %v: %d %s", body, r.status, r.body)
			}
		}
		if r := a.do("PUT", "/api/logs/verbosity", map[string]any{"levels": map[string]string{h: "debug"}}); r.status != 400 {
			t.Fatalf("verbosity component %q: %d", h, r.status)
		}
		if r := a.do("PUT", "/api/logs/verbosity", map[string]any{"levels": map[string]string{"api": h}}); r.status != 400 {
			t.Fatalf("verbosity level %q: %d", h, r.status)
		}
		if r := e.client().do("POST", "/api/auth/login", map[string]string{"username": h, "password": h}); r.status != 401 && r.status != 429 {
			t.Fatalf("login as %q: %d", h, r.status)
		}
		if r := a.do("POST", "/api/auth/admin/reset-password", map[string]string{"username": h, "new_password": "reset password 456"}); r.status != 404 {
			t.Fatalf("reset %q: %d", h, r.status)
		}
		q := "?actor=" + urlq(h) + "&action=" + urlq(h) + "&target_id=" + urlq(h)
		if r := a.do("GET", "/api/audit"+q, nil); r.status != 200 {
			t.Fatalf("audit query %q: %d", h, r.status)
		}
		if r := a.do("GET", "/api/logs/search?q="+urlq(h)+"&service="+urlq(h), nil); r.status != 200 && r.status != 400 {
			t.Fatalf("log search %q: %d", h, r.status)
		}
	}
	// The config is untouched and the chain still verifies after all that.
	var v storage.Verification
	a.must(200, "GET", "/api/audit/verify", nil).json(t, &v)
	if !v.OK || v.Entries < 50 {
		t.Fatalf("verify after hostile input: %+v", v)
	}
}

func TestAuditEndpoints(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	a.must(200, "PUT", "/api/config", map[string]any{"cell": map[string]any{"name": "one"}})
	a.do("PUT", "/api/config", map[string]any{"cell": map[string]any{"name": "BAD"}})
	var q struct {
		Entries []storage.Entry
		Total   int
	}
	a.must(200, "GET", "/api/audit?action=config.update&result=invalid_name", nil).json(t, &q)
	if q.Total != 1 || q.Entries[0].Result != "invalid_name" {
		t.Fatalf("filtered = %+v", q)
	}
	a.must(200, "GET", "/api/audit?limit=2&offset=1", nil).json(t, &q)
	if len(q.Entries) != 2 || q.Total < 6 {
		t.Fatalf("paged = %d of %d", len(q.Entries), q.Total)
	}
	if r := a.do("GET", "/api/audit?limit=abc", nil); r.status != 400 {
		t.Fatalf("bad limit: %d", r.status)
	}
	if r := a.do("GET", "/api/audit?since=yesterday", nil); r.status != 400 {
		t.Fatalf("bad since: %d", r.status)
	}
	r := a.must(200, "GET", "/api/audit/export?format=csv", nil)
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") || rows[len(rows)-1][0] != "checkpoint" {
		t.Fatalf("csv header %v, last row %v", rows[0], rows[len(rows)-1])
	}
	var v struct {
		storage.Verification
		PublicKey string `json:"public_key"`
	}
	a.must(200, "GET", "/api/audit/verify", nil).json(t, &v)
	if !v.OK || v.Checkpoint == nil || v.PublicKey == "" || v.Checkpoint.Size != uint64(len(rows)-2) {
		t.Fatalf("verify = %+v (csv rows %d)", v, len(rows))
	}
}

func TestLogsEndpoints(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	e.book.Logger("storage").Info("needle in the haystack", "n", 7)
	var l struct {
		Lines []struct{ Service, Msg string }
	}
	a.must(200, "GET", "/api/logs?service=storage&lines=5", nil).json(t, &l)
	if len(l.Lines) == 0 || l.Lines[len(l.Lines)-1].Msg != "needle in the haystack" {
		t.Fatalf("logs = %+v", l)
	}
	a.must(200, "GET", "/api/logs/search?q=NEEDLE", nil).json(t, &l)
	if len(l.Lines) != 1 || l.Lines[0].Service != "storage" {
		t.Fatalf("search = %+v", l)
	}
	var lv struct{ Levels map[string]string }
	a.must(200, "PUT", "/api/logs/verbosity", map[string]any{"levels": map[string]string{"storage": "warn"}}).json(t, &lv)
	if lv.Levels["storage"] != "warn" {
		t.Fatalf("levels = %v", lv.Levels)
	}
	e.book.Logger("storage").Info("quiet now")
	a.must(200, "GET", "/api/logs/search?q=quiet", nil).json(t, &l)
	if len(l.Lines) != 0 {
		t.Fatal("an info line was logged at level warn")
	}
	if r := a.do("GET", "/api/logs?lines=0", nil); r.status != 400 {
		t.Fatalf("lines=0: %d", r.status)
	}
}

// TestSecretsCanary plants passwords and a vault secret, exercises the API, and scans
// every response, log line, audit entry and export for them.
func TestSecretsCanary(t *testing.T) {
	e := newEnv(t)
	e.setup()
	if err := e.db.Vault.Put("test/key", []byte("canary-vault-key-91be")); err != nil {
		t.Fatal(err)
	}
	a := e.login("admin", adminPassword)
	a.do("POST", "/api/auth/change-password", map[string]string{"current_password": adminPassword, "new_password": "canary-new-pass-22aa"})
	a.do("POST", "/api/auth/change-password", map[string]string{"current_password": "canary-wrong-pass-77", "new_password": "canary-new-pass-33bb"})
	e.addPeerUser("pat", "peer password 123")
	a.do("POST", "/api/auth/admin/reset-password", map[string]string{"username": "pat", "new_password": "canary-reset-pass-44cc"})
	e.client().do("POST", "/api/auth/login", map[string]string{"username": "admin", "password": "canary-failed-login-55"})
	e.client().do("POST", "/api/auth/login", map[string]string{"username": "canary-user-as-pass-66", "password": adminPassword})
	// A certificate's private key is in the response that hands it over, and nowhere else.
	var issued struct {
		PrivateKey string `json:"private_key"`
	}
	a.must(201, "POST", "/api/vault/certs", map[string]any{"common_name": "canary.home.example.org"}).json(t, &issued)
	e.bodies = e.bodies[:len(e.bodies)-1]
	a.do("POST", "/api/vault/certs/"+strings.Repeat("0", 30)+"1/revoke", nil)
	for _, p := range []string{"/api/config", "/api/status", "/api/auth/users", "/api/audit?limit=10000", "/api/audit/export?format=csv", "/api/audit/export?format=json", "/api/logs?lines=5000", "/api/health/history", "/api/audit/verify",
		"/api/vault/certs", "/api/vault/ca", "/api/vault/crl", "/api/vault/trust-keys", "/api/vault/age"} {
		a.do("GET", p, nil)
	}
	canaries := []string{adminPassword, "canary-vault-key-91be", "canary-new-pass-22aa", "canary-wrong-pass-77", "canary-new-pass-33bb", "canary-reset-pass-44cc", "canary-failed-login-55", "peer password 123", "PRIVATE KEY"}
	canaries = append(canaries, pemBodyLines(t, issued.PrivateKey)...)
	caKey, err := e.db.Vault.Get(storage.CAKeyName)
	if err != nil {
		t.Fatal(err)
	}
	// The CA key's secret scalar: bytes 36-68 of a P-256 PKCS#8 key (base64 from character 48).
	canaries = append(canaries, base64.StdEncoding.EncodeToString(caKey)[48:88], hex.EncodeToString(caKey[36:68]))
	var audit strings.Builder
	e.db.Audit().Each(func(en storage.Entry) error { fmt.Fprintf(&audit, "%+v\n", en); return nil })
	logged := e.logText()
	if !strings.Contains(logged, "/api/auth/change-password") {
		t.Fatal("the logs scanned hold no line of the canary run")
	}
	for _, s := range canaries {
		for _, b := range e.bodies {
			if strings.Contains(b, s) {
				t.Errorf("secret %q in a response: %.200s", s, b)
			}
		}
		if strings.Contains(logged, s) {
			t.Errorf("secret %q in the logs", s)
		}
		if strings.Contains(audit.String(), s) {
			t.Errorf("secret %q in the audit log", s)
		}
	}
	if !strings.Contains(audit.String(), "auth.change_password") {
		t.Fatal("the canary run was not audited at all")
	}
}

// logText is every line the log book holds: its ring (what GET /api/logs serves)
// as JSON, and every file under DATA/logs, rotated ones included.
func (e *env) logText() string {
	var s strings.Builder
	for _, l := range e.book.Query("", "", 0) {
		raw, _ := json.Marshal(l)
		s.Write(raw)
		s.WriteByte('\n')
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, "logs", "cell.log*"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		s.Write(raw)
	}
	return s.String()
}
