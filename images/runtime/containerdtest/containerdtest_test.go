package containerdtest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/runtime/containerdtest"
)

// TestCleanupLeavesNothing leaves a running container behind a stopped
// daemon (the worst a failing test can do) and checks that the cleanup
// took it all: the task's process, its shim, the mounts, the cgroup, the
// socket's directory.
func TestCleanupLeavesNothing(t *testing.T) {
	var (
		pid     uint32
		shims   []int
		root    string
		sockDir string
		cgroup  string
	)
	t.Run("leave a mess", func(t *testing.T) {
		d := containerdtest.Start(t)
		p := containerdtest.ProbeImage(t, "probe", "1.0.0")
		root, sockDir, cgroup = d.Root, d.Socket[:strings.LastIndex(d.Socket, "/")], d.CgroupParent
		r, err := runtime.NewWithOptions(d.Socket, slog.New(slog.DiscardHandler), runtime.Options{RuncRoot: d.RuncRoot, CgroupParent: d.CgroupParent})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx := context.Background()
		if _, err := r.Import(ctx, p.Archive); err != nil {
			t.Fatal(err)
		}
		if err := r.Ensure(ctx, runtime.Spec{ID: fmt.Sprintf("mess-%d", os.Getpid()), Image: p.Ref}); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("mess-%d", os.Getpid())
		if err := r.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		st, err := r.Status(ctx, id)
		if err != nil || st.State != runtime.StateRunning {
			t.Fatalf("status %+v, %v", st, err)
		}
		pid = st.PID
		shims = shimsOf(d.Socket)
		if len(shims) == 0 {
			t.Fatal("no shim found for the daemon's socket")
		}
		d.Stop()
	})
	if pid == 0 {
		t.Fatal("the inner test did not get as far as a running task")
	}
	time.Sleep(100 * time.Millisecond)
	if alive(int(pid)) {
		t.Errorf("the task's process %d survived the cleanup", pid)
	}
	for _, s := range shims {
		if alive(s) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s))
			t.Errorf("shim %d survived the cleanup: %s", s, b)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), root) {
		t.Errorf("mounts under %s survived the cleanup", root)
	}
	for _, p := range []string{sockDir, "/sys/fs/cgroup/memory" + cgroup, "/sys/fs/cgroup/pids" + cgroup, "/sys/fs/cgroup" + cgroup} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived the cleanup", p)
		}
	}
}

func shimsOf(socket string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "containerd-shim-runc-v2") && strings.Contains(string(b), socket) {
			out = append(out, pid)
		}
	}
	return out
}

// alive reports whether pid runs (a zombie, dead but not yet reaped by
// its parent, does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}
