package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/pic-cell/cell/firmware/release"
)

// fakeCgroups is cgroupFS with a mount table of one entry.
type fakeCgroups struct {
	mounted  bool
	mountErr error
	mounts   int
}

func (f *fakeCgroups) IsCgroup2(string) (bool, error) { return f.mounted, nil }

func (f *fakeCgroups) MountCgroup2(string) error {
	f.mounts++
	if f.mountErr != nil {
		return f.mountErr
	}
	f.mounted = true
	return nil
}

func TestPrepareContainerd(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cg         fakeCgroups
		wantMounts int
		wantErr    string
	}{
		{"gokrazy mounted it", fakeCgroups{mounted: true}, 0, ""},
		{"not mounted: mounted here", fakeCgroups{}, 1, ""},
		{"cannot mount", fakeCgroups{mountErr: errors.New("no such device")}, 1, "containers cannot run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perm := filepath.Join(t.TempDir(), "perm", "containerd")
			cg := tc.cg
			err := prepareContainerd(perm, "/sys/fs/cgroup", &cg)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
			if cg.mounts != tc.wantMounts {
				t.Errorf("%d mounts, want %d", cg.mounts, tc.wantMounts)
			}
			if st, err := os.Stat(perm); err != nil || st.Mode().Perm() != 0o711 || !st.IsDir() {
				t.Errorf("%s: %v, %v; want a directory 0711", perm, st, err)
			}
		})
	}
}

func TestRunsContainerd(t *testing.T) {
	for _, tc := range []struct {
		services []release.Service
		want     bool
	}{
		{nil, false},
		{[]release.Service{{Path: "/user/cell"}}, false},
		{[]release.Service{{Path: "/gokrazy/dhcp"}, {Path: "/user/containerd", Args: []string{"--config", "x"}}}, true},
	} {
		if got := runsContainerd(&release.Release{Services: tc.services}); got != tc.want {
			t.Errorf("runsContainerd(%v) = %v, want %v", tc.services, got, tc.want)
		}
	}
}

// listenUnix listens on a socket in a short temporary directory (a Unix
// socket's path has at most 107 bytes).
func listenUnix(t *testing.T) (net.Listener, string) {
	dir, err := os.MkdirTemp("", "init")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, sock
}

func TestProbeGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	l, sock := listenUnix(t)
	srv := grpc.NewServer()
	go srv.Serve(l)
	defer srv.Stop()
	if err := probeGRPC(ctx, sock); err != nil {
		t.Errorf("a gRPC server: %v", err)
	}

	l1, sock1 := listenUnix(t)
	go (&http.Server{Handler: http.NotFoundHandler()}).Serve(l1)
	if err := probeGRPC(ctx, sock1); !errors.Is(err, errNoHTTP2) {
		t.Errorf("an HTTP/1 server: %v, want %v", err, errNoHTTP2)
	}

	if err := probeGRPC(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("no socket: no error")
	}
}

// fakeProc makes a proc file system with one process running exe.
func fakeProc(t *testing.T, exe, status string) string {
	proc := t.TempDir()
	for pid, target := range map[string]string{"1": "/gokrazy/init", "42": exe} {
		os.MkdirAll(filepath.Join(proc, pid), 0o755)
		if err := os.Symlink(target, filepath.Join(proc, pid, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(proc, "42", "status"), []byte(status), 0o644)
	os.MkdirAll(filepath.Join(proc, "self"), 0o755)
	return proc
}

func TestRSSOf(t *testing.T) {
	proc := fakeProc(t, containerdPath, "Name:\tcontainerd\nVmPeak:\t  99999 kB\nVmRSS:\t   31234 kB\n")
	if got, err := rssOf(proc, containerdPath); err != nil || got != 31234 {
		t.Errorf("rssOf = %d, %v; want 31234", got, err)
	}
	if _, err := rssOf(proc, "/user/other"); err == nil {
		t.Error("no process runs /user/other, and no error")
	}
	// The real /proc: this test's own process.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rssOf("/proc", self); err != nil || got <= 0 {
		t.Errorf("rssOf(/proc, self) = %d, %v", got, err)
	}
}

func TestWatchContainerd(t *testing.T) {
	proc := fakeProc(t, containerdPath, "VmRSS:\t 2048 kB\n")
	dir, err := os.MkdirTemp("", "init")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "c.sock")

	// watchContainerd logs from its own goroutine only, and the log is read
	// after it returned (done closed): a plain buffer is safe.
	var out bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&out, nil))
	done := make(chan struct{})
	go func() {
		watchContainerd(context.Background(), logger, sock, proc, 10*time.Second, 10*time.Millisecond)
		close(done)
	}()
	// containerd comes up a little later than the init starts watching.
	time.Sleep(300 * time.Millisecond)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	go srv.Serve(l)
	defer srv.Stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watchContainerd did not return")
	}
	for _, want := range []string{`msg="containerd answers"`, `msg="containerd idle" rss_kib=2048`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, out.String())
		}
	}

	// Nothing ever answers: an error within the limit.
	out.Reset()
	watchContainerd(context.Background(), slog.New(slog.NewTextHandler(&out, nil)), filepath.Join(dir, "none.sock"), proc, 600*time.Millisecond, 0)
	if !strings.Contains(out.String(), `msg="containerd does not answer"`) {
		t.Errorf("log:\n%s", out.String())
	}
}

func TestCgroupControllers(t *testing.T) {
	for _, tc := range []struct {
		file, missing string
	}{
		{"cpuset cpu io memory hugetlb pids rdma misc\n", ""},
		{"cpuset cpu io hugetlb pids rdma misc\n", "memory"}, // gokrazy's amd64 kernel: no CONFIG_MEMCG
		{"", "cpu memory pids"},
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(tc.file), 0o444)
		have, missing, err := cgroupControllers(dir)
		if err != nil || strings.Join(missing, " ") != tc.missing || strings.Join(have, " ") != strings.TrimSpace(tc.file) {
			t.Errorf("%q: have %q missing %q err %v; want missing %q", tc.file, have, missing, err, tc.missing)
		}
	}
	if _, _, err := cgroupControllers(t.TempDir()); err == nil {
		t.Error("no cgroup.controllers file, and no error")
	}
}
