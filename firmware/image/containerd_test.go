package image

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
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

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/pic-cell/cell/firmware/release"
)

// staticELF opens p and reports its machine and whether it asks for a dynamic
// loader (an INTERP program header): the root has no C library, so every
// program must be static.
func staticELF(t *testing.T, p string) (elf.Machine, bool) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	defer f.Close()
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			return f.Machine, false
		}
	}
	return f.Machine, true
}

// buildTags reads the -tags and CGO_ENABLED a Go program was built with.
func buildTags(t *testing.T, p string) (tags, cgo string) {
	t.Helper()
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "-tags":
			tags = s.Value
		case "CGO_ENABLED":
			cgo = s.Value
		}
	}
	return tags, cgo
}

// TestContainerdInRoot builds a root with the container runtime (the default)
// and an OCI archive, and checks what the device will find: the three
// programs, static, for amd64, on gokrazy's PATH; containerd's config; the
// service the init supervises; the archive where the cell looks for it.
func TestContainerdInRoot(t *testing.T) {
	needHost(t, "amd64")
	unsquashfs := needTool(t, "unsquashfs", "squashfs-tools")
	cfg := testConfig("amd64")
	cfg.Settings.Containerd = nil // the default: on
	cfg.Settings.RootMiB = 160
	archive := filepath.Join(t.TempDir(), "files.oci.tar")
	payload := []byte("not really a tar, the builder does not look inside")
	if err := os.WriteFile(archive, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root.squashfs")
	start := time.Now()
	if err := BuildRoot(context.Background(), cfg, Options{Dir: moduleRoot(t), Images: []string{archive}}, root); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(root)
	t.Logf("root with containerd: %.1f MiB, built in %s", float64(fi.Size())/(1<<20), time.Since(start).Round(100*time.Millisecond))

	dir := filepath.Join(t.TempDir(), "r")
	if out, err := exec.Command(unsquashfs, "-d", dir, root).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		p := filepath.Join(dir, "user", name)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("root lacks /user/%s: %v", name, err)
			continue
		}
		if st.Mode().Perm()&0o111 == 0 {
			t.Errorf("/user/%s mode %v, not executable", name, st.Mode())
		}
		if m, static := staticELF(t, p); m != elf.EM_X86_64 || !static {
			t.Errorf("/user/%s: machine %v static %v, want a static x86-64 program", name, m, static)
		}
	}
	if tags, cgo := buildTags(t, filepath.Join(dir, "user/runc")); !strings.Contains(","+tags+",", ",seccomp,") || cgo != "1" {
		t.Errorf("runc was built with tags %q, CGO_ENABLED=%q; want seccomp and cgo", tags, cgo)
	}
	// runc runs here (same architecture): it must say it has libseccomp.
	out, err := exec.Command(filepath.Join(dir, "user/runc"), "--version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("libseccomp: 2.")) {
		t.Errorf("runc --version: %v\n%s; want a runc built with libseccomp", err, out)
	}
	out, err = exec.Command(filepath.Join(dir, "user/containerd"), "--version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(" 2.4.")) {
		t.Errorf("containerd --version: %v\n%s; want go.mod's 2.4.x", err, out)
	}

	got, err := os.ReadFile(filepath.Join(dir, "etc/containerd/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := ContainerdConfig("/perm/containerd/root", "/run/containerd", "/run/containerd/containerd.sock"); string(got) != want {
		t.Errorf("config.toml:\n%s\nwant:\n%s", got, want)
	}

	rel, err := release.Load(filepath.Join(dir, "etc/cell/release.json"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range rel.Services {
		paths = append(paths, s.Path)
		if s.Path == "/user/containerd" && strings.Join(s.Args, " ") != "--config /etc/containerd/config.toml" {
			t.Errorf("containerd's args %q", s.Args)
		}
	}
	if got, want := strings.Join(paths, " "), "/gokrazy/dhcp /gokrazy/ntp /user/containerd /user/healthd"; got != want {
		t.Errorf("services %q, want %q", got, want)
	}

	img := filepath.Join(dir, "usr/share/pic/images/files.oci.tar")
	b, err := os.ReadFile(img)
	if err != nil || !bytes.Equal(b, payload) {
		t.Errorf("%s: %q, %v; want the archive's bytes", img, b, err)
	}
	if st, err := os.Stat(img); err == nil && st.Mode().Perm() != 0o644 {
		t.Errorf("%s mode %v, want 0644", img, st.Mode())
	}
}

// TestRootWithoutContainerd: switched off, none of it is in the root.
func TestRootWithoutContainerd(t *testing.T) {
	needHost(t, "amd64")
	unsquashfs := needTool(t, "unsquashfs", "squashfs-tools")
	cfg := testConfig("amd64")
	root := filepath.Join(t.TempDir(), "root.squashfs")
	if err := BuildRoot(context.Background(), cfg, Options{Dir: moduleRoot(t)}, root); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(unsquashfs, "-l", root).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -l: %v\n%s", err, out)
	}
	for _, name := range []string{"user/containerd", "user/runc", "etc/containerd"} {
		if bytes.Contains(out, []byte("squashfs-root/"+name)) {
			t.Errorf("a root without containerd has %s", name)
		}
	}
}

func TestPlaceImagesRefuses(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a", "x.oci.tar")
	b := filepath.Join(dir, "b", "x.oci.tar")
	for _, p := range []string{a, b} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, nil, 0o644)
	}
	for _, tc := range []struct {
		name   string
		images []string
		want   string
	}{
		{"same name", []string{a, b}, "same name"},
		{"missing", []string{filepath.Join(dir, "none.oci.tar")}, "no such file"},
		{"directory", []string{dir}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := placeImages(tc.images, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("placeImages(%v) = %v, want an error with %q", tc.images, err, tc.want)
			}
		})
	}
}

