package accounts_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pic-cell/cell/images/accounts"
	"github.com/pic-cell/cell/images/files/server"
)

const token = "admin-token-for-tests"

// newFiles runs the real files service in-process and returns a client of
// its admin endpoint, the admin URL and the WebDAV URL.
func newFiles(t *testing.T) (*accounts.Client, string, string) {
	t.Helper()
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenPath, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		DataDir: filepath.Join(dir, "data"), TokenFile: tokenPath,
		Argon2: server.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(srv.AdminHandler())
	web := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		admin.Close()
		web.Close()
		srv.Close()
	})
	return accounts.New(admin.URL, token, admin.Client()), admin.URL, web.URL
}

func TestClientLifecycle(t *testing.T) {
	c, _, webURL := newFiles(t)
	ctx := context.Background()
	if err := c.Health(ctx, webURL); err != nil {
		t.Fatalf("Health: %v", err)
	}
	if got, err := c.List(ctx); err != nil || len(got) != 0 {
		t.Fatalf("List of a fresh service = %v, %v", got, err)
	}
	for _, a := range []struct {
		name, pw string
		quota    int64
	}{{"alice", "pw-alice", 1 << 20}, {"bob.smith", "pw-bob", 0}, {"alice", "pw-alice", 1 << 20}} {
		if err := c.Put(ctx, a.name, a.pw, a.quota); err != nil {
			t.Fatalf("Put %s: %v", a.name, err)
		}
	}
	// The account works on the WebDAV side.
	req, _ := http.NewRequest("PUT", webURL+"/f.txt", strings.NewReader("0123456789"))
	req.SetBasicAuth("alice", "pw-alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WebDAV PUT as alice: %d", resp.StatusCode)
	}
	got, err := c.List(ctx)
	want := []accounts.Account{{"alice", 1 << 20, 10}, {"bob.smith", 0, 0}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("List = %+v, %v; want %+v", got, err, want)
	}
	if err := c.Delete(ctx, "bob.smith"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if err := c.Delete(ctx, "bob.smith"); !errors.Is(err, accounts.ErrNotFound) {
		t.Errorf("Delete of an absent account = %v, want ErrNotFound", err)
	}
}

func TestClientErrors(t *testing.T) {
	c, adminURL, webURL := newFiles(t)
	ctx := context.Background()
	const pw = "hunter2-very-secret"
	for _, name := range []string{"../x", "a/b", "a\x00b", strings.Repeat("a", 4096), "Alice", ""} {
		err := c.Put(ctx, name, pw, 0)
		if !errors.Is(err, accounts.ErrRejected) {
			t.Errorf("Put(%.20q) = %v, want ErrRejected", name, err)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("error contains the password: %v", err)
		}
	}
	if err := c.Put(ctx, "alice", pw, -5); !errors.Is(err, accounts.ErrRejected) || strings.Contains(err.Error(), pw) {
		t.Errorf("Put with a negative quota = %v, want ErrRejected without the password", err)
	}

	// The WebDAV port wants Basic auth: its answer is no admin answer.
	if _, err := accounts.New(webURL, token, nil).List(ctx); err == nil {
		t.Errorf("List against the WebDAV port: no error")
	}

	wrong := accounts.New(adminURL, "wrong-token", nil)
	_, err := wrong.List(ctx)
	if !errors.Is(err, accounts.ErrUnauthorized) {
		t.Errorf("List with a wrong token = %v, want ErrUnauthorized", err)
	}
	if err != nil && strings.Contains(err.Error(), "wrong-token") {
		t.Errorf("error contains the token: %v", err)
	}

	down := accounts.New("http://127.0.0.1:1", token, nil)
	if err := down.Put(ctx, "alice", pw, 0); !errors.Is(err, accounts.ErrUnavailable) || strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), token) {
		t.Errorf("Put to nothing = %v, want ErrUnavailable without secrets", err)
	}
	if err := down.Health(ctx, "http://127.0.0.1:1"); !errors.Is(err, accounts.ErrUnavailable) {
		t.Errorf("Health of nothing = %v, want ErrUnavailable", err)
	}
}
