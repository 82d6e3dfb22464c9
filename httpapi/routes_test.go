package httpapi

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// routeCase says how to call a route in the table tests: a concrete path (parameters
// filled in) and whether it takes a JSON body, with a valid one.
type routeCase struct {
	path string
	body any // nil: the route reads no body
}

// routeCases must name every registered route: TestEveryRouteHasACase fails for a new
// route without an entry. Other areas add theirs in their own test files by init.
var routeCases = map[string]routeCase{
	"GET /health":                         {path: "/health"},
	"GET /api/status":                     {path: "/api/status"},
	"GET /api/config":                     {path: "/api/config"},
	"PUT /api/config":                     {path: "/api/config", body: map[string]any{"cell": map[string]any{"name": "home"}}},
	"GET /api/health/history":             {path: "/api/health/history"},
	"POST /api/auth/login":                {path: "/api/auth/login", body: map[string]string{"username": "admin", "password": "x"}},
	"POST /api/auth/logout":               {path: "/api/auth/logout"},
	"GET /api/auth/me":                    {path: "/api/auth/me"},
	"GET /api/auth/csrf-token":            {path: "/api/auth/csrf-token"},
	"POST /api/auth/change-password":      {path: "/api/auth/change-password", body: map[string]string{"current_password": "x", "new_password": "y"}},
	"POST /api/auth/admin/reset-password": {path: "/api/auth/admin/reset-password", body: map[string]string{"username": "nobody", "new_password": "a long enough password"}},
	"GET /api/auth/users":                 {path: "/api/auth/users"},
	"GET /api/setup/status":               {path: "/api/setup/status"},
	"GET /api/setup/step":                 {path: "/api/setup/step"},
	"POST /api/setup/step":                {path: "/api/setup/step", body: map[string]any{"step": "cell", "data": map[string]string{"name": "x", "domain": "x.org"}}},
	"POST /api/setup/complete":            {path: "/api/setup/complete"},
	"GET /api/audit":                      {path: "/api/audit"},
	"GET /api/audit/export":               {path: "/api/audit/export?format=csv"},
	"GET /api/audit/verify":               {path: "/api/audit/verify"},
	"GET /api/logs":                       {path: "/api/logs"},
	"GET /api/logs/search":                {path: "/api/logs/search?q=x"},
	"GET /api/logs/verbosity":             {path: "/api/logs/verbosity"},
	"PUT /api/logs/verbosity":             {path: "/api/logs/verbosity", body: map[string]any{"levels": map[string]string{"api": "info"}}},
	"GET /api/system/info":                {path: "/api/system/info"},
	"GET /api/system/update":              {path: "/api/system/update"},
	// The bundle is a raw body (not JSON) of up to the route's own MaxBody.
	"POST /api/system/update": {path: "/api/system/update"},
}

var paramRe = regexp.MustCompile(`[:*][a-z_]+`)

func TestEveryRouteHasACase(t *testing.T) {
	e := newEnv(t)
	for _, r := range e.api.Routes() {
		key := r.Method + " " + r.Path
		rc, ok := routeCases[key]
		if !ok {
			t.Errorf("route %s has no entry in routeCases: add one so the bad-input table covers it", key)
			continue
		}
		concrete := strings.SplitN(rc.path, "?", 2)[0]
		if paramRe.ReplaceAllString(r.Path, "x") != paramRe.ReplaceAllString(concrete, "x") && !paramRe.MatchString(r.Path) {
			t.Errorf("routeCases[%s].path = %s does not match the route", key, rc.path)
		}
	}
}

