package qemu_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/release"
	"github.com/pic-cell/cell/firmware/update"
)

const cellDaemon = "github.com/pic-cell/cell/cmd/cell"

// cellConfig is the repository's image definition: the real daemon, its API on
// loopback behind the front (443 and 80), whose health the trial boot asks
// on the API's own port,
// WireGuard in the kernel (the image refuses userspace mode), the setup code
// from the boot partition.
func (f *fixture) cellConfig(version string) *image.Config {
	return &image.Config{
		Hostname: "celltest", Target: "amd64", Version: version,
		Packages: []image.Package{{Path: cellDaemon, Args: []string{"-data", "/perm/cell", "-listen", "127.0.0.1:3000", "-front", ":443,:80",
			"-wg-mode", "tun", "-setup-code-file", release.SetupCodePath}}},
		UpdatePublicKey: f.pub,
		// Without containerd (the image's default carries it): these tests are
		// about the cell and its updates; TestFrontOnTheImage boots
		// config.json's image, containerd and all.
		Settings: image.Settings{RootMiB: 160, PermMiB: 300, HealthURL: "http://127.0.0.1:3000/health", Containerd: new(bool)},
	}
}

// BenchmarkBootToHealth measures QEMU start to the first 200 from /health, for
// the cell image against the anchor: the same kernel and gokrazy init running
// only gokrazy's DHCP client (needed to be reachable) and a bare net/http
// handler. The ratio is what the cell's own start costs on top of booting.
func BenchmarkBootToHealth(b *testing.B) {
	needVM(b)
	f := newFixture(b)
	minimal := f.config("1.0.0", time.Minute)
	minimal.Packages[0].Args = []string{"-listen", "0.0.0.0:80"}
	minImg := f.image(minimal)
	cellImg := f.image(f.cellConfig("1.0.0"))
	var cellTotal, minTotal time.Duration
	// Software emulation makes single boots vary by seconds: alternate several
	// boots of each so that both see the same machine load.
	// Round 0 warms the host's page cache for both images and is not counted.
	const rounds = 3
	for i := 0; i <= b.N*rounds; i++ {
		// -snapshot: every boot is a first boot.
		v := bootVM(b, minImg, true)
		anchor := v.waitHealth(3 * time.Minute)
		v.vm.Kill()
		v = bootCell(b, cellImg, true)
		cell := v.waitHealth(3 * time.Minute)
		v.vm.Kill()
		b.Logf("round %d: anchor %s, cell %s", i, anchor.Round(100*time.Millisecond), cell.Round(100*time.Millisecond))
		if i == 0 {
			continue
		}
		minTotal += anchor
		cellTotal += cell
	}
	b.ReportMetric(minTotal.Seconds()/float64(b.N*rounds), "anchor-s")
	b.ReportMetric(cellTotal.Seconds()/float64(b.N*rounds), "cell-s")
	b.ReportMetric(cellTotal.Seconds()/minTotal.Seconds(), "cell/anchor")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkImageSize reports the sizes of the cell image: the disk image as
// flashed, the blocks it really occupies (it is sparse), and the root file
// system, which every update bundle carries.
func BenchmarkImageSize(b *testing.B) {
	if err := image.CheckHost("amd64"); err != nil {
		b.Skipf("cannot build the image here: %v", err)
	}
	f := newFixture(b)
	cfg := f.cellConfig("1.0.0")
	for i := 0; i < b.N; i++ {
		img := f.image(cfg)
		bundle := f.bundle(cfg, nil)
		fi, _ := os.Stat(img)
		bi, _ := os.Stat(bundle)
		b.ReportMetric(float64(fi.Size())/(1<<20), "image-MiB")
		b.ReportMetric(float64(allocated(fi))/(1<<20), "image-allocated-MiB")
		b.ReportMetric(float64(bi.Size())/(1<<20), "bundle-MiB")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkUpdateDowntime pushes updates to a running image and measures how
// long /health does not answer (the reboot into the trial), and how long until
// the update is committed: a root-only bundle (the anchor: the reboot is
// gokrazy's kexec and the init switches roots) and then a kernel bundle on the
// same device (the reboot goes through UEFI and systemd-boot, which boots the
// trial entry). Each round starts from a fresh copy of the image, so that the
// root-only update is today's (kexec) and not one after a kernel update.
func BenchmarkUpdateDowntime(b *testing.B) {
	needVM(b)
	f := newFixture(b)
	base := f.image(f.config("1.0.0", time.Minute))
	rootOnly := f.bundle(f.config("1.1.0", 2*time.Minute), nil)
	kernel := f.kernelBundle(f.config("1.2.0", 2*time.Minute), "", nil)
	var down, commit [2]time.Duration
	for i := 0; i < b.N; i++ {
		img := filepath.Join(f.dir, fmt.Sprintf("round-%d.img", i))
		if out, err := exec.Command("cp", "--sparse=always", base, img).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, out)
		}
		v := bootVM(b, img, false)
		v.waitHealth(3 * time.Minute)
		for k, p := range []struct {
			bundle, version string
		}{{rootOnly, "1.1.0"}, {kernel, "1.2.0"}} {
			d, c := measureUpdate(b, v, p.bundle, p.version)
			b.Logf("round %d, %s: down %s, committed %s after the push", i, []string{"root only", "kernel"}[k], d.Round(100*time.Millisecond), c.Round(time.Second))
			down[k] += d
			commit[k] += c
		}
		v.vm.Kill()
	}
	n := float64(b.N)
	b.ReportMetric(down[0].Seconds()/n, "downtime-root-s")
	b.ReportMetric(down[1].Seconds()/n, "downtime-kernel-s")
	b.ReportMetric(down[1].Seconds()/down[0].Seconds(), "x-root-only")
	b.ReportMetric(commit[0].Seconds()/n, "push-to-commit-root-s")
	b.ReportMetric(commit[1].Seconds()/n, "push-to-commit-kernel-s")
	b.ReportMetric(0, "ns/op")
}

// measureUpdate pushes a bundle and returns how long /health did not answer
// (from the first failure to the first answer after it) and how long from the
// push until the update of version was committed.
func measureUpdate(b *testing.B, v *testVM, bundle, version string) (down, commit time.Duration) {
	start := time.Now()
	if code, body := v.post(bundle); code != 200 {
		b.Fatalf("push %s: %d %s", version, code, body)
	}
	c := v.client(time.Second)
	var wentDown time.Time
	for deadline := time.Now().Add(6 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, err := c.Health(context.Background())
		ok := err == nil
		if !ok && wentDown.IsZero() {
			wentDown = time.Now()
		}
		if ok && !wentDown.IsZero() {
			down = time.Since(wentDown)
			break
		}
	}
	if down == 0 {
		b.Fatalf("update %s: /health never went away and came back", version)
	}
	v.waitUpdate(6*time.Minute, "commit of "+version, func(s update.Status) bool {
		return s.State.Phase == update.PhaseCommitted && s.Running == version
	})
	return down, time.Since(start)
}
