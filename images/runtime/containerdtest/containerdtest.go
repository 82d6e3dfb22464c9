// Package containerdtest owns the throwaway containerd that tests of the
// container runtime run against: a daemon of the host's containerd binary with
// its own root, state directory, socket and config, started for one test and
// taken down with everything it started (tasks, shims, overlay mounts) when
// the test ends. It also builds the small probe image those tests run.
//
// Tests skip (never fail) where the daemon cannot be had: not root, or
// containerd, its runc shim or runc missing.
package containerdtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
)

// Daemon is one throwaway containerd.
type Daemon struct {
	// Socket is the daemon's gRPC socket (a short path under /tmp: a unix
	// socket's path may be at most 108 bytes).
	Socket string
	// Root and State are the daemon's root (content, snapshots, metadata) and
	// state (task bundles) directories.
	Root, State string
	// RuncRoot is a runc state directory of this daemon's own: runc keeps its
	// containers under /run/containerd/runc/<namespace> by default, shared by
	// every containerd on the host, so two daemons with a container of the
	// same name would collide there. Pass it to the runtime adapter.
	RuncRoot string
	// CgroupParent is a cgroup of this daemon's own for its containers
	// (the adapter's default, /pic, is the host's); cleanup removes it.
	CgroupParent string

	t      testing.TB
	config string
	logf   *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when the running cmd has been waited for.
	exited chan struct{}
}

// Start starts a containerd for t and registers its removal with t.Cleanup.
func Start(t testing.TB) *Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerdtest: needs root to run containerd")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("containerdtest: %s is not installed: %v", bin, err)
		}
	}
	base := t.TempDir()
	// The socket lives in a short directory of its own: t.TempDir's paths
	// carry the test's name and can pass the 108 byte limit.
	sockDir, err := os.MkdirTemp("/tmp", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		Socket:   filepath.Join(sockDir, "c.sock"),
		Root:     filepath.Join(base, "root"),
		State:    filepath.Join(sockDir, "state"),
		RuncRoot: filepath.Join(sockDir, "runc"),
		// The socket directory's name is unique on the host.
		CgroupParent: "/pic-test-" + filepath.Base(sockDir),
		t:            t,
		config:       filepath.Join(base, "config.toml"),
	}
	t.Cleanup(func() {
		d.cleanup()
		_ = os.RemoveAll(sockDir)
	})
	for _, dir := range []string{d.Root, d.State, d.RuncRoot} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	// Only what a container needs: the CRI plugin (Kubernetes' interface,
	// with its CNI and streaming servers) and the snapshotters other than
	// overlayfs are off.
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, d.Root, d.State, d.Socket, d.Socket+".ttrpc", filepath.Join(d.Root, "opt"))
	if err := os.WriteFile(d.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if d.logf, err = os.Create(filepath.Join(base, "containerd.log")); err != nil {
		t.Fatal(err)
	}
	d.start()
	return d
}

// start runs the daemon and waits until it answers; t fails if it does not.
func (d *Daemon) start() {
	d.t.Helper()
	if err := d.launch(); err != nil {
		d.t.Fatalf("containerdtest: %v", err)
	}
}

// launch runs the daemon and waits until it answers.
func (d *Daemon) launch() error {
	cmd := exec.Command("containerd", "--config", d.config)
	cmd.Stdout, cmd.Stderr = d.logf, d.logf
	// Its own process group, so that a ^C of go test reaches it only
	// through our cleanup; SIGTERM if the test binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()

	c, err := client.New(d.Socket)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ok, err := c.IsServing(ctx)
		cancel()
		if ok {
			return nil
		}
		select {
		case <-exited:
			d.mu.Lock()
			d.cmd = nil
			d.mu.Unlock()
			return fmt.Errorf("containerd exited at start:\n%s", d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not serving after 30 s (%v):\n%s", err, d.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *Daemon) logTail() string {
	b, _ := os.ReadFile(d.logf.Name())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop stops the daemon with SIGTERM and waits for it to exit (up to 20 s,
// then SIGKILL). Its shims and tasks go on running, as they do when the
// host's containerd restarts.
func (d *Daemon) Stop() {
	d.t.Helper()
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart stops the daemon and starts it again on the same root, state and
// socket.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}

// Running reports whether the daemon process is up.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd != nil
}

// cleanup deletes every task and container of every namespace (so the shims
// exit of themselves), stops the daemon, kills whatever of it is left and
// unmounts what it mounted under its directories.
func (d *Daemon) cleanup() {
	if !d.Running() {
		// Tasks can only be deleted through a daemon.
		if err := d.launch(); err != nil {
			d.t.Logf("containerdtest: cleanup: %v", err)
		}
	}
	if d.Running() {
		d.deleteAll()
	}
	d.Stop()
	d.killLeftovers()
	d.unmountAll()
	d.removeCgroups()
	if d.logf != nil {
		if d.t.Failed() {
			d.t.Logf("containerd log (tail):\n%s", d.logTail())
		}
		_ = d.logf.Close()
	}
}

func (d *Daemon) deleteAll() {
	c, err := client.New(d.Socket)
	if err != nil {
		return
	}
	defer c.Close()
	base, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nss, err := c.NamespaceService().List(base)
	if err != nil {
		d.t.Logf("containerdtest: list namespaces: %v", err)
		return
	}
	for _, ns := range nss {
		ctx := namespaces.WithNamespace(base, ns)
		cs, err := c.Containers(ctx)
		if err != nil {
			continue
		}
		for _, ctr := range cs {
			if task, err := ctr.Task(ctx, nil); err == nil {
				_, _ = task.Delete(ctx, client.WithProcessKill)
			}
			if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
				_ = ctr.Delete(ctx)
			}
		}
	}
}

// killLeftovers kills, with their process groups, the shims that serve this
// daemon (their command line names its socket) and the processes of its
// containers (their cgroup or their parent is one of those shims).
func (d *Daemon) killLeftovers() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
			continue
		}
		if !bytes.Contains(cmdline, []byte(d.Socket)) {
			continue
		}
		for _, child := range children(pid) {
			_ = unix.Kill(child, unix.SIGKILL)
		}
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
			_ = unix.Kill(-pgid, unix.SIGKILL)
		}
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// The command is in parentheses and may hold spaces: the fields
		// after the last ')' are state, ppid, ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// unmountAll unmounts every mount under the daemon's directories, deepest
// first, so that removing the temp dirs does not fail on (or worse, descend
// into) an overlay snapshot or a task's rootfs.
func (d *Daemon) unmountAll() {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, dir := range []string{d.Root, d.State, d.RuncRoot} {
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				points = append(points, mp)
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups kills what is left in the cgroups under CgroupParent (a
// container's processes outlive a killed shim) and removes them, deepest
// first, in every hierarchy.
func (d *Daemon) removeCgroups() {
	roots := []string{"/sys/fs/cgroup"}
	if entries, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range entries {
			if e.IsDir() {
				roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
			}
		}
	}
	for _, root := range roots {
		top := filepath.Join(root, d.CgroupParent)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for try := 0; try < 50; try++ {
				if killCgroup(dirs[i]) == 0 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = os.Remove(dirs[i])
		}
	}
}

// killCgroup sends SIGKILL to the processes in the cgroup dir and returns
// how many there were.
func killCgroup(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0
	}
	n := 0
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL)
			n++
		}
	}
	return n
}