// TestRouteTable sends every registered route the bad requests a hostile client would and
// checks each gets the right 4xx, never a 5xx.
func TestRouteTable(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	e.addPeerUser("pat", "peer password 123")
	peer := e.login("pat", "peer password 123")
	anon := e.client()
	routes := e.api.Routes()
	maxBody := map[string]int64{}
	for _, r := range e.api.routes {
		if r.MaxBody > DefaultMaxBody {
			maxBody[r.Method+" "+r.Path] = r.MaxBody
		}
	}
	getPaths := map[string]bool{}
	for _, r := range routes {
		if r.Method == "GET" {
			getPaths[r.Path] = true
		}
	}
	check := func(t *testing.T, what string, got resp, want ...int) {
		t.Helper()
		if got.status >= 500 {
			t.Fatalf("%s: %d (a 5xx for bad input): %s", what, got.status, got.body)
		}
		for _, w := range want {
			if got.status == w {
				return
			}
		}
		t.Fatalf("%s: status %d, want %v: %s", what, got.status, want, got.body)
	}
	for _, r := range routes {
		r := r
		key := r.Method + " " + r.Path
		rc, ok := routeCases[key]
		if !ok {
			continue // reported by TestEveryRouteHasACase
		}
		t.Run(strings.ReplaceAll(key, "/", "_"), func(t *testing.T) {
			mut := mutating(r.Method)
			auth := r.Access == Session || r.Access == Admin || r.Access == Peer
			// Only the wizard and login (no session yet) need no CSRF token: every
			// other change under /api/auth/ (logout, change-password, the admin's
			// reset-password) needs it like any other change.
			exempt := strings.HasPrefix(r.Path, "/api/setup/") || r.Path == "/api/auth/login"
			if auth {
				check(t, "no session", anon.do(r.Method, rc.path, rc.body), 401)
				bogus := e.client()
				bogus.http.Jar.SetCookies(mustURL(e.srv.URL), []*http.Cookie{{Name: SessionCookie, Value: "forged-session-id"}})
				check(t, "forged session", bogus.do(r.Method, rc.path, rc.body), 401)
			}
			switch r.Access {
			case Admin:
				check(t, "peer role", peer.do(r.Method, rc.path, rc.body), 403)
			case Peer:
				check(t, "admin role", admin.do(r.Method, rc.path, rc.body), 403)
			}
			caller := admin
			if r.Access == Peer {
				caller = peer
			}
			if mut && auth && !exempt {
				check(t, "no CSRF token", caller.do(r.Method, rc.path, rc.body, "X-CSRF-Token", ""), 403)
				check(t, "wrong CSRF token", caller.do(r.Method, rc.path, rc.body, "X-CSRF-Token", "not-the-token"), 403)
			}
			if mut {
				check(t, "cross-site Origin", caller.do(r.Method, rc.path, rc.body, "Origin", "https://evil.example"), 403)
				check(t, "cross-site fetch", caller.do(r.Method, rc.path, rc.body, "Sec-Fetch-Site", "cross-site"), 403)
				if !getPaths[r.Path] {
					check(t, "GET where a change is expected", caller.do("GET", rc.path, nil), 405)
				}
				if maxBody[key] == 0 {
					big := `{"x":"` + strings.Repeat("a", DefaultMaxBody) + `"}`
					check(t, "oversized body", caller.do(r.Method, rc.path, big), 413)
				} // a larger bound (an update bundle) is its area's own test
			} else {
				check(t, "DELETE on a read", caller.do("DELETE", rc.path, nil), 405, 404)
			}
			if rc.body != nil {
				setupDone := strings.HasPrefix(r.Path, "/api/setup/") // refused as complete first
				want := []int{400}
				if setupDone {
					want = []int{400, 409}
				}
				check(t, "malformed JSON", caller.do(r.Method, rc.path, `{"a":`), want...)
				check(t, "not an object", caller.do(r.Method, rc.path, `[1,2]`), want...)
				check(t, "unknown field", caller.do(r.Method, rc.path, `{"surely_unknown_field":1}`), want...)
				check(t, "text/plain body", caller.do(r.Method, rc.path, `{}`, "Content-Type", "text/plain"), append(want, 415)...)
			}
		})
	}
}

func TestSetupGateAndFinality(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	// Before setup: only /health and /api/setup/* answer; everything else says so.
	c.must(200, "GET", "/health", nil)
	for _, p := range []string{"/api/status", "/api/config", "/api/audit", "/api/auth/me"} {
		if r := c.do("GET", p, nil); r.status != 409 || r.code() != "setup_required" {
			t.Fatalf("GET %s before setup: %d %s", p, r.status, r.body)
		}
	}
	if r := c.do("POST", "/api/auth/login", map[string]string{"username": "admin", "password": "admin"}); r.status != 409 {
		t.Fatalf("login before setup: %d (there is no default account)", r.status)
	}
	var st struct {
		Complete bool
		Step     string
		Steps    []string
	}
	c.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	if st.Complete || st.Step != "admin" || len(st.Steps) != 3 {
		t.Fatalf("status = %+v", st)
	}
	// Out of order, weak password, bad values.
	if r := c.do("POST", "/api/setup/step", map[string]any{"step": "cell", "data": map[string]string{"name": "home", "domain": "home.example.org"}}); r.status != 409 {
		t.Fatalf("cell before admin: %d", r.status)
	}
	if r := c.do("POST", "/api/setup/step", map[string]any{"step": "admin", "data": map[string]string{"username": "admin", "password": "short"}}); r.status != 400 || r.code() != "weak_password" {
		t.Fatalf("weak password: %d %s", r.status, r.body)
	}
	if r := c.do("POST", "/api/setup/complete", nil); r.status != 409 {
		t.Fatalf("complete with no steps: %d", r.status)
	}
	var step struct {
		Name   string
		Fields []struct {
			Name     string
			Required bool
			Default  any
		}
	}
	c.must(200, "GET", "/api/setup/step", nil).json(t, &step)
	if step.Name != "admin" || len(step.Fields) != 2 {
		t.Fatalf("step = %+v", step)
	}
	e.setup()
	c.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	if !st.Complete {
		t.Fatal("not complete after complete")
	}
	for _, body := range []any{
		map[string]any{"step": "admin", "data": map[string]any{"username": "evil", "password": "another long password"}},
	} {
		if r := c.do("POST", "/api/setup/step", body); r.status != 409 {
			t.Fatalf("step after setup: %d", r.status)
		}
	}
	if r := c.do("POST", "/api/setup/complete", nil); r.status != 409 {
		t.Fatalf("complete again: %d", r.status)
	}
	// After a restart (same data directory) setup stays closed.
	dir := e.dir
	e.close()
	e2 := openEnv(t, dir)
	c2 := e2.client()
	if r := c2.do("POST", "/api/setup/complete", nil); r.status != 409 {
		t.Fatalf("complete after restart: %d", r.status)
	}
	c2.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	if !st.Complete {
		t.Fatal("status after restart: not complete")
	}
	e2.login("admin", adminPassword)
}
