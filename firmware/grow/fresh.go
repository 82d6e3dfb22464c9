package grow

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

// An ext4 superblock's fields (Linux Documentation/filesystems/ext4), by byte
// offset within the superblock, which starts 1024 bytes into the partition.
const (
	sbOffset          = 1024
	sbInodesCount     = 0x0
	sbBlocksCountLo   = 0x4
	sbFreeInodesCount = 0x10
	sbLogBlockSize    = 0x18
	sbMntCount        = 0x34
	sbMagic           = 0x38
	sbFirstIno        = 0x54
	sbFeatureIncompat = 0x60
	sbBlocksCountHi   = 0x150

	ext4Magic            = 0xef53
	incompatRecover      = 0x4
	incompat64Bit        = 0x80
	zeroCheckBytes       = 1 << 20
	formattingMarkerSize = 512
)

// formattingMarker is what Format writes over the partition's first 4 KiB
// before it starts, and replaces with the new superblock when it is done: a
// partition that starts with it is one of our own formats cut short.
var formattingMarker = []byte("pic-cell perm: formatting, not finished\n")

// permState is what a data partition holds, as far as growing it is concerned.
type permState struct {
	empty bool   // holds nothing: may be grown and formatted
	fs    int64  // the size of the ext4 on it (0: none)
	why   string // said in the log either way
}

// inspect decides whether the partition at [start, start+size) of r holds
// nothing. See the package documentation for the rules.
func inspect(r io.ReaderAt, start, size int64) (permState, error) {
	head, err := readAt(r, start, 4096)
	if err != nil {
		return permState{}, fmt.Errorf("reading the data partition: %w", err)
	}
	sb := head[sbOffset:]
	if binary16(sb, sbMagic) != ext4Magic {
		if bytes.HasPrefix(head, formattingMarker) {
			return permState{empty: true, why: "a format of it was cut short"}, nil
		}
		z, err := allZero(r, start, min(size, zeroCheckBytes))
		if err != nil {
			return permState{}, err
		}
		if !z {
			return permState{why: "it holds something that is not an ext4 file system"}, nil
		}
		for _, bs := range []int64{1024, 2048, 4096} {
			// The first backup superblock, in block group 1, for each block size.
			off := bs*8*bs + sbOffset
			if bs == 1024 {
				off = (8*bs + 1) * bs
			}
			if off+2*sbOffset > size {
				continue
			}
			b, err := readAt(r, start+off, sbOffset)
			if err != nil {
				return permState{}, err
			}
			if binary16(b, sbMagic) == ext4Magic {
				return permState{why: "its first superblock is gone but a backup of it is there"}, nil
			}
		}
		return permState{empty: true, why: "it has never been formatted"}, nil
	}

	fsSize := fsBytes(sb)
	if n := binary16(sb, sbMntCount); n != 0 {
		return permState{fs: fsSize, why: fmt.Sprintf("it has been mounted before (mount count %d)", n)}, nil
	}
	if le32(sb, sbFeatureIncompat)&incompatRecover != 0 {
		return permState{fs: fsSize, why: "its journal needs recovery"}, nil
	}
	used := int64(le32(sb, sbInodesCount)) - int64(le32(sb, sbFreeInodesCount))
	// Inodes 1 to first_ino-1 are reserved (the root directory is 2), and
	// lost+found takes the first one after them.
	if limit := int64(le32(sb, sbFirstIno)); used > limit {
		return permState{fs: fsSize, why: fmt.Sprintf("%d inodes are in use", used)}, nil
	}
	if fsSize > size {
		return permState{fs: fsSize, why: "its file system is larger than the partition"}, nil
	}
	names, err := rootNames(r, start, fsSize)
	if err != nil {
		return permState{fs: fsSize, why: "its root directory cannot be read: " + err.Error()}, nil
	}
	for _, n := range names {
		if n != "lost+found" {
			return permState{fs: fsSize, why: fmt.Sprintf("it holds %q", n)}, nil
		}
	}
	return permState{empty: true, fs: fsSize, why: "it holds a file system that was never mounted and has nothing in it"}, nil
}

// rootNames lists the root directory of the ext4 at start, and lost+found's
// entries under "lost+found/" so that anything in it counts as data.
func rootNames(r io.ReaderAt, start, size int64) ([]string, error) {
	fs, err := ext4.Read(readerStorage{r: r, off: start, size: size}, size, 0, 512)
	if err != nil {
		return nil, err
	}
	entries, err := fs.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		if e.Name() == "lost+found" {
			lf, err := fs.ReadDir("lost+found")
			if err != nil {
				return nil, err
			}
			for _, x := range lf {
				names = append(names, "lost+found/"+x.Name())
			}
		}
	}
	return names, nil
}

func binary16(b []byte, off int) uint16 { return uint16(b[off]) | uint16(b[off+1])<<8 }

// fsBytes is the file system's size in bytes, from its superblock.
func fsBytes(sb []byte) int64 {
	blocks := int64(le32(sb, sbBlocksCountLo))
	if le32(sb, sbFeatureIncompat)&incompat64Bit != 0 {
		blocks |= int64(le32(sb, sbBlocksCountHi)) << 32
	}
	return blocks << (10 + le32(sb, sbLogBlockSize))
}

func allZero(r io.ReaderAt, off, n int64) (bool, error) {
	b, err := readAt(r, off, n)
	if err != nil {
		return false, err
	}
	for _, c := range b {
		if c != 0 {
			return false, nil
		}
	}
	return true, nil
}

// readerStorage presents a region of a ReaderAt as go-diskfs's read-only
// storage, for ext4.Read.
type readerStorage struct {
	r         io.ReaderAt
	off, size int64
	pos       int64
}

func (s readerStorage) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, s.off+off) }
func (s readerStorage) Stat() (os.FileInfo, error)              { return nil, errNotAvailable }
func (s readerStorage) Read([]byte) (int, error)                { return 0, errNotAvailable }
func (s readerStorage) Close() error                            { return nil }
func (s readerStorage) Seek(int64, int) (int64, error)          { return 0, errNotAvailable }
func (s readerStorage) Sys() (*os.File, error)                  { return nil, errNotAvailable }
func (s readerStorage) Path() string                            { return "" }
func (s readerStorage) Writable() (backend.WritableFile, error) {
	return nil, backend.ErrIncorrectOpenMode
}
