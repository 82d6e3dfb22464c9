package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testArgon2 keeps hashing fast in tests; verification reads the costs from
// the hash, so the code paths are the production ones.
var testArgon2 = Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}

const testToken = "s3cret-admin-token"

type env struct {
	t     *testing.T
	dir   string
	srv   *Server
	web   *httptest.Server
	admin *httptest.Server
}

func newEnv(t *testing.T, dir string) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	tokenPath := filepath.Join(dir, "token")
	if _, err := os.Stat(tokenPath); err != nil {
		if err := os.WriteFile(tokenPath, []byte(testToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := New(Config{DataDir: filepath.Join(dir, "data"), TokenFile: tokenPath, Argon2: testArgon2})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, srv: srv, web: httptest.NewServer(srv.Handler()), admin: httptest.NewServer(srv.AdminHandler())}
	t.Cleanup(func() {
		e.web.Close()
		e.admin.Close()
		srv.Close()
	})
	return e
}

// do sends req and returns the answer's status and body.
func (e *env) do(req *http.Request) (int, string) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) adminDo(method, path, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.admin.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return e.do(req)
}

func (e *env) putAccount(name, password string, quota int64) {
	e.t.Helper()
	if code, body := e.adminDo("PUT", "/admin/v1/accounts/"+name, fmt.Sprintf(`{"password":%q,"quota_bytes":%d}`, password, quota)); code != http.StatusNoContent {
		e.t.Fatalf("PUT account %s: %d %s", name, code, body)
	}
}

// dav sends one WebDAV request as user/pass.
func (e *env) dav(user, pass, method, path string, body io.Reader, hdr ...string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.web.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func TestHealthz(t *testing.T) {
	e := newEnv(t, "")
	resp, err := http.Get(e.web.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("healthz = %d %q, want 200 ok", resp.StatusCode, b)
	}
}

func TestAdminAuth(t *testing.T) {
	e := newEnv(t, "")
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"wrong", "Bearer nope"},
		{"prefix of the token", "Bearer " + testToken[:5]},
		{"basic", "Basic " + testToken},
	} {
		req, _ := http.NewRequest("GET", e.admin.URL+"/admin/v1/accounts", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || eb.Error == "" {
			t.Errorf("%s: got %d %+v, want 401 with a JSON error", tc.name, resp.StatusCode, eb)
		}
	}
	if code, _ := e.adminDo("GET", "/admin/v1/accounts", ""); code != 200 {
		t.Errorf("with the token: %d, want 200", code)
	}
}

func TestAdminTokenReread(t *testing.T) {
	e := newEnv(t, "")
	tokenPath := filepath.Join(e.dir, "token")
	// A different size makes the change visible even within one mtime tick.
	if err := os.WriteFile(tokenPath, []byte("rotated-token-longer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.adminDo("GET", "/admin/v1/accounts", ""); code != http.StatusUnauthorized {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", e.admin.URL+"/admin/v1/accounts", nil)
	req.Header.Set("Authorization", "Bearer rotated-token-longer")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("new token: %d, want 200", resp.StatusCode)
	}
}

func TestAdminAccountsLifecycle(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-alice", 1000)
	e.putAccount("bob", "pw-bob", 0)
	e.putAccount("alice", "pw-alice", 1000) // idempotent
	if code, _ := e.dav("alice", "pw-alice", "PUT", "/a.txt", strings.NewReader("12345")); code != http.StatusCreated {
		t.Fatalf("PUT a.txt: %d", code)
	}
	code, body := e.adminDo("GET", "/admin/v1/accounts", "")
	var list AccountList
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 {
		t.Fatalf("list: %d %s %v", code, body, err)
	}
	want := []AccountInfo{{"alice", 1000, 5}, {"bob", 0, 0}}
	if fmt.Sprint(list.Accounts) != fmt.Sprint(want) {
		t.Errorf("list = %+v, want %+v", list.Accounts, want)
	}
	if strings.Contains(body, "pw-") || strings.Contains(body, "argon2") {
		t.Errorf("list leaks secrets: %s", body)
	}

	e.srv.cfg.Now = func() time.Time { return time.Unix(1700000000, 0) }
	if code, body := e.adminDo("DELETE", "/admin/v1/accounts/alice", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE alice: %d %s", code, body)
	}
	if code, _ := e.adminDo("DELETE", "/admin/v1/accounts/alice", ""); code != http.StatusNotFound {
		t.Errorf("DELETE alice again: %d, want 404", code)
	}
	if code, _ := e.dav("alice", "pw-alice", "GET", "/a.txt", nil); code != http.StatusUnauthorized {
		t.Errorf("deleted account's GET: %d, want 401", code)
	}
	moved := filepath.Join(e.dir, "data", "removed", "alice-1700000000", "a.txt")
	if b, err := os.ReadFile(moved); err != nil || string(b) != "12345" {
		t.Errorf("home not moved to removed/: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "data", "homes", "alice")); !os.IsNotExist(err) {
		t.Errorf("home still in homes/: %v", err)
	}
	// Recreated within the same second: a second removal gets its own name.
	e.putAccount("alice", "new", 0)
	if code, _ := e.adminDo("DELETE", "/admin/v1/accounts/alice", ""); code != http.StatusNoContent {
		t.Fatalf("second DELETE: %d", code)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "data", "removed", "alice-1700000000.1")); err != nil {
		t.Errorf("second removal: %v", err)
	}

	code, body = e.adminDo("GET", "/admin/v1/usage", "")
	var u Usage
	if err := json.Unmarshal([]byte(body), &u); err != nil || code != 200 {
		t.Errorf("usage: %d %s", code, body)
	}
}

