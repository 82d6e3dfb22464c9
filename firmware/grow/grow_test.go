package grow

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	mib       = int64(1) << 20
	imgSize   = 64 * mib  // the "image": four partitions and the GPT
	cardSize  = 640 * mib // the "card" it is written to (over 512 MiB: 4 KiB blocks, as on a card)
	smallCard = 128 * mib // a card for the tests that need no 4 KiB blocks
)

// makeImage writes a disk image laid out as the image builder lays out the
// cell's (boot, root A, root B, perm; 1 MiB aligned; perm ext4 made by
// go-diskfs), then extends the file to cardSize, as a card larger than the
// image is after flashing. fill, if set, writes into perm before.
func makeImage(t *testing.T, card int64, fill func(fs filesystem.FileSystem)) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(p, imgSize, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int64{8 * mib, 12 * mib, 12 * mib, 30 * mib}
	names := []string{"boot", "root-a", "root-b", "perm"}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	off := mib
	for i, s := range sizes {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: uint64(off / 512), End: uint64((off+s)/512 - 1), Size: uint64(s),
			Type: gpt.LinuxFilesystem, Name: names[i],
		})
		off += s
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 4, FSType: filesystem.TypeExt4, VolumeLabel: "perm"})
	if err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		fill(fs)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, card); err != nil {
		t.Fatal(err)
	}
	return p
}

func growFile(t *testing.T, p string) Result {
	t.Helper()
	d, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	res, err := Perm(d, PermPartition)
	if err != nil {
		t.Fatalf("Perm: %v", err)
	}
	return res
}

