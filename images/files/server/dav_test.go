package server

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// chunked hides a body's length, so the upload is not refused up front and
// the quota is met while writing.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestDAVBasics(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 0)
	steps := []struct {
		method, path, body string
		hdr                []string
		want               int
	}{
		{"MKCOL", "/docs", "", nil, http.StatusCreated},
		{"PUT", "/docs/a.txt", "hello", nil, http.StatusCreated},
		{"PUT", "/nodir/a.txt", "x", nil, http.StatusConflict},
		{"GET", "/docs/a.txt", "", nil, http.StatusOK},
		{"MOVE", "/docs/a.txt", "", []string{"Destination", "/docs/b.txt"}, http.StatusCreated},
		{"GET", "/docs/a.txt", "", nil, http.StatusNotFound},
		{"COPY", "/docs/b.txt", "", []string{"Destination", "/c.txt"}, http.StatusCreated},
		{"PROPFIND", "/docs/", "", []string{"Depth", "1"}, http.StatusMultiStatus},
		{"DELETE", "/docs/b.txt", "", nil, http.StatusNoContent},
		{"PUT", "/shared/s.txt", "for all", nil, http.StatusCreated},
		{"DELETE", "/shared", "", nil, http.StatusMethodNotAllowed},
		{"DELETE", "/", "", nil, http.StatusMethodNotAllowed},
		{"MOVE", "/shared", "", []string{"Destination", "/mine"}, http.StatusForbidden},
		{"MKCOL", "/shared", "", nil, http.StatusMethodNotAllowed},
	}
	for _, s := range steps {
		var body io.Reader
		if s.body != "" {
			body = strings.NewReader(s.body)
		}
		if code, resp := e.dav("alice", "pw-a", s.method, s.path, body, s.hdr...); code != s.want {
			t.Errorf("%s %s: %d, want %d (%s)", s.method, s.path, code, s.want, resp)
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.dir, "data", "homes", "alice", "c.txt")); string(b) != "hello" {
		t.Errorf("homes/alice/c.txt = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "data", "shared")); err != nil {
		t.Errorf("the shared folder is gone: %v", err)
	}
	_, list := e.dav("alice", "pw-a", "PROPFIND", "/", nil, "Depth", "1")
	for _, want := range []string{"<D:href>/shared/</D:href>", "<D:href>/c.txt</D:href>", "<D:href>/docs/</D:href>"} {
		if !strings.Contains(list, want) {
			t.Errorf("PROPFIND / lacks %s:\n%s", want, list)
		}
	}
	if code, got := e.dav("alice", "pw-a", "GET", "/shared/s.txt", nil); code != 200 || got != "for all" {
		t.Errorf("GET /shared/s.txt = %d %q", code, got)
	}
}

func TestDAVIsolation(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 0)
	e.putAccount("bob", "pw-b", 0)
	const secret = "alice's secret"
	if code, _ := e.dav("alice", "pw-a", "PUT", "/secret.txt", strings.NewReader(secret)); code != http.StatusCreated {
		t.Fatalf("PUT: %d", code)
	}
	// An escape from bob's home planted on the volume (WebDAV cannot make
	// links): the os.Root refuses to follow it.
	if err := os.Symlink("../alice", filepath.Join(e.dir, "data", "homes", "bob", "link")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"/secret.txt",
		"/../alice/secret.txt",
		"/%2e%2e/alice/secret.txt",
		"/shared/../../homes/alice/secret.txt",
		"/shared/%2e%2e/%2e%2e/homes/alice/secret.txt",
		"/..%2falice%2fsecret.txt",
		"/link/secret.txt",
		"/alice/secret.txt",
	} {
		code, body := e.dav("bob", "pw-b", "GET", p, nil)
		if strings.Contains(body, secret) || code == http.StatusOK {
			t.Errorf("bob GET %s: %d %q", p, code, body)
		}
	}
	// Nor can bob write there.
	e.dav("bob", "pw-b", "PUT", "/%2e%2e/alice/secret.txt", strings.NewReader("overwritten"))
	e.dav("bob", "pw-b", "DELETE", "/link/secret.txt", nil)
	if b, _ := os.ReadFile(filepath.Join(e.dir, "data", "homes", "alice", "secret.txt")); string(b) != secret {
		t.Errorf("alice's file = %q after bob's attempts", b)
	}
	// And alice with bob's name is refused.
	if code, _ := e.dav("bob", "pw-a", "GET", "/", nil); code != http.StatusUnauthorized {
		t.Errorf("bob with alice's password: %d, want 401", code)
	}
}

func TestDAVAuth(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 0)
	for _, tc := range []struct{ name, user, pass string }{
		{"none", "", ""},
		{"wrong password", "alice", "nope"},
		{"unknown user", "mallory", "pw-a"},
		{"empty password", "alice", ""},
	} {
		req, _ := http.NewRequest("PROPFIND", e.web.URL+"/", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `realm="files"`) {
			t.Errorf("%s: %d %q, want 401 with realm files", tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

func TestDAVThrottle(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 0)
	for i := 0; i < maxFailures; i++ {
		if code, _ := e.dav("alice", "wrong", "GET", "/", nil); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i+1, code)
		}
	}
	if code, _ := e.dav("alice", "pw-a", "GET", "/", nil); code != http.StatusTooManyRequests {
		t.Errorf("after %d failures, the right password: %d, want 429", maxFailures, code)
	}
	if code, _ := e.dav("alice", "pw-a", "PROPFIND", "/", nil, "Depth", "0", "X-Forwarded-For", "198.18.0.9"); code != http.StatusMultiStatus {
		t.Errorf("from another client address: %d, want 207", code)
	}
}

