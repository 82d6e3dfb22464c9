// Package bootfs reads the boot partition's FAT32 file system in place: it finds
// where a file's bytes lie on the partition, so that the device can rewrite its
// kernel command line by overwriting a single byte (the root partition digit)
// instead of rewriting directory entries and allocation tables. A one-sector
// overwrite is the closest thing to an atomic update that FAT offers, which is
// what a power cut during a root switch needs (gokrazy switches roots the same way).
//
// The image builder uses it too, to walk the directories go-diskfs wrote.
package bootfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// FS is a FAT32 file system on r.
type FS struct {
	r                io.ReaderAt
	BytesPerSector   int64
	ClusterBytes     int64
	FATOffset        int64 // first FAT, bytes from the partition start
	FATBytes         int64 // one FAT's size
	NumFATs          int64
	DataOffset       int64
	RootCluster      uint32
	FSInfoOffset     int64
	TotalClusters    uint32
	reservedFATEntry uint32
}

// ErrNotFound is returned for a path that does not exist.
var ErrNotFound = errors.New("not found")

// Open parses the boot sector of a FAT32 file system.
func Open(r io.ReaderAt) (*FS, error) {
	var bs [512]byte
	if _, err := r.ReadAt(bs[:], 0); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	if bs[510] != 0x55 || bs[511] != 0xAA {
		return nil, errors.New("boot sector: no 55AA signature")
	}
	le := binary.LittleEndian
	f := &FS{r: r}
	f.BytesPerSector = int64(le.Uint16(bs[0x0B:]))
	spc := int64(bs[0x0D])
	reserved := int64(le.Uint16(bs[0x0E:]))
	f.NumFATs = int64(bs[0x10])
	total := int64(le.Uint32(bs[0x20:]))
	fatSectors := int64(le.Uint32(bs[0x24:]))
	if f.BytesPerSector == 0 || spc == 0 || fatSectors == 0 || le.Uint16(bs[0x16:]) != 0 {
		return nil, errors.New("boot sector: not FAT32")
	}
	f.ClusterBytes = spc * f.BytesPerSector
	f.FATOffset = reserved * f.BytesPerSector
	f.FATBytes = fatSectors * f.BytesPerSector
	f.DataOffset = f.FATOffset + f.NumFATs*f.FATBytes
	f.RootCluster = le.Uint32(bs[0x2C:])
	f.FSInfoOffset = int64(le.Uint16(bs[0x30:])) * f.BytesPerSector
	f.TotalClusters = uint32((total*f.BytesPerSector - f.DataOffset) / f.ClusterBytes)
	return f, nil
}

// ClusterOffset is where cluster c's bytes begin.
func (f *FS) ClusterOffset(c uint32) int64 { return f.DataOffset + int64(c-2)*f.ClusterBytes }

// Next returns the cluster after c in its chain, or 0 at the end of the chain.
func (f *FS) Next(c uint32) (uint32, error) {
	var b [4]byte
	if _, err := f.r.ReadAt(b[:], f.FATOffset+int64(c)*4); err != nil {
		return 0, err
	}
	n := binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF
	if n >= 0x0FFFFFF8 {
		return 0, nil
	}
	if n < 2 || n >= f.TotalClusters+2 {
		return 0, fmt.Errorf("cluster %d: broken chain (next %#x)", c, n)
	}
	return n, nil
}

