package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLogsHoldNoSecrets drives logins, failures, admin calls with right and
// wrong tokens at debug level and reads every log line for a secret.
func TestLogsHoldNoSecrets(t *testing.T) {
	dir := t.TempDir()
	// The handler serializes its writes, and the log is read only once the
	// servers are closed (Close waits for the requests): a plain buffer.
	var logs bytes.Buffer
	tokenPath := filepath.Join(dir, "token")
	os.WriteFile(tokenPath, []byte(testToken), 0o600)
	now := time.Unix(1800000000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, err := New(Config{
		DataDir: filepath.Join(dir, "data"), TokenFile: tokenPath, Argon2: testArgon2, Now: clock,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e := &env{t: t, dir: dir, srv: srv, web: httptest.NewServer(srv.Handler()), admin: httptest.NewServer(srv.AdminHandler())}
	defer e.web.Close()
	defer e.admin.Close()

	const pw, wrongPW, wrongToken = "Correct-Horse-77", "Wrong-Guess-99", "not-the-token-123"
	e.putAccount("alice", pw, 10)
	e.dav("alice", pw, "PUT", "/a", strings.NewReader("0123456789abc"))
	for i := 0; i < maxFailures+2; i++ {
		e.dav("alice", wrongPW, "GET", "/a", nil)
	}
	req, _ := http.NewRequest("GET", e.admin.URL+"/admin/v1/accounts", nil)
	req.Header.Set("Authorization", "Bearer "+wrongToken)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	e.adminDo("PUT", "/admin/v1/accounts/Bad", `{"password":"`+pw+`"}`)
	e.adminDo("DELETE", "/admin/v1/accounts/alice", "")

	// The throttle lifts once the failures are a minute old.
	e.putAccount("alice", pw, 0)
	for i := 0; i < maxFailures; i++ {
		e.dav("alice", wrongPW, "GET", "/", nil)
	}
	if code, _ := e.dav("alice", pw, "PROPFIND", "/", nil, "Depth", "0"); code != http.StatusTooManyRequests {
		t.Errorf("throttled: %d, want 429", code)
	}
	mu.Lock()
	now = now.Add(failureWindow)
	mu.Unlock()
	if code, _ := e.dav("alice", pw, "PROPFIND", "/", nil, "Depth", "0"); code != http.StatusMultiStatus {
		t.Errorf("a minute later: %d, want 207", code)
	}

	e.web.Close()
	e.admin.Close()
	out := logs.String()
	if !strings.Contains(out, "login refused") || !strings.Contains(out, "account deleted") {
		t.Fatalf("the logs lack the events looked for:\n%s", out)
	}
	for _, secret := range []string{pw, wrongPW, testToken, wrongToken, "argon2id"} {
		if strings.Contains(out, secret) {
			t.Errorf("the logs contain %q:\n%s", secret, out)
		}
	}
}
