package qemu_test

import (
	"context"
	"os"
	"strconv"
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

// BenchmarkUpdateDowntime pushes an update to a running cell image and
// measures how long /health does not answer (the reboot into the trial root),
// and how long until the update is committed.
func BenchmarkUpdateDowntime(b *testing.B) {
	needVM(b)
	f := newFixture(b)
	img := f.image(f.config("1.0.0", time.Minute))
	v := bootVM(b, img, false)
	v.waitHealth(3 * time.Minute)
	var down, commit time.Duration
	for i := 0; i < b.N; i++ {
		version := "1.1." + strconv.Itoa(i)
		bundle := f.bundle(f.config(version, 2*time.Minute), nil)
		start := time.Now()
		if code, body := v.post(bundle); code != 200 {
			b.Fatalf("push: %d %s", code, body)
		}
		// Down: from the first failed /health to the first good one.
		c := v.client(time.Second)
		var wentDown time.Time
		for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			_, err := c.Health(context.Background())
			ok := err == nil
			if !ok && wentDown.IsZero() {
				wentDown = time.Now()
			}
			if ok && !wentDown.IsZero() {
				down += time.Since(wentDown)
				break
			}
		}
		v.waitUpdate(4*time.Minute, "commit", func(s update.Status) bool {
			return s.State.Phase == update.PhaseCommitted && s.Running == version
		})
		commit += time.Since(start)
	}
	b.ReportMetric(down.Seconds()/float64(b.N), "downtime-s")
	b.ReportMetric(commit.Seconds()/float64(b.N), "push-to-commit-s")
	b.ReportMetric(0, "ns/op")
}