func TestAdminRejects(t *testing.T) {
	e := newEnv(t, "")
	long := strings.Repeat("a", 4096)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"dotdot", "PUT", "/admin/v1/accounts/..%2Fx", `{"password":"x"}`, 400},
		{"slash", "PUT", "/admin/v1/accounts/a%2Fb", `{"password":"x"}`, 400},
		{"nul", "PUT", "/admin/v1/accounts/a%00b", `{"password":"x"}`, 400},
		{"4KB", "PUT", "/admin/v1/accounts/" + long, `{"password":"x"}`, 400},
		{"upper", "PUT", "/admin/v1/accounts/Alice", `{"password":"x"}`, 400},
		{"dot first", "PUT", "/admin/v1/accounts/.alice", `{"password":"x"}`, 400},
		{"unknown field", "PUT", "/admin/v1/accounts/alice", `{"password":"x","admin":true}`, 400},
		{"negative quota", "PUT", "/admin/v1/accounts/alice", `{"password":"x","quota_bytes":-1}`, 400},
		{"no password for new", "PUT", "/admin/v1/accounts/alice", `{"quota_bytes":1}`, 400},
		{"not json", "PUT", "/admin/v1/accounts/alice", `password=x`, 400},
		{"control char in password", "PUT", "/admin/v1/accounts/alice", "{\"password\":\"Q\x01\"}", 400},
		{"two values", "PUT", "/admin/v1/accounts/alice", `{"password":"x"}{}`, 400},
		{"too big", "PUT", "/admin/v1/accounts/alice", `{"password":"` + strings.Repeat("x", 70<<10) + `"}`, 413},
		{"delete hostile", "DELETE", "/admin/v1/accounts/..%2Fshared", "", 400},
		{"delete absent", "DELETE", "/admin/v1/accounts/nobody", "", 404},
	} {
		code, body := e.adminDo(tc.method, tc.path, tc.body)
		var eb ErrorBody
		if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error == "" {
			t.Errorf("%s: body %q is not a JSON error", tc.name, body)
		}
		if code != tc.want {
			t.Errorf("%s: got %d, want %d (%s)", tc.name, code, tc.want, body)
		}
		if strings.Contains(body, `"password"`) || strings.Contains(body, "'") {
			t.Errorf("%s: error echoes the body: %s", tc.name, body)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "data", "homes")); len(ents) != 0 {
		t.Errorf("rejected requests made homes: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "x")); err == nil {
		t.Errorf("a hostile name made a directory outside the data dir")
	}
}

func TestAccountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir)
	e.putAccount("alice", "pw-alice", 77)
	e.putAccount("bob", "pw-bob", 0)
	e.adminDo("DELETE", "/admin/v1/accounts/bob", "")
	e.web.Close()
	e.admin.Close()
	e.srv.Close()

	b, err := os.ReadFile(filepath.Join(dir, "data", "accounts.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("pw-alice")) || !bytes.Contains(b, []byte("$argon2id$v=19$m=64,t=1,p=1$")) {
		t.Errorf("accounts.json does not hold an argon2id hash only: %s", b)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "data", ".accounts-*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}

	e2 := newEnv(t, dir)
	if code, _ := e2.dav("alice", "pw-alice", "PROPFIND", "/", nil, "Depth", "1"); code != http.StatusMultiStatus {
		t.Errorf("alice after restart: %d, want 207", code)
	}
	if code, _ := e2.dav("bob", "pw-bob", "PROPFIND", "/", nil, "Depth", "1"); code != http.StatusUnauthorized {
		t.Errorf("deleted bob after restart: %d, want 401", code)
	}
	_, body := e2.adminDo("GET", "/admin/v1/accounts", "")
	if !strings.Contains(body, `"username":"alice","quota_bytes":77`) || strings.Contains(body, "bob") {
		t.Errorf("list after restart: %s", body)
	}
}

func TestPasswordChange(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "old", 0)
	if code, _ := e.dav("alice", "old", "PROPFIND", "/", nil, "Depth", "0"); code != http.StatusMultiStatus {
		t.Fatalf("old password: %d", code)
	}
	e.putAccount("alice", "new", 0)
	if code, _ := e.dav("alice", "old", "PROPFIND", "/", nil, "Depth", "0"); code != http.StatusUnauthorized {
		t.Errorf("cached old password after change: %d, want 401", code)
	}
	if code, _ := e.dav("alice", "new", "PROPFIND", "/", nil, "Depth", "0"); code != http.StatusMultiStatus {
		t.Errorf("new password: %d, want 207", code)
	}
	// Quota only: an empty password keeps the login.
	if code, body := e.adminDo("PUT", "/admin/v1/accounts/alice", `{"quota_bytes":5}`); code != http.StatusNoContent {
		t.Fatalf("quota-only PUT: %d %s", code, body)
	}
	if code, _ := e.dav("alice", "new", "PROPFIND", "/", nil, "Depth", "0"); code != http.StatusMultiStatus {
		t.Errorf("after quota-only PUT: %d, want 207", code)
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("correct horse", DefaultArgon2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q lacks the default parameters", h)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{{"correct horse", true}, {"correct horse ", false}, {"", false}} {
		if got, err := verifyPassword(h, tc.pw); got != tc.want || err != nil {
			t.Errorf("verify(%q) = %v, %v; want %v", tc.pw, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5"} {
		if _, err := verifyPassword(bad, "x"); err == nil {
			t.Errorf("verify of %q: no error", bad)
		}
	}
}
