package qemu

// The Raspberry Pi image in emulation: qemu-system-aarch64's raspi3b machine.
//
// What runs is the card's own: the kernel, the device tree and the command
// line are read from the image's boot partition, found as the Pi's firmware
// finds them (config.txt's kernel=, cmdline=, device_tree= and os_prefix=,
// which a kernel update sets to its slot directory; see ReadRpiBoot), and the
// whole image is the machine's SD card, so the kernel finds its root and
// /perm on mmcblk0 by the same PARTUUID line as on a card.
//
// What does not run is the Pi's firmware (bootcode.bin, start*.elf,
// config.txt, autoboot.txt and tryboot): QEMU loads the kernel and the device
// tree itself (-kernel, -dtb) and hands over the command line (-append). So
// StartRpi does the firmware's share by hand, and no more:
//
//   - the device tree is bcm2710-rpi-3-b.dtb from the boot partition, the one
//     the firmware picks on a Pi 3 Model B (the Raspberry Pi kernel's own tree;
//     RpiOptions.DeviceTree chooses another, e.g. the mainline
//     bcm2837-rpi-3-b.dtb the module also ships). QEMU fills in the memory
//     and /chosen, which the firmware would; the firmware's other edits
//     (serial number, MAC address, config.txt's dtparams and overlays) are
//     not made.
//   - cmdline.txt's console=serial0 is what the firmware turns into the
//     UART that the device tree's serial0 alias names. On the Pi 3 that is
//     the mini UART (ttyS0), the PL011 being wired to Bluetooth (the kernel
//     hands it to the Bluetooth driver, so no console can use it): here too
//     it becomes console=ttyS0, QEMU's second serial port, which is what
//     RpiOptions.Serial receives.
//
// raspi3b is a Pi 3 (BCM2837, Cortex-A53, 1 GiB, four cores: QEMU accepts no
// other memory size or core count). It has no Ethernet of its own (the Pi 3's
// is a USB chip QEMU does not model); the network is QEMU's usb-net, a USB
// CDC Ethernet adapter on the board's USB host controller (dwc2), which the
// kernel drives as eth0 and gokrazy's DHCP client configures from QEMU's user
// network, with RpiOptions.Forwards to the host like the amd64 VM's.
//
// QEMU emulates an SD card only of a power-of-two size. An image of another
// size is copied (sparsely) into a card of the next power of two, the way a
// larger card holds a flashed image; the copy is removed when QEMU exits, so
// a second boot of such an image starts from the image again. An image of a
// power-of-two size is the card itself (with Snapshot, unchanged).
//
// There is no KVM for an arm64 guest on an amd64 host: the Pi is emulated
// instruction by instruction (TCG), and a boot to a healthy cell takes one to
// two minutes on two cores (QEMU runs the four emulated cores on four
// threads).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/pic-cell/cell/firmware/bootfs"
)

// RpiBinary is the emulator of the Pi (Debian package qemu-system-arm).
var RpiBinary = "qemu-system-aarch64"

// RpiDeviceTree is the device tree the Pi 3 Model B's firmware loads.
const RpiDeviceTree = "bcm2710-rpi-3-b.dtb"

// RpiOptions configure an emulated Raspberry Pi 3.
type RpiOptions struct {
	// Image is an rpi image (cellctl image build -target rpi).
	Image string
	// Serial receives the mini UART (serial0 on a Pi 3): the kernel's and the
	// init's logs. The image must put a console there (settings.serial_console).
	Serial io.Writer
	// Forwards are host ports forwarded over the USB network to the guest.
	Forwards []Forward
	// DeviceTree is the file on the boot partition handed to the kernel
	// (default RpiDeviceTree).
	DeviceTree string
	// Snapshot keeps a power-of-two image unchanged (writes go to a
	// temporary overlay); other images are always booted from a copy.
	Snapshot bool
}

// RpiBoot is what StartRpi read from the image's boot partition.
type RpiBoot struct {
	Kernel, DeviceTree []byte
	// KernelFile, DeviceTreeFile and CmdlineFile are the files' paths on the
	// boot partition (config.txt's os_prefix, kernel= and cmdline= applied).
	KernelFile, DeviceTreeFile, CmdlineFile string
	// Cmdline is the line handed to the kernel (RpiCmdline of the file).
	Cmdline string
}

// RpiAvailable reports why the Pi cannot be emulated here, or nil.
func RpiAvailable() error {
	if _, err := exec.LookPath(RpiBinary); err != nil {
		return fmt.Errorf("%s not found (Debian package qemu-system-arm): %w", RpiBinary, err)
	}
	out, err := exec.Command(RpiBinary, "-machine", "help").Output()
	if err != nil {
		return fmt.Errorf("%s -machine help: %w", RpiBinary, err)
	}
	if !bytes.Contains(out, []byte("raspi3b")) {
		return fmt.Errorf("%s does not emulate the Raspberry Pi 3 (no raspi3b machine; QEMU 6.0 or later has it)", RpiBinary)
	}
	return nil
}

