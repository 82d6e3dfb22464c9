package httpapi

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pic-cell/cell/storage"
)

// rawRequest sends a request's head declaring a body of declared bytes, then
// only sent of them; closeWrite then ends the client's side (it went away
// mid-body). It returns the answer, read within limit (a generous bound, not
// a timing assertion: today's code answered after the full read timeout, or
// never).
func rawRequest(t *testing.T, e *env, method, path string, hdr map[string]string, declared int, sent string, closeWrite bool, limit time.Duration) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, path, declared)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n" + sent)
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		conn.(*net.TCPConn).CloseWrite()
	}
	conn.SetReadDeadline(time.Now().Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s with %d of %d bytes: no answer within %v: %v", method, path, len(sent), declared, limit, err)
	}
	resp.Body.Close()
	return resp
}

func sessionHeaders(c *client, e *env) map[string]string {
	h := map[string]string{"X-CSRF-Token": c.csrf}
	var cookies []string
	for _, ck := range c.http.Jar.Cookies(mustURL(e.srv.URL)) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	h["Cookie"] = strings.Join(cookies, "; ")
	return h
}

// TestEarlyRefusalDoesNotWaitForTheBody: a body declared but never sent,
// refused before it is read (401, 403, 413, 404), is answered at once and the
// connection closed, rather than held until the body arrives.
func TestEarlyRefusalDoesNotWaitForTheBody(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	bound := DefaultBodyTime + 5*time.Second
	for _, c := range []struct {
		what     string
		method   string
		path     string
		hdr      map[string]string
		declared int
		want     int
	}{
		{"no session", "PUT", "/api/config", nil, 1000, 401},
		{"no CSRF token", "PUT", "/api/config", map[string]string{"Cookie": sessionHeaders(admin, e)["Cookie"]}, 1000, 403},
		{"too large", "PUT", "/api/config", sessionHeaders(admin, e), DefaultMaxBody + 1, 413},
		{"no such route", "POST", "/api/nowhere", nil, 1000, 404},
	} {
		t.Run(c.what, func(t *testing.T) {
			t.Parallel()
			resp := rawRequest(t, e, c.method, c.path, c.hdr, c.declared, `{"cell":`, false, bound)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
			if !resp.Close {
				t.Errorf("Connection: %q, want close (the rest of the body is not read)", resp.Header.Get("Connection"))
			}
		})
	}
}

// TestBodyCutShort: a client that goes away mid-body gets a 400 (its fault,
// not the cell's), logged at debug, never an error line; one that stalls
// mid-body is answered once the route's time for the body is up.
func TestBodyCutShort(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	t.Run("disconnects", func(t *testing.T) {
		t.Parallel()
		resp := rawRequest(t, e, "PUT", "/api/config", sessionHeaders(admin, e), 1000, `{"cell":{"name":`, true, DefaultBodyTime+5*time.Second)
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
		resp = rawRequest(t, e, "POST", "/api/auth/login", nil, 1000, `{"username":`, true, DefaultBodyTime+5*time.Second)
		if resp.StatusCode != 400 {
			t.Fatalf("login: status %d, want 400", resp.StatusCode)
		}
	})
	t.Run("stalls", func(t *testing.T) {
		t.Parallel()
		resp := rawRequest(t, e, "PUT", "/api/config", sessionHeaders(admin, e), 1000, `{"cell":{"name":`, false, DefaultBodyTime+5*time.Second)
		if resp.StatusCode != 400 || !resp.Close {
			t.Fatalf("status %d (close %v), want 400 and the connection closed", resp.StatusCode, resp.Close)
		}
	})
	t.Cleanup(func() {
		for _, l := range e.book.Query("api", "", 0) {
			if l.Level == "ERROR" || l.Level == "error" {
				t.Errorf("an error line for a client's cut body: %s %v", l.Message, l.Attrs)
			}
		}
		if len(e.book.Query("api", "cut short", 0)) == 0 {
			t.Errorf("no debug line for the cut bodies")
		}
	})
}

