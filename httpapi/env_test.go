package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/storage"
)

const adminPassword = "canary-admin-pass-4c1e9"

// setupCode is the test cell's setup code, which the daemon would read from its
// file; every client of the env sends it on the wizard's changes unless told not to.
const setupCode = "CANA-RYSE-TUPC-ODE7-7Q2W-3E4R-5T6Y"

// env is a real cell (database in a temp dir) behind the real API on a loopback
// test server.
type env struct {
	t      *testing.T
	dir    string
	db     *storage.DB
	cell   *cell.Cell
	book   *logs.Book
	api    *Server
	srv    *httptest.Server
	bodies []string // every response body seen, for the secrets canary
	closed bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	return openEnv(t, dir)
}

func openEnv(t *testing.T, dir string) *env {
	t.Helper()
	return buildEnv(t, dir, cell.Options{HashMemoryKiB: 64, Outside: testOutside()}, depsOf, nil)
}

// buildEnv is a real cell over dir, built with o (its DB and Logs filled in
// here), behind the API with the areas deps picks and the system area over
// fw (nil: none).
func buildEnv(t *testing.T, dir string, o cell.Options, deps func(*cell.Cell) Deps, fw Firmware) *env {
	t.Helper()
	db, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	book, err := logs.Open(logs.Options{Dir: dir + "/logs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"api", "cell", "audit", "storage"} {
		book.Level(c).Set(-4) // debug: the canary must survive the chattiest level
	}
	o.DB, o.Logs = db, book
	c, err := cell.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Setup.SetCode(setupCode); err != nil {
		t.Fatal(err)
	}
	api := New(deps(c)).With(SystemRoutes(fw))
	srv := httptest.NewServer(api.Handler())
	e := &env{t: t, dir: dir, db: db, cell: c, book: book, api: api, srv: srv}
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	if e.closed {
		return
	}
	e.closed = true
	e.srv.Close()
	if err := e.db.Check(); err != nil {
		e.t.Errorf("database consistency: %v", err)
	}
	e.db.Close()
	e.book.Close()
}

// client is one browser: a cookie jar, the CSRF token it fetched, and the setup
// code it sends on the wizard's changes ("" sends none).
type client struct {
	e         *env
	http      *http.Client
	csrf      string
	setupCode string
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{e: e, http: &http.Client{Jar: jar, Timeout: 30 * time.Second}, setupCode: setupCode}
}

type resp struct {
	status int
	body   []byte
	header http.Header
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r resp) code() string {
	var e apiError
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// do sends a request; body may be a string (sent as is) or a value (as JSON).
func (c *client) do(method, path string, body any, hdr ...string) resp {
	c.e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.e.srv.URL+path, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	if c.setupCode != "" && strings.HasPrefix(path, "/api/setup/") && method == "POST" {
		req.Header.Set(SetupCodeHeader, c.setupCode)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	c.e.bodies = append(c.e.bodies, string(raw))
	return resp{res.StatusCode, raw, res.Header}
}

func (c *client) must(status int, method, path string, body any) resp {
	c.e.t.Helper()
	r := c.do(method, path, body)
	if r.status != status {
		c.e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	return r
}

// setup completes the wizard with the admin account.
func (e *env) setup() {
	e.t.Helper()
	c := e.client()
	c.must(200, "POST", "/api/setup/step", map[string]any{"step": "admin", "data": map[string]any{"username": "admin", "password": adminPassword}})
	c.must(200, "POST", "/api/setup/step", map[string]any{"step": "cell", "data": map[string]any{"name": "home", "domain": "home.example.org"}})
	c.must(200, "POST", "/api/setup/step", map[string]any{"step": "network", "data": map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24"}})
	c.must(200, "POST", "/api/setup/complete", nil)
}

// login logs a new client in and fetches its CSRF token.
func (e *env) login(user, password string) *client {
	e.t.Helper()
	c := e.client()
	c.must(200, "POST", "/api/auth/login", map[string]string{"username": user, "password": password})
	var tok struct{ Token string }
	c.must(200, "GET", "/api/auth/csrf-token", nil).json(e.t, &tok)
	if tok.Token == "" {
		e.t.Fatal("empty CSRF token")
	}
	c.csrf = tok.Token
	return c
}

// addPeerUser creates an account of role peer directly in storage (the peers area
// creates them in production).
func (e *env) addPeerUser(name, password string) {
	e.t.Helper()
	hash, err := e.cell.Accounts.Hasher().Hash(password)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.Users().Create(storage.User{Username: name, Role: storage.RolePeer, PasswordHash: hash}); err != nil {
		e.t.Fatal(err)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func urlq(s string) string { return url.QueryEscape(s) }

// depsOf is the API over a whole cell, wired as the daemon wires it.
func depsOf(c *cell.Cell) Deps {
	return Deps{Version: cell.Version, Setup: c.Setup, Auth: c.Accounts, Settings: c.Settings, Health: c.Health,
		Audit: c.Audit, Logs: c.Logs, Peers: c.Peers, Routing: c.Peers, DNS: c.DNS, Vault: c.Vault, Services: c.Services,
		Network: c.Outside, Time: c.NTP}
}
