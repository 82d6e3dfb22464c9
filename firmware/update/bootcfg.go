package update

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/pic-cell/cell/firmware/bootfs"
)

// BootConfig is the boot partition's choice of permanent root.
type BootConfig interface {
	// Permanent is the root partition (2 or 3) the next boot mounts.
	Permanent() (int, error)
	// SetPermanent makes the next boots mount slot. Idempotent.
	SetPermanent(slot int) error
}

// Partition is a boot partition opened for reading and writing (the block
// device on the device, a file in tests).
type Partition interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// CmdlineFiles are the boot files that carry the kernel command line: systemd-boot's
// entry (amd64) and cmdline.txt (Pi); images have both, and both change together.
var CmdlineFiles = []string{"loader/entries/gokrazy.conf", "cmdline.txt"}

var partnroffRe = regexp.MustCompile(`root=PARTUUID=[0-9a-fA-F-]+/PARTNROFF=([12])`)

// FATBoot is the BootConfig in the boot partition's FAT file system.
type FATBoot struct {
	// Open opens the boot partition; the device opens /dev/<disk>1.
	Open func() (Partition, error)
}

// Permanent reads the root from the first command line file present.
func (b FATBoot) Permanent() (int, error) {
	p, err := b.Open()
	if err != nil {
		return 0, err
	}
	if c, ok := p.(io.Closer); ok {
		defer c.Close()
	}
	fs, err := bootfs.Open(p)
	if err != nil {
		return 0, err
	}
	for _, name := range CmdlineFiles {
		content, err := fs.ReadFile(name)
		if errors.Is(err, bootfs.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		m := partnroffRe.FindSubmatchIndex(content)
		if m == nil {
			return 0, fmt.Errorf("%s: no root=PARTUUID=.../PARTNROFF= in the command line", name)
		}
		return int(content[m[2]]-'0') + 1, nil
	}
	return 0, errors.New("boot partition: no command line file")
}

// SetPermanent overwrites the PARTNROFF digit of every command line file in
// place and syncs. The digit never changes the files' length, so no directory
// entry or allocation table is touched.
func (b FATBoot) SetPermanent(slot int) error {
	if slot != 2 && slot != 3 {
		return fmt.Errorf("root slot %d: want 2 or 3", slot)
	}
	p, err := b.Open()
	if err != nil {
		return err
	}
	if c, ok := p.(io.Closer); ok {
		defer c.Close()
	}
	fs, err := bootfs.Open(p)
	if err != nil {
		return err
	}
	w := &fatWriter{p: p, fs: fs}
	digit := byte('0' + slot - 1)
	found := 0
	for _, name := range permanentCmdlineFiles(w) {
		off, n, err := fs.Extent(name)
		if errors.Is(err, bootfs.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		content := make([]byte, n)
		if _, err := p.ReadAt(content, off); err != nil {
			return err
		}
		m := partnroffRe.FindSubmatchIndex(content)
		if m == nil {
			return fmt.Errorf("%s: no root=PARTUUID=.../PARTNROFF= in the command line", name)
		}
		found++
		if content[m[2]] == digit {
			continue
		}
		if _, err := p.WriteAt([]byte{digit}, off+int64(m[2])); err != nil {
			return err
		}
	}
	if found == 0 {
		return errors.New("boot partition: no command line file")
	}
	return p.Sync()
}

// OpenFile returns an Open function for a device node or image file.
func OpenFile(path string) func() (Partition, error) {
	return func() (Partition, error) { return os.OpenFile(path, os.O_RDWR, 0) }
}
