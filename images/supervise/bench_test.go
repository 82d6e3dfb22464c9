package supervise_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/oci"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/runtime/containerdtest"
	"github.com/pic-cell/cell/images/supervise"
)

// The benchmarks of issue 11's services on a real (throwaway) containerd,
// with the files image as `make images` builds it. Timings are ratios
// against an anchor measured in the same run; absolute numbers are reported,
// never asserted.

var (
	filesOnce   sync.Once
	filesResult oci.Result
	filesData   []byte
	filesErr    error
)

// filesImage builds the files image once per test binary (kept in memory,
// nothing left in /tmp); each caller gets its own copy of the archive.
func filesImage(b *testing.B) oci.Result {
	b.Helper()
	filesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bench-images-")
		if err != nil {
			filesErr = err
			return
		}
		defer os.RemoveAll(dir)
		root, err := filepath.Abs("../..")
		if err != nil {
			filesErr = err
			return
		}
		if filesResult, filesErr = oci.Build(context.Background(), oci.FirstParty[0], root, dir); filesErr == nil {
			filesData, filesErr = os.ReadFile(filesResult.Archive)
		}
	})
	if filesErr != nil {
		b.Fatalf("building the files image: %v", filesErr)
	}
	res := filesResult
	res.Archive = filepath.Join(b.TempDir(), filepath.Base(res.Archive))
	if err := os.WriteFile(res.Archive, filesData, 0o644); err != nil {
		b.Fatal(err)
	}
	return res
}

// benchNetNS is a network namespace of the benchmark's own with only its
// loopback up (testNetNS takes a *testing.T).
func benchNetNS(b *testing.B) string {
	b.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skipf("ip (iproute2) is needed to make a network namespace: %v", err)
	}
	name := fmt.Sprintf("picbench-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	steps := [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}}
	for i, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if i == 0 {
			b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		}
	}
	return "/run/netns/" + name
}

// filesBench is the files service as the cell runs it, on a throwaway
// containerd: its spec, volume and admin token, and a client that dials
// into its network namespace.
type filesBench struct {
	d     *containerdtest.Daemon
	rt    *runtime.Containerd
	img   oci.Result
	ns    string
	dir   string
	svc   supervise.Service
	httpc *http.Client
}

const benchID = "files"

func newFilesBench(b *testing.B) *filesBench {
	b.Helper()
	d := containerdtest.Start(b)
	if _, err := exec.LookPath("ctr"); err != nil {
		b.Skipf("ctr is not installed (the anchor): %v", err)
	}
	fb := &filesBench{d: d, img: filesImage(b), ns: benchNetNS(b), dir: b.TempDir()}
	rt, err := runtime.NewWithOptions(d.Socket, slog.New(slog.DiscardHandler),
		runtime.Options{RuncRoot: d.RuncRoot, CgroupParent: d.CgroupParent})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })
	fb.rt = rt
	data, token := filepath.Join(fb.dir, "data"), filepath.Join(fb.dir, "admin-token")
	fb.svc = supervise.Service{
		ID: benchID, Archive: fb.img.Archive, Image: fb.img.Ref, Digest: fb.img.Index.String(),
		Spec: runtime.Spec{ID: benchID, Image: fb.img.Ref, NetNS: fb.ns,
			LogPath: filepath.Join(fb.dir, "log", benchID+".log"),
			Mounts: []runtime.Mount{{Source: data, Target: "/data"},
				{Source: token, Target: "/run/pic/admin-token", ReadOnly: true}},
			MemoryBytes: 128 << 20, Pids: 64},
		Dirs:   []supervise.Dir{{Path: data, UID: 65534, GID: 65534}},
		Files:  []supervise.File{{Path: token, Data: []byte("bench-admin-token\n"), Mode: 0o400, UID: 65534, GID: 65534}},
		Health: "http://127.0.0.1:8080/healthz",
	}
	fb.httpc = nsClient(fb.ns)
	return fb
}

