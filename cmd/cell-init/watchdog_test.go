package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/release"
)

// fakeWatchdog is a watchdog driver: it counts feeds and refuses timeouts
// beyond max, as the Pi's bcm2835 refuses more than 15 s.
type fakeWatchdog struct {
	mu      sync.Mutex
	max     time.Duration
	timeout time.Duration
	feeds   int
	asked   []time.Duration
}

func (w *fakeWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.asked = append(w.asked, d)
	if w.max > 0 && d > w.max {
		return 0, unix.EINVAL
	}
	w.timeout = d
	return d, nil
}

func (w *fakeWatchdog) Keepalive() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.feeds++
	return nil
}

func (w *fakeWatchdog) fed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.feeds
}

// fakeCell is the cell as the feeder sees it: whether /health answers, and
// which programs have a process.
type fakeCell struct {
	answers bool
	running map[string]bool
}

func (c *fakeCell) probe(context.Context) error {
	if c.answers {
		return nil
	}
	return errors.New("connection refused")
}

func (c *fakeCell) procs() (map[string]bool, error) { return c.running, nil }

const testCell = "/user/cell"

// newTestFeeder is a feeder with the init's times, armed at t0.
func newTestFeeder(t *testing.T, cell *fakeCell, t0 time.Time) (*feeder, *fakeWatchdog, *bytes.Buffer) {
	t.Helper()
	dev := &fakeWatchdog{}
	var logBuf bytes.Buffer
	f := &feeder{
		dev: dev, probe: cell.probe, procs: cell.procs,
		watch: []string{testCell}, url: "http://127.0.0.1:3000/health",
		timeout: watchdogTimeout, grace: watchdogGrace, stale: watchdogStale, every: watchdogCheck,
		log: slog.New(slog.NewTextHandler(&logBuf, nil)),
	}
	f.start(t0)
	return f, dev, &logBuf
}

// steps runs checks every 5 s from..to (relative to t0) and returns the
// number of checks that fed.
func steps(f *feeder, dev *fakeWatchdog, t0 time.Time, from, to time.Duration) int {
	before := dev.fed()
	for d := from; d <= to; d += watchdogCheck {
		f.check(context.Background(), t0.Add(d))
	}
	return dev.fed() - before
}

func TestWatchdogFeedsDuringGrace(t *testing.T) {
	// Nothing answers and nothing runs: the boot is not done yet.
	cell := &fakeCell{}
	t0 := time.Now()
	f, dev, _ := newTestFeeder(t, cell, t0)
	n := steps(f, dev, t0, watchdogCheck, watchdogGrace-time.Second)
	if want := int((watchdogGrace - time.Second) / watchdogCheck); n != want {
		t.Errorf("fed %d times in the grace period, want every check (%d)", n, want)
	}
	if f.stopped != "" {
		t.Errorf("stopped during the grace period: %s", f.stopped)
	}
}

func TestWatchdogNeverAnsweredStopsAtGraceEnd(t *testing.T) {
	cell := &fakeCell{running: map[string]bool{testCell: true}}
	t0 := time.Now()
	f, dev, logBuf := newTestFeeder(t, cell, t0)
	steps(f, dev, t0, watchdogCheck, watchdogGrace-time.Second)
	fed := dev.fed()
	if f.check(context.Background(), t0.Add(watchdogGrace)) {
		t.Fatal("still fed after the grace period although the cell never answered")
	}
	if dev.fed() != fed {
		t.Error("the check that stopped the feeding fed the device")
	}
	if !strings.Contains(f.stopped, "did not answer") || !strings.Contains(f.stopped, "grace") {
		t.Errorf("reason %q, want it to say the cell did not answer within the grace period", f.stopped)
	}
	if !strings.Contains(logBuf.String(), "no longer fed") || !strings.Contains(logBuf.String(), "connection refused") {
		t.Errorf("the console does not say why feeding stopped:\n%s", logBuf)
	}
	// It stays stopped, even if the cell answers now.
	cell.answers = true
	if n := steps(f, dev, t0, watchdogGrace+watchdogCheck, watchdogGrace+time.Minute); n != 0 {
		t.Errorf("fed %d times after stopping", n)
	}
}

