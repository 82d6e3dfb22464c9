package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ContainerdHost is the cell's machine as the appliance has it, for the
// tests that run service containers: one mount namespace (a private /run)
// in the cell's network namespace, shared by containerd, its shims and the
// cell, so the network namespaces the cell bind-mounts for its containers
// are the ones runc opens. A holder process keeps that mount namespace;
// containerd and the cell enter it (Enter) and can be stopped and started
// again in it. Its containers get their cgroups under Cgroup, of this test
// alone. Cleanup kills everything in it and removes the cgroups.
type ContainerdHost struct {
	Cgroup string // the containers' cgroup parent: give it to the cell's -cgroup-parent

	t      testing.TB
	holder *exec.Cmd
	cfg    string
	ctr    *exec.Cmd
	log    *lockedBuffer
	mntRef string
}

// Socket is containerd's socket inside the host's mount namespace.
const Socket = "/run/containerd/containerd.sock"

// NewContainerdHost makes the host in ns and starts containerd in it; it
// skips t without root or containerd.
func NewContainerdHost(t testing.TB, ns *NS) *ContainerdHost {
	t.Helper()
	RequireRoot(t)
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "nsenter", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: containerd, runc, util-linux): %v", tool, err)
		}
	}
	b := make([]byte, 4)
	rand.Read(b)
	h := &ContainerdHost{t: t, Cgroup: "/pic-test-" + hex.EncodeToString(b), log: &lockedBuffer{}}
	h.holder = exec.Command("nsenter", "--net=/run/netns/"+ns.Name, "--", "unshare", "-m", "--propagation", "private", "--",
		"sh", "-c", "mount -t tmpfs none /run && exec sleep 86400")
	if err := h.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cleanup)
	deadline := time.Now().Add(10 * time.Second)
	for { // until the shell has exec'd sleep: /run is its own then
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.holder.Process.Pid))
		if strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the mount namespace's holder never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.mntRef, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.holder.Process.Pid))
	dir := t.TempDir()
	h.cfg = filepath.Join(dir, "containerd.toml")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = \"/run/containerd\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), Socket)
	if err := os.WriteFile(h.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h.StartContainerd()
	return h
}

// Enter is the command line that runs args in the host's namespaces.
func (h *ContainerdHost) Enter(args ...string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(h.holder.Process.Pid), "-m", "-n", "--"}, args...)
}

// StartContainerd starts containerd in the host (again).
func (h *ContainerdHost) StartContainerd() {
	args := h.Enter("containerd", "--config", h.cfg)
	h.ctr = exec.Command(args[0], args[1:]...)
	h.ctr.Stdout, h.ctr.Stderr = h.log, h.log
	if err := h.ctr.Start(); err != nil {
		h.t.Fatal(err)
	}
}

// StopContainerd stops containerd as an update or a crash would; the shims
// and the containers go on.
func (h *ContainerdHost) StopContainerd() {
	h.ctr.Process.Signal(syscall.SIGTERM)
	h.ctr.Wait()
}

// cleanup kills everything that ran in the host's mount namespace (the cell,
// containerd, the shims) and the containers (by their cgroups), so the mount
// namespace, with its overlay and network namespace mounts, goes away.
func (h *ContainerdHost) cleanup() {
	for i := 0; i < 5; i++ {
		killed := 0
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			pid, err := strconv.Atoi(p.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
			cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			if (h.mntRef != "" && mnt == h.mntRef) || strings.Contains(string(cg), h.Cgroup+"/") {
				syscall.Kill(pid, syscall.SIGKILL)
				killed++
			}
		}
		if killed == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if h.holder.Process != nil {
		h.holder.Process.Kill()
		h.holder.Wait()
	}
	if h.ctr != nil {
		h.ctr.Wait()
	}
	roots := []string{"/sys/fs/cgroup"} // the unified hierarchy, and every v1 one below
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range ents {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, r := range roots {
		var dirs []string
		filepath.WalkDir(filepath.Join(r, h.Cgroup), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
	if h.t.Failed() {
		lines := strings.Split(h.log.String(), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		h.t.Logf("containerd's log:\n%s", strings.Join(lines, "\n"))
	}
}

// lockedBuffer is a buffer two processes' output goroutines may write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
