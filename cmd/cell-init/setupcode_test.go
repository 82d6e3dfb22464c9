package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// fatWith makes a FAT32 file system holding files (name → content) with
// dosfstools and mtools, as a card's boot partition written on another computer.
func fatWith(t *testing.T, files map[string]string) string {
	t.Helper()
	for _, tool := range []string{"mkfs.vfat", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (dosfstools, mtools)", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "boot.fat")
	if out, err := exec.Command("mkfs.vfat", "-F", "32", "-C", img, "65536").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v\n%s", err, out)
	}
	for name, content := range files {
		src := filepath.Join(dir, "src")
		os.WriteFile(src, []byte(content), 0o644)
		if out, err := exec.Command("mcopy", "-i", img, src, "::"+name).CombinedOutput(); err != nil {
			t.Fatalf("mcopy: %v\n%s", err, out)
		}
	}
	return img
}

func TestCopySetupCode(t *testing.T) {
	const code = "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23\n"
	boot := fatWith(t, map[string]string{"setup-code.txt": code, "cmdline.txt": "root=x\n"})
	dst := filepath.Join(t.TempDir(), "run", "cell", "setup-code")
	ok, err := copySetupCode(boot, dst)
	if err != nil || !ok {
		t.Fatalf("copySetupCode: %v, %v", ok, err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || string(got) != code {
		t.Fatalf("copied %q, %v; want %q", got, err, code)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Dir(dst)); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}

	// No code on the card: nothing copied, no error.
	dst2 := filepath.Join(t.TempDir(), "setup-code")
	if ok, err := copySetupCode(fatWith(t, map[string]string{"cmdline.txt": "root=x\n"}), dst2); ok || err != nil {
		t.Fatalf("without a code: %v, %v", ok, err)
	}
	if _, err := os.Stat(dst2); !os.IsNotExist(err) {
		t.Errorf("a code file appeared: %v", err)
	}
	// A file far too long to be a code is refused.
	big := make([]byte, 4096)
	for i := range big {
		big[i] = 'A'
	}
	if ok, err := copySetupCode(fatWith(t, map[string]string{"setup-code.txt": string(big)}), dst2); ok || err == nil {
		t.Fatalf("a 4 KiB code: %v, %v", ok, err)
	}
	// No boot partition at all.
	if _, err := copySetupCode(filepath.Join(t.TempDir(), "none"), dst2); err == nil {
		t.Error("a missing boot partition was not an error")
	}
}