// RpiCmdline is the kernel command line the Pi 3's firmware would hand over
// for cmdline.txt: serial0 named as the UART it is on a Pi 3, the mini UART
// ttyS0; when cmdline.txt names no serial console, none is added (the console
// is the image's choice).
func RpiCmdline(cmdlineTxt string) string {
	var out []string
	for _, a := range strings.Fields(cmdlineTxt) {
		if v, ok := strings.CutPrefix(a, "console=serial0"); ok {
			a = "console=ttyS0" + v
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// ReadRpiBoot reads the kernel, the device tree (dtb, a file name) and the
// command line from the boot partition of the image at path (the GPT's first
// partition, FAT32), finding them as the Pi 3's firmware does: config.txt's
// kernel= (default kernel8.img), cmdline= (default cmdline.txt) and
// device_tree= (default dtb, or RpiDeviceTree if dtb is empty), each under
// its os_prefix=.
func ReadRpiBoot(path, dtb string) (*RpiBoot, error) {
	if dtb == "" {
		dtb = RpiDeviceTree
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	table, err := gpt.Read(f, 512, 512)
	if err != nil {
		return nil, fmt.Errorf("%s: no GPT partition table: %w", path, err)
	}
	var boot *gpt.Partition
	for _, p := range table.Partitions {
		if p.Index == 1 && p.End > p.Start {
			boot = p
		}
	}
	if boot == nil {
		return nil, fmt.Errorf("%s: no boot partition (the GPT's first)", path)
	}
	part := io.NewSectionReader(f, int64(boot.Start)*512, int64(boot.End-boot.Start+1)*512)
	fs, err := bootfs.Open(part)
	if err != nil {
		return nil, fmt.Errorf("%s: boot partition: %w", path, err)
	}
	conf, err := readFATFile(fs, part, "config.txt")
	if err != nil {
		return nil, err
	}
	c := piConfig(string(conf), dtb)
	b := RpiBoot{KernelFile: c.prefix + c.kernel, DeviceTreeFile: c.prefix + c.deviceTree, CmdlineFile: c.prefix + c.cmdline}
	if b.Kernel, err = readFATFile(fs, part, b.KernelFile); err != nil {
		return nil, err
	}
	if b.DeviceTree, err = readFATFile(fs, part, b.DeviceTreeFile); err != nil {
		return nil, err
	}
	cmdline, err := readFATFile(fs, part, b.CmdlineFile)
	if err != nil {
		return nil, err
	}
	b.Cmdline = RpiCmdline(string(cmdline))
	return &b, nil
}

// piBootConfig is the part of config.txt that names the files QEMU needs.
type piBootConfig struct{ prefix, kernel, cmdline, deviceTree string }

// piConfig reads config.txt as a Pi 3's firmware on a normal boot: lines
// before any section and in the [all] and [pi3] sections count; those of
// other boards' sections ([pi4], [pi5], ...) and of [tryboot] (a one-time
// boot QEMU cannot ask for) do not. The last setting wins.
func piConfig(text, dtb string) piBootConfig {
	c := piBootConfig{kernel: "kernel8.img", cmdline: "cmdline.txt", deviceTree: dtb}
	applies := true
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			switch strings.ToLower(line) {
			case "[all]", "[pi3]":
				applies = true
			default:
				applies = false
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !applies || !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "os_prefix":
			c.prefix = strings.TrimSpace(val)
		case "kernel":
			c.kernel = strings.TrimSpace(val)
		case "cmdline":
			c.cmdline = strings.TrimSpace(val)
		case "device_tree":
			c.deviceTree = strings.TrimSpace(val)
		}
	}
	return c
}

// readFATFile reads a file by its cluster chain, wherever its clusters lie.
func readFATFile(fs *bootfs.FS, part io.ReaderAt, name string) ([]byte, error) {
	e, err := fs.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	if e.Dir || e.Cluster < 2 {
		return nil, fmt.Errorf("boot partition: %s is not a file with data", name)
	}
	chain, err := fs.Chain(e.Cluster)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %s: %w", name, err)
	}
	if int64(len(chain))*fs.ClusterBytes < e.Size {
		return nil, fmt.Errorf("boot partition: %s is %d bytes but its clusters hold fewer", name, e.Size)
	}
	out := make([]byte, e.Size)
	for i, c := range chain {
		lo := int64(i) * fs.ClusterBytes
		if lo >= e.Size {
			break
		}
		hi := min(lo+fs.ClusterBytes, e.Size)
		if _, err := part.ReadAt(out[lo:hi], fs.ClusterOffset(c)); err != nil {
			return nil, fmt.Errorf("boot partition: %s: %w", name, err)
		}
	}
	return out, nil
}

// rpiNoWatchdog keeps the kernel's bcm2835 watchdog driver from starting.
// QEMU's raspi3b models the power manager's reset register but not the
// watchdog's countdown: the write that arms the watchdog (PM_RSTC's
// full-reset configuration, what reboot writes too) resets the machine at
// once, so the init, which arms it before anything else, would reset the
// emulated Pi as soon as it starts. Without the driver there is no
// /dev/watchdog, the init says so and runs without one, and a reboot inside
// the guest does not come back (no restart handler).
const rpiNoWatchdog = "initcall_blacklist=bcm2835_wdt_driver_init"

// RpiMAC is the USB network adapter's address: in the Raspberry Pi
// Foundation's range (a Pi 3's own Ethernet has one) and, above all,
// universally administered, so that the kernel's CDC Ethernet driver names
// the interface eth0, which gokrazy's DHCP client configures (it would name
// one with a locally administered address usb0).
const RpiMAC = "b8:27:eb:00:00:01"

// RpiArgs is QEMU's command line for the Pi: the kernel and device tree files,
// the SD card, the command line (with rpiNoWatchdog added), and the USB
// network with opts.Forwards.
func RpiArgs(opts RpiOptions, kernel, dtb, card, cmdline string) []string {
	args := []string{
		"-machine", "raspi3b", "-m", "1024", "-smp", "4",
		"-kernel", kernel, "-dtb", dtb, "-append", cmdline + " " + rpiNoWatchdog,
		"-drive", "file=" + card + ",format=raw,if=sd,cache=unsafe",
		// The first serial port is the PL011, which the Pi 3 wires to
		// Bluetooth; the second is the mini UART, the console (ttyS0).
		// No -no-reboot, as on amd64.
		"-nographic", "-serial", "null", "-serial", "stdio", "-monitor", "none",
	}
	if opts.Snapshot {
		args = append(args, "-snapshot")
	}
	var fwd []string
	for _, f := range opts.Forwards {
		fwd = append(fwd, fmt.Sprintf("hostfwd=%s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort))
	}
	netdev := "user,id=net0"
	if len(fwd) > 0 {
		netdev += "," + strings.Join(fwd, ",")
	}
	return append(args, "-netdev", netdev, "-device", "usb-net,netdev=net0,mac="+RpiMAC)
}

// StartRpi boots opts.Image on an emulated Raspberry Pi 3. The VM runs until
// ctx ends, Kill is called or QEMU exits.
func StartRpi(ctx context.Context, opts RpiOptions) (*VM, error) {
	if err := RpiAvailable(); err != nil {
		return nil, err
	}
	if opts.DeviceTree == "" {
		opts.DeviceTree = RpiDeviceTree
	}
	boot, err := ReadRpiBoot(opts.Image, opts.DeviceTree)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cell-rpi-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*VM, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	kernel, dtb := filepath.Join(dir, "kernel"), filepath.Join(dir, "device-tree.dtb")
	if err := os.WriteFile(kernel, boot.Kernel, 0o644); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(dtb, boot.DeviceTree, 0o644); err != nil {
		return fail(err)
	}
	card, err := sdCard(opts.Image, filepath.Join(dir, "card.img"))
	if err != nil {
		return fail(err)
	}
	cmd := command(ctx, RpiBinary, RpiArgs(opts, kernel, dtb, card, boot.Cmdline), opts.Serial)
	vm := &VM{cmd: cmd, done: make(chan struct{}), Started: time.Now()}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	go func() {
		vm.waitErr = cmd.Wait()
		os.RemoveAll(dir)
		close(vm.done)
	}()
	return vm, nil
}

// sdCard returns the image itself when its size is a power of two, else a
// sparse copy at copyPath padded with zeros to the next power of two.
func sdCard(image, copyPath string) (string, error) {
	src, err := os.Open(image)
	if err != nil {
		return "", err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return "", err
	}
	size := fi.Size()
	if size <= 0 {
		return "", fmt.Errorf("%s is empty", image)
	}
	if size&(size-1) == 0 {
		return image, nil
	}
	cardSize := int64(1) << bits.Len64(uint64(size))
	dst, err := os.Create(copyPath)
	if err != nil {
		return "", err
	}
	if err := sparseCopy(dst, src); err != nil {
		dst.Close()
		return "", fmt.Errorf("copying %s to the SD card: %w", image, err)
	}
	if err := dst.Truncate(cardSize); err != nil {
		dst.Close()
		return "", err
	}
	return copyPath, dst.Close()
}

// sparseCopy copies src to dst, leaving holes where src has whole blocks of
// zeros (most of an image: the empty root B, the unused FAT and ext4).
func sparseCopy(dst *os.File, src io.Reader) error {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			chunk := buf[:n]
			if !allZero(chunk) {
				if _, werr := dst.WriteAt(chunk, off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return dst.Truncate(off)
		}
		if err != nil {
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
