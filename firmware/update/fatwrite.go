package update

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/pic-cell/cell/firmware/bootfs"
)

// fatWriter makes the few changes the device makes to the boot FAT: create a
// file in an existing directory, remove a file, rewrite a small file in place.
// It is written for power cuts (see the package doc): every change first
// writes only space that nothing references (free clusters, free directory
// slots), syncs, and then makes it visible with one small write; a removal
// first hides the file with one byte and only then frees its clusters. A cut at
// any point leaves every other file as it was; the worst left behind is
// clusters that nothing references, which reclaim frees again.
type fatWriter struct {
	p  Partition
	fs *bootfs.FS
}

func openFAT(p Partition) (*fatWriter, error) {
	fs, err := bootfs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	return &fatWriter{p: p, fs: fs}, nil
}

const (
	fatEOC  = 0x0FFFFFFF
	dirSize = 32
)

// fatEntry reads the first FAT's entry for cluster c.
func (w *fatWriter) fatEntry(c uint32) (uint32, error) {
	var b [4]byte
	if _, err := w.p.ReadAt(b[:], w.fs.FATOffset+int64(c)*4); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF, nil
}

// setFAT writes cluster c's entry in every FAT copy, keeping the top 4 bits.
func (w *fatWriter) setFAT(c, v uint32) error {
	for i := int64(0); i < w.fs.NumFATs; i++ {
		off := w.fs.FATOffset + i*w.fs.FATBytes + int64(c)*4
		var b [4]byte
		if _, err := w.p.ReadAt(b[:], off); err != nil {
			return err
		}
		old := binary.LittleEndian.Uint32(b[:])
		binary.LittleEndian.PutUint32(b[:], old&0xF0000000|v&0x0FFFFFFF)
		if _, err := w.p.WriteAt(b[:], off); err != nil {
			return err
		}
	}
	return nil
}

// freeClusters returns n free clusters (the first free ones, so that a file
// lands contiguously when the space allows).
func (w *fatWriter) freeClusters(n int) ([]uint32, error) {
	fat := make([]byte, int64(w.fs.TotalClusters+2)*4)
	if _, err := w.p.ReadAt(fat, w.fs.FATOffset); err != nil {
		return nil, err
	}
	var out []uint32
	for c := uint32(2); c < w.fs.TotalClusters+2 && len(out) < n; c++ {
		if binary.LittleEndian.Uint32(fat[c*4:])&0x0FFFFFFF == 0 {
			out = append(out, c)
		}
	}
	if len(out) < n {
		return nil, fmt.Errorf("%w: %d clusters needed, %d free", ErrBootFull, n, len(out))
	}
	return out, nil
}

// ErrBootFull is returned when the boot partition lacks the room for a slot's
// boot files.
var ErrBootFull = errors.New("the boot partition has no room for the new boot files")

// rawEntry is one 32-byte directory slot.
type rawEntry struct {
	off  int64 // on the partition
	data [dirSize]byte
}

// dirSlots reads every slot of the directory whose chain starts at c, up to
// the end of its chain (not only to the end marker).
func (w *fatWriter) dirSlots(c uint32) ([]rawEntry, []uint32, error) {
	chain, err := w.fs.Chain(c)
	if err != nil {
		return nil, nil, err
	}
	var out []rawEntry
	buf := make([]byte, w.fs.ClusterBytes)
	for _, cl := range chain {
		base := w.fs.ClusterOffset(cl)
		if _, err := w.p.ReadAt(buf, base); err != nil {
			return nil, nil, err
		}
		for i := 0; i+dirSize <= len(buf); i += dirSize {
			var e rawEntry
			e.off = base + int64(i)
			copy(e.data[:], buf[i:i+dirSize])
			out = append(out, e)
		}
	}
	return out, chain, nil
}

// dirCluster returns the first cluster of the directory at dir ("" is the root).
func (w *fatWriter) dirCluster(dir string) (uint32, error) {
	if dir == "" || dir == "." || dir == "/" {
		return w.fs.RootCluster, nil
	}
	e, err := w.fs.Lookup(dir)
	if err != nil {
		return 0, err
	}
	if !e.Dir {
		return 0, fmt.Errorf("%s is not a directory", dir)
	}
	return e.Cluster, nil
}

func splitPath(path string) (dir, name string) {
	path = strings.Trim(path, "/")
	i := strings.LastIndex(path, "/")
	if i < 0 {
		return "", path
	}
	return path[:i], path[i+1:]
}