func TestWatchdogFeedsWhileTheCellAnswers(t *testing.T) {
	// The probe says "answered" for any status (healthProbe's test shows
	// that a 503 counts): a degraded cell is fed for an hour.
	cell := &fakeCell{answers: true, running: map[string]bool{testCell: true, "/gokrazy/dhcp": false}}
	t0 := time.Now()
	f, dev, _ := newTestFeeder(t, cell, t0)
	end := time.Hour
	n := steps(f, dev, t0, watchdogCheck, end)
	if want := int(end / watchdogCheck); n != want {
		t.Errorf("fed %d of %d checks of a live cell (stopped: %q)", n, want, f.stopped)
	}
}

func TestWatchdogStopsWhenTheCellStopsAnswering(t *testing.T) {
	cell := &fakeCell{answers: true, running: map[string]bool{testCell: true}}
	t0 := time.Now()
	f, dev, logBuf := newTestFeeder(t, cell, t0)
	steps(f, dev, t0, watchdogCheck, 10*time.Minute)
	// The cell hangs at 10 min: fed for watchdogStale more, then not.
	cell.answers = false
	hang := 10 * time.Minute
	n := steps(f, dev, t0, hang+watchdogCheck, hang+watchdogStale)
	if want := int(watchdogStale / watchdogCheck); n != want {
		t.Errorf("fed %d times in the %s after the last answer, want %d", n, watchdogStale, want)
	}
	if f.check(context.Background(), t0.Add(hang+watchdogStale+watchdogCheck)) {
		t.Fatalf("still fed %s after the last answer", watchdogStale+watchdogCheck)
	}
	if !strings.Contains(f.stopped, "has not answered") {
		t.Errorf("reason %q", f.stopped)
	}
	log := logBuf.String()
	if !strings.Contains(log, "does not answer") || !strings.Contains(log, "no longer fed") {
		t.Errorf("the console does not say when answers stopped and why feeding stopped:\n%s", log)
	}
}

func TestWatchdogShortSilenceIsForgiven(t *testing.T) {
	// The daemon restarts (gokrazy brings it back): 90 s without an answer
	// is less than watchdogStale.
	cell := &fakeCell{answers: true, running: map[string]bool{testCell: true}}
	t0 := time.Now()
	f, dev, _ := newTestFeeder(t, cell, t0)
	steps(f, dev, t0, watchdogCheck, 5*time.Minute)
	cell.answers = false
	steps(f, dev, t0, 5*time.Minute+watchdogCheck, 5*time.Minute+90*time.Second)
	cell.answers = true
	steps(f, dev, t0, 5*time.Minute+95*time.Second, 20*time.Minute)
	if f.stopped != "" {
		t.Errorf("stopped after a 90 s silence: %s", f.stopped)
	}
}

func TestWatchdogStopsWhenAProgramIsGone(t *testing.T) {
	cell := &fakeCell{answers: true, running: map[string]bool{testCell: true}}
	t0 := time.Now()
	f, dev, _ := newTestFeeder(t, cell, t0)
	steps(f, dev, t0, watchdogCheck, 10*time.Minute)

	// Crashing and restarted by gokrazy: seen at one check in six.
	for i, d := 0, 10*time.Minute+watchdogCheck; d <= 20*time.Minute; i, d = i+1, d+watchdogCheck {
		cell.running = map[string]bool{testCell: i%6 == 0}
		if !f.check(context.Background(), t0.Add(d)) {
			t.Fatalf("a program that gokrazy keeps restarting stopped the feeding: %s", f.stopped)
		}
	}
	// Gone for good (gokrazy stopped supervising it); the cell still
	// answers (another process serves /health in this fake).
	gone := 20 * time.Minute
	cell.running = map[string]bool{}
	n := steps(f, dev, t0, gone+watchdogCheck, gone+watchdogStale)
	if n == 0 {
		t.Error("stopped feeding at once when a program was missing from one check")
	}
	if f.check(context.Background(), t0.Add(gone+watchdogStale+watchdogCheck)) {
		t.Fatal("still fed when a supervised program had no process for longer than watchdogStale")
	}
	if !strings.Contains(f.stopped, testCell) || !strings.Contains(f.stopped, "no process") {
		t.Errorf("reason %q, want it to name the program", f.stopped)
	}
}