func fileHash(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// extractPart copies partition n of the image at p to a sparse file of its
// own (skipping zero MiBs), for e2fsck.
func extractPart(t *testing.T, p string, start, size int64) string {
	t.Helper()
	in, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out := filepath.Join(t.TempDir(), "part.img")
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	buf := make([]byte, mib)
	for off := int64(0); off < size; off += mib {
		n, err := in.ReadAt(buf[:min(mib, size-off)], start+off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !isZero(buf[:n]) {
			if _, err := o.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := o.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGrowFreshPerm(t *testing.T) {
	p := makeImage(t, cardSize, nil)
	res := growFile(t, p)
	t.Log(res)
	if !res.Grew || !res.Formatted {
		t.Fatalf("fresh perm on a larger disk: grew %v, formatted %v (%s)", res.Grew, res.Formatted, res.Why)
	}
	permStart := 1*mib + 8*mib + 24*mib
	// The partition ends on the last whole MiB before the backup table.
	wantSize := (cardSize-33*512)/mib*mib - permStart
	if res.OldSize != 30*mib || res.Size != wantSize {
		t.Errorf("size %d -> %d, want %d -> %d", res.OldSize, res.Size, 30*mib, wantSize)
	}

	// go-diskfs reads the table back (it checks the CRCs) with perm's new end.
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := d.GetPartitionTable()
	if err != nil {
		t.Fatalf("go-diskfs reading the grown table: %v", err)
	}
	parts := tbl.(*gpt.Table).Partitions
	if got := int64(parts[3].End); got != (permStart+wantSize)/512-1 {
		t.Errorf("perm's last sector is %d, want %d", got, (permStart+wantSize)/512-1)
	}
	if int64(parts[0].Start) != mib/512 || int64(parts[2].End) != permStart/512-1 {
		t.Errorf("the other partitions moved: %+v %+v", parts[0], parts[2])
	}
	// The new ext4 fills the partition, go-diskfs reads it, and it is empty.
	fs, err := d.GetFilesystem(4)
	if err != nil {
		t.Fatalf("reading the new ext4: %v", err)
	}
	if fs.Label() != PermLabel {
		t.Errorf("label %q", fs.Label())
	}
	d.Close()

	// Both headers and both entry arrays, by our own reader: the backup is at
	// the disk's last sector and names the primary; the CRCs hold.
	f, _ := os.Open(p)
	defer f.Close()
	g, err := readGPT(f, 512)
	if err != nil {
		t.Fatalf("primary after growing: %v", err)
	}
	last := int64(cardSize/512 - 1)
	if alt := le64(g.header, hdrAltLBA); alt != last {
		t.Errorf("primary says the backup is at %d, want %d", alt, last)
	}
	bh, _ := readAt(f, last*512, 512)
	if !bytes.Equal(bh[:8], gptSignature) || headerCRC(bh) != le32(bh, hdrCRC) {
		t.Fatalf("no valid backup header at the disk's last sector")
	}
	if le64(bh, hdrMyLBA) != last || le64(bh, hdrAltLBA) != 1 || le64(bh, hdrLastUsable) != le64(g.header, hdrLastUsable) {
		t.Errorf("backup header fields: my %d alt %d last usable %d", le64(bh, hdrMyLBA), le64(bh, hdrAltLBA), le64(bh, hdrLastUsable))
	}
	be, _ := readAt(f, le64(bh, hdrEntriesLBA)*512, int64(len(g.entries)))
	if !bytes.Equal(be, g.entries) {
		t.Error("the backup entry array differs from the primary")
	}
	// The old backup header (at the image's last sector) is wiped.
	old, _ := readAt(f, imgSize-512, 512)
	if bytes.Equal(old[:8], gptSignature) {
		t.Error("the old backup header is still there inside perm")
	}
	if sz := le32(g.mbr, 446+12); int64(sz) != last {
		t.Errorf("protective MBR covers %d sectors, want %d", sz, last)
	}

	if sgdisk, err := exec.LookPath("sgdisk"); err == nil {
		out, err := exec.Command(sgdisk, "-v", p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Errorf("sgdisk -v: %v\n%s", err, out)
		}
	} else {
		t.Log("sgdisk not installed (Debian package gdisk): not cross-checked")
	}
	if fdisk, err := exec.LookPath("fdisk"); err == nil {
		out, err := exec.Command(fdisk, "-l", p).CombinedOutput()
		if err != nil || strings.Contains(string(out), "GPT PMBR size mismatch") || strings.Contains(string(out), "corrupt") {
			t.Errorf("fdisk -l: %v\n%s", err, out)
		}
	}
	if e2fsck, err := exec.LookPath("e2fsck"); err == nil {
		part := extractPart(t, p, permStart, wantSize)
		if out, err := exec.Command(e2fsck, "-f", "-n", part).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -f -n on the new perm: %v\n%s", err, out)
		}
		if dumpe2fs, err := exec.LookPath("dumpe2fs"); err == nil {
			out, _ := exec.Command(dumpe2fs, "-h", part).CombinedOutput()
			if !strings.Contains(string(out), "Block count:              "+strconv.FormatInt(wantSize/4096, 10)) {
				t.Errorf("dumpe2fs: block count is not %d\n%s", wantSize/4096, out)
			}
		}
	} else {
		t.Log("e2fsck not installed (Debian package e2fsprogs): not cross-checked")
	}

	// Twice: nothing to do, not a byte changes.
	before := fileHash(t, p)
	res2 := growFile(t, p)
	if res2.Grew || res2.Formatted || res2.Size != wantSize {
		t.Errorf("second run: %+v", res2)
	}
	if fileHash(t, p) != before {
		t.Error("the second run changed the disk")
	}
}

// A perm with a file in it is never touched: not the table, not a byte.
func TestHoldsDataRefused(t *testing.T) {
	cases := map[string]func(t *testing.T) string{
		"a file": func(t *testing.T) string {
			return makeImage(t, smallCard, func(fs filesystem.FileSystem) {
				f, err := fs.OpenFile("/peers.db", os.O_CREATE|os.O_RDWR)
				if err != nil {
					t.Fatal(err)
				}
				f.Write([]byte("the household's data"))
				f.Close()
			})
		},
		"a directory": func(t *testing.T) string {
			return makeImage(t, smallCard, func(fs filesystem.FileSystem) {
				if err := fs.Mkdir("var"); err != nil {
					t.Fatal(err)
				}
			})
		},
		"mounted before": func(t *testing.T) string {
			p := makeImage(t, smallCard, nil)
			patch(t, p, 33*mib+sbOffset+sbMntCount, []byte{1, 0})
			return p
		},
		"superblock zeroed, backups there": func(t *testing.T) string {
			p := makeImage(t, smallCard, nil)
			patch(t, p, 33*mib, make([]byte, mib))
			return p
		},
		"not ext4": func(t *testing.T) string {
			p := makeImage(t, smallCard, nil)
			patch(t, p, 33*mib, bytes.Repeat([]byte("data"), 1024))
			return p
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			p := mk(t)
			before := fileHash(t, p)
			res := growFile(t, p)
			if res.Grew || res.Formatted {
				t.Fatalf("a perm holding data was changed: %s", res)
			}
			if fileHash(t, p) != before {
				t.Fatal("the disk changed")
			}
			t.Log(res)
		})
	}
}

func patch(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A format cut short (the marker in place of the superblock) after the table
// was grown is done again; a never-formatted (zero) perm is formatted.
func TestInterruptedAndZero(t *testing.T) {
	for name, head := range map[string][]byte{
		"marker": formattingMarker,
		"zero":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			p := makeImage(t, smallCard, nil)
			buf := make([]byte, 30*mib) // all of perm
			copy(buf, head)
			patch(t, p, 33*mib, buf)
			res := growFile(t, p)
			if !res.Grew || !res.Formatted {
				t.Fatalf("%s", res)
			}
			// Now with the table grown and the format cut short again.
			patch(t, p, 33*mib, buf)
			res = growFile(t, p)
			if res.Grew || !res.Formatted {
				t.Fatalf("after a cut: %s", res)
			}
			if res = growFile(t, p); res.Grew || res.Formatted {
				t.Fatalf("third run: %s", res)
			}
		})
	}
}

// A disk exactly as large as the image: nothing to grow, nothing formatted.
func TestNoRoomLeft(t *testing.T) {
	p := makeImage(t, smallCard, nil)
	if err := os.Truncate(p, imgSize); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, p)
	res := growFile(t, p)
	if res.Grew || res.Formatted {
		t.Fatalf("%s", res)
	}
	if fileHash(t, p) != before {
		t.Fatal("the disk changed")
	}
}