// lfnChecksum is the checksum of a short name that its long name entries carry.
func lfnChecksum(short []byte) byte {
	var sum byte
	for _, c := range short[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// shortAlias makes an 8.3 name ("CELL~1  CON") for name that no slot in
// entries uses. The long name entries carry the real name; the alias only has
// to be valid and unique.
func shortAlias(name string, entries []rawEntry) ([11]byte, error) {
	used := map[[11]byte]bool{}
	for _, e := range entries {
		if e.data[0] != 0 && e.data[0] != 0xE5 && e.data[11] != 0x0F {
			var k [11]byte
			copy(k[:], e.data[:11])
			used[k] = true
		}
	}
	base, ext := name, ""
	if i := strings.LastIndex(name, "."); i > 0 {
		base, ext = name[:i], name[i+1:]
	}
	clean := func(s string, n int) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			if b.Len() == n {
				break
			}
			if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
				b.WriteRune(r)
			}
		}
		return b.String()
	}
	ext = clean(ext, 3)
	for i := 1; i < 1000; i++ {
		tail := fmt.Sprintf("~%d", i)
		b := clean(base, 8-len(tail))
		if b == "" {
			b = "F"
		}
		var k [11]byte
		copy(k[:], fmt.Sprintf("%-8s%-3s", b+tail, ext))
		if !used[k] {
			return k, nil
		}
	}
	return [11]byte{}, errors.New("no free short name")
}

// lfnEntries are the long name entries for name, in the order they are stored
// (last part first).
func lfnEntries(name string, short [11]byte) [][dirSize]byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + 12) / 13
	padded := make([]uint16, n*13)
	for i := range padded {
		switch {
		case i < len(u):
			padded[i] = u[i]
		case i == len(u):
			padded[i] = 0
		default:
			padded[i] = 0xFFFF
		}
	}
	sum := lfnChecksum(short[:])
	out := make([][dirSize]byte, n)
	for part := 0; part < n; part++ {
		var e [dirSize]byte
		e[0] = byte(part + 1)
		if part == n-1 {
			e[0] |= 0x40
		}
		e[11], e[13] = 0x0F, sum
		chars := padded[part*13 : part*13+13]
		j := 0
		for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
			for k := r[0]; k < r[1]; k += 2 {
				binary.LittleEndian.PutUint16(e[k:], chars[j])
				j++
			}
		}
		out[n-1-part] = e
	}
	return out
}

// findSlots returns the index of n consecutive free slots (deleted or past the
// end marker) in entries, or -1.
func findSlots(entries []rawEntry, n int) int {
	run := 0
	for i, e := range entries {
		if e.data[0] == 0 || e.data[0] == 0xE5 {
			run++
			if run == n {
				return i - n + 1
			}
		} else {
			run = 0
		}
	}
	return -1
}

// lookupRaw finds name in the directory at cluster dc: the indexes in entries of
// its long name entries and its short entry. ok is false if it is not there.
func lookupRaw(entries []rawEntry, name string) (first, short int, ok bool) {
	start := -1
	var lfn []uint16
	for i, e := range entries {
		d := e.data
		switch {
		case d[0] == 0:
			return 0, 0, false
		case d[0] == 0xE5:
			start, lfn = -1, nil
			continue
		case d[11] == 0x0F:
			if d[0]&0x40 != 0 {
				start, lfn = i, nil
			}
			var part []uint16
			for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
				for j := r[0]; j < r[1]; j += 2 {
					part = append(part, binary.LittleEndian.Uint16(d[j:]))
				}
			}
			lfn = append(part, lfn...)
			continue
		}
		got := strings.TrimRight(string(d[0:8]), " ")
		if ext := strings.TrimRight(string(d[8:11]), " "); ext != "" {
			got += "." + ext
		}
		first := i
		if lfn != nil && start >= 0 {
			got, first = decodeName(lfn), start
		}
		if d[11]&0x08 == 0 && strings.EqualFold(got, name) {
			return first, i, true
		}
		start, lfn = -1, nil
	}
	return 0, 0, false
}