func TestWatchedPrograms(t *testing.T) {
	rel := &release.Release{Services: []release.Service{
		{Path: "/gokrazy/dhcp"}, {Path: "/gokrazy/ntp"}, {Path: "/user/containerd"}, {Path: "/user/cell", Args: []string{"-listen", ":3000"}},
	}}
	got := strings.Join(watchedPrograms(rel), " ")
	if got != "/user/containerd /user/cell" {
		t.Errorf("watched %q, want the release's own programs only", got)
	}
}

func TestArmTimeoutClamps(t *testing.T) {
	for _, tc := range []struct {
		max, want, every time.Duration
	}{
		{0, 60 * time.Second, 5 * time.Second},                   // i6300esb takes 60 s
		{15 * time.Second, 15 * time.Second, 5 * time.Second},    // the Pi's bcm2835
		{10 * time.Second, 7 * time.Second, 7 * time.Second / 3}, // 60 → 30 → 15 → 7
		{2 * time.Second, 0, 0},                                  // takes nothing from 60 s down to 3 s
	} {
		dev := &fakeWatchdog{max: tc.max}
		got, err := armTimeout(dev, watchdogTimeout)
		if tc.want == 0 {
			if err == nil || !strings.Contains(err.Error(), "takes no timeout") {
				t.Errorf("max %s: got %s, %v; want an error", tc.max, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("max %s: got %s, %v; want %s", tc.max, got, err, tc.want)
		}
		if e := feedInterval(got); e != tc.every {
			t.Errorf("timeout %s: fed every %s, want %s", got, e, tc.every)
		}
	}
	// Another error than "out of range" is not retried.
	dev := &errWatchdog{err: unix.ENOTTY}
	if _, err := armTimeout(dev, watchdogTimeout); !errors.Is(err, unix.ENOTTY) || dev.calls != 1 {
		t.Errorf("got %v after %d calls, want ENOTTY after 1", err, dev.calls)
	}
}

type errWatchdog struct {
	err   error
	calls int
}

func (w *errWatchdog) SetTimeout(time.Duration) (time.Duration, error) { w.calls++; return 0, w.err }
func (w *errWatchdog) Keepalive() error                                { return w.err }

// TestWatchdogLoopHangs: the feeding happens in the checking loop, so a
// probe that never returns (past its deadline) feeds nothing, and a loop
// that ends (here: its context) feeds nothing more.
func TestWatchdogLoopHangs(t *testing.T) {
	dev := &fakeWatchdog{}
	release := make(chan struct{})
	var hung sync.Once
	calls := 0
	var mu sync.Mutex
	f := &feeder{
		dev: dev,
		probe: func(ctx context.Context) error {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n == 5 {
				hung.Do(func() { <-release }) // ignores its deadline: a wedged probe
			}
			return nil
		},
		procs:   func() (map[string]bool, error) { return nil, nil },
		timeout: 30 * time.Millisecond, grace: time.Hour, stale: time.Hour, every: 10 * time.Millisecond,
		log: slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.run(ctx); close(done) }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return calls >= 5 })
	fed := dev.fed()
	time.Sleep(100 * time.Millisecond)
	if dev.fed() != fed || fed != 4 {
		t.Errorf("fed %d times before the hang and %d during it, want 4 and 0", fed, dev.fed()-fed)
	}
	close(release)
	waitFor(t, func() bool { return dev.fed() > fed })
	cancel()
	<-done
	after := dev.fed()
	time.Sleep(50 * time.Millisecond)
	if dev.fed() != after {
		t.Error("fed after the loop ended")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKernelWatchdogNeverWritesMagicClose runs the real device type and the
// loop on a regular file standing in for /dev/watchdog: nothing, not arming,
// feeding or stopping, writes to it (a 'V' would disarm a real watchdog at
// close).
func TestKernelWatchdogNeverWritesMagicClose(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := openKernelWatchdog(p)
	if err != nil {
		t.Fatal(err)
	}
	// A regular file takes no watchdog ioctl: arming fails, and says so.
	if _, err := armTimeout(dev, watchdogTimeout); err == nil {
		t.Error("a regular file took a watchdog timeout")
	}
	f := &feeder{
		dev: dev, probe: func(context.Context) error { return nil },
		procs: func() (map[string]bool, error) { return nil, nil },
		grace: time.Hour, stale: time.Hour, every: 5 * time.Millisecond, timeout: 15 * time.Millisecond,
		log: slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	f.run(ctx)
	f.stopped = "test"
	f.check(context.Background(), time.Now())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 0 {
		t.Errorf("the watchdog file was written: %q", b)
	}
}

// TestHealthProbe: any HTTP answer counts (200, 503, a redirect); no
// listener, or a server that accepts and never answers, does not. The
// server listens on a Unix socket in the test's directory: no network.
func TestHealthProbe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cell.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hang := make(chan struct{})
	defer close(hang)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"ok":true}`))
		case "/degraded":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"ok":false,"state":"degraded"}`))
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/hang":
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	probe := func(urlPath, socket string, deadline time.Duration) error {
		p := newHealthProbe("http://cell" + urlPath)
		p.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		return p.answer(ctx)
	}
	for _, path := range []string{"/ok", "/degraded", "/moved"} {
		if err := probe(path, sock, 2*time.Second); err != nil {
			t.Errorf("%s: %v, want an answer", path, err)
		}
	}
	start := time.Now()
	err = probe("/hang", sock, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("a server that never answers: %v, want no answer within the deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the hung probe took %s, past its deadline", took)
	}
	if err := probe("/ok", filepath.Join(t.TempDir(), "nothing.sock"), 2*time.Second); err == nil {
		t.Error("no listener: answered")
	}
	if err := newHealthProbe("").answer(context.Background()); err == nil {
		t.Error("no URL: answered")
	}
}