// Chain lists the clusters of the chain starting at c.
func (f *FS) Chain(c uint32) ([]uint32, error) {
	var out []uint32
	for c != 0 {
		out = append(out, c)
		if uint32(len(out)) > f.TotalClusters {
			return nil, errors.New("cluster chain loops")
		}
		var err error
		if c, err = f.Next(c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Entry is a directory entry.
type Entry struct {
	Name    string // long name if there is one, else the 8.3 name
	Dir     bool
	Cluster uint32
	Size    int64
	// Offset is where the 32-byte short entry lies on the partition.
	Offset int64
}

// ReadDir lists the directory whose chain starts at cluster c (including "." and "..").
func (f *FS) ReadDir(c uint32) ([]Entry, error) {
	chain, err := f.Chain(c)
	if err != nil {
		return nil, err
	}
	var out []Entry
	var lfn []uint16
	for _, cl := range chain {
		buf := make([]byte, f.ClusterBytes)
		base := f.ClusterOffset(cl)
		if _, err := f.r.ReadAt(buf, base); err != nil {
			return nil, err
		}
		for i := 0; i+32 <= len(buf); i += 32 {
			e := buf[i : i+32]
			switch {
			case e[0] == 0:
				return out, nil
			case e[0] == 0xE5:
				lfn = nil
				continue
			case e[11] == 0x0F:
				// Long name parts come last part first; each holds 13 UTF-16 units.
				var part []uint16
				for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
					for j := r[0]; j < r[1]; j += 2 {
						part = append(part, binary.LittleEndian.Uint16(e[j:]))
					}
				}
				lfn = append(part, lfn...)
				continue
			}
			name := shortName(e[0:11])
			if lfn != nil {
				name = decodeLFN(lfn)
				lfn = nil
			}
			if e[11]&0x08 != 0 { // volume label
				continue
			}
			le := binary.LittleEndian
			out = append(out, Entry{
				Name:    name,
				Dir:     e[11]&0x10 != 0,
				Cluster: uint32(le.Uint16(e[20:]))<<16 | uint32(le.Uint16(e[26:])),
				Size:    int64(le.Uint32(e[28:])),
				Offset:  base + int64(i),
			})
		}
	}
	return out, nil
}

func shortName(b []byte) string {
	base := strings.TrimRight(string(b[0:8]), " ")
	ext := strings.TrimRight(string(b[8:11]), " ")
	if ext == "" {
		return base
	}
	return base + "." + ext
}

func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 || c == 0xFFFF {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

// Lookup finds the entry at path ("loader/entries/gokrazy.conf"); names compare
// case-insensitively as on FAT.
func (f *FS) Lookup(path string) (Entry, error) {
	dir := f.RootCluster
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		entries, err := f.ReadDir(dir)
		if err != nil {
			return Entry{}, err
		}
		found := false
		for _, e := range entries {
			if strings.EqualFold(e.Name, p) {
				if i == len(parts)-1 {
					return e, nil
				}
				if !e.Dir {
					return Entry{}, fmt.Errorf("%s: %s is not a directory", path, p)
				}
				dir, found = e.Cluster, true
				break
			}
		}
		if !found {
			return Entry{}, fmt.Errorf("%s: %w", path, ErrNotFound)
		}
	}
	return Entry{}, fmt.Errorf("%s: %w", path, ErrNotFound)
}

// Extent returns where the bytes of the file at path lie. It refuses files whose
// clusters are not contiguous, which an in-place rewrite could not handle simply;
// the files it is used for are far smaller than a cluster.
func (f *FS) Extent(path string) (offset, length int64, err error) {
	e, err := f.Lookup(path)
	if err != nil {
		return 0, 0, err
	}
	if e.Dir || e.Cluster < 2 {
		return 0, 0, fmt.Errorf("%s: not a file with data", path)
	}
	chain, err := f.Chain(e.Cluster)
	if err != nil {
		return 0, 0, err
	}
	for i := 1; i < len(chain); i++ {
		if chain[i] != chain[i-1]+1 {
			return 0, 0, fmt.Errorf("%s: clusters not contiguous", path)
		}
	}
	if int64(len(chain))*f.ClusterBytes < e.Size {
		return 0, 0, fmt.Errorf("%s: size beyond its clusters", path)
	}
	return f.ClusterOffset(e.Cluster), e.Size, nil
}

// ReadFile returns the content of the file at path.
func (f *FS) ReadFile(path string) ([]byte, error) {
	off, n, err := f.Extent(path)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = f.r.ReadAt(b, off)
	return b, err
}

// FreeClusters counts the free entries of the first FAT.
func (f *FS) FreeClusters() (uint32, uint32, error) {
	fat := make([]byte, int64(f.TotalClusters+2)*4)
	if _, err := f.r.ReadAt(fat, f.FATOffset); err != nil {
		return 0, 0, err
	}
	var free, first uint32
	for c := uint32(2); c < f.TotalClusters+2; c++ {
		if binary.LittleEndian.Uint32(fat[c*4:])&0x0FFFFFFF == 0 {
			if free == 0 {
				first = c
			}
			free++
		}
	}
	return free, first, nil
}
