package update

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Root partition numbers.
const (
	SlotA = 2
	SlotB = 3
)

// Other returns the other root slot.
func Other(slot int) int {
	if slot == SlotA {
		return SlotB
	}
	return SlotA
}

// SlotFile is an opened root partition.
type SlotFile interface {
	io.ReadWriteSeeker
	io.Closer
	Sync() error
}

// Slots are the two root partitions of the disk the system runs from.
type Slots interface {
	// Active is the partition number the running root file system came from.
	Active() (int, error)
	// Size is the byte size of a root partition.
	Size(slot int) (int64, error)
	// Open opens a root partition for reading and writing.
	Open(slot int) (SlotFile, error)
	// BootPath is the boot partition's device node.
	BootPath() (string, error)
}

// BlockSlots finds the partitions through sysfs, starting from the device the
// running root is mounted from. It does not trust the kernel command line for
// this: during a trial boot the command line still names the old root.
type BlockSlots struct {
	Sys string // default "/sys"
	Dev string // default "/dev"
	// RootDev returns the device number of the running root (default: stat "/").
	RootDev func() (major, minor uint32, err error)
}

func (b BlockSlots) sys() string {
	if b.Sys == "" {
		return "/sys"
	}
	return b.Sys
}

func (b BlockSlots) dev() string {
	if b.Dev == "" {
		return "/dev"
	}
	return b.Dev
}

func rootDev() (uint32, uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		return 0, 0, err
	}
	return unix.Major(st.Dev), unix.Minor(st.Dev), nil
}

// rootPart returns the sysfs directory of the running root's partition.
func (b BlockSlots) rootPart() (string, error) {
	f := b.RootDev
	if f == nil {
		f = rootDev
	}
	maj, min, err := f()
	if err != nil {
		return "", err
	}
	link := filepath.Join(b.sys(), "dev/block", fmt.Sprintf("%d:%d", maj, min))
	p, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("root device %d:%d: %w", maj, min, err)
	}
	return p, nil
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func (b BlockSlots) Active() (int, error) {
	p, err := b.rootPart()
	if err != nil {
		return 0, err
	}
	n, err := readInt(filepath.Join(p, "partition"))
	if err != nil {
		return 0, fmt.Errorf("root is not on a partition: %w", err)
	}
	if n != SlotA && n != SlotB {
		return 0, fmt.Errorf("root is on partition %d, not a root slot", n)
	}
	return int(n), nil
}

// partition returns the sysfs directory and device node of partition n of the
// root's disk.
func (b BlockSlots) partition(n int) (sysDir, node string, err error) {
	p, err := b.rootPart()
	if err != nil {
		return "", "", err
	}
	disk := filepath.Dir(p)
	entries, err := os.ReadDir(disk)
	if err != nil {
		return "", "", err
	}
	for _, e := range entries {
		got, err := readInt(filepath.Join(disk, e.Name(), "partition"))
		if err == nil && got == int64(n) {
			return filepath.Join(disk, e.Name()), filepath.Join(b.dev(), e.Name()), nil
		}
	}
	return "", "", fmt.Errorf("partition %d of %s not found", n, filepath.Base(disk))
}

func (b BlockSlots) Size(slot int) (int64, error) {
	d, _, err := b.partition(slot)
	if err != nil {
		return 0, err
	}
	sectors, err := readInt(filepath.Join(d, "size"))
	// sysfs counts 512-byte sectors whatever the device's sector size.
	return sectors * 512, err
}

func (b BlockSlots) Open(slot int) (SlotFile, error) {
	if slot != SlotA && slot != SlotB {
		return nil, fmt.Errorf("slot %d is not a root slot", slot)
	}
	_, node, err := b.partition(slot)
	if err != nil {
		return nil, err
	}
	return os.OpenFile(node, os.O_RDWR, 0)
}

// Node returns the device node of partition n of the root's disk.
func (b BlockSlots) Node(n int) (string, error) {
	_, node, err := b.partition(n)
	return node, err
}

func (b BlockSlots) BootPath() (string, error) {
	_, node, err := b.partition(1)
	return node, err
}
