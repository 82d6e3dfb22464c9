package supervise_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/runtime/containerdtest"
	"github.com/pic-cell/cell/images/supervise"
)

// testNetNS makes a named network namespace of the test's own (loopback
// up, nothing else: no interface of the host is touched) and returns its
// path.
func testNetNS(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("ip (iproute2) is needed to make a network namespace: %v", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "picsup-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v: %s", err, out)
	}
	return "/run/netns/" + name
}

// nsClient is an HTTP client whose connections are made inside the network
// namespace at path (the socket belongs to the namespace it was made in).
func nsClient(path string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			goruntime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				goruntime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer orig.Close()
			target, err := netns.GetFromPath(path)
			if err != nil {
				goruntime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				goruntime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			// A thread that cannot go back stays locked and dies with
			// the goroutine.
			if netns.Set(orig) == nil {
				goruntime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 2 * time.Second}
}

// TestRealContainerd runs the probe under the supervisor on a throwaway
// containerd: installed and healthy; its process killed, restarted;
// containerd stopped (failed: not reachable) and started again (running,
// the same task); the cell restarted (adopted: the same task); removed.
func TestRealContainerd(t *testing.T) {
	d := containerdtest.Start(t)
	probe := containerdtest.ProbeImage(t, "probe", "1.0.0")
	ns := testNetNS(t)
	rt, err := runtime.NewWithOptions(d.Socket, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		runtime.Options{RuncRoot: d.RuncRoot, CgroupParent: d.CgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := "sup-" + hex.EncodeToString(b)
	dir := t.TempDir()
	svc := supervise.Service{
		ID: id, Archive: probe.Archive, Image: probe.Ref, Digest: probe.Digest,
		Spec: runtime.Spec{
			NetNS:   ns,
			LogPath: filepath.Join(dir, "log", id+".log"),
			Mounts:  []runtime.Mount{{Source: filepath.Join(dir, "data"), Target: "/data"}, {Source: filepath.Join(dir, "token"), Target: "/run/token", ReadOnly: true}},
			Pids:    64, MemoryBytes: 64 << 20,
		},
		Dirs:   []supervise.Dir{{Path: filepath.Join(dir, "data"), UID: 65534, GID: 65534}},
		Files:  []supervise.File{{Path: filepath.Join(dir, "token"), Data: []byte("secret"), Mode: 0o400, UID: 65534, GID: 65534}},
		Health: "http://127.0.0.1:8080/healthz",
	}
	sup := supervise.New(supervise.Options{
		Runtime:    rt,
		HTTP:       nsClient(ns),
		Log:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Poll:       200 * time.Millisecond,
		BackoffMin: 200 * time.Millisecond,
		StopGrace:  5 * time.Second,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer scancel()

	state := func() supervise.State {
		for _, s := range sup.States() {
			if s.ID == id {
				return s
			}
		}
		return supervise.State{Phase: "absent"}
	}
	waitFor := func(what string, within time.Duration, ok func(supervise.State) bool) supervise.State {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			st := state()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				lines, _ := rt.Logs(context.Background(), id, 20)
				t.Fatalf("state %+v after %v, want %s; log: %q", st, within, what, lines)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pid := func() uint32 {
		st, err := rt.Status(context.Background(), id)
		if err != nil || st.State != runtime.StateRunning {
			t.Fatalf("status %+v, %v; want running", st, err)
		}
		return st.PID
	}

	t0 := time.Now()
	sup.Set([]supervise.Service{svc})
	if err := sup.Sync(sctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	t.Logf("installed and healthy in %v", time.Since(t0))
	if st := state(); st.Phase != supervise.PhaseRunning {
		t.Fatalf("state %+v, want running", st)
	}
	first := pid()

	// Killed: restarted, counted.
	t1 := time.Now()
	if err := syscall.Kill(int(first), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("restarted once and running", 20*time.Second, func(s supervise.State) bool {
		return s.Phase == supervise.PhaseRunning && s.Restarts == 1
	})
	t.Logf("killed task restarted and healthy in %v", time.Since(t1))
	second := pid()
	if second == first {
		t.Errorf("pid %d after the restart, the killed one's", second)
	}

	// containerd away: failed, not reachable; back: running, same task.
	d.Stop()
	waitFor("failed: not reachable", 10*time.Second, func(s supervise.State) bool {
		return s.Phase == supervise.PhaseFailed && s.Reason == supervise.ReasonUnreachable
	})
	d.Restart()
	waitFor("running after containerd came back", 30*time.Second, func(s supervise.State) bool {
		return s.Phase == supervise.PhaseRunning
	})
	if p := pid(); p != second {
		t.Errorf("pid %d after containerd's restart, want %d (the task ran on)", p, second)
	}
	if st := state(); st.Restarts != 1 {
		t.Errorf("restarts %d after containerd's restart, want 1", st.Restarts)
	}

	// The cell restarts: a new supervisor adopts the running container
	// (same spec), no new task.
	cancel()
	<-done
	sup = supervise.New(supervise.Options{Runtime: rt, HTTP: nsClient(ns), Poll: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { sup.Run(ctx2); close(done2) }()
	defer func() { cancel2(); <-done2 }()
	sup.Set([]supervise.Service{svc})
	if err := sup.Sync(sctx); err != nil {
		t.Fatalf("Sync after the cell's restart: %v", err)
	}
	if p := pid(); p != second {
		t.Errorf("pid %d after the cell's restart, want %d (adopted)", p, second)
	}

	// Removed: the container goes, the volume stays.
	sup.Set(nil)
	if err := sup.Sync(sctx); err != nil {
		t.Fatalf("Sync after removal: %v", err)
	}
	if st, err := rt.Status(sctx, id); err != nil || st.State != runtime.StateAbsent {
		t.Errorf("status after removal %+v, %v; want absent", st, err)
	}
	if len(sup.States()) != 0 {
		t.Errorf("states after removal %+v, want none", sup.States())
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("volume removed with the service: %v", err)
	}
}
