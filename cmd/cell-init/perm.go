package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/grow"
)

// growPermAtBoot makes the data partition fill the disk on a first boot
// (package firmware/grow decides whether it holds nothing and does the work),
// before gokrazy.Boot mounts it as /perm: nothing has to be unmounted, nothing
// can have been stored on it yet, and no program runs that could open it. It
// runs before the watchdog is opened too, so a slow medium's format (zeroing
// its inode tables costs a write of ~1/64 of the card where the card cannot
// zero by itself) never ends in a reset. It mounts /proc, /sys and /dev for
// this, and leaves them: gokrazy.Boot accepts finding them mounted. Errors are
// logged, never fatal: a cell whose /perm could not grow still runs on the
// one it has.
func growPermAtBoot() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "perm")
	for _, m := range []struct{ fstype, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			logger.Error("the data partition is not checked: "+m.dir+" could not be mounted", "err", err)
			return
		}
	}
	disk, err := rootDisk("/sys", "/")
	if err != nil {
		logger.Error("the data partition is not checked: the root's disk was not found", "err", err)
		return
	}
	start := time.Now()
	res, err := growPerm("/dev/" + disk)
	if err != nil {
		logger.Error("the data partition could not be grown", "disk", "/dev/"+disk, "err", err, "done", res.String())
		return
	}
	logger.Info("perm: "+res.String(), "disk", "/dev/"+disk, "grew", res.Grew, "formatted", res.Formatted, "size_mib", res.Size>>20, "took", time.Since(start).Round(time.Millisecond))
}

func growPerm(disk string) (grow.Result, error) {
	d, err := grow.Open(disk)
	if err != nil {
		return grow.Result{}, err
	}
	defer d.Close()
	return grow.Perm(d, grow.PermPartition)
}

// rootDisk returns the name of the whole disk ("vda", "mmcblk0") that holds
// the file system mounted at root, through sysfs: the partition's directory
// under /sys/dev/block/MAJ:MIN sits inside its disk's.
func rootDisk(sys, root string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return "", err
	}
	return diskOf(sys, unix.Major(st.Dev), unix.Minor(st.Dev))
}

func diskOf(sys string, major, minor uint32) (string, error) {
	p, err := filepath.EvalSymlinks(filepath.Join(sys, "dev/block", fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return "", fmt.Errorf("device %d:%d is not in sysfs: %w", major, minor, err)
	}
	if _, err := os.Stat(filepath.Join(p, "partition")); err != nil {
		return "", fmt.Errorf("the root (%s) is not on a partition", filepath.Base(p))
	}
	return filepath.Base(filepath.Dir(p)), nil
}
