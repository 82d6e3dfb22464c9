package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A fake sysfs: the root on vda2 (254:2), a whole disk vdb (254:16).
func fakeSys(t *testing.T) string {
	sys := t.TempDir()
	dev := filepath.Join(sys, "devices/pci0000:00/virtio1/block/vda")
	for _, d := range []string{dev + "/vda2", filepath.Join(sys, "devices/virtual/block/vdb"), filepath.Join(sys, "dev/block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(dev+"/vda2/partition", []byte("2\n"), 0o644)
	os.Symlink("../../devices/pci0000:00/virtio1/block/vda/vda2", filepath.Join(sys, "dev/block/254:2"))
	os.Symlink("../../devices/virtual/block/vdb", filepath.Join(sys, "dev/block/254:16"))
	return sys
}

func TestDiskOf(t *testing.T) {
	sys := fakeSys(t)
	if d, err := diskOf(sys, 254, 2); err != nil || d != "vda" {
		t.Errorf("root on 254:2: %q, %v; want vda", d, err)
	}
	if _, err := diskOf(sys, 254, 16); err == nil || !strings.Contains(err.Error(), "not on a partition") {
		t.Errorf("root on a whole disk: %v, want 'not on a partition'", err)
	}
	if _, err := diskOf(sys, 8, 1); err == nil || !strings.Contains(err.Error(), "not in sysfs") {
		t.Errorf("unknown device: %v", err)
	}
}

// growPerm on a file that is no disk image reports an error and changes nothing.
func TestGrowPermNotADisk(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	data := []byte(strings.Repeat("not a partition table ", 1000))
	os.WriteFile(p, data, 0o644)
	if _, err := growPerm(p); err == nil || !strings.Contains(err.Error(), "no GPT") {
		t.Errorf("growPerm on junk: %v, want 'no GPT'", err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(data) {
		t.Error("the file changed")
	}
}
