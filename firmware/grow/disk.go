package grow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Disk is a whole disk, or an image of one in a file: what Perm reads and
// writes. File is the real one; unit tests use File on disk image files too.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	// Size is the disk's size in bytes.
	Size() int64
	// SectorSize is the logical sector size the partition table counts in.
	SectorSize() int64
	Sync() error
	// ZeroRange makes [off, off+n) read as zeros without writing them where
	// the medium allows.
	ZeroRange(off, n int64) error
	// ResizePartition tells the kernel that partition n now spans
	// [start, start+size) bytes (nothing to do for an image file).
	ResizePartition(n int, start, size int64) error
}

// File is a Disk on an open block device or regular file.
type File struct {
	f          *os.File
	size       int64
	sectorSize int64
	block      bool
}

// Open opens a block device or a disk image file for reading and writing.
func Open(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	d, err := NewFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// NewFile is a Disk on f, a block device or a disk image file opened for
// reading and writing (cellctl flash opens the card itself, with O_EXCL).
// Closing the File closes f.
func NewFile(f *os.File) (*File, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d := &File{f: f, size: fi.Size(), sectorSize: 512}
	if fi.Mode()&os.ModeDevice != 0 {
		d.block = true
		fd := int(f.Fd())
		var size uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
			return nil, fmt.Errorf("reading the disk's size: %w", e)
		}
		ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		if err != nil {
			return nil, fmt.Errorf("reading the disk's sector size: %w", err)
		}
		d.size, d.sectorSize = int64(size), int64(ss)
	} else if !fi.Mode().IsRegular() {
		return nil, errors.New("not a disk or a disk image file")
	}
	return d, nil
}

func (d *File) ReadAt(p []byte, off int64) (int, error)  { return d.f.ReadAt(p, off) }
func (d *File) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d *File) Size() int64                              { return d.size }
func (d *File) SectorSize() int64                        { return d.sectorSize }
func (d *File) Sync() error                              { return d.f.Sync() }
func (d *File) Close() error                             { return d.f.Close() }

// ZeroRange punches a hole into an image file (it stays as long as it was);
// on a block device it asks the kernel to zero the range (BLKZEROOUT), which
// uses the device's own zeroing command where it has one and writes zero
// pages where not.
func (d *File) ZeroRange(off, n int64) error {
	if !d.block {
		return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}
	if off%d.sectorSize != 0 || n%d.sectorSize != 0 {
		return errors.New("range not aligned to sectors")
	}
	r := [2]uint64{uint64(off), uint64(n)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r))); e != 0 {
		return e
	}
	return nil
}

// ResizePartition tells the kernel partition n's new extent with
// BLKPG_RESIZE_PARTITION: the kernel cannot re-read the whole table
// (BLKRRPART) while the root, on the same disk, is mounted, but it can resize
// one partition that nothing has open.
func (d *File) ResizePartition(n int, start, size int64) error {
	if !d.block {
		return nil
	}
	p := unix.BlkpgPartition{Start: start, Length: size, Pno: int32(n)}
	arg := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(p)),
		Data:    (*byte)(unsafe.Pointer(&p)),
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return fmt.Errorf("telling the kernel the partition's new size: %w", e)
	}
	return nil
}

// Reread asks the kernel to read the whole partition table again
// (BLKRRPART), which it does only when nothing on the disk is in use: what
// cellctl flash does after writing a card, whose old partitions the host's
// kernel still knows. Nothing to do for an image file.
func (d *File) Reread() error {
	if !d.block {
		return nil
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKRRPART, 0); e != 0 {
		return fmt.Errorf("asking the kernel to read the new partition table: %w", e)
	}
	return nil
}