// TestSupervisedPrograms reads a /proc made in a directory: only PID 1's
// children count, by their executable, and zombies (no exe link) do not.
func TestSupervisedPrograms(t *testing.T) {
	dir := t.TempDir()
	proc := func(pid int, comm string, ppid int, exe string) {
		d := filepath.Join(dir, fmt.Sprint(pid))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "stat"), fmt.Appendf(nil, "%d (%s) S %d %d 0 0\n", pid, comm, ppid, pid), 0o644)
		if exe != "" {
			os.Symlink(exe, filepath.Join(d, "exe"))
		}
	}
	proc(1, "init", 0, "/gokrazy/init")
	proc(200, "cell", 1, "/user/cell")
	proc(201, "contain) erd", 1, "/user/containerd") // a comm with a parenthesis and a space
	proc(300, "runc", 201, "/user/runc")             // a grandchild
	proc(400, "dhcp", 1, "")                         // a zombie
	os.MkdirAll(filepath.Join(dir, "sys"), 0o755)
	got, err := supervisedPrograms(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"/user/cell": true, "/user/containerd": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// The real /proc parses (this test's process has a parent).
	if _, err := supervisedPrograms("/proc"); err != nil {
		t.Errorf("/proc: %v", err)
	}
	if _, ok := parentPID([]byte("12 (x")); ok {
		t.Error("a truncated stat line parsed")
	}
}
