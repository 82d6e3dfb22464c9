package qemu_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkPermFirstBoot measures the first boot of an image written to a 4
// GiB and a 32 GiB sparse disk, which grows /perm to the disk's end and
// formats it, as a ratio to a later boot of the same disk (QEMU start to the
// first 200 from /health both times). Each round starts from a fresh copy of
// the image.
func BenchmarkPermFirstBoot(b *testing.B) {
	needVM(b)
	f := newFixture(b)
	cfg := f.config("1.0.0", time.Minute)
	built := f.image(cfg)
	for _, size := range []struct {
		name  string
		bytes int64
	}{{"4GiB", 4 << 30}, {"32GiB", 32 << 30}} {
		b.Run(size.name, func(b *testing.B) {
			var first, later time.Duration
			for i := 0; i < b.N; i++ {
				img := filepath.Join(b.TempDir(), "disk.img")
				if out, err := exec.Command("cp", "--sparse=always", built, img).CombinedOutput(); err != nil {
					b.Fatalf("copying the image: %v\n%s", err, out)
				}
				img, wantMiB := onDisk(b, img, cfg, size.bytes)
				v := bootVM(b, img, false)
				d1 := v.waitHealth(5 * time.Minute)
				if !strings.Contains(v.serial.String(), "perm: grew the data partition") {
					b.Fatalf("the first boot did not grow /perm (to %d MiB)", wantMiB)
				}
				v.vm.Kill()
				mark := len(v.serial.String())
				v.start(false)
				d2 := v.waitHealth(5 * time.Minute)
				if !strings.Contains(v.serial.String()[mark:], "perm: data partition left as it is") {
					b.Fatal("the later boot did not leave /perm alone")
				}
				v.vm.Kill()
				b.Log(permLines(v.serial.String()))
				b.Logf("%s: first boot %s, later boot %s", size.name, d1.Round(100*time.Millisecond), d2.Round(100*time.Millisecond))
				first += d1
				later += d2
			}
			b.ReportMetric(first.Seconds()/float64(b.N), "first-boot-s")
			b.ReportMetric(later.Seconds()/float64(b.N), "later-boot-s")
			b.ReportMetric(first.Seconds()/later.Seconds(), "x-later-boot")
			b.ReportMetric(0, "ns/op")
		})
	}
}
