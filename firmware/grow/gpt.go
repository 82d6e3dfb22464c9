package grow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A GPT header's fields (UEFI specification, "GPT Header"), by byte offset.
const (
	hdrSignature   = 0
	hdrSize        = 12
	hdrCRC         = 16
	hdrMyLBA       = 24
	hdrAltLBA      = 32
	hdrFirstUsable = 40
	hdrLastUsable  = 48
	hdrEntriesLBA  = 72
	hdrNumEntries  = 80
	hdrEntrySize   = 84
	hdrEntriesCRC  = 88

	entryFirstLBA = 32
	entryLastLBA  = 40
)

var gptSignature = []byte("EFI PART")

// table is a disk's primary GPT as read from it: the header sector and the
// partition entry array.
type table struct {
	sectorSize int64
	mbr        []byte // sector 0, the protective MBR
	header     []byte // the whole header sector
	entries    []byte
}

func le64(b []byte, off int) int64      { return int64(binary.LittleEndian.Uint64(b[off:])) }
func put64(b []byte, off int, v int64)  { binary.LittleEndian.PutUint64(b[off:], uint64(v)) }
func le32(b []byte, off int) uint32     { return binary.LittleEndian.Uint32(b[off:]) }
func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func readAt(r io.ReaderAt, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// readGPT reads and checks the primary GPT: signature, header CRC and entry
// array CRC. A table that fails any check is never rewritten.
func readGPT(r io.ReaderAt, sectorSize int64) (*table, error) {
	h, err := readAt(r, sectorSize, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("reading the partition table: %w", err)
	}
	if !bytes.Equal(h[hdrSignature:hdrSignature+8], gptSignature) {
		return nil, errors.New("the disk has no GPT partition table")
	}
	size := le32(h, hdrSize)
	if size < 92 || int64(size) > sectorSize {
		return nil, fmt.Errorf("the GPT header says it is %d bytes long", size)
	}
	if got, want := headerCRC(h), le32(h, hdrCRC); got != want {
		return nil, errors.New("the GPT header's checksum does not match")
	}
	if le64(h, hdrMyLBA) != 1 {
		return nil, errors.New("the primary GPT header does not say it is at sector 1")
	}
	n, esz := int64(le32(h, hdrNumEntries)), int64(le32(h, hdrEntrySize))
	if esz < 128 || n < 1 || n*esz > 1<<20 {
		return nil, fmt.Errorf("the GPT has %d entries of %d bytes", n, esz)
	}
	e, err := readAt(r, le64(h, hdrEntriesLBA)*sectorSize, n*esz)
	if err != nil {
		return nil, fmt.Errorf("reading the partition entries: %w", err)
	}
	if crc32.ChecksumIEEE(e) != le32(h, hdrEntriesCRC) {
		return nil, errors.New("the GPT partition entries' checksum does not match")
	}
	mbr, err := readAt(r, 0, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("reading the protective MBR: %w", err)
	}
	return &table{sectorSize: sectorSize, mbr: mbr, header: h, entries: e}, nil
}

func headerCRC(h []byte) uint32 {
	size := le32(h, hdrSize)
	c := append([]byte(nil), h[:size]...)
	put32(c, hdrCRC, 0)
	return crc32.ChecksumIEEE(c)
}

func (g *table) entry(n int) []byte {
	esz := int(le32(g.header, hdrEntrySize))
	return g.entries[(n-1)*esz : n*esz]
}

func (g *table) numEntries() int { return int(le32(g.header, hdrNumEntries)) }

// partition returns partition n's first and last sector (inclusive), or an
// error when the entry is unused.
func (g *table) partition(n int) (first, last int64, err error) {
	if n < 1 || n > g.numEntries() {
		return 0, 0, fmt.Errorf("the GPT has no entry %d", n)
	}
	e := g.entry(n)
	if bytes.Equal(e[:16], make([]byte, 16)) {
		return 0, 0, fmt.Errorf("partition %d does not exist", n)
	}
	return le64(e, entryFirstLBA), le64(e, entryLastLBA), nil
}

// entrySectors is how many sectors the entry array takes.
func (g *table) entrySectors() int64 {
	n := int64(len(g.entries))
	return (n + g.sectorSize - 1) / g.sectorSize
}

// growEnd is where partition n could end on a disk of diskSectors sectors: at
// the last usable sector once the backup table sits at the disk's end, rounded
// down to a whole MiB from the disk's start (good for flash erase blocks). It
// refuses when another partition lies after n.
func (g *table) growEnd(n int, diskSectors int64) (int64, error) {
	first, _, err := g.partition(n)
	if err != nil {
		return 0, err
	}
	for i := 1; i <= g.numEntries(); i++ {
		if i == n {
			continue
		}
		if f, _, err := g.partition(i); err == nil && f > first {
			return 0, fmt.Errorf("partition %d lies after partition %d", i, n)
		}
	}
	lastUsable := diskSectors - 2 - g.entrySectors()
	perMiB := (1 << 20) / g.sectorSize
	end := (lastUsable+1)/perMiB*perMiB - 1
	if end <= first {
		return 0, errors.New("the disk is too small")
	}
	return end, nil
}

// writeGrown rewrites the GPT on w for a disk of diskSectors sectors with
// partition n ending at sector last: the backup entry array and header at the
// disk's end first, then the primary, then the protective MBR's size; each
// with its CRCs. A power cut before the primary is written leaves the old
// table whole (the old backup is still where the old primary says); after it,
// the new one. The old backup header, now inside the partition, is wiped so
// that no tool takes it for a table.
func (g *table) writeGrown(w io.WriterAt, sync func() error, n int, last, diskSectors int64) error {
	ss := g.sectorSize
	oldAlt := le64(g.header, hdrAltLBA)
	entries := append([]byte(nil), g.entries...)
	esz := int(le32(g.header, hdrEntrySize))
	put64(entries[(n-1)*esz:], entryLastLBA, last)
	entriesCRC := crc32.ChecksumIEEE(entries)

	backupLBA := diskSectors - 1
	backupEntriesLBA := backupLBA - g.entrySectors()
	lastUsable := backupEntriesLBA - 1

	primary := append([]byte(nil), g.header...)
	put64(primary, hdrAltLBA, backupLBA)
	put64(primary, hdrLastUsable, lastUsable)
	put32(primary, hdrEntriesCRC, entriesCRC)
	put32(primary, hdrCRC, headerCRC(primary))

	backup := append([]byte(nil), primary...)
	put64(backup, hdrMyLBA, backupLBA)
	put64(backup, hdrAltLBA, 1)
	put64(backup, hdrEntriesLBA, backupEntriesLBA)
	put32(backup, hdrCRC, headerCRC(backup))

	if _, err := w.WriteAt(entries, backupEntriesLBA*ss); err != nil {
		return fmt.Errorf("writing the backup partition table: %w", err)
	}
	if _, err := w.WriteAt(backup, backupLBA*ss); err != nil {
		return fmt.Errorf("writing the backup partition table: %w", err)
	}
	if err := sync(); err != nil {
		return err
	}
	if _, err := w.WriteAt(entries, le64(primary, hdrEntriesLBA)*ss); err != nil {
		return fmt.Errorf("writing the partition table: %w", err)
	}
	if _, err := w.WriteAt(primary, ss); err != nil {
		return fmt.Errorf("writing the partition table: %w", err)
	}
	if mbr := protectiveMBR(g.mbr, diskSectors); mbr != nil {
		if _, err := w.WriteAt(mbr, 0); err != nil {
			return fmt.Errorf("writing the protective MBR: %w", err)
		}
		g.mbr = mbr
	}
	if err := sync(); err != nil {
		return err
	}
	if oldAlt != backupLBA && oldAlt > 1 && oldAlt < backupEntriesLBA {
		if _, err := w.WriteAt(make([]byte, ss), oldAlt*ss); err != nil {
			return fmt.Errorf("wiping the old backup partition table: %w", err)
		}
	}
	g.header, g.entries = primary, entries
	return nil
}

// protectiveMBR returns the MBR sector with its protective (0xEE) entry's size
// set to cover the disk (as far as 32 bits reach), or nil when the MBR has no
// such entry at its first slot.
func protectiveMBR(mbr []byte, diskSectors int64) []byte {
	const entry = 446
	if len(mbr) < 512 || mbr[510] != 0x55 || mbr[511] != 0xaa || mbr[entry+4] != 0xee {
		return nil
	}
	size := diskSectors - 1
	if size > 0xffffffff {
		size = 0xffffffff
	}
	out := append([]byte(nil), mbr...)
	put32(out, entry+12, uint32(size))
	return out
}
