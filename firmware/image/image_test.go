package image

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/pic-cell/cell/firmware/bootfs"
	"github.com/pic-cell/cell/firmware/release"
	"github.com/pic-cell/cell/firmware/update"
)

// moduleRoot is where go.mod is: go build and go list run there.
func moduleRoot(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

const healthd = "github.com/pic-cell/cell/firmware/qemu/testdata/healthd"

func testConfig(target string) *Config {
	return &Config{
		Hostname: "celltest", Target: target, Version: "1.0.0",
		Packages: []Package{{Path: healthd, Args: []string{"-listen", "0.0.0.0:80"}}},
		// Without the container runtime (on by default): these tests are about
		// the layout; containerd_test.go builds roots with it.
		Settings: Settings{RootMiB: 96, PermMiB: 32, BootMiB: 100, Containerd: new(bool)},
	}
}

func needTool(t *testing.T, name, pkg string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

// extract copies partition n out of an image.
func extract(t *testing.T, img string, l Layout, n int) string {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(t.TempDir(), "part")
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(o, io.NewSectionReader(f, l.Start[n], l.Size[n])); err != nil {
		t.Fatal(err)
	}
	o.Close()
	return out
}

func needHost(t *testing.T, target string) {
	if err := CheckHost(target); err != nil {
		t.Skipf("cannot build an image here: %v", err)
	}
}

func TestImageLayoutAmd64(t *testing.T) {
	needHost(t, "amd64")
	cfg := testConfig("amd64")
	img := filepath.Join(t.TempDir(), "cell.img")
	code, err := NewSetupCode()
	if err != nil {
		t.Fatal(err)
	}
	if err := Build(context.Background(), cfg, Options{Dir: moduleRoot(t), SetupCode: code}, img); err != nil {
		t.Fatal(err)
	}
	l := LayoutFor(cfg)

	// Partition table: GPT, four partitions where the layout says.
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	g, ok := tbl.(*gpt.Table)
	if !ok {
		t.Fatalf("partition table is %T, want GPT", tbl)
	}
	wantTypes := map[int]gpt.Type{1: gpt.EFISystemPartition, 2: gpt.LinuxFilesystem, 3: gpt.LinuxFilesystem, 4: gpt.LinuxFilesystem}
	if len(g.Partitions) < 4 {
		t.Fatalf("%d partitions, want 4", len(g.Partitions))
	}
	var bootGUID string
	for _, p := range g.Partitions[:4] {
		if int64(p.Start)*512 != l.Start[p.Index] || int64(p.Size) != l.Size[p.Index] || p.Type != wantTypes[p.Index] {
			t.Errorf("partition %d: start %d size %d type %s; want start %d size %d type %s",
				p.Index, int64(p.Start)*512, p.Size, p.Type, l.Start[p.Index], l.Size[p.Index], wantTypes[p.Index])
		}
		if p.Index == 1 {
			bootGUID = strings.ToLower(p.GUID)
		}
	}
	d.Close()
	if sfdisk, err := exec.LookPath("sfdisk"); err == nil {
		out, err := exec.Command(sfdisk, "--verify", img).CombinedOutput()
		if err != nil {
			t.Errorf("sfdisk --verify: %v\n%s", err, out)
		}
	}

	// Boot partition: systemd-boot, the kernel of the pinned module, and a command
	// line that names root A relative to this partition's GUID.
	bootPart := extract(t, img, l, PartBoot)
	bf, _ := os.Open(bootPart)
	defer bf.Close()
	fs, err := bootfs.Open(bf)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"EFI/BOOT/BOOTX64.EFI", "vmlinuz", "loader/loader.conf", "loader/entries/gokrazy.conf", "cmdline.txt"} {
		if _, err := fs.Lookup(name); err != nil {
			t.Errorf("boot partition: %v", err)
		}
	}
	kernel, _ := fs.ReadFile("vmlinuz")
	kdir, err := moduleDir("go", moduleRoot(t), "github.com/gokrazy/kernel.amd64")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := os.ReadFile(filepath.Join(kdir, "vmlinuz")); !bytes.Equal(kernel, want) {
		t.Errorf("vmlinuz: %d bytes, not the kernel module's %d", len(kernel), len(want))
	}
	entry, _ := fs.ReadFile("loader/entries/gokrazy.conf")
	if want := "root=PARTUUID=" + bootGUID + "/PARTNROFF=1 "; !bytes.Contains(entry, []byte(want)) {
		t.Errorf("boot entry %q does not contain %q", entry, want)
	}
	// Padded, so that a kernel update's commit rewrites them in place; the
	// default is the first entry in systemd-boot's order (firmware/update).
	if len(entry) != update.PermanentEntrySize || !bytes.HasPrefix(entry, []byte("title cell\nlinux /vmlinuz\noptions ")) {
		t.Errorf("boot entry (%d bytes) %q, want the flashed kernel, padded to %d bytes", len(entry), entry, update.PermanentEntrySize)
	}
	if lc, _ := fs.ReadFile(update.LoaderConf); len(lc) != update.LoaderConfSize || !bytes.HasPrefix(lc, update.LoaderConfContent()) {
		t.Errorf("loader.conf %q", lc)
	}
	if perm, err := (update.FATBoot{Open: update.OpenFile(bootPart)}).Permanent(); err != nil || perm != PartRootA {
		t.Errorf("permanent root = %d, %v; want %d", perm, err, PartRootA)
	}
	// The setup code, where the operator reads it off the card and where the
	// device's init finds it: the FAT reader the init uses, and mtools as any
	// other computer would.
	if got, err := fs.ReadFile(release.SetupCodeFile); err != nil || string(got) != code+"\n" {
		t.Errorf("%s on the boot partition: %q, %v; want %q", release.SetupCodeFile, got, err, code+"\n")
	}
	if mtype, err := exec.LookPath("mtype"); err == nil {
		out, err := exec.Command(mtype, "-i", bootPart, "::"+release.SetupCodeFile).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != code {
			t.Errorf("mtype %s: %q, %v; want %q", release.SetupCodeFile, out, err, code)
		}
	} else {
		t.Log("mtype not installed (mtools): setup code read with bootfs only")
	}
	if fsck, err := exec.LookPath("fsck.vfat"); err == nil {
		if out, err := exec.Command(fsck, "-n", bootPart).CombinedOutput(); err != nil {
			t.Errorf("fsck.vfat -n: %v\n%s", err, out)
		}
	} else {
		t.Log("fsck.vfat not installed (dosfstools): FAT check skipped")
	}

	// Root A: a squashfs that unsquashfs lists, with init, the programs, the
	// release and the kernel modules; root B empty.
	unsquashfs := needTool(t, "unsquashfs", "squashfs-tools")
	rootPart := extract(t, img, l, PartRootA)
	out, err := exec.Command(unsquashfs, "-ll", rootPart).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -ll: %v\n%s", err, out)
	}
	for _, want := range []string{"squashfs-root/gokrazy/init", "squashfs-root/gokrazy/dhcp", "squashfs-root/gokrazy/ntp",
		"squashfs-root/user/healthd", "squashfs-root/etc/cell/release.json", "squashfs-root/etc/hostname",
		"squashfs-root/etc/ssl/certs/ca-certificates.crt", "squashfs-root/etc/resolv.conf -> ../tmp/resolv.conf", "squashfs-root/var -> perm/var",
		"squashfs-root/lib/modules/", "squashfs-root/perm", "squashfs-root/proc"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("root file system lacks %s", want)
		}
	}
	if !bytes.Contains(out, []byte("drwxr-xr-x root/root")) || bytes.Contains(out, []byte("drwx------")) {
		t.Error("root directory modes or owners wrong")
	}
	dir := t.TempDir()
	if out, err := exec.Command(unsquashfs, "-d", filepath.Join(dir, "r"), rootPart, "etc/cell/release.json").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	rel, err := release.Load(filepath.Join(dir, "r/etc/cell/release.json"))
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != "1.0.0" || rel.Target != "amd64" || len(rel.Services) != 3 || rel.Services[2].Path != "/user/healthd" {
		b, _ := json.Marshal(rel)
		t.Errorf("release: %s", b)
	}
	if b := extract(t, img, l, PartRootB); !allZero(t, b) {
		t.Error("root B is not empty")
	}

	// Perm: ext4 that e2fsck accepts.
	if e2fsck, err := exec.LookPath("e2fsck"); err == nil {
		permPart := extract(t, img, l, PartPerm)
		if out, err := exec.Command(e2fsck, "-n", "-f", permPart).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -n -f: %v\n%s", err, out)
		}
	}
}

