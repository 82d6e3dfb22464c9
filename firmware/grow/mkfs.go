package grow

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

var errNotAvailable = errors.New("not available")

// headBytes is the part of the partition Format holds back until the end: the
// first 4 KiB, which hold the primary superblock (and, with the 4 KiB blocks
// go-diskfs picks for anything over 512 MiB, nothing else).
const headBytes = 4096

// inodeRatio is one inode per 16 KiB, mke2fs's default for ext4 (go-diskfs's
// own is one per 8 KiB): a million inodes on 16 GiB, and half the inode
// tables to zero.
const inodeRatio = 16 << 10

// minZeroRun is the smallest all-zero write that Format turns into a ZeroRange
// call instead of writing it.
const minZeroRun = 64 << 10

// Format makes an ext4 file system labelled label over the whole partition at
// [start, start+size) of d, with go-diskfs's ext4 writer. Before it writes
// anything it replaces the partition's first 4 KiB with a marker that says a
// format is under way; the new primary superblock replaces the marker last,
// after everything else is synced. A power cut in between leaves the marker,
// which the next boot recognises as its own format cut short (and formats
// again), and never a superblock over half-written metadata.
//
// go-diskfs writes each inode table as zeros (and the journal mostly so); those
// writes go to d.ZeroRange, which punches a hole in a file and asks a block
// device to zero the range itself (BLKZEROOUT): on a sparse 32 GiB disk file
// about 1.1 GiB of zeros are never written.
func Format(d Disk, start, size int64, label string) error {
	marker := make([]byte, headBytes)
	copy(marker, formattingMarker)
	if _, err := d.WriteAt(marker, start); err != nil {
		return fmt.Errorf("marking the data partition: %w", err)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	st := &formatStorage{d: d, off: start, size: size, head: make([]byte, headBytes)}
	if _, err := ext4.Create(st, size, 0, 512, &ext4.Params{VolumeName: label, InodeRatio: inodeRatio}); err != nil {
		return fmt.Errorf("making the ext4 file system: %w", err)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	if _, err := d.WriteAt(st.head, start); err != nil {
		return fmt.Errorf("writing the superblock: %w", err)
	}
	return d.Sync()
}

// formatStorage is the partition as go-diskfs's ext4 writer sees it: the first
// headBytes live in memory until Format writes them, and long runs of zeros
// become ZeroRange calls.
type formatStorage struct {
	d         Disk
	off, size int64
	head      []byte
}

func (s *formatStorage) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.d.ReadAt(p, s.off+off)
	if off < headBytes {
		copy(p, s.head[off:])
	}
	return n, err
}

func (s *formatStorage) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.size {
		return 0, fmt.Errorf("write beyond the partition's end at %d", off)
	}
	n := len(p)
	if off < headBytes {
		c := copy(s.head[off:], p)
		p, off = p[c:], off+int64(c)
		if len(p) == 0 {
			return n, nil
		}
	}
	if len(p) >= minZeroRun && isZero(p) {
		if err := s.d.ZeroRange(s.off+off, int64(len(p))); err == nil {
			return n, nil
		}
	}
	if _, err := s.d.WriteAt(p, s.off+off); err != nil {
		return 0, err
	}
	return n, nil
}

var zeros = make([]byte, minZeroRun)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func (s *formatStorage) Stat() (os.FileInfo, error)              { return nil, errNotAvailable }
func (s *formatStorage) Read([]byte) (int, error)                { return 0, errNotAvailable }
func (s *formatStorage) Close() error                            { return nil }
func (s *formatStorage) Seek(int64, int) (int64, error)          { return 0, errNotAvailable }
func (s *formatStorage) Sys() (*os.File, error)                  { return nil, errNotAvailable }
func (s *formatStorage) Path() string                            { return "" }
func (s *formatStorage) Writable() (backend.WritableFile, error) { return s, nil }
