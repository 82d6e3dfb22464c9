package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/storage"
)

// These tests run the real daemon binary: built with `go build`, started on a free
// loopback port over a temporary data directory, driven over HTTP like a client.

// buildDaemon compiles this package into a temporary directory.
func buildDaemon(t *testing.T) string { return buildCommand(t, ".", "cell") }

// buildCommand compiles the command in pkg (a path `go build` takes) to a temporary
// file named name.
func buildCommand(t *testing.T, pkg, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the daemon: skipped in -short mode")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the daemon")
	}
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(goBin, "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// daemon is a running bin/cell.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	done chan struct{} // closed when the process has exited; err is then set
	err  error

	mu    sync.Mutex
	lines []string // its stderr
}

var listenRe = regexp.MustCompile(`serving .*listen=(\S+)`)

// startDaemon runs bin on dataDir and waits until it serves.
func startDaemon(t *testing.T, bin, dataDir string) *daemon {
	t.Helper()
	d := &daemon{t: t, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "-data", dataDir, "-listen", "127.0.0.1:0")
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.lines = append(d.lines, line)
			d.mu.Unlock()
			if m := listenRe.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case a := <-addr:
		d.url = "http://" + a
	case <-d.done:
		t.Fatalf("the daemon exited before serving: %v\n%s", d.err, d.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not serve within 30s\n%s", d.log())
	}
	return d
}

// log is the daemon's stderr so far (its last 40 lines).
func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lines
	if len(l) > 40 {
		l = l[len(l)-40:]
	}
	return strings.Join(l, "\n")
}

// wait waits for the process to exit and returns how it ended.
func (d *daemon) wait(timeout time.Duration) error {
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		d.t.Fatalf("the daemon did not exit within %v\n%s", timeout, d.log())
		return nil
	}
}

// newClient is a client of the daemon at base with room for many concurrent
// requests.
func newClient(t *testing.T, base string) *client.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 0}
	t.Cleanup(tr.CloseIdleConnections)
	return client.New(base, client.WithTransport(tr), client.WithTimeout(60*time.Second))
}

const adminPassword = "correct horse battery"