// TestStrictJSONKeys: a key twice in an object (at any depth) and a key that
// names a field only when case is ignored are 400, not "last wins" or a match.
func TestStrictJSONKeys(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	anon := e.client()
	for _, c := range []struct {
		who        *client
		method     string
		path, body string
	}{
		{anon, "POST", "/api/auth/login", `{"username":"admin","password":"wrong","password":"` + adminPassword + `"}`},
		{anon, "POST", "/api/auth/login", `{"Username":"admin","password":"` + adminPassword + `"}`},
		{anon, "POST", "/api/auth/login", `{"username":"admin","PASSWORD":"` + adminPassword + `"}`},
		{admin, "PUT", "/api/config", `{"cell":{"name":"a","name":"b"}}`},
		{admin, "PUT", "/api/config", `{"cell":{"name":"a"},"cell":{"name":"b"}}`},
		{admin, "PUT", "/api/logs/verbosity", `{"levels":{"api":"info","api":"debug"}}`},
		{admin, "PUT", "/api/logs/verbosity", `{"Levels":{"api":"info"}}`},
		{admin, "POST", "/api/auth/change-password", `{"current_password":"x","new_password":"a long new password","new_password":"another long one"}`},
	} {
		r := c.who.do(c.method, c.path, c.body)
		if r.status != 400 {
			t.Errorf("%s %s %s: %d, want 400: %s", c.method, c.path, c.body, r.status, r.body)
		}
	}
	// The exact names still work.
	anon.must(200, "POST", "/api/auth/login", `{"username":"admin","password":"`+adminPassword+`"}`)
	admin.must(200, "PUT", "/api/logs/verbosity", `{"levels":{"api":"info"}}`)
}

// TestCSRFOnAuthChanges: every change under /api/auth/ but login needs the
// session's CSRF token.
func TestCSRFOnAuthChanges(t *testing.T) {
	e := newEnv(t)
	e.setup()
	e.addPeerUser("pat", "peer password 123")
	admin := e.login("admin", adminPassword)
	for _, c := range []struct{ path, body string }{
		{"/api/auth/admin/reset-password", `{"username":"pat","new_password":"reset password 456"}`},
		{"/api/auth/change-password", `{"current_password":"` + adminPassword + `","new_password":"a brand new password"}`},
		{"/api/auth/logout", ``},
	} {
		for _, tok := range []string{"", "not-the-token"} {
			r := admin.do("POST", c.path, c.body, "X-CSRF-Token", tok)
			if r.status != 403 || r.code() != "bad_csrf_token" {
				t.Errorf("POST %s with token %q: %d %s, want 403 bad_csrf_token", c.path, tok, r.status, r.body)
			}
		}
	}
	admin.must(200, "POST", "/api/auth/admin/reset-password", `{"username":"pat","new_password":"reset password 456"}`)
	admin.must(200, "POST", "/api/auth/logout", nil)
	// Login needs none (there is no session to hold one yet).
	e.client().must(200, "POST", "/api/auth/login", map[string]string{"username": "pat", "password": "reset password 456"})
}

// TestFullDiskRefusesChanges: with the space check failing, changes are 507
// (reads go on, and so does login); once it passes they work again.
func TestFullDiskRefusesChanges(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	var full atomic.Bool
	full.Store(true)
	e.api.Space = func() error {
		if full.Load() {
			return fmt.Errorf("test: 1.0 MiB free: %w", storage.ErrNoSpace)
		}
		return nil
	}
	r := admin.do("PUT", "/api/config", map[string]any{"cell": map[string]any{"name": "attic"}})
	if r.status != 507 || r.code() != "insufficient_storage" {
		t.Fatalf("a change on a full disk: %d %s, want 507 insufficient_storage", r.status, r.body)
	}
	admin.must(200, "GET", "/api/config", nil)
	e.client().must(200, "POST", "/api/auth/login", map[string]string{"username": "admin", "password": adminPassword})
	full.Store(false)
	admin.must(200, "PUT", "/api/config", map[string]any{"cell": map[string]any{"name": "attic"}})
}