func TestDAVQuota(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 100)
	home := filepath.Join(e.dir, "data", "homes", "alice")
	if code, _ := e.dav("alice", "pw-a", "PUT", "/keep.txt", strings.NewReader(strings.Repeat("k", 60))); code != http.StatusCreated {
		t.Fatalf("PUT within quota: %d", code)
	}
	if code, _ := e.dav("alice", "pw-a", "PUT", "/shared/big", strings.NewReader(strings.Repeat("s", 500))); code != http.StatusCreated {
		t.Fatalf("PUT to shared (no quota): %d", code)
	}
	tests := []struct {
		name, method, path string
		body               io.Reader
		hdr                []string
	}{
		{"known length", "PUT", "/big.txt", strings.NewReader(strings.Repeat("x", 50)), nil},
		{"chunked", "PUT", "/big.txt", chunked{strings.NewReader(strings.Repeat("x", 50))}, nil},
		{"chunked overwrite", "PUT", "/keep.txt", chunked{strings.NewReader(strings.Repeat("x", 101))}, nil},
		{"copy from shared", "COPY", "/shared/big", nil, []string{"Destination", "/big.txt"}},
		{"move from shared", "MOVE", "/shared/big", nil, []string{"Destination", "/big.txt"}},
	}
	for _, tc := range tests {
		code, body := e.dav("alice", "pw-a", tc.method, tc.path, tc.body, tc.hdr...)
		if code != http.StatusInsufficientStorage {
			t.Errorf("%s: %d %q, want 507", tc.name, code, body)
		}
		if _, err := os.Stat(filepath.Join(home, "big.txt")); !os.IsNotExist(err) {
			t.Errorf("%s: big.txt exists after the refusal (%v)", tc.name, err)
			os.Remove(filepath.Join(home, "big.txt"))
		}
	}
	if b, _ := os.ReadFile(filepath.Join(home, "keep.txt")); string(b) != strings.Repeat("k", 60) {
		t.Errorf("keep.txt changed by a refused overwrite: %q", b)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.dir, "data", "tmp")); len(tmp) != 0 {
		t.Errorf("uploads left in tmp/: %v", tmp)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "data", "shared", "big")); err != nil {
		t.Errorf("the refused move lost the shared file: %v", err)
	}
	// Overwriting with a file that fits counts only the difference; deleting
	// gives the space back.
	if code, _ := e.dav("alice", "pw-a", "PUT", "/keep.txt", strings.NewReader(strings.Repeat("n", 90))); code != http.StatusCreated {
		t.Errorf("overwrite within quota: %d, want 201", code)
	}
	e.dav("alice", "pw-a", "DELETE", "/keep.txt", nil)
	if code, _ := e.dav("alice", "pw-a", "PUT", "/new.txt", chunked{strings.NewReader(strings.Repeat("y", 100))}); code != http.StatusCreated {
		t.Errorf("PUT of the whole quota after DELETE: %d, want 201", code)
	}
	_, list := e.adminDo("GET", "/admin/v1/accounts", "")
	if !strings.Contains(list, `"usage_bytes":100`) {
		t.Errorf("usage after the uploads: %s", list)
	}
}

// TestParallelUploadsKeepTheQuota: uploads racing for the last bytes of a
// quota cannot together pass it (each write reserves its bytes first).
func TestParallelUploadsKeepTheQuota(t *testing.T) {
	e := newEnv(t, "")
	const quota, each, n = 1000, 300, 8
	e.putAccount("alice", "pw-a", quota)
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			code, _ := e.dav("alice", "pw-a", "PUT", fmt.Sprintf("/f%d", i), chunked{strings.NewReader(strings.Repeat("z", each))})
			codes <- code
		}()
	}
	created := 0
	for i := 0; i < n; i++ {
		switch c := <-codes; c {
		case http.StatusCreated:
			created++
		case http.StatusInsufficientStorage:
		default:
			t.Errorf("upload: %d, want 201 or 507", c)
		}
	}
	size, err := dirSize(filepath.Join(e.dir, "data", "homes", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if size > quota || created != quota/each || size != int64(created*each) {
		t.Errorf("%d uploads of %d bytes created, home holds %d bytes; want %d created, at most %d bytes", created, each, size, quota/each, quota)
	}
}

// TestNoTempDir: the root file system is read-only in the container, so
// nothing may use os.TempDir.
func TestNoTempDir(t *testing.T) {
	dir := t.TempDir() // before TMPDIR points nowhere
	t.Setenv("TMPDIR", "/nonexistent/tmp")
	e := newEnv(t, dir)
	e.putAccount("alice", "pw-a", 0)
	if code, _ := e.dav("alice", "pw-a", "PUT", "/a", chunked{strings.NewReader("data")}); code != http.StatusCreated {
		t.Errorf("PUT with no usable TMPDIR: %d, want 201", code)
	}
	if code, _ := e.dav("alice", "pw-a", "COPY", "/a", nil, "Destination", "/shared/a"); code != http.StatusCreated {
		t.Errorf("COPY with no usable TMPDIR: %d, want 201", code)
	}
}

func TestHomeRemovedBehindTheService(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 0)
	if err := os.RemoveAll(filepath.Join(e.dir, "data", "homes", "alice")); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.dav("alice", "pw-a", "PUT", "/a", strings.NewReader("x")); code != http.StatusCreated {
		t.Errorf("PUT after the home vanished: %d, want 201", code)
	}
}
