package runtime_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/runtime/containerdtest"
)

// uniqueID names a container so that tests of other packages running their
// own containerd at the same time never share a cgroup or a shim socket.
func uniqueID(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func newAdapter(t *testing.T, d *containerdtest.Daemon) *runtime.Containerd {
	t.Helper()
	r, err := runtime.NewWithOptions(d.Socket, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		runtime.Options{RuncRoot: d.RuncRoot, CgroupParent: d.CgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// probeSetup is what every containerd test starts from: its own daemon, the
// probe image built, an adapter on the daemon and a context bounding the test.
type probeSetup struct {
	d   *containerdtest.Daemon
	p   containerdtest.Probe
	r   *runtime.Containerd
	ctx context.Context
}

// setupProbe starts a daemon and an adapter and builds the probe image; with
// imported, the image is imported already.
func setupProbe(t *testing.T, within time.Duration, imported bool) probeSetup {
	t.Helper()
	d := containerdtest.Start(t)
	p := containerdtest.ProbeImage(t, "probe", "1.0.0")
	r := newAdapter(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	if imported {
		if _, err := r.Import(ctx, p.Archive); err != nil {
			t.Fatal(err)
		}
	}
	return probeSetup{d: d, p: p, r: r, ctx: ctx}
}

// run creates the container of spec and starts its task.
func (s probeSetup) run(t *testing.T, spec runtime.Spec) {
	t.Helper()
	if err := s.r.Ensure(s.ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := s.r.Start(s.ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
}

// waitExit takes the next exit event, which must be id's.
func waitExit(t *testing.T, exits <-chan runtime.Exit, id string, within time.Duration) {
	t.Helper()
	select {
	case e := <-exits:
		if e.ID != id {
			t.Errorf("exit event for %q, want %q", e.ID, id)
		}
	case <-time.After(within):
		t.Errorf("no exit event of %q within %v", id, within)
	}
}

// waitFile polls the file at path until done says its content is complete,
// and returns that content.
func waitFile(t *testing.T, path string, within time.Duration, done func([]byte) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(path)
		if done(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: incomplete after %v (%d bytes)", path, within, len(b))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitState(t *testing.T, r runtime.Runtime, id, want string, within time.Duration) runtime.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := r.Status(context.Background(), id)
		if err == nil && st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: state %+v (err %v), want %s after %v", id, st, err, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestContainerdLifecycle(t *testing.T) {
	s := setupProbe(t, 3*time.Minute, false)
	d, p, r, ctx := s.d, s.p, s.r, s.ctx

	img, err := r.Import(ctx, p.Archive)
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != p.Ref || img.Digest != p.Digest {
		t.Fatalf("Import = %+v, want ref %s digest %s", img, p.Ref, p.Digest)
	}
	// Idempotent.
	if img2, err := r.Import(ctx, p.Archive); err != nil || img2 != img {
		t.Fatalf("second Import = %+v, %v; want %+v", img2, err, img)
	}
	imgs, err := r.Images(ctx)
	if err != nil || len(imgs) != 1 || imgs[0] != img {
		t.Fatalf("Images = %+v, %v; want [%+v]", imgs, err, img)
	}

	id := uniqueID("svc")
	logPath := filepath.Join(t.TempDir(), "logs", id+".log")
	exits, err := r.Exits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{ID: id, Image: p.Ref, LogPath: logPath, MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 64, User: "65534:65534"}
	if err := r.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if st := waitState(t, r, id, runtime.StateCreated, time.Second); st.PID != 0 {
		t.Errorf("created container has pid %d", st.PID)
	}
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, r, id, runtime.StateRunning, 5*time.Second)
	if st.PID == 0 || st.StartedAt.IsZero() {
		t.Errorf("running status %+v: want a pid and a start time", st)
	}
	// The limits reach the cgroup (v1 or v2 files).
	for _, c := range []struct{ v1, v2, want string }{
		{"memory/" + d.CgroupParent + "/" + id + "/memory.limit_in_bytes", d.CgroupParent + "/" + id + "/memory.max", "67108864"},
		{"pids/" + d.CgroupParent + "/" + id + "/pids.max", d.CgroupParent + "/" + id + "/pids.max", "64"},
	} {
		b, err := os.ReadFile("/sys/fs/cgroup/" + c.v1)
		if err != nil {
			b, err = os.ReadFile("/sys/fs/cgroup/" + c.v2)
		}
		if err != nil || strings.TrimSpace(string(b)) != c.want {
			t.Errorf("cgroup %s = %q, %v; want %s", c.v1, b, err, c.want)
		}
	}
	// Idempotent start: the same task.
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st2, _ := r.Status(ctx, id); st2.PID != st.PID {
		t.Errorf("second Start changed the pid: %d, then %d", st.PID, st2.PID)
	}
	// Ensure of the same spec adopts: same task still running.
	if err := r.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if st2, _ := r.Status(ctx, id); st2.State != runtime.StateRunning || st2.PID != st.PID {
		t.Errorf("Ensure of the same spec touched the task: %+v, was pid %d", st2, st.PID)
	}
	cs, err := r.Containers(ctx)
	if err != nil || len(cs) != 1 || cs[0].ID != id || cs[0].Image != p.Ref || cs[0].State != runtime.StateRunning {
		t.Fatalf("Containers = %+v, %v", cs, err)
	}
	if err := r.RemoveImage(ctx, p.Ref); !errors.Is(err, runtime.ErrInUse) {
		t.Errorf("RemoveImage of a used image = %v, want ErrInUse", err)
	}

	// The probe's first lines reach the log file.
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines, err := r.Logs(ctx, id, 10)
		if err == nil && len(lines) > 0 && strings.Contains(lines[0], "probe serving on :8080") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Logs = %q, %v; want the probe's start line", lines, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Stop: the probe dies of SIGTERM (Go's default), well within the grace.
	t0 := time.Now()
	if err := r.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t0); el > 4*time.Second {
		t.Errorf("Stop took %v; SIGTERM should have been enough", el)
	}
	st = waitState(t, r, id, runtime.StateStopped, time.Second)
	if st.ExitedAt.IsZero() {
		t.Errorf("stopped status %+v: no exit time", st)
	}
	waitExit(t, exits, id, 5*time.Second)
	if err := r.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("second Stop = %v", err)
	}
	// A dead task is replaced by Start.
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, id, runtime.StateRunning, 5*time.Second)

	// A changed spec recreates the container.
	spec2 := spec
	spec2.Env = []string{"X=1"}
	if err := r.Ensure(ctx, spec2); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, id, runtime.StateCreated, time.Second)

	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, id, runtime.StateAbsent, time.Second)
	if err := r.Remove(ctx, id); err != nil {
		t.Errorf("second Remove = %v", err)
	}
	if err := r.Start(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Start of a removed container = %v, want ErrNotFound", err)
	}
	if err := r.RemoveImage(ctx, p.Ref); err != nil {
		t.Fatalf("RemoveImage = %v", err)
	}
	if err := r.RemoveImage(ctx, p.Ref); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("second RemoveImage = %v, want ErrNotFound", err)
	}
	if err := r.Ensure(ctx, spec); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Ensure without its image = %v, want ErrNotFound", err)
	}
}

