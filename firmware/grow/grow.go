package grow

import "fmt"

// PermPartition is the data partition's number, as gokrazy numbers it.
const PermPartition = 4

// PermLabel is the data file system's label, as the image builder writes it.
const PermLabel = "perm"

// Result is what Perm found and did.
type Result struct {
	// Grew: the partition table was rewritten and the partition now ends at
	// the disk's end. Formatted: a new ext4 was made over all of it.
	Grew, Formatted bool
	// OldSize and Size are the partition's size in bytes before and after.
	OldSize, Size int64
	// Why says why the partition was left alone, or what it held.
	Why string
}

func (r Result) String() string {
	switch {
	case r.Grew && r.Formatted:
		return fmt.Sprintf("grew the data partition from %d MiB to %d MiB and made its ext4 at full size (%s)", r.OldSize>>20, r.Size>>20, r.Why)
	case r.Formatted:
		return fmt.Sprintf("made the data partition's ext4 at its full size of %d MiB (%s)", r.Size>>20, r.Why)
	default:
		return fmt.Sprintf("data partition left as it is, %d MiB: %s", r.Size>>20, r.Why)
	}
}

// Perm grows partition part of d to the end of the disk and makes its ext4 at
// full size, when the partition holds nothing (see the package
// documentation); otherwise it changes nothing. Run again, it finds nothing
// to do.
func Perm(d Disk, part int) (Result, error) {
	ss := d.SectorSize()
	g, err := readGPT(d, ss)
	if err != nil {
		return Result{}, err
	}
	first, last, err := g.partition(part)
	if err != nil {
		return Result{}, err
	}
	start, size := first*ss, (last-first+1)*ss
	res := Result{OldSize: size, Size: size}
	st, err := inspect(d, start, size)
	if err != nil {
		return res, err
	}
	res.Why = st.why
	if !st.empty {
		return res, nil
	}
	end, err := g.growEnd(part, d.Size()/ss)
	if err != nil {
		return res, err
	}
	if end > last {
		if err := g.writeGrown(d, d.Sync, part, end, d.Size()/ss); err != nil {
			return res, err
		}
		res.Grew, res.Size = true, (end-first+1)*ss
		if err := d.ResizePartition(part, start, res.Size); err != nil {
			return res, err
		}
	}
	// A file system is full size when less than one 4 KiB block is left over.
	if st.fs > 0 && res.Size-st.fs < 4096 {
		if !res.Grew {
			res.Why = "it already fills the disk"
		}
		return res, nil
	}
	if err := Format(d, start, res.Size, PermLabel); err != nil {
		return res, err
	}
	res.Formatted = true
	return res, nil
}
