package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// fakeHost builds a /sys and /proc with: sda (the host's disk, root on sda1),
// sdb (a USB stick with sdb1), sdc (under LVM: sdc1 held by dm-0), and mounts.
func fakeHost(t *testing.T, mounts string) (hostView, string) {
	t.Helper()
	root := t.TempDir()
	sys := filepath.Join(root, "sys")
	mk := func(p, content string) {
		full := filepath.Join(sys, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		full := filepath.Join(sys, name)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.Symlink(filepath.Join(sys, target), full); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct{ dev, bus string }{{"sda", "pci"}, {"sdb", "usb"}, {"sdc", "pci2"}} {
		base := "devices/" + d.bus + "/block/" + d.dev
		mk(base+"/size", "31116288\n")
		mk(base+"/device/model", "Model "+d.dev+"\n")
		mk(base+"/"+d.dev+"1/partition", "1\n")
		link(base, "class/block/"+d.dev)
		link(base+"/"+d.dev+"1", "class/block/"+d.dev+"1")
	}
	mk("devices/pci2/block/sdc/sdc1/holders/dm-0/.keep", "")
	mk("devices/virtual/block/dm-0/slaves/sdc1/.keep", "")
	link("devices/virtual/block/dm-0", "class/block/dm-0")
	link("devices/pci/block/sda/sda1", "dev/block/8:1")
	proc := filepath.Join(root, "proc")
	os.MkdirAll(proc, 0o755)
	if err := os.WriteFile(filepath.Join(proc, "mounts"), []byte(mounts), 0o644); err != nil {
		t.Fatal(err)
	}
	devDir := filepath.Join(root, "dev")
	os.MkdirAll(devDir, 0o755)
	for _, n := range []string{"sda", "sda1", "sdb", "sdb1", "sdc"} {
		os.WriteFile(filepath.Join(devDir, n), nil, 0o644)
	}
	return hostView{Proc: proc, Sys: sys, RootDev: func() (string, error) { return "8:1", nil }}, devDir
}

func TestFlashRefusals(t *testing.T) {
	const base = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\n"
	tests := []struct {
		name, mounts, dev, want string
	}{
		{"host disk", base, "sda", "mounted on /"},
		{"host disk even if not listed as mounted", "proc /proc proc rw 0 0\n", "sda", "runs from"},
		{"partition", base, "sdb1", "is a partition"},
		{"mounted stick", base + "/dev/sdb1 /media/usb\\040stick vfat rw 0 0\n", "sdb", "mounted on /media/usb stick"},
		{"whole disk mounted", base + "/dev/sdb /mnt vfat rw 0 0\n", "sdb", "mounted on /mnt"},
		{"held by LVM", base, "sdc", "in use by dm-0"},
		{"not a block device", base, "sda1/../nothing", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, dev := fakeHost(t, tt.mounts)
			_, err := h.checkFlashTarget(filepath.Join(dev, tt.dev))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFlashWritesFreeDisk(t *testing.T) {
	h, dev := fakeHost(t, "/dev/sda1 / ext4 rw 0 0\n")
	img := filepath.Join(t.TempDir(), "cell.img")
	content := bytes.Repeat([]byte("cell"), 300_000)
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	c := &CLI{Stdin: strings.NewReader("sdb\n"), Stdout: &stdout, Stderr: &stderr}
	if err := c.flashTo(h, img, filepath.Join(dev, "sdb"), false); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dev, "sdb"))
	if !bytes.Equal(got, content) {
		t.Errorf("device holds %d bytes, want the image's %d", len(got), len(content))
	}
	if !strings.Contains(stderr.String(), "100%") {
		t.Errorf("no progress shown: %q", stderr.String())
	}
	// A wrong confirmation writes nothing.
	os.WriteFile(filepath.Join(dev, "sdb"), nil, 0o644)
	c.Stdin = strings.NewReader("sda\n")
	if err := c.flashTo(h, img, filepath.Join(dev, "sdb"), false); err == nil {
		t.Fatal("flashed without the right confirmation")
	}
	if got, _ := os.ReadFile(filepath.Join(dev, "sdb")); len(got) != 0 {
		t.Error("wrote despite the refused confirmation")
	}
}

// TestFlashGrowsPerm: a card larger than the image comes out of flash with its
// data partition grown to the card's end and formatted at full size, by the
// init's own code (firmware/grow); the card's "device" here is a file.
func TestFlashGrowsPerm(t *testing.T) {
	h, dev := fakeHost(t, "/dev/sda1 / ext4 rw 0 0\n")
	const mib = 1 << 20
	img := filepath.Join(t.TempDir(), "cell.img")
	d, err := diskfs.Create(img, 64*mib, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	off := int64(mib)
	for i, size := range []int64{8 * mib, 12 * mib, 12 * mib, 30 * mib} {
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: uint64(off / 512),
			End: uint64((off+size)/512 - 1), Size: uint64(size), Type: gpt.LinuxFilesystem})
		off += size
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 4, FSType: filesystem.TypeExt4, VolumeLabel: "perm"}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	card := filepath.Join(dev, "sdb")
	if err := os.Truncate(card, 1<<30); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	c := &CLI{Stdout: &stdout, Stderr: &stderr}
	if err := c.flashTo(h, img, card, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "grew the data partition from 30 MiB to 990 MiB and made its ext4 at full size") {
		t.Fatalf("flash did not grow perm:\n%s\n%s", stdout.String(), stderr.String())
	}
	got, err := diskfs.Open(card, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	pt, err := got.GetPartitionTable()
	if err != nil {
		t.Fatalf("the card's partition table: %v", err)
	}
	if end := pt.(*gpt.Table).Partitions[3].End; end != (1<<30-mib)/512-1 {
		t.Errorf("perm ends at sector %d, want %d", end, (1<<30-mib)/512-1)
	}
	if _, err := got.GetFilesystem(4); err != nil {
		t.Errorf("the grown perm's ext4: %v", err)
	}
}
