package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
)

// ErrNoSpace is a change refused because the data partition is nearly full
// (the API answers 507 Insufficient Storage). It is refused before it starts,
// so nothing is written part-way.
var ErrNoSpace = errors.New("insufficient storage")

// Space thresholds of the data partition. The reserve is 2% of the partition,
// at least MinFreeSpace and at most MaxReserve: with less free than that (what
// a non-root writer may still use), changes are refused and the disk part is
// down; with less than twice that it is degraded.
const (
	MinFreeSpace = 16 << 20  // 16 MiB
	MaxReserve   = 256 << 20 // 256 MiB
	ReservePct   = 2
)

// Space is the data partition's size and what is free on it, in bytes.
type Space struct {
	Free, Total, Reserve uint64
}

// DiskSpace reads the data partition's space (statfs of the database's directory).
func (db *DB) DiskSpace() (Space, error) {
	return diskSpace(filepath.Dir(db.path))
}

func diskSpace(dir string) (Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return Space{}, fmt.Errorf("storage: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	sp := Space{Free: st.Bavail * bs, Total: st.Blocks * bs}
	sp.Reserve = min(max(sp.Total*ReservePct/100, MinFreeSpace), MaxReserve)
	return sp, nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// CheckSpace refuses (ErrNoSpace, with the free space in its message) when the
// data partition has less free than its reserve. A failed statfs does not refuse.
func (db *DB) CheckSpace() error {
	sp, err := db.DiskSpace()
	if err != nil || sp.Free >= sp.Reserve {
		return nil
	}
	return &spaceError{sp}
}

type spaceError struct{ sp Space }

func (e *spaceError) Error() string {
	return fmt.Sprintf("the cell's data partition is nearly full (%s free of %s; changes are refused below %s): free some space first",
		mib(e.sp.Free), mib(e.sp.Total), mib(e.sp.Reserve))
}
func (e *spaceError) Unwrap() error { return ErrNoSpace }

// CheckDisk is the health check of the data partition ("disk"): down below the
// reserve (changes are refused), degraded below twice it.
func (db *DB) CheckDisk(context.Context) PartStatus {
	sp, err := db.DiskSpace()
	if err != nil {
		return PartStatus{State: StateDegraded, Reason: err.Error()}
	}
	reason := fmt.Sprintf("%s free of %s", mib(sp.Free), mib(sp.Total))
	switch {
	case sp.Free < sp.Reserve:
		return PartStatus{State: StateDown, Reason: reason + fmt.Sprintf("; changes are refused below %s", mib(sp.Reserve))}
	case sp.Free < 2*sp.Reserve:
		return PartStatus{State: StateDegraded, Reason: reason + fmt.Sprintf("; changes will be refused below %s", mib(sp.Reserve))}
	}
	return PartStatus{State: StateOK, Reason: reason}
}
