package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/grow"
)

func init() {
	register("flash", "write an image to an SD card or USB disk (flash -image FILE DEVICE)", (*CLI).flash)
}

// hostView is the parts of the host that decide whether a disk may be written:
// where /proc and /sys are, and which device the root file system lives on.
// Tests point it at fake trees.
type hostView struct {
	Proc string // "/proc"
	Sys  string // "/sys"
	// RootDev is the major:minor of the device holding "/".
	RootDev func() (string, error)
}

func realHost() hostView {
	return hostView{Proc: "/proc", Sys: "/sys", RootDev: func() (string, error) {
		var st unix.Stat_t
		if err := unix.Stat("/", &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), nil
	}}
}

// disksOf returns the whole-disk names ("sda") under a block device name, following
// partitions to their disk and device-mapper/md devices to the disks under them.
func (h hostView) disksOf(name string) ([]string, error) {
	p, err := filepath.EvalSymlinks(filepath.Join(h.Sys, "class/block", name))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(p, "partition")); err == nil {
		return []string{filepath.Base(filepath.Dir(p))}, nil
	}
	slaves, _ := os.ReadDir(filepath.Join(p, "slaves"))
	if len(slaves) == 0 {
		return []string{filepath.Base(p)}, nil
	}
	var out []string
	for _, s := range slaves {
		d, err := h.disksOf(s.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	return out, nil
}

// checkFlashTarget refuses anything but a whole disk that nothing uses: not a
// partition, not mounted (the disk or any partition), not held by device-mapper
// or md, and not the disk the host runs from. It returns the disk's name.
func (h hostView) checkFlashTarget(dev string) (string, error) {
	resolved, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return "", err
	}
	name := filepath.Base(resolved)
	sysDev, err := filepath.EvalSymlinks(filepath.Join(h.Sys, "class/block", name))
	if err != nil {
		return "", fmt.Errorf("%s is not a block device", dev)
	}
	if _, err := os.Stat(filepath.Join(sysDev, "partition")); err == nil {
		return "", fmt.Errorf("%s is a partition; give the whole disk (%s)", dev, "/dev/"+filepath.Base(filepath.Dir(sysDev)))
	}
	parts := map[string]bool{name: true}
	entries, _ := os.ReadDir(sysDev)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sysDev, e.Name(), "partition")); err == nil {
			parts[e.Name()] = true
		}
	}
	for p := range parts {
		dir := sysDev
		if p != name {
			dir = filepath.Join(sysDev, p)
		}
		if holders, _ := os.ReadDir(filepath.Join(dir, "holders")); len(holders) > 0 {
			return "", fmt.Errorf("%s is in use by %s (device-mapper, LVM or RAID)", "/dev/"+p, holders[0].Name())
		}
	}
	mounts, err := os.Open(filepath.Join(h.Proc, "mounts"))
	if err != nil {
		return "", err
	}
	defer mounts.Close()
	sc := bufio.NewScanner(mounts)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "/dev/") {
			continue
		}
		src := filepath.Base(f[0])
		if parts[src] {
			return "", fmt.Errorf("/dev/%s is mounted on %s; unmount it first", src, unescapeMount(f[1]))
		}
		if disks, err := h.disksOf(src); err == nil {
			for _, d := range disks {
				if d == name {
					return "", fmt.Errorf("%s holds /dev/%s, mounted on %s", dev, src, unescapeMount(f[1]))
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	root, err := h.RootDev()
	if err != nil {
		return "", err
	}
	rootDev, err := filepath.EvalSymlinks(filepath.Join(h.Sys, "dev/block", root))
	if err == nil {
		disks, _ := h.disksOf(filepath.Base(rootDev))
		for _, d := range disks {
			if d == name {
				return "", fmt.Errorf("%s is the disk this computer runs from", dev)
			}
		}
	}
	return name, nil
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (c *CLI) flash(args []string) error {
	fs := c.newFlagSet("flash")
	img := fs.String("image", "cell.img", "the disk image (cellctl image build)")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(c.Stderr, "usage: cellctl flash [-image cell.img] [-yes] DEVICE")
		return errUsage
	}
	return c.flashTo(realHost(), *img, fs.Arg(0), *yes)
}

func (c *CLI) flashTo(h hostView, img, dev string, yes bool) error {
	name, err := h.checkFlashTarget(dev)
	if err != nil {
		return fmt.Errorf("refusing to write %s: %w", dev, err)
	}
	in, err := os.Open(img)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	sectors, _ := os.ReadFile(filepath.Join(h.Sys, "class/block", name, "size"))
	n, _ := strconv.ParseInt(strings.TrimSpace(string(sectors)), 10, 64)
	if n*512 < fi.Size() {
		return fmt.Errorf("%s holds %d MiB, the image needs %d MiB", dev, n*512>>20, fi.Size()>>20)
	}
	model, _ := os.ReadFile(filepath.Join(h.Sys, "class/block", name, "device/model"))
	if !yes {
		fmt.Fprintf(c.Stderr, "This erases %s (%s, %d MiB). Type %q to go on: ", dev, strings.TrimSpace(string(model)), n*512>>20, name)
		answer, _ := bufio.NewReader(c.Stdin).ReadString('\n')
		if strings.TrimSpace(answer) != name {
			return errors.New("not confirmed; nothing written")
		}
	}
	// O_EXCL on a block device fails if the kernel has it mounted: a second
	// guard against a mount that appeared since the check.
	out, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, &progress{r: in, w: c.Stderr, total: fi.Size(), lastPct: -1}); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "wrote %s to %s\n", img, dev)
	c.growFlashed(out, dev)
	return out.Close()
}

// growFlashed makes the data partition of a card just written fill the card,
// with the code the cell's init runs at its first boot (firmware/grow), so
// that the card is full size before it ever boots. A failure is said, never
// fatal: the card is written, and the cell grows its data partition itself.
func (c *CLI) growFlashed(out *os.File, dev string) {
	d, err := grow.NewFile(out)
	if err == nil {
		fmt.Fprintf(c.Stderr, "growing the data partition to fill %s...\n", dev)
		var res grow.Result
		if res, err = grow.Perm(flashedCard{d}, grow.PermPartition); err == nil {
			fmt.Fprintf(c.Stdout, "%s\n", res)
			if err := d.Reread(); err != nil {
				fmt.Fprintf(c.Stderr, "%v; take the card out and put it back in to see its partitions\n", err)
			}
			return
		}
	}
	fmt.Fprintf(c.Stderr, "the data partition was not grown here (the cell grows it at its first boot): %v\n", err)
}

// flashedCard is a card cellctl has just written: this host's kernel still
// knows its old partitions, so rather than resizing one of them (which the
// init does on the device) the whole table is read again afterwards.
type flashedCard struct{ *grow.File }

func (flashedCard) ResizePartition(int, int64, int64) error { return nil }
