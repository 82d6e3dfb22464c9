package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func init() {
	routeCases["GET /api/caddy/cert-status"] = routeCase{path: "/api/caddy/cert-status"}
	routeCases["POST /api/caddy/cert-renew"] = routeCase{path: "/api/caddy/cert-renew"}
}

// fakeCaddy is a front with one certificate that Renew replaces.
type fakeCaddy struct {
	renewed int
	fail    error
}

func (f *fakeCaddy) Certificates() []CertStatus {
	na := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).AddDate(0, 0, f.renewed)
	return []CertStatus{{Name: "home.example.org", Issuer: "Personal Internet Cell CA home", NotAfter: &na, DaysLeft: 30},
		{Name: "10.77.0.1", LastError: "the vault refused to sign"}}
}

func (f *fakeCaddy) Renew(context.Context) error {
	if f.fail != nil {
		return f.fail
	}
	f.renewed++
	return nil
}

// TestCaddyArea: the certificates' status and renewing them, admin only and
// audited; without a front the area says so.
func TestCaddyArea(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	var st CaddyStatus
	admin.must(200, "GET", "/api/caddy/cert-status", nil).json(t, &st)
	if st.Configured || len(st.Certificates) != 0 {
		t.Errorf("without a front: %+v", st)
	}
	if r := admin.do("POST", "/api/caddy/cert-renew", nil); r.status != 409 || r.code() != "no_front" {
		t.Errorf("renew without a front: %d %s", r.status, r.body)
	}

	fake := &fakeCaddy{}
	e.api.deps.Caddy = fake
	admin.must(200, "GET", "/api/caddy/cert-status", nil).json(t, &st)
	if !st.Configured || len(st.Certificates) != 2 || st.Certificates[0].DaysLeft != 30 || st.Certificates[1].LastError == "" {
		t.Errorf("status: %+v", st)
	}
	admin.must(200, "POST", "/api/caddy/cert-renew", nil).json(t, &st)
	if fake.renewed != 1 || st.Certificates[0].NotAfter.Day() != 3 {
		t.Errorf("renew: %d, %+v", fake.renewed, st)
	}
	fake.fail = errors.New("the vault is sealed")
	if r := admin.do("POST", "/api/caddy/cert-renew", nil); r.status != 503 || !strings.Contains(string(r.body), "the vault is sealed") {
		t.Errorf("a failed renew: %d %s", r.status, r.body)
	}
	if r := e.client().do("GET", "/api/caddy/cert-status", nil); r.status != 401 {
		t.Errorf("cert-status without a session: %d", r.status)
	}
	var page struct {
		Entries []struct {
			Action, Result string
			Details        map[string]string
		} `json:"entries"`
	}
	admin.must(200, "GET", "/api/audit?action=caddy.cert_renew", nil).json(t, &page)
	if len(page.Entries) != 3 || page.Entries[1].Result != "ok" || page.Entries[1].Details["names"] != "home.example.org 10.77.0.1" {
		t.Errorf("audit of the renewals: %+v", page.Entries)
	}
}

// frontSocket serves e's API on a unix socket as the daemon does for the
// front (FrontConnContext), and returns a client of it.
func frontSocket(t *testing.T, e *env) *http.Client {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.srv.Config.Handler, ConnContext: FrontConnContext}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
}

// TestForwardedForOnlyFromTheFront: the client address comes from
// X-Forwarded-For only on the front's socket; a forged header sent to the TCP
// listener changes nothing. Requests through the front get Secure cookies.
func TestForwardedForOnlyFromTheFront(t *testing.T) {
	e := newEnv(t)
	e.setup()
	front := frontSocket(t, e)

	login := func(c *http.Client, base, xff string) *http.Response {
		req, _ := http.NewRequest("POST", base+"/api/auth/login", strings.NewReader(`{"username":"admin","password":"`+adminPassword+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", xff)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("login: %d", res.StatusCode)
		}
		return res
	}
	direct := login(e.client().http, e.srv.URL, "203.0.113.99")
	// What the front sends: its client's address (it drops what the client sent).
	viaFront := login(front, "http://front", "198.51.100.23")
	for _, c := range direct.Cookies() {
		if c.Secure {
			t.Error("a session cookie over plain HTTP to the API is Secure")
		}
	}
	if cs := viaFront.Cookies(); len(cs) == 0 || !cs[0].Secure {
		t.Errorf("the session cookie through the front is not Secure: %v", cs)
	}
	admin := e.login("admin", adminPassword)
	var page struct {
		Entries []struct {
			SourceIP string `json:"source_ip"`
			Action   string `json:"action"`
		} `json:"entries"`
	}
	json.Unmarshal(admin.must(200, "GET", "/api/audit?action=auth.login", nil).body, &page)
	var got []string
	for _, en := range page.Entries {
		got = append(got, en.SourceIP)
	}
	// Newest first: the admin's own login, the front's, the direct one.
	if len(got) < 3 || got[1] != "198.51.100.23" || got[2] != "127.0.0.1" {
		t.Errorf("audit source addresses %v: want the front's client 198.51.100.23, and 127.0.0.1 for the direct one (its forged header ignored)", got)
	}
}

// TestSecurityHeaders: every answer of the API carries them, errors too.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	for _, r := range []resp{c.do("GET", "/health", nil), c.do("GET", "/api/nope", nil), c.do("GET", "/api/status", nil), c.do("DELETE", "/health", nil)} {
		for k, v := range map[string]string{"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
			if got := r.header.Get(k); got != v {
				t.Errorf("%d answer: %s %q, want %q", r.status, k, got, v)
			}
		}
	}
}