// setUp completes the wizard the way the README does, with the setup code the
// daemon made in dataDir.
func setUp(t *testing.T, c *client.Client, dataDir string) {
	t.Helper()
	code, err := os.ReadFile(filepath.Join(dataDir, "setup-code"))
	if err != nil {
		t.Fatalf("the daemon's setup code: %v", err)
	}
	c.UseSetupCode(strings.TrimSpace(string(code)))
	steps := []struct {
		step string
		data map[string]any
	}{
		{"admin", map[string]any{"username": "admin", "password": adminPassword}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
		{"network", map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24"}},
	}
	for _, s := range steps {
		if _, err := c.SetupStep(t.Context(), s.step, s.data); err != nil {
			t.Fatalf("setup step %s: %v", s.step, err)
		}
	}
	if _, err := c.CompleteSetup(t.Context()); err != nil {
		t.Fatalf("complete setup: %v", err)
	}
}

// logIn logs in as the admin; the client fetches the CSRF token.
func logIn(t *testing.T, c *client.Client) {
	t.Helper()
	if err := c.Login(t.Context(), "admin", adminPassword); err != nil {
		t.Fatalf("log in: %v", err)
	}
}

// startSetUp builds and starts a daemon on a new data directory, completes setup
// and logs a client in.
func startSetUp(t *testing.T) (bin, dir string, d *daemon, c *client.Client) {
	t.Helper()
	bin = buildDaemon(t)
	dir = t.TempDir()
	d = startDaemon(t, bin, dir)
	c = newClient(t, d.url)
	setUp(t, c, dir)
	logIn(t, c)
	return bin, dir, d, c
}

// TestCrashDuringWrites kills the daemon with SIGKILL while 1,000 concurrent config
// writes are under way and checks that a restart on the same data directory serves
// again with every acknowledged write in the audit log and the chain intact.
func TestCrashDuringWrites(t *testing.T) {
	bin, dir, d, c := startSetUp(t)
	ctx := t.Context()

	const (
		writes  = 1000
		workers = 64
		killAt  = 300 // acknowledgements before the kill
	)
	var (
		acked    [writes]bool
		nAcked   atomic.Int32
		nOther   atomic.Int32 // answered, but not 200
		killOnce sync.Once
		killed   = make(chan struct{})
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				_, err := c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": fmt.Sprintf("n%d", i)}})
				var refused *client.Error
				switch {
				case err == nil:
					acked[i] = true
					if nAcked.Add(1) >= killAt {
						killOnce.Do(func() {
							d.cmd.Process.Signal(syscall.SIGKILL)
							close(killed)
						})
					}
				case errors.As(err, &refused):
					nOther.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	for i := range writes {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("all %d writes were done before %d were acknowledged (%d acknowledged, %d refused): the kill never happened", writes, killAt, nAcked.Load(), nOther.Load())
	}
	err := d.wait(10 * time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the daemon ended with %v, want killed by SIGKILL", err)
	}
	if nOther.Load() != 0 {
		t.Errorf("%d writes were answered with a status other than 200 before the kill", nOther.Load())
	}
	t.Logf("%d of %d writes acknowledged before and around the kill, in %v", nAcked.Load(), writes, time.Since(start).Round(time.Millisecond))

	// Restart on the same data directory: it runs bbolt's consistency check first.
	d2 := startDaemon(t, bin, dir)
	c2 := newClient(t, d2.url)
	logIn(t, c2)

	audit, err := c2.Audit(ctx, client.AuditQuery{Action: "config.update", Limit: 10000})
	if err != nil {
		t.Fatalf("GET /api/audit: %v", err)
	}
	logged := map[string]bool{}
	for _, e := range audit.Entries {
		if e.Result == "ok" {
			logged[e.Details["cell.name"]] = true
		}
	}
	missing := 0
	for i, ok := range acked {
		if ok && !logged[fmt.Sprintf("n%d", i)] {
			if missing < 10 {
				t.Errorf("write n%d was acknowledged but has no audit entry after the restart", i)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d acknowledged writes have no audit entry", missing)
	}
	if len(logged) < int(nAcked.Load()) {
		t.Errorf("the audit log holds %d successful config updates, fewer than the %d acknowledged", len(logged), nAcked.Load())
	}
	for name := range logged {
		var i int
		if _, err := fmt.Sscanf(name, "n%d", &i); err != nil || fmt.Sprintf("n%d", i) != name || i >= writes {
			t.Errorf("audit entry names %q, which no client sent", name)
		}
	}

	cfg, err := c2.Config(ctx)
	if err != nil {
		t.Fatalf("GET /api/config: %v", err)
	}
	var i int
	if _, err := fmt.Sscanf(cfg.Cell.Name, "n%d", &i); err != nil || fmt.Sprintf("n%d", i) != cfg.Cell.Name || i >= writes {
		t.Errorf("config cell.name after the restart = %q, want one of the names sent (n0..n%d)", cfg.Cell.Name, writes-1)
	}

	if !logged[cfg.Cell.Name] {
		// PUT /api/config stores the config and its audit entry in one transaction,
		// so whatever change survived has its entry.
		t.Errorf("the stored config name %q has no audit entry", cfg.Cell.Name)
	}

	v, err := c2.AuditVerify(ctx)
	if err != nil {
		t.Fatalf("GET /api/audit/verify: %v", err)
	}
	if !v.OK || v.Entries < uint64(len(logged)) {
		t.Errorf("audit verify after the crash: ok=%v entries=%d first_bad_seq=%v reason=%q; want ok with at least %d entries", v.OK, v.Entries, v.FirstBadSeq, v.Reason, len(logged))
	}

	// The chain goes on after the crash.
	if _, err := c2.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "after"}}); err != nil {
		t.Fatalf("PUT /api/config: %v", err)
	}
	if v, err = c2.AuditVerify(ctx); err != nil {
		t.Fatalf("GET /api/audit/verify: %v", err)
	}
	if !v.OK {
		t.Errorf("audit verify after a write following the restart: ok=false first_bad_seq=%v reason=%q", v.FirstBadSeq, v.Reason)
	}
	t.Logf("after the restart: %d audit entries, %d config updates logged, config name %q", v.Entries, len(logged), cfg.Cell.Name)

	// The exports of the crashed and restarted cell verify offline with its key, and
	// a changed byte in one is caught.
	cellctl := buildCommand(t, "github.com/pic-cell/cell/cmd/cellctl", "cellctl")
	exportDir := t.TempDir()
	verify := func(name string, data []byte) (string, error) {
		path := filepath.Join(exportDir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(cellctl, "audit", "verify", "-pubkey", v.PublicKey, path).CombinedOutput()
		return string(out), err
	}
	for _, format := range []string{"csv", "json"} {
		raw, err := c2.AuditExport(ctx, format)
		if err != nil {
			t.Fatalf("export %s: %v", format, err)
		}
		if out, err := verify("audit."+format, raw); err != nil || !strings.Contains(out, "ok: ") {
			t.Errorf("cellctl audit verify of the %s export: %v\n%s", format, err, out)
		}
		tampered := bytes.Replace(raw, []byte(`n1`), []byte(`m1`), 1)
		if bytes.Equal(tampered, raw) {
			t.Fatalf("the %s export names no n1...: nothing to tamper with", format)
		}
		out, err := verify("tampered."+format, tampered)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(out, "BAD: first bad entry: seq ") {
			t.Errorf("cellctl audit verify of a tampered %s export: %v, want a non-zero exit naming the entry\n%s", format, err, out)
		}
	}
}

// TestSIGTERMFinishesInFlight sends SIGTERM while a request is still uploading its
// body: the daemon stops accepting connections, lets that request finish with 200,
// exits 0, and leaves a database that reopens with the change and a checkpoint that
// covers its audit entry.
func TestSIGTERMFinishesInFlight(t *testing.T) {
	_, dir, d, c := startSetUp(t)

	pr, pw := io.Pipe()
	type answer struct {
		client.Response
		err error
	}
	res := make(chan answer, 1)
	go func() {
		var a answer
		a.err = c.Do(context.Background(), "PUT", "/api/config", pr, &a.Response)
		res <- a
	}()
	if _, err := pw.Write([]byte(`{"cell":`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the headers are in; the handler waits for the body
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Shutdown closes the listener at once; the process stays for the request.
	deadline := time.Now().Add(5 * time.Second)
	for {
		fresh := client.New(d.url, client.WithTransport(&http.Transport{DisableKeepAlives: true}), client.WithTimeout(time.Second))
		var answered *client.Error
		if _, err := fresh.Health(context.Background()); err != nil && !errors.As(err, &answered) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon still accepts connections 5s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case <-d.done:
		t.Fatalf("the daemon exited (%v) while a request was in flight", d.err)
	default:
	}
	if _, err := pw.Write([]byte(`{"name":"slow"}}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	a := <-res
	if a.err != nil || a.Status != http.StatusOK || !strings.Contains(string(a.Body), `"name":"slow"`) {
		t.Fatalf("in-flight PUT /api/config: status %d, err %v, body %s; want 200 with the new name", a.Status, a.err, a.Body)
	}
	if err := d.wait(25 * time.Second); err != nil {
		t.Fatalf("the daemon exited with %v after SIGTERM, want status 0\n%s", err, d.log())
	}

	// The database reopens, passes the check and holds the change and its audit entry.
	db, err := storage.Open(dir)
	if err != nil {
		t.Fatalf("reopen after SIGTERM: %v", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Fatalf("consistency check after SIGTERM: %v", err)
	}
	book, _ := logs.Open(logs.Options{})
	cl, err := cell.New(cell.Options{DB: db, Logs: book, HashMemoryKiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cl.Settings.Config()
	if err != nil || cfg.Cell().Name != "slow" {
		t.Errorf("stored config name = %q (err %v), want \"slow\"", cfg.Cell().Name, err)
	}
	entries, _, err := cl.Audit.Query(storage.Filter{Action: "config.update"})
	if err != nil || len(entries) != 1 || entries[0].Details["cell.name"] != "slow" || entries[0].Result != "ok" {
		t.Errorf("config.update audit entries = %+v (err %v), want one, ok, naming \"slow\"", entries, err)
	}
	v, err := cl.Audit.Verify()
	if err != nil || !v.OK {
		t.Fatalf("audit verify after SIGTERM: %+v, err %v", v, err)
	}
	if v.Checkpoint == nil || v.Checkpoint.Size != v.Entries {
		t.Errorf("last checkpoint %+v after a clean stop, want one covering all %d entries", v.Checkpoint, v.Entries)
	}
}