func allZero(t *testing.T, p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte{0}) == len(b)
}

func TestImageLayoutRpi(t *testing.T) {
	needHost(t, "rpi")
	cfg := testConfig("rpi")
	cfg.Settings.Containerd = nil // on: runc is the one cross-compiled cgo program
	cfg.Settings.RootMiB = 160
	img := filepath.Join(t.TempDir(), "cell.img")
	if err := Build(context.Background(), cfg, Options{Dir: moduleRoot(t)}, img); err != nil {
		t.Fatal(err)
	}
	bootPart := extract(t, img, LayoutFor(cfg), PartBoot)
	bf, _ := os.Open(bootPart)
	defer bf.Close()
	fs, err := bootfs.Open(bf)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "bcm2712-rpi-5-b.dtb", "vmlinuz", "config.txt", "cmdline.txt"} {
		if _, err := fs.Lookup(name); err != nil {
			t.Errorf("Pi boot partition: %v", err)
		}
	}
	if _, err := fs.Lookup("EFI/BOOT/BOOTX64.EFI"); err == nil {
		t.Error("Pi image carries the amd64 boot loader")
	}
	if _, err := fs.Lookup(release.SetupCodeFile); err == nil {
		t.Errorf("an image built without a setup code has %s", release.SetupCodeFile)
	}
	ct, _ := fs.ReadFile("config.txt")
	for _, want := range []string{"arm_64bit=1", "kernel=vmlinuz"} {
		if !bytes.Contains(ct, []byte(want)) {
			t.Errorf("config.txt lacks %s:\n%s", want, ct)
		}
	}
	if len(ct) != piConfigSize || bytes.Contains(ct, []byte("os_prefix")) {
		t.Errorf("config.txt is %d bytes, want %d (padded for a kernel update's commit), without os_prefix", len(ct), piConfigSize)
	}
	if perm, err := (update.FATBoot{Open: update.OpenFile(bootPart)}).Permanent(); err != nil || perm != PartRootA {
		t.Errorf("permanent root = %d, %v; want %d", perm, err, PartRootA)
	}
	if fsck, err := exec.LookPath("fsck.vfat"); err == nil {
		if out, err := exec.Command(fsck, "-n", bootPart).CombinedOutput(); err != nil {
			t.Errorf("fsck.vfat -n: %v\n%s", err, out)
		}
	}
	// The programs are arm64.
	if file, err := exec.LookPath("unsquashfs"); err == nil {
		dir := t.TempDir()
		root := extract(t, img, LayoutFor(cfg), PartRootA)
		if out, err := exec.Command(file, "-d", filepath.Join(dir, "r"), root, "gokrazy/init").CombinedOutput(); err != nil {
			t.Fatalf("unsquashfs: %v\n%s", err, out)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "r/gokrazy/init"))
		// ELF e_machine at offset 18: 0xB7 is AArch64.
		if len(b) < 20 || b[18] != 0xB7 {
			t.Error("init is not an arm64 program")
		}
		for _, name := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
			if out, err := exec.Command(file, "-d", filepath.Join(dir, name), root, "user/"+name).CombinedOutput(); err != nil {
				t.Fatalf("unsquashfs: %v\n%s", err, out)
			}
			if m, static := staticELF(t, filepath.Join(dir, name, "user", name)); m != elf.EM_AARCH64 || !static {
				t.Errorf("/user/%s: machine %v static %v, want a static arm64 program", name, m, static)
			}
		}
		// runc was built with cgo and the seccomp tag, which link libseccomp
		// (the build fails without it).
		if tags, cgo := buildTags(t, filepath.Join(dir, "runc/user/runc")); !strings.Contains(","+tags+",", ",seccomp,") || cgo != "1" {
			t.Errorf("the arm64 runc was built with tags %q, CGO_ENABLED=%q; want seccomp and cgo", tags, cgo)
		}
	}
}

func TestNewSetupCode(t *testing.T) {
	a, err := NewSetupCode()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSetupCode()
	if ok, _ := regexp.MatchString(`^[A-Z2-7]{4}(-[A-Z2-7]{4}){6}$`, a); !ok || a == b {
		t.Fatalf("codes %q and %q: want two different codes of seven groups of four base32 characters", a, b)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"bad hostname", func(c *Config) { c.Hostname = "a b" }, "hostname"},
		{"bad target", func(c *Config) { c.Target = "riscv" }, "unknown target"},
		{"bad version", func(c *Config) { c.Version = "v1" }, "version"},
		{"no packages", func(c *Config) { c.Packages = nil }, "no packages"},
		{"bad key", func(c *Config) { c.UpdatePublicKey = "abc" }, "update_public_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig("amd64")
			tt.change(c)
			err := c.Validate()
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestRepoConfigLoads(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join(moduleRoot(t), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Packages[0].Path != "github.com/pic-cell/cell/cmd/cell" {
		t.Errorf("the image's first package is %q, want the cell daemon", cfg.Packages[0].Path)
	}
}
