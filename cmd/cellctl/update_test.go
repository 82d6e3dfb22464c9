package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/image"
)

func TestKeygenAndUpdateBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a root file system")
	}
	if err := image.CheckHost("amd64"); err != nil {
		t.Skipf("cannot build a root here: %v", err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	cfg := `{"hostname":"cell","target":"amd64","version":"1.0.0",
	  "packages":[{"path":"github.com/pic-cell/cell/firmware/qemu/testdata/healthd"}],
	  "settings":{"root_mib":64,"containerd":false}}`
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	stem := filepath.Join(dir, "k")
	var out bytes.Buffer
	c := &CLI{Stdout: &out, Stderr: io.Discard}
	if err := c.Run([]string{"keygen", "-o", stem, "-config", cfgPath}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(stem + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v, want mode 0600", fi, err)
	}
	if err := c.Run([]string{"keygen", "-o", stem, "-config", cfgPath}); err == nil {
		t.Error("keygen overwrote an existing key without -force")
	}
	pub, _ := os.ReadFile(stem + ".pub")
	got, err := image.LoadConfig(cfgPath)
	if err != nil || got.UpdatePublicKey != strings.TrimSpace(string(pub)) {
		t.Fatalf("config.json key %q, want %q (%v)", got.UpdatePublicKey, pub, err)
	}

	b := filepath.Join(dir, "u.bundle")
	if err := c.Run([]string{"update", "build", "-config", cfgPath, "-key", stem + ".key", "-version", "1.1.0", "-min-version", "1.0", "-o", b}); err != nil {
		t.Fatal(err)
	}
	k, _ := bundle.ParsePublicKey(got.UpdatePublicKey)
	f, _ := os.Open(b)
	defer f.Close()
	m, err := bundle.Verify(f, bundle.Expect{Key: k, Target: "amd64", Running: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.1.0" || m.MinVersion != "1.0" || len(m.Parts) != 1 || m.Parts[0].Size < 1<<20 {
		t.Errorf("manifest %+v", m)
	}

	// -kernel: the bundle carries go.mod's kernel and its command line too.
	kb := filepath.Join(dir, "k.bundle")
	out.Reset()
	if err := c.Run([]string{"update", "build", "-config", cfgPath, "-key", stem + ".key", "-version", "1.1.1", "-kernel", "-o", kb}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "root and kernel") {
		t.Errorf("update build -kernel said %q", out.String())
	}
	kf, _ := os.Open(kb)
	defer kf.Close()
	km, err := bundle.Verify(kf, bundle.Expect{Key: k, Target: "amd64", Running: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	boot := map[string]int64{}
	for _, p := range km.BootParts() {
		boot[p.BootPath()] = p.Size
	}
	if len(boot) != 2 || boot["vmlinuz"] < 1<<20 || boot["cmdline.txt"] == 0 {
		t.Errorf("kernel bundle's boot files %v, want vmlinuz and cmdline.txt", boot)
	}

	// A key the config does not trust is refused at build time.
	other := filepath.Join(dir, "other")
	c.Run([]string{"keygen", "-o", other, "-config", ""})
	err = c.Run([]string{"update", "build", "-config", cfgPath, "-key", other + ".key", "-version", "1.2.0", "-o", b})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("build with an untrusted key: %v", err)
	}
}

// fakeCell is the API surface update push talks to.
type fakeCell struct {
	mu       sync.Mutex
	received int
	polls    int
	csrfOK   bool
}

func (f *fakeCell) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.Method + " " + r.URL.Path {
	case "POST /api/auth/login":
		var in struct{ Username, Password string }
		json.NewDecoder(r.Body).Decode(&in)
		if in.Password != "pw" {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"code":"bad_credentials","message":"wrong password"}}`)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "pic_session", Value: "s1", Path: "/"})
		io.WriteString(w, `{}`)
	case "GET /api/auth/csrf-token":
		io.WriteString(w, `{"token":"t1"}`)
	case "GET /api/system/update":
		f.polls++
		// Before the push: an older committed update. After: pending, then the
		// new version committed.
		switch {
		case f.received == 0:
			io.WriteString(w, `{"running_version":"1.0.0","root_slot":2,"update":{"phase":"committed","version":"1.0.0"}}`)
		case f.polls < 3:
			io.WriteString(w, `{"running_version":"1.0.0","root_slot":2,"update":{"phase":"pending","version":"1.1.0"}}`)
		default:
			io.WriteString(w, `{"running_version":"1.1.0","root_slot":3,"update":{"phase":"committed","version":"1.1.0"}}`)
		}
	case "POST /api/system/update":
		f.csrfOK = r.Header.Get("X-CSRF-Token") == "t1"
		n, _ := io.Copy(io.Discard, r.Body)
		f.received = int(n)
		f.polls = 0
		w.WriteHeader(202)
		io.WriteString(w, `{"accepted":true,"version":"1.1.0"}`)
	default:
		w.WriteHeader(404)
	}
}

func TestUpdatePushWaitsForThePushedVersion(t *testing.T) {
	fc := &fakeCell{}
	srv := httptest.NewServer(fc)
	defer srv.Close()
	b := filepath.Join(t.TempDir(), "x.bundle")
	os.WriteFile(b, bytes.Repeat([]byte("b"), 3<<20), 0o644)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("pw\n"), 0o600)
	var stdout, stderr bytes.Buffer
	c := &CLI{Stdout: &stdout, Stderr: &stderr}
	if err := c.Run([]string{"update", "push", "-device", srv.URL, "-bundle", b, "-password-file", pw, "-wait", "1m"}); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if fc.received != 3<<20 || !fc.csrfOK {
		t.Errorf("cell received %d bytes (csrf ok: %v), want the whole bundle with the token", fc.received, fc.csrfOK)
	}
	if !strings.Contains(stdout.String(), "updated: version 1.1.0 runs from root slot 3") {
		t.Errorf("output %q", stdout.String())
	}
	if !strings.Contains(stderr.String(), "100%") {
		t.Errorf("no progress shown: %q", stderr.String())
	}

	// Wrong password: refused with the API's message, nothing sent.
	fc.received = 0
	os.WriteFile(pw, []byte("nope\n"), 0o600)
	err := c.Run([]string{"update", "push", "-device", srv.URL, "-bundle", b, "-password-file", pw})
	if err == nil || !strings.Contains(err.Error(), "wrong password") || fc.received != 0 {
		t.Errorf("wrong password: %v (received %d)", err, fc.received)
	}
}