// TestContainerdSandbox runs the probe's "caps" command as root (uid 0 in
// the container) and reads what it saw: no capability in any set, a
// read-only root, the id as hostname, seccomp filtering, no new privileges.
func TestContainerdSandbox(t *testing.T) {
	s := setupProbe(t, 2*time.Minute, true)
	r, ctx := s.r, s.ctx
	id := uniqueID("caps")
	vol := t.TempDir()
	logPath := filepath.Join(t.TempDir(), id+".log")
	s.run(t, runtime.Spec{ID: id, Image: s.p.Ref, Args: []string{"/probe", "caps"}, User: "0:0", LogPath: logPath,
		Mounts: []runtime.Mount{{Source: vol, Target: "/data"}}})
	st := waitState(t, r, id, runtime.StateStopped, 10*time.Second)
	lines, err := r.Logs(ctx, id, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 0 {
		t.Fatalf("probe caps exited %d: %q", st.ExitCode, lines)
	}
	got := map[string]string{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		got[k] = strings.TrimSpace(v)
	}
	for _, c := range []struct{ key, want string }{
		{"CapInh", "0000000000000000"},
		{"CapPrm", "0000000000000000"},
		{"CapEff", "0000000000000000"},
		{"CapBnd", "0000000000000000"},
		{"CapAmb", "0000000000000000"},
		{"NoNewPrivs", "1"},
		{"Seccomp", "2"},
		{"hostname", id},
		{"uid", "0 gid: 0"},
	} {
		if got[c.key] != c.want {
			t.Errorf("%s = %q, want %q (output %q)", c.key, got[c.key], c.want, lines)
		}
	}
	if !strings.HasPrefix(got["rootfs"], "read-only") {
		t.Errorf("rootfs: %q, want read-only", got["rootfs"])
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestContainerdRestart stops and starts the daemon under a running task:
// the adapter's calls fail with ErrUnavailable meanwhile and work again
// after, and the task ran through.
func TestContainerdRestart(t *testing.T) {
	s := setupProbe(t, 2*time.Minute, true)
	d, r, ctx := s.d, s.r, s.ctx
	id := uniqueID("rst")
	s.run(t, runtime.Spec{ID: id, Image: s.p.Ref})
	before := waitState(t, r, id, runtime.StateRunning, 5*time.Second)
	exits, err := r.Exits(ctx)
	if err != nil {
		t.Fatal(err)
	}

	d.Stop()
	if _, err := r.Status(ctx, id); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("Status with containerd down = %v, want ErrUnavailable", err)
	}
	if err := r.Start(ctx, id); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("Start with containerd down = %v, want ErrUnavailable", err)
	}
	d.Restart()

	after := waitState(t, r, id, runtime.StateRunning, 15*time.Second)
	if after.PID != before.PID {
		t.Errorf("task pid %d before the restart, %d after: want the same task", before.PID, after.PID)
	}
	// The exit subscription came back too.
	time.Sleep(time.Second)
	if err := r.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitExit(t, exits, id, 10*time.Second)
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestContainerdLogTrim has the probe write 2 MB to its log (the file the
// shim writes): Status trims it to the last 256 KiB, and what the shim
// writes after lands behind the kept tail (it appends: no hole, nothing
// overwritten).
func TestContainerdLogTrim(t *testing.T) {
	s := setupProbe(t, 2*time.Minute, true)
	r, ctx := s.r, s.ctx
	id := uniqueID("log")
	logPath := filepath.Join(t.TempDir(), id+".log")
	s.run(t, runtime.Spec{ID: id, Image: s.p.Ref, Args: []string{"/probe", "spam", "20000"}, LogPath: logPath})
	// The probe finished its output.
	waitFile(t, logPath, 20*time.Second, func(b []byte) bool { return strings.HasSuffix(string(b), "spam done\n") })
	if fi, _ := os.Stat(logPath); fi.Size() < 2_000_000 {
		t.Fatalf("log of %d bytes, want over 2 MB before the trim", fi.Size())
	}
	if _, err := r.Status(ctx, id); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(logPath)
	if fi.Size() > 300<<10 {
		t.Fatalf("log of %d bytes after Status, want it trimmed to about 256 KiB", fi.Size())
	}
	lines, err := r.Logs(ctx, id, 3)
	if err != nil || len(lines) != 3 || lines[2] != "spam done" || !strings.HasPrefix(lines[1], "00019999 ") {
		t.Fatalf("Logs = %q, %v; want the tail: line 19999, spam done", lines, err)
	}
	// Stop and start again: the new task's shim opens the same file and
	// appends behind the kept tail.
	if err := r.Stop(ctx, id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	// The second run's output reaches the log.
	b := waitFile(t, logPath, 20*time.Second, func(b []byte) bool { return strings.Count(string(b), "spam done") == 2 })
	if int64(len(b)) < size {
		t.Errorf("log shrank to %d bytes from %d", len(b), size)
	}
	if strings.Contains(string(b), "\x00") {
		t.Error("the log has a hole of NUL bytes: the shim did not append")
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
}
