package qemu

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/pic-cell/cell/firmware/bootfs"
)

// bootDisk writes a GPT disk whose first partition is a FAT32 holding files,
// written in order; "+name" appends content["+name"] to name, whose new
// clusters then follow whatever was written in between.
func bootDisk(t *testing.T, files []string, content map[string][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	const size = 80 << 20
	d, err := diskfs.Create(p, size, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 2048 + (64<<20)/512 - 1, Size: 64 << 20, Type: gpt.EFISystemPartition, Name: "boot"},
	}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "BOOT"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		path, flag := "/"+name, os.O_CREATE|os.O_RDWR
		if more, ok := strings.CutPrefix(name, "+"); ok {
			path, flag = "/"+more, os.O_RDWR|os.O_APPEND
		}
		f, err := fs.OpenFile(path, flag)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(content[name]); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return p
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestReadRpiBoot: the kernel, the device tree and the command line come from
// the boot partition byte for byte, a kernel whose clusters are not
// contiguous (a boot partition rewritten over the years) included; serial0
// becomes the mini UART (ttyS0); a missing device tree is named.
func TestReadRpiBoot(t *testing.T) {
	content := map[string][]byte{
		"vmlinuz":       random(t, 3<<20+77),
		"keep":          random(t, 3000),
		"+vmlinuz":      random(t, 2<<20+123),
		"bcm2710-x.dtb": random(t, 34695),
		"cmdline.txt":   []byte("root=PARTUUID=abc/PARTNROFF=1 ro console=tty1 console=serial0,115200\n"),
		"config.txt":    []byte("arm_64bit=1\nkernel=vmlinuz\n[pi4]\nkernel=other\n[all]\n# padding\n"),
	}
	img := bootDisk(t, []string{"vmlinuz", "keep", "+vmlinuz", "bcm2710-x.dtb", "cmdline.txt", "config.txt"}, content)
	kernel := append(append([]byte{}, content["vmlinuz"]...), content["+vmlinuz"]...)

	// The test is about a fragmented kernel: make sure it is one.
	f, _ := os.Open(img)
	fs, err := bootfs.Open(io.NewSectionReader(f, 2048*512, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.Extent("vmlinuz"); err == nil || !strings.Contains(err.Error(), "not contiguous") {
		t.Fatalf("the test's kernel is not fragmented (%v): the chain walk would go untested", err)
	}
	f.Close()

	b, err := ReadRpiBoot(img, "bcm2710-x.dtb")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Kernel, kernel) {
		t.Errorf("kernel: %d bytes, not the boot partition's %d", len(b.Kernel), len(kernel))
	}
	if !bytes.Equal(b.DeviceTree, content["bcm2710-x.dtb"]) {
		t.Error("device tree differs from the boot partition's")
	}
	if want := "root=PARTUUID=abc/PARTNROFF=1 ro console=tty1 console=ttyS0,115200"; b.Cmdline != want {
		t.Errorf("cmdline %q, want %q", b.Cmdline, want)
	}
	if b.KernelFile != "vmlinuz" || b.DeviceTreeFile != "bcm2710-x.dtb" || b.CmdlineFile != "cmdline.txt" {
		t.Errorf("files %s, %s, %s; want vmlinuz, bcm2710-x.dtb, cmdline.txt", b.KernelFile, b.DeviceTreeFile, b.CmdlineFile)
	}
	if _, err := ReadRpiBoot(img, "bcm2837-rpi-3-b.dtb"); err == nil || !strings.Contains(err.Error(), "bcm2837-rpi-3-b.dtb") {
		t.Errorf("missing device tree: %v, want an error naming it", err)
	}
	if _, err := ReadRpiBoot(filepath.Join(t.TempDir(), "none.img"), "x.dtb"); err == nil {
		t.Error("a missing image was read")
	}
	junk := filepath.Join(t.TempDir(), "junk.img")
	os.WriteFile(junk, random(t, 1<<20), 0o644)
	if _, err := ReadRpiBoot(junk, "x.dtb"); err == nil || !strings.Contains(err.Error(), "no GPT") {
		t.Errorf("an image without a partition table: %v, want no GPT", err)
	}
}

// TestSDCard: an image of a power-of-two size is the card itself; another is
// copied into the next power of two, its bytes unchanged and the rest zero,
// and the copy's zero blocks take no space.
func TestSDCard(t *testing.T) {
	dir := t.TempDir()
	pow := filepath.Join(dir, "pow.img")
	os.WriteFile(pow, make([]byte, 4<<20), 0o644)
	if got, err := sdCard(pow, filepath.Join(dir, "copy1")); err != nil || got != pow {
		t.Errorf("power-of-two image: card %q, %v; want the image itself", got, err)
	}

	odd := filepath.Join(dir, "odd.img")
	data := make([]byte, 5<<20+512) // 5 MiB of zeros between two marked ends
	copy(data, "start")
	copy(data[len(data)-3:], "end")
	os.WriteFile(odd, data, 0o644)
	card, err := sdCard(odd, filepath.Join(dir, "card.img"))
	if err != nil {
		t.Fatal(err)
	}
	if card == odd {
		t.Fatal("an image of 5 MiB + 512 bytes was used as the card")
	}
	got, err := os.ReadFile(card)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8<<20 {
		t.Errorf("card is %d bytes, want 8 MiB", len(got))
	}
	if !bytes.Equal(got[:len(data)], data) || !allZero(got[len(data):]) {
		t.Error("the card's bytes differ from the image's, or its padding is not zero")
	}
	if used := diskUsage(t, card); used > 3<<20 {
		t.Errorf("the card takes %d bytes on disk: zero blocks were written", used)
	}
	if _, err := sdCard(filepath.Join(dir, "none"), filepath.Join(dir, "c")); err == nil {
		t.Error("a missing image made a card")
	}
}

// diskUsage is the space a file takes on disk.
func diskUsage(t *testing.T, p string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestPiConfig: config.txt as a Pi 3 reads it on a normal boot.
func TestPiConfig(t *testing.T) {
	for _, c := range []struct {
		text string
		want piBootConfig
	}{
		{"", piBootConfig{"", "kernel8.img", "cmdline.txt", "d.dtb"}},
		{"arm_64bit=1\nkernel=vmlinuz\n# os_prefix=b/\n", piBootConfig{"", "vmlinuz", "cmdline.txt", "d.dtb"}},
		// A kernel update's slot directory, the other boards' and the
		// one-time [tryboot] sections.
		{"kernel=vmlinuz\nos_prefix=slot-b/\n[pi4]\nkernel=k4\n[tryboot]\nos_prefix=slot-c/\n[pi3]\ncmdline=c3.txt\n[all]\ndevice_tree=x.dtb\n",
			piBootConfig{"slot-b/", "vmlinuz", "c3.txt", "x.dtb"}},
		{"kernel = vmlinuz  # comment\r\n", piBootConfig{"", "vmlinuz", "cmdline.txt", "d.dtb"}},
	} {
		if got := piConfig(c.text, "d.dtb"); got != c.want {
			t.Errorf("piConfig(%q) = %+v, want %+v", c.text, got, c.want)
		}
	}
}
