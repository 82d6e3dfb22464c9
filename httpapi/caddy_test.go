package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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
