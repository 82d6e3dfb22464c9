package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pic-cell/cell/firmware/bootfs"
	"github.com/pic-cell/cell/firmware/image"
)

// TestImageBuildSetupCode: `cellctl image build` prints a new setup code for
// each image and writes that code to the image's boot partition as
// setup-code.txt.
func TestImageBuildSetupCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a disk image")
	}
	if err := image.CheckHost("amd64"); err != nil {
		t.Skipf("cannot build an image here: %v", err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	cfg := `{"hostname":"cell","target":"amd64","version":"1.0.0",
	  "packages":[{"path":"github.com/pic-cell/cell/firmware/qemu/testdata/healthd"}],
	  "settings":{"root_mib":64,"perm_mib":32,"containerd":false}}`
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	codeRe := regexp.MustCompile(`(?m)^setup code: ([A-Z2-7]{4}(?:-[A-Z2-7]{4}){6})$`)
	var codes []string
	for i := range 2 {
		img := filepath.Join(dir, fmt.Sprintf("cell%d.img", i))
		var out bytes.Buffer
		c := &CLI{Stdout: &out, Stderr: io.Discard}
		if err := c.Run([]string{"image", "build", "-config", cfgPath, "-o", img}); err != nil {
			t.Fatal(err)
		}
		m := codeRe.FindStringSubmatch(out.String())
		if m == nil || !strings.Contains(out.String(), "boot partition as setup-code.txt") {
			t.Fatalf("image build printed no setup code:\n%s", out.String())
		}
		codes = append(codes, m[1])
		loaded, err := image.LoadConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		l := image.LayoutFor(loaded)
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := bootfs.Open(io.NewSectionReader(f, l.Start[image.PartBoot], l.Size[image.PartBoot]))
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		got, err := fs.ReadFile("setup-code.txt")
		f.Close()
		if err != nil || strings.TrimSpace(string(got)) != m[1] {
			t.Fatalf("setup-code.txt on the boot partition: %q, %v; printed %q", got, err, m[1])
		}
	}
	if codes[0] == codes[1] {
		t.Errorf("two images got the same setup code %s", codes[0])
	}
}

// TestLayoutTable: the layout image build prints names each partition with
// its file system, the start and size the builder uses, and says that perm
// grows to fill the card.
func TestLayoutTable(t *testing.T) {
	cfg := &image.Config{Target: "rpi", Version: "2.0.0", Settings: image.Settings{BootMiB: 100, RootMiB: 256, PermMiB: 256}}
	out := layoutTable(cfg)
	t.Log("\n" + out)
	l := image.LayoutFor(cfg)
	for n, want := range map[int]string{
		image.PartBoot:  `1  boot    FAT32 .* Pi firmware`,
		image.PartRootA: `2  root-a  squashfs .* version 2\.0\.0`,
		image.PartRootB: `3  root-b  squashfs .* empty`,
		image.PartPerm:  `4  perm    ext4 .* grows to fill the card at first boot`,
	} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^  %s`, strings.Replace(want, " .* ", fmt.Sprintf(` +%d MiB +%d MiB  .*`, l.Start[n]>>20, l.Size[n]>>20), 1)))
		if !re.MatchString(out) {
			t.Errorf("partition %d: no line matching %s", n, re)
		}
	}
	if !strings.Contains(out, fmt.Sprintf("layout (%d MiB as built", l.DiskSize>>20)) {
		t.Errorf("no disk size in %q", out)
	}
}