func TestConfigContainerdNameClash(t *testing.T) {
	cfg := testConfig("amd64")
	cfg.Settings.Containerd = nil
	cfg.Packages = append(cfg.Packages, Package{Path: "example.org/x/runc"})
	err := BuildRoot(context.Background(), cfg, Options{Dir: moduleRoot(t)}, filepath.Join(t.TempDir(), "root"))
	if err == nil || !strings.Contains(err.Error(), `two packages named "runc"`) {
		t.Errorf("BuildRoot with a package named runc = %v, want the clash named", err)
	}
}

// TestContainerdStartsWithImageConfig runs the containerd the image carries,
// with the image's config (its paths moved into a temporary directory), in a
// mount namespace of its own (the overlayfs snapshotter test-mounts at start),
// and asks it over its socket: its version, and that the overlayfs
// snapshotter loaded and CRI did not. It also measures containerd's idle
// resident memory.
func TestContainerdStartsWithImageConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	target, _ := TargetByName("amd64")
	if err := checkContainerHost(target); err != nil {
		t.Skip(err)
	}
	o := Options{Dir: moduleRoot(t)}
	o.defaults()
	bin := t.TempDir()
	if err := buildContainerTools(context.Background(), o, target, bin); err != nil {
		t.Fatal(err)
	}
	// Short: a Unix socket's path has at most 107 bytes.
	work, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	sock := filepath.Join(work, "state", "containerd.sock")
	conf := filepath.Join(work, "config.toml")
	if err := os.WriteFile(conf, []byte(ContainerdConfig(filepath.Join(work, "root"), filepath.Join(work, "state"), sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncWriter
	cmd := exec.Command(filepath.Join(bin, toolDir, "containerd"), "--config", conf)
	cmd.Env = []string{"PATH=" + filepath.Join(bin, toolDir), "HOME=" + work}
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("containerd's log:\n%s", logs.String())
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *containerd.Client
	for {
		if _, err := os.Stat(sock); err == nil {
			if c, err = containerd.New(sock, containerd.WithTimeout(5*time.Second)); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("containerd's socket %s did not answer within 30 s", sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd %s answered %s after start", v.Version, time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(v.Version, "2.4.") && !strings.HasPrefix(v.Version, "v2.4.") {
		t.Errorf("containerd version %q, want go.mod's 2.4.x", v.Version)
	}
	resp, err := c.IntrospectionService().Plugins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	overlay := false
	for _, p := range resp.Plugins {
		if p.Type == "io.containerd.snapshotter.v1" && p.ID == "overlayfs" {
			overlay = p.InitErr == nil
			if p.InitErr != nil {
				t.Errorf("overlayfs snapshotter: %s", p.InitErr.Message)
			}
		}
		if p.Type == "io.containerd.grpc.v1" && p.ID == "cri" && p.InitErr == nil {
			t.Error("the CRI plugin is loaded")
		}
	}
	if !overlay {
		t.Error("no overlayfs snapshotter")
	}

	time.Sleep(2 * time.Second) // settled, idle
	if rss := vmRSS(t, cmd.Process.Pid); rss > 0 {
		t.Logf("containerd idle: VmRSS %d KiB", rss)
		if rss > 200<<10 {
			t.Errorf("containerd idle RSS %d KiB, more than 200 MiB", rss)
		}
	}

	// A container, run the way the device runs them: containerd finds its
	// shim and the shim runc only on PATH (the tools' directory, as gokrazy's
	// /user), runc applies the default seccomp profile through its static
	// libseccomp. The container's one program is the static runc itself.
	rootfs := filepath.Join(work, "rootfs")
	os.MkdirAll(rootfs, 0o755)
	if err := copyFile(filepath.Join(bin, toolDir, "runc"), filepath.Join(rootfs, "probe")); err != nil {
		t.Fatal(err)
	}
	ns := "pic-image-test"
	cctx := namespaces.WithNamespace(ctx, ns)
	id := fmt.Sprintf("probe-%d", os.Getpid())
	ctr, err := c.NewContainer(cctx, id, containerd.WithRuntime("io.containerd.runc.v2", nil),
		containerd.WithNewSpec(oci.WithRootFSPath(rootfs), oci.WithProcessArgs("/probe", "--version"), seccomp.WithDefaultProfile()))
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(cctx)
	// The default spec's cgroup is /<namespace>/<id>: runc removes the
	// container's own, the namespace's is left to remove here.
	defer os.Remove(filepath.Join("/sys/fs/cgroup", ns))
	var out syncWriter
	task, err := ctr.NewTask(cctx, cio.NewCreator(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		t.Fatalf("new task (shim and runc): %v", err)
	}
	defer task.Delete(cctx, containerd.WithProcessKill)
	exited, err := task.Wait(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(cctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-exited:
	case <-cctx.Done():
		t.Fatal("the container did not exit")
	}
	if _, err := task.Delete(cctx); err != nil {
		t.Error(err)
	}
	if st.ExitCode() != 0 || !strings.Contains(out.String(), "runc version") {
		t.Errorf("the container exited %d with %q; want 0 and runc's version", st.ExitCode(), out.String())
	}
}

// vmRSS reads a process's resident set in KiB from /proc (0 if unreadable).
func vmRSS(t *testing.T, pid int) int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Log(err)
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

// syncWriter collects a child's output for the failure message.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestArchivesIn(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.oci.tar", "a.oci.tar", "notes.txt", "c.oci.tar.part"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	os.Mkdir(filepath.Join(dir, "d.oci.tar"), 0o755)
	got, err := ArchivesIn(dir)
	want := []string{filepath.Join(dir, "a.oci.tar"), filepath.Join(dir, "b.oci.tar")}
	if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ArchivesIn = %q, %v; want %q", got, err, want)
	}
	if got, err := ArchivesIn(filepath.Join(dir, "none")); err != nil || got != nil {
		t.Errorf("ArchivesIn(missing) = %q, %v; want nothing, no error", got, err)
	}
}
