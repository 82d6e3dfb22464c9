package image

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/pic-cell/cell/firmware/bootfs"
)

// fixFAT32 corrects the two things in go-diskfs' FAT32 output that Debian's
// fsck.vfat refuses (see this package's doc): the ".." entry of a directory
// directly under the root must name cluster 0, not the root's cluster, and the
// FSInfo free-cluster count must be the real count, not left uninitialised.
// Some UEFI firmware and the Pi's boot ROM are less forgiving than Linux, so
// the boot partition must be clean, not merely mountable.
func fixFAT32(imagePath string, start, size int64) error {
	f, err := os.OpenFile(imagePath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fs, err := bootfs.Open(io.NewSectionReader(f, start, size))
	if err != nil {
		return err
	}
	top, err := fs.ReadDir(fs.RootCluster)
	if err != nil {
		return err
	}
	for _, d := range top {
		if !d.Dir || d.Name == "." || d.Name == ".." {
			continue
		}
		sub, err := fs.ReadDir(d.Cluster)
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
		for _, e := range sub {
			if e.Name == ".." && e.Cluster != 0 {
				var zero [2]byte
				if _, err := f.WriteAt(zero[:], start+e.Offset+20); err != nil {
					return err
				}
				if _, err := f.WriteAt(zero[:], start+e.Offset+26); err != nil {
					return err
				}
			}
		}
	}
	free, next, err := fs.FreeClusters()
	if err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint32(b[0:], free)
	binary.LittleEndian.PutUint32(b[4:], next)
	if _, err := f.WriteAt(b[:], start+fs.FSInfoOffset+488); err != nil {
		return err
	}
	return f.Sync()
}
