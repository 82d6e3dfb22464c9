package server

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCadaver checks a real WebDAV client against the service: cadaver
// (reading its commands from stdin, the login from ~/.netrc) lists a file
// PUT over HTTP, the shared folder, and fetches the file back.
func TestCadaver(t *testing.T) {
	bin, err := exec.LookPath("cadaver")
	if err != nil {
		t.Skip("cadaver is not installed")
	}
	e := newEnv(t, "")
	e.putAccount("alice", "pw-cadaver", 0)
	if code, _ := e.dav("alice", "pw-cadaver", "PUT", "/from-http.txt", strings.NewReader("via net/http\n")); code != 201 {
		t.Fatalf("PUT: %d", code)
	}
	u, _ := url.Parse(e.web.URL)
	home := t.TempDir()
	netrc := "machine " + u.Hostname() + "\nlogin alice\npassword pw-cadaver\n"
	if err := os.WriteFile(filepath.Join(home, ".netrc"), []byte(netrc), 0o600); err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(home, "got.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, e.web.URL+"/")
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Dir = home
	cmd.Stdin = strings.NewReader("ls\nget from-http.txt " + got + "\nmkcol made-by-cadaver\nquit\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cadaver: %v\n%s", err, out)
	}
	for _, want := range []string{"from-http.txt", "shared"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cadaver's ls lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(got); string(b) != "via net/http\n" {
		t.Errorf("cadaver's get = %q, %v\n%s", b, err, out)
	}
	if st, err := os.Stat(filepath.Join(e.dir, "data", "homes", "alice", "made-by-cadaver")); err != nil || !st.IsDir() {
		t.Errorf("cadaver's mkcol: %v\n%s", err, out)
	}
}