func decodeName(u []uint16) string {
	for i, c := range u {
		if c == 0 || c == 0xFFFF {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

// exists reports whether path names a file or directory.
func (w *fatWriter) exists(path string) (bool, error) {
	_, err := w.fs.Lookup(path)
	if errors.Is(err, bootfs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// list returns the names in the directory dir ("" is the root), without "." and "..".
func (w *fatWriter) list(dir string) ([]bootfs.Entry, error) {
	c, err := w.dirCluster(dir)
	if err != nil {
		return nil, err
	}
	all, err := w.fs.ReadDir(c)
	if err != nil {
		return nil, err
	}
	var out []bootfs.Entry
	for _, e := range all {
		if e.Name != "." && e.Name != ".." {
			out = append(out, e)
		}
	}
	return out, nil
}

// readFile reads a whole file, following its cluster chain.
func (w *fatWriter) readFile(path string) ([]byte, error) {
	e, err := w.fs.Lookup(path)
	if err != nil {
		return nil, err
	}
	if e.Dir {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	var out bytes.Buffer
	if err := w.copyFile(&out, e); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (w *fatWriter) copyFile(dst io.Writer, e bootfs.Entry) error {
	if e.Size == 0 {
		return nil
	}
	chain, err := w.fs.Chain(e.Cluster)
	if err != nil {
		return err
	}
	if int64(len(chain))*w.fs.ClusterBytes < e.Size {
		return fmt.Errorf("%s: size beyond its clusters", e.Name)
	}
	left := e.Size
	buf := make([]byte, w.fs.ClusterBytes)
	for _, c := range chain {
		n := min(left, w.fs.ClusterBytes)
		if _, err := w.p.ReadAt(buf[:n], w.fs.ClusterOffset(c)); err != nil {
			return err
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
		if left == 0 {
			break
		}
	}
	return nil
}

// clustersFor is how many clusters n bytes take.
func (w *fatWriter) clustersFor(n int64) int64 {
	return (n + w.fs.ClusterBytes - 1) / w.fs.ClusterBytes
}

// create writes a new file at path (its directory must exist; the file must
// not) with size bytes from r: data into free clusters, synced; the chain into
// the FATs, synced; the long name entries into free directory slots, synced;
// last the short entry, one 32-byte write, which makes the file exist.
func (w *fatWriter) create(path string, r io.Reader, size int64) error {
	dir, name := splitPath(path)
	if ok, err := w.exists(path); err != nil || ok {
		if err == nil {
			err = fmt.Errorf("%s exists already", path)
		}
		return err
	}
	dc, err := w.dirCluster(dir)
	if err != nil {
		return err
	}
	n := int(w.clustersFor(size))
	clusters, err := w.freeClusters(n)
	if err != nil {
		return err
	}
	// The data, in runs of contiguous clusters.
	buf := make([]byte, 0, 1<<20)
	left := size
	for i := 0; i < len(clusters); {
		j := i + 1
		for j < len(clusters) && clusters[j] == clusters[j-1]+1 && int64(j-i)*w.fs.ClusterBytes < 1<<20 {
			j++
		}
		runBytes := int64(j-i) * w.fs.ClusterBytes
		want := min(left, runBytes)
		buf = buf[:runBytes]
		if _, err := io.ReadFull(r, buf[:want]); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		clear(buf[want:])
		if _, err := w.p.WriteAt(buf, w.fs.ClusterOffset(clusters[i])); err != nil {
			return err
		}
		left -= want
		i = j
	}
	// Not more than size: a reader that has more is not what was checked.
	// Reading past the end lets a checking reader (the bundle's) say
	// whether the bytes were the signed ones.
	var one [1]byte
	if k, err := r.Read(one[:]); k > 0 {
		return fmt.Errorf("%s: longer than %d bytes", path, size)
	} else if err != nil && err != io.EOF {
		return err
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	for i, c := range clusters {
		next := uint32(fatEOC)
		if i+1 < len(clusters) {
			next = clusters[i+1]
		}
		if err := w.setFAT(c, next); err != nil {
			return err
		}
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	first := uint32(0)
	if len(clusters) > 0 {
		first = clusters[0]
	}
	var short [dirSize]byte
	short[11] = 0x20 // archive
	binary.LittleEndian.PutUint16(short[20:], uint16(first>>16))
	binary.LittleEndian.PutUint16(short[26:], uint16(first))
	binary.LittleEndian.PutUint32(short[28:], uint32(size))
	stamp(short[:])
	return w.addEntry(dc, name, short)
}

// stamp dates a directory entry 2026-01-01 00:00 (created, accessed,
// modified): FAT stores local time without a zone, and the device's clock may
// not be set when it writes; a fixed stamp says nothing wrong.
func stamp(e []byte) {
	const date = uint16((2026-1980)<<9 | 1<<5 | 1)
	for _, at := range []int{16, 18, 24} {
		binary.LittleEndian.PutUint16(e[at:], date)
	}
}

// addEntry writes name's long entries and then its short entry (whose name
// bytes it fills in) into free slots of the directory at dc, growing the
// directory by a zeroed cluster when it has no run of free slots.
func (w *fatWriter) addEntry(dc uint32, name string, short [dirSize]byte) error {
	entries, chain, err := w.dirSlots(dc)
	if err != nil {
		return err
	}
	alias, err := shortAlias(name, entries)
	if err != nil {
		return err
	}
	copy(short[:11], alias[:])
	lfn := lfnEntries(name, alias)
	need := len(lfn) + 1
	at := findSlots(entries, need)
	if at < 0 {
		// A new cluster for the directory: zeroed and marked the end of a
		// chain before the directory's last cluster links to it.
		c, err := w.freeClusters(1)
		if err != nil {
			return err
		}
		if _, err := w.p.WriteAt(make([]byte, w.fs.ClusterBytes), w.fs.ClusterOffset(c[0])); err != nil {
			return err
		}
		if err := w.p.Sync(); err != nil {
			return err
		}
		if err := w.setFAT(c[0], fatEOC); err != nil {
			return err
		}
		if err := w.setFAT(chain[len(chain)-1], c[0]); err != nil {
			return err
		}
		if err := w.p.Sync(); err != nil {
			return err
		}
		if entries, _, err = w.dirSlots(dc); err != nil {
			return err
		}
		if at = findSlots(entries, need); at < 0 {
			return errors.New("boot partition: no directory slot after growing the directory")
		}
	}
	// Writing past the end marker: the slot after the new entry must stay an
	// end marker (it is one: every slot after a 0 is 0 in a sound directory,
	// and a new cluster is zeroed).
	for i, e := range lfn {
		if _, err := w.p.WriteAt(e[:], entries[at+i].off); err != nil {
			return err
		}
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	if _, err := w.p.WriteAt(short[:], entries[at+len(lfn)].off); err != nil {
		return err
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	return w.updateFSInfo()
}

// remove deletes the file at path if it exists: its short entry is marked free
// first (one byte: the file is gone), then its long name entries, then its
// clusters are freed in the FATs.
func (w *fatWriter) remove(path string) error {
	dir, name := splitPath(path)
	dc, err := w.dirCluster(dir)
	if errors.Is(err, bootfs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	entries, _, err := w.dirSlots(dc)
	if err != nil {
		return err
	}
	first, short, ok := lookupRaw(entries, name)
	if !ok {
		return nil
	}
	d := entries[short].data
	if d[11]&0x10 != 0 {
		return fmt.Errorf("%s is a directory", path)
	}
	cluster := uint32(binary.LittleEndian.Uint16(d[20:]))<<16 | uint32(binary.LittleEndian.Uint16(d[26:]))
	var chain []uint32
	if cluster >= 2 {
		if chain, err = w.fs.Chain(cluster); err != nil {
			return err
		}
	}
	for _, i := range append([]int{short}, seq(first, short)...) {
		if _, err := w.p.WriteAt([]byte{0xE5}, entries[i].off); err != nil {
			return err
		}
		if i == short {
			if err := w.p.Sync(); err != nil {
				return err
			}
		}
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	for _, c := range chain {
		if err := w.setFAT(c, 0); err != nil {
			return err
		}
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	return w.updateFSInfo()
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// rewrite replaces the content of the small file at path in place with
// content, padded by pad to the file's length, so that neither its directory
// entry nor the FAT changes: a single sector when the file lies in one, which
// is how the permanent choice changes (as gokrazy switches roots). It refuses
// content longer than the file.
func (w *fatWriter) rewrite(path string, content []byte, pad func(n int) []byte) error {
	off, n, err := w.fs.Extent(path)
	if err != nil {
		return err
	}
	if int64(len(content)) > n {
		return fmt.Errorf("%s: the new content (%d bytes) does not fit the file's %d bytes", path, len(content), n)
	}
	full := append(append([]byte{}, content...), pad(int(n)-len(content))...)
	if int64(len(full)) != n {
		return fmt.Errorf("%s: padding to %d bytes failed", path, n)
	}
	old := make([]byte, n)
	if _, err := w.p.ReadAt(old, off); err != nil {
		return err
	}
	if bytes.Equal(old, full) {
		return nil
	}
	if _, err := w.p.WriteAt(full, off); err != nil {
		return err
	}
	return w.p.Sync()
}

// orphans lists the clusters that the FAT marks used but no file or directory
// references: what a power cut in the middle of create or remove leaves.
func (w *fatWriter) orphans() ([]uint32, error) {
	used := map[uint32]bool{}
	var walk func(c uint32, depth int) error
	walk = func(c uint32, depth int) error {
		if depth > 8 {
			return errors.New("boot partition: directories nested too deep")
		}
		chain, err := w.fs.Chain(c)
		if err != nil {
			return err
		}
		for _, cl := range chain {
			used[cl] = true
		}
		entries, err := w.fs.ReadDir(c)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Name == "." || e.Name == ".." || e.Cluster < 2 {
				continue
			}
			if e.Dir {
				if err := walk(e.Cluster, depth+1); err != nil {
					return err
				}
				continue
			}
			chain, err := w.fs.Chain(e.Cluster)
			if err != nil {
				return err
			}
			for _, cl := range chain {
				used[cl] = true
			}
		}
		return nil
	}
	if err := walk(w.fs.RootCluster, 0); err != nil {
		return nil, err
	}
	fat := make([]byte, int64(w.fs.TotalClusters+2)*4)
	if _, err := w.p.ReadAt(fat, w.fs.FATOffset); err != nil {
		return nil, err
	}
	var out []uint32
	for c := uint32(2); c < w.fs.TotalClusters+2; c++ {
		if binary.LittleEndian.Uint32(fat[c*4:])&0x0FFFFFFF != 0 && !used[c] {
			out = append(out, c)
		}
	}
	return out, nil
}

// reclaim frees the orphans. Only entries no file reaches are written.
func (w *fatWriter) reclaim() (int, error) {
	orphans, err := w.orphans()
	if err != nil || len(orphans) == 0 {
		return 0, err
	}
	for _, c := range orphans {
		if err := w.setFAT(c, 0); err != nil {
			return 0, err
		}
	}
	if err := w.p.Sync(); err != nil {
		return 0, err
	}
	return len(orphans), w.updateFSInfo()
}

// mkdir makes the directory at path (its parent must exist): a zeroed cluster
// with "." and "..", marked in the FATs, then the entry in the parent, which
// makes it exist.
func (w *fatWriter) mkdir(path string) error {
	dir, name := splitPath(path)
	parent, err := w.dirCluster(dir)
	if err != nil {
		return err
	}
	c, err := w.freeClusters(1)
	if err != nil {
		return err
	}
	buf := make([]byte, w.fs.ClusterBytes)
	dot := func(at int, name string, cluster uint32) {
		copy(buf[at:at+11], fmt.Sprintf("%-11s", name))
		buf[at+11] = 0x10
		stamp(buf[at : at+dirSize])
		binary.LittleEndian.PutUint16(buf[at+20:], uint16(cluster>>16))
		binary.LittleEndian.PutUint16(buf[at+26:], uint16(cluster))
	}
	dot(0, ".", c[0])
	// ".." names cluster 0 when the parent is the root directory.
	up := parent
	if parent == w.fs.RootCluster {
		up = 0
	}
	dot(dirSize, "..", up)
	if _, err := w.p.WriteAt(buf, w.fs.ClusterOffset(c[0])); err != nil {
		return err
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	if err := w.setFAT(c[0], fatEOC); err != nil {
		return err
	}
	if err := w.p.Sync(); err != nil {
		return err
	}
	var short [dirSize]byte
	short[11] = 0x10
	stamp(short[:])
	binary.LittleEndian.PutUint16(short[20:], uint16(c[0]>>16))
	binary.LittleEndian.PutUint16(short[26:], uint16(c[0]))
	return w.addEntry(parent, name, short)
}

// updateFSInfo writes the free cluster count and the next free hint (hints
// only: a cut before this write leaves a stale hint, which fsck corrects and
// nothing relies on).
func (w *fatWriter) updateFSInfo() error {
	free, next, err := w.fs.FreeClusters()
	if err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint32(b[0:], free)
	binary.LittleEndian.PutUint32(b[4:], next)
	if _, err := w.p.WriteAt(b[:], w.fs.FSInfoOffset+488); err != nil {
		return err
	}
	return w.p.Sync()
}

// freeBytes is the free space of the partition.
func (w *fatWriter) freeBytes() (int64, error) {
	free, _, err := w.fs.FreeClusters()
	return int64(free) * w.fs.ClusterBytes, err
}
