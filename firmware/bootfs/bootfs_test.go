package bootfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// newFAT writes a FAT32 file system with go-diskfs, the writer the image uses.
func newFAT(t *testing.T, files map[string][]byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot.fat")
	st, err := file.CreateFromPath(p, 40<<20)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := fat32.Create(st, 40<<20, 0, 512, "TEST", false)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if dir := filepath.Dir(name); dir != "/" {
			fs.Mkdir(dir)
		}
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(content)
		f.Close()
	}
	st.Close()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestLookupAndRead(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 40_000) // several clusters
	f := newFAT(t, map[string][]byte{
		"/cmdline.txt":                          []byte("root=x\n"),
		"/loader/entries/gokrazy.conf":          []byte("title cell\n"),
		"/a-rather-long-file-name-for-lfn.data": big,
	})
	fs, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{
		"cmdline.txt": []byte("root=x\n"), "CMDLINE.TXT": []byte("root=x\n"),
		"loader/entries/gokrazy.conf": []byte("title cell\n"), "a-rather-long-file-name-for-lfn.data": big,
	} {
		got, err := fs.ReadFile(name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadFile(%q): %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	off, n, err := fs.Extent("cmdline.txt")
	if err != nil || n != 7 {
		t.Fatalf("Extent: %d, %d, %v", off, n, err)
	}
	b := make([]byte, n)
	f.ReadAt(b, off)
	if string(b) != "root=x\n" {
		t.Errorf("bytes at the extent: %q", b)
	}
	if _, err := fs.Lookup("loader/nope.conf"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %v, want ErrNotFound", err)
	}
	if _, err := fs.Lookup("cmdline.txt/x"); err == nil {
		t.Error("a file used as a directory was found")
	}
	free, first, err := fs.FreeClusters()
	if err != nil || free == 0 || free >= fs.TotalClusters || first < 2 {
		t.Errorf("FreeClusters = %d, %d, %v of %d", free, first, err, fs.TotalClusters)
	}
}

func TestOpenRefusesNonFAT(t *testing.T) {
	if _, err := Open(bytes.NewReader(make([]byte, 4096))); err == nil {
		t.Error("zeros opened as FAT32")
	}
}