// supervisor runs a supervisor over fb's runtime until stop (or the
// benchmark's end).
func (fb *filesBench) supervisor(b *testing.B) (sup *supervise.Supervisor, stop func()) {
	sup = supervise.New(supervise.Options{Runtime: fb.rt, HTTP: fb.httpc, Log: slog.New(slog.DiscardHandler),
		Poll: 200 * time.Millisecond, BackoffMin: 200 * time.Millisecond, StopGrace: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	b.Cleanup(stop)
	return sup, stop
}

// install installs the service through the supervisor (import, create,
// files and volumes, start, healthy) and returns how long it took.
func (fb *filesBench) install(b *testing.B, sup *supervise.Supervisor) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	sup.Set([]supervise.Service{fb.svc})
	if err := sup.Sync(ctx); err != nil {
		lines, _ := fb.rt.Logs(context.Background(), benchID, 20)
		b.Fatalf("install: %v; log: %q", err, lines)
	}
	return time.Since(t0)
}

// healthy polls /healthz in the service's namespace until it answers 200.
func (fb *filesBench) healthy(b *testing.B, within time.Duration) {
	b.Helper()
	deadline := time.Now().Add(within)
	for {
		res, err := fb.httpc.Get("http://127.0.0.1:8080/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no healthy /healthz within %v: %v", within, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ctr runs the containerd CLI on the benchmark's daemon, in the runtime's
// namespace.
func (fb *filesBench) ctr(b *testing.B, args ...string) {
	b.Helper()
	out, err := exec.Command("ctr", append([]string{"-a", fb.d.Socket, "-n", "pic"}, args...)...).CombinedOutput()
	if err != nil {
		b.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// BenchmarkWarmStartFiles: the files container's warm start as the cell
// restarts it (image imported, container made; runtime Start, which deletes
// the dead task and makes a new one, until /healthz answers in its network
// namespace) against `ctr run -d` of the same image, volume, token, network
// namespace and runc root on the same containerd until the same /healthz
// answers. x-ctr-run is cell/anchor (the target is 1.5 or less).
func BenchmarkWarmStartFiles(b *testing.B) {
	fb := newFilesBench(b)
	sup, stopSup := fb.supervisor(b)
	fb.install(b, sup)
	// The supervisor made the volume, the token and the container; it goes
	// now, so that it does not restart the task the benchmark stops.
	stopSup()
	ctx := context.Background()
	data, token := fb.svc.Dirs[0].Path, fb.svc.Files[0].Path
	anchorArgs := func(id string) []string {
		return []string{"run", "-d", "--read-only", "--null-io", "--with-ns", "network:" + fb.ns,
			"--runc-root", fb.d.RuncRoot, "--cgroup", fb.d.CgroupParent + "/" + id, "--memory-limit", strconv.Itoa(128 << 20),
			"--mount", "type=bind,src=" + data + ",dst=/data,options=rbind:rw",
			"--mount", "type=bind,src=" + token + ",dst=/run/pic/admin-token,options=rbind:ro",
			fb.img.Ref, id}
	}
	stopCell := func() {
		if err := fb.rt.Stop(ctx, benchID, 5*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	var cell, anchor time.Duration
	b.Cleanup(func() { _ = fb.rt.Remove(context.Background(), benchID) })
	// Once each before the timer (the install was the cell's): page cache
	// and containerd's caches warm for both.
	fb.healthy(b, 10*time.Second)
	stopCell()
	runAnchor := func(i int) time.Duration {
		id := fmt.Sprintf("ctr-run-%d", i)
		t0 := time.Now()
		fb.ctr(b, anchorArgs(id)...)
		fb.healthy(b, 10*time.Second)
		d := time.Since(t0)
		fb.ctr(b, "task", "kill", "-s", "SIGKILL", id)
		for range 200 {
			if exec.Command("ctr", "-a", fb.d.Socket, "-n", "pic", "task", "delete", id).Run() == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fb.ctr(b, "container", "delete", id)
		return d
	}
	runAnchor(1000)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := fb.rt.Start(ctx, benchID); err != nil {
			b.Fatal(err)
		}
		fb.healthy(b, 10*time.Second)
		cell += time.Since(t0)
		stopCell()
		anchor += runAnchor(i)
	}
	b.StopTimer()
	b.ReportMetric(float64(cell.Milliseconds())/float64(b.N), "cell-ms")
	b.ReportMetric(float64(anchor.Milliseconds())/float64(b.N), "ctr-run-ms")
	b.ReportMetric(float64(cell)/float64(anchor), "x-ctr-run")
	b.ReportMetric(0, "ns/op")
	b.Logf("warm start: cell %v, ctr run %v per start (x%.2f, target <= 1.5)",
		cell/time.Duration(b.N), anchor/time.Duration(b.N), float64(cell)/float64(anchor))
}

// BenchmarkServicesReport reports, without asserting: the install of the
// files service from its archive through the supervisor on a fresh
// containerd (import, create, start, healthy); the idle RSS, 2 s after, of
// containerd, the files container's shim and the files process; and the
// archive's and each architecture's image size (the target is under 10 MiB
// per architecture).
func BenchmarkServicesReport(b *testing.B) {
	var install time.Duration
	var rssCtr, rssShim, rssFiles float64
	var img oci.Result
	var archive int64
	for range b.N {
		fb := newFilesBench(b)
		img = fb.img
		sup, _ := fb.supervisor(b)
		install += fb.install(b, sup)
		time.Sleep(2 * time.Second)
		st, err := fb.rt.Status(context.Background(), benchID)
		if err != nil || st.State != runtime.StateRunning {
			b.Fatalf("status %+v, %v", st, err)
		}
		rssFiles += vmRSS(b, int(st.PID))
		rssCtr += vmRSS(b, findProc(b, "config.toml", filepath.Dir(fb.d.Root)))
		rssShim += vmRSS(b, findProc(b, "containerd-shim", fb.d.Socket, "-id\x00"+benchID+"\x00"))
		if fi, err := os.Stat(fb.img.Archive); err == nil {
			archive = fi.Size()
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(install.Milliseconds())/n, "install-ms")
	b.ReportMetric(rssCtr/n, "containerd-MiB")
	b.ReportMetric(rssShim/n, "shim-MiB")
	b.ReportMetric(rssFiles/n, "files-MiB")
	b.ReportMetric(float64(archive)/(1<<20), "archive-MiB")
	for _, arch := range oci.Arches {
		b.ReportMetric(float64(img.Sizes[arch])/(1<<20), "image-"+arch+"-MiB")
		if img.Sizes[arch] >= 10<<20 {
			b.Logf("the files image for %s is %d bytes: over the 10 MiB target", arch, img.Sizes[arch])
		}
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("install from the archive %v; idle RSS containerd %.1f MiB, shim %.1f MiB, files %.1f MiB; archive %d bytes, images %v",
		install/time.Duration(b.N), rssCtr/n, rssShim/n, rssFiles/n, archive, img.Sizes)
}

// findProc is the one process whose command line holds every part (NUL
// separates its arguments).
func findProc(b *testing.B, parts ...string) int {
	b.Helper()
	procs, _ := os.ReadDir("/proc")
	found := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cmdline = append(cmdline, 0)
		all := true
		for _, part := range parts {
			all = all && bytes.Contains(cmdline, []byte(part))
		}
		if all {
			if found != 0 {
				b.Fatalf("two processes with %q: %d and %d", parts, found, pid)
			}
			found = pid
		}
	}
	if found == 0 {
		b.Fatalf("no process with %q", parts)
	}
	return found
}

// vmRSS is pid's resident set in MiB.
func vmRSS(b *testing.B, pid int) float64 {
	b.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatalf("pid %d: no VmRSS", pid)
	return 0
}
