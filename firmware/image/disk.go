package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/part"
	"github.com/google/uuid"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/release"
	"github.com/pic-cell/cell/firmware/update"
)

// Partition numbers, as gokrazy numbers them (its rootdev package and its
// PARTNROFF= command line rely on this order).
const (
	PartBoot  = 1
	PartRootA = 2
	PartRootB = 3
	PartPerm  = 4
)

const (
	sectorSize = 512
	alignBytes = 1 << 20
)

// Layout is where each partition lies, in bytes from the start of the disk.
type Layout struct {
	Start, Size [5]int64 // indexed by partition number
	DiskSize    int64
}

// LayoutFor computes the partition layout of cfg: 1 MiB aligned, in gokrazy's
// order boot, root A, root B, perm.
func LayoutFor(cfg *Config) Layout {
	sizes := [5]int64{0,
		int64(bootMiB(cfg)) << 20,
		int64(orDefault(cfg.Settings.RootMiB, defaultRootMiB)) << 20,
		int64(orDefault(cfg.Settings.RootMiB, defaultRootMiB)) << 20,
		int64(orDefault(cfg.Settings.PermMiB, defaultPermMiB)) << 20,
	}
	var l Layout
	off := int64(alignBytes)
	for i := 1; i <= 4; i++ {
		l.Start[i], l.Size[i] = off, sizes[i]
		off += sizes[i]
	}
	// Room for the backup GPT at the end.
	l.DiskSize = off + alignBytes
	return l
}

// Cmdline is the kernel command line of an image whose boot partition has the
// GPT partition GUID bootUUID, booting root partition rootPart. The root is
// named relative to the boot partition (PARTNROFF) so that switching roots
// changes one digit in place, and so that gokrazy's rootdev finds the disk.
func Cmdline(target, bootUUID string, rootPart int, serial bool) string {
	root := fmt.Sprintf("root=PARTUUID=%s/PARTNROFF=%d", strings.ToLower(bootUUID), rootPart-PartBoot)
	args := []string{root, "rootfstype=squashfs", "ro", "init=/gokrazy/init", "rootwait", "panic=10", "oops=panic"}
	switch target {
	case "amd64":
		args = append(args, "pci=nommconf", "console=tty1")
		if serial {
			args = append(args, "console=ttyS0,115200")
		}
	case "rpi":
		args = append(args, "console=tty1")
		if serial {
			args = append(args, "console=serial0,115200")
		}
	}
	return strings.Join(args, " ")
}

// Build writes the disk image of cfg to output: the programs compiled, root A
// filled, root B empty, perm formatted, the boot partition naming root A.
func Build(ctx context.Context, cfg *Config, o Options, output string) error {
	o.defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	target, _ := TargetByName(cfg.Target)
	tmp, err := os.MkdirTemp("", "cell-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root.squashfs")
	if err := BuildRoot(ctx, cfg, o, root); err != nil {
		return err
	}
	bootFiles, err := BootFiles(cfg, o, target)
	if err != nil {
		return err
	}
	if o.SetupCode != "" {
		bootFiles[release.SetupCodeFile] = BootFile{Data: []byte(o.SetupCode + "\n")}
	}
	o.Log.Info("writing disk image", "file", output)
	// go-diskfs refuses to create over an existing file; an image is rebuilt
	// from scratch every time anyway.
	if err := os.Remove(output); err != nil && !os.IsNotExist(err) {
		return err
	}
	return writeDisk(cfg, target, root, bootFiles, output)
}

// BootFile is one file of the boot partition: its content comes from a file on
// the build host or from Data.
type BootFile struct {
	Source string
	Data   []byte
}

// systemdBoot is Debian's systemd-boot (package systemd-boot-efi).
var systemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// BootFiles lists the boot partition's files (except the command line files,
// which need the partition GUID and are added by writeDisk).
func BootFiles(cfg *Config, o Options, target Target) (map[string]BootFile, error) {
	o.defaults()
	kernelDir, err := moduleDir(o.GoTool, o.Dir, target.KernelModule)
	if err != nil {
		return nil, err
	}
	files := map[string]BootFile{"vmlinuz": {Source: filepath.Join(kernelDir, "vmlinuz")}}
	switch target.Name {
	case "amd64":
		if _, err := os.Stat(systemdBoot); err != nil {
			return nil, fmt.Errorf("amd64 boot loader (Debian's systemd-boot-efi package): %w", err)
		}
		files["EFI/BOOT/BOOTX64.EFI"] = BootFile{Source: systemdBoot}
		// No menu: the device has no one in front of it. The default is
		// the first entry in systemd-boot's order, so that a kernel
		// update's trial entry is booted once (firmware/update). Padded, so
		// that a device can rewrite it in place. The permanent entry keeps
		// gokrazy's name, so that tools which know gokrazy's layout find it.
		conf := update.LoaderConfContent()
		files[update.LoaderConf] = BootFile{Data: append(conf, update.PadComment(update.LoaderConfSize-len(conf))...)}
	case "rpi":
		fwDir, err := moduleDir(o.GoTool, o.Dir, target.FirmwareModule)
		if err != nil {
			return nil, err
		}
		for _, pattern := range []string{"*.bin", "*.dat", "*.elf"} {
			m, _ := filepath.Glob(filepath.Join(fwDir, pattern))
			for _, f := range m {
				files[filepath.Base(f)] = BootFile{Source: f}
			}
		}
		dtbs, _ := filepath.Glob(filepath.Join(kernelDir, "*.dtb"))
		for _, f := range dtbs {
			files[filepath.Base(f)] = BootFile{Source: f}
		}
		overlays, _ := filepath.Glob(filepath.Join(kernelDir, "overlays", "*"))
		for _, f := range overlays {
			files["overlays/"+filepath.Base(f)] = BootFile{Source: f}
		}
		// Pi 4 and 5 in 64-bit mode; the UART stays off unless asked for, since
		// it costs the Pi 4 its Bluetooth and a fixed core clock. Padded by a
		// comment, so that a kernel update's commit can add os_prefix in
		// place (firmware/update).
		conf := []byte("arm_64bit=1\nkernel=vmlinuz\ndisable_overscan=1\n" +
			"dtparam=audio=on\n" + map[bool]string{true: "enable_uart=1\n", false: ""}[serialConsole(cfg)])
		files[update.PiConfig] = BootFile{Data: append(conf, update.PadComment(piConfigSize-len(conf))...)}
	}
	return files, nil
}

// piConfigSize is the length config.txt is padded to.
const piConfigSize = 256

// BundleBootFiles returns the boot files a kernel bundle carries for cfg's
// target, as bundle part names (bundle.BootPrefix + path) → files on the host:
// the kernel (vmlinuz), the command line a fresh image of cfg would boot
// (cmdline.txt, written into dir; the device replaces its root= with its
// own), and on the Pi the device trees and overlays. The boot loader
// (systemd-boot, the Pi firmware) is not among them: see firmware/update.
func BundleBootFiles(cfg *Config, o Options, dir string) (map[string]string, error) {
	o.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	target, _ := TargetByName(cfg.Target)
	kernelDir, err := moduleDir(o.GoTool, o.Dir, target.KernelModule)
	if err != nil {
		return nil, err
	}
	parts := map[string]string{bundle.BootPrefix + "vmlinuz": filepath.Join(kernelDir, "vmlinuz")}
	// The GUID is a placeholder: the device puts its own root= in.
	cmdline := Cmdline(target.Name, "00000000-0000-0000-0000-000000000000", PartRootA, serialConsole(cfg)) + "\n"
	p := filepath.Join(dir, "cmdline.txt")
	if err := os.WriteFile(p, []byte(cmdline), 0o644); err != nil {
		return nil, err
	}
	parts[bundle.BootPrefix+"cmdline.txt"] = p
	if target.Name == "rpi" {
		dtbs, _ := filepath.Glob(filepath.Join(kernelDir, "*.dtb"))
		for _, f := range dtbs {
			parts[bundle.BootPrefix+filepath.Base(f)] = f
		}
		overlays, _ := filepath.Glob(filepath.Join(kernelDir, "overlays", "*"))
		for _, f := range overlays {
			parts[bundle.BootPrefix+"overlays/"+filepath.Base(f)] = f
		}
	}
	return parts, nil
}

// CheckHost reports what the build host lacks to build an image for target:
// Debian's systemd-boot-efi (amd64) and ca-certificates, and for runc the
// target's C compiler and static libseccomp (containerd.go).
func CheckHost(target string) error {
	if _, err := os.Stat(hostCABundle); err != nil {
		return fmt.Errorf("CA certificates (Debian package ca-certificates): %w", err)
	}
	if t, err := TargetByName(target); err == nil {
		if err := checkContainerHost(t); err != nil {
			return err
		}
	}
	if target == "amd64" {
		if _, err := os.Stat(systemdBoot); err != nil {
			return fmt.Errorf("amd64 boot loader (Debian package systemd-boot-efi): %w", err)
		}
	}
	return nil
}

func serialConsole(cfg *Config) bool {
	if cfg.Settings.SerialConsole != nil {
		return *cfg.Settings.SerialConsole
	}
	return cfg.Target == "amd64"
}

func writeDisk(cfg *Config, target Target, rootPath string, bootFiles map[string]BootFile, output string) (err error) {
	l := LayoutFor(cfg)
	d, err := diskfs.Create(output, l.DiskSize, diskfs.SectorSizeDefault)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(output)
		}
	}()
	bootUUID := uuid.NewString()
	types := [5]gpt.Type{"", gpt.EFISystemPartition, gpt.LinuxFilesystem, gpt.LinuxFilesystem, gpt.LinuxFilesystem}
	names := [5]string{"", "boot", "root-a", "root-b", "perm"}
	table := &gpt.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true}
	for i := 1; i <= 4; i++ {
		p := &gpt.Partition{
			Index: i,
			Start: uint64(l.Start[i] / sectorSize),
			End:   uint64((l.Start[i]+l.Size[i])/sectorSize - 1),
			Size:  uint64(l.Size[i]),
			Type:  types[i],
			Name:  names[i],
		}
		if i == PartBoot {
			p.GUID = bootUUID
		}
		table.Partitions = append(table.Partitions, p)
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("partition table: %w", err)
	}

	// Root A gets the root; root B stays empty until the first update.
	rf, err := os.Open(rootPath)
	if err != nil {
		return err
	}
	_, err = d.WritePartitionContents(PartRootA, rf)
	rf.Close()
	// A root smaller than its partition is the normal case: the rest stays zero.
	var short *part.IncompletePartitionWriteError
	if err != nil && !errors.As(err, &short) {
		return fmt.Errorf("root partition: %w", err)
	}

	cmdline := Cmdline(target.Name, bootUUID, PartRootA, serialConsole(cfg)) + "\n"
	bootFiles["cmdline.txt"] = BootFile{Data: []byte(cmdline)}
	if target.Name == "amd64" {
		// Padded, so that a kernel update's commit can rewrite it in place
		// with a longer kernel path and command line (firmware/update).
		entry := update.EntryContent(update.FlashedKernel, cmdline, "", false)
		bootFiles[update.PermanentEntry] = BootFile{Data: append(entry, update.PadComment(update.PermanentEntrySize-len(entry))...)}
	}
	if err := writeBootFS(d, bootFiles); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	if err := fixFAT32(output, l.Start[PartBoot], l.Size[PartBoot]); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}

	perm, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: PartPerm, FSType: filesystem.TypeExt4, VolumeLabel: "perm"})
	if err != nil {
		return fmt.Errorf("perm partition: %w", err)
	}
	return perm.Close()
}

func writeBootFS(d *disk.Disk, files map[string]BootFile) error {
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: PartBoot, FSType: filesystem.TypeFat32, VolumeLabel: "CELLBOOT"})
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	// Sorted, so that two builds of the same inputs lay the FAT out the same way.
	sort.Strings(names)
	made := map[string]bool{}
	for _, n := range names {
		if dir := filepath.Dir(n); dir != "." && !made[dir] {
			if err := fs.Mkdir("/" + dir); err != nil {
				return err
			}
			made[dir] = true
		}
		f, err := fs.OpenFile("/"+n, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		bf := files[n]
		if bf.Source != "" {
			src, err := os.Open(bf.Source)
			if err != nil {
				f.Close()
				return err
			}
			_, err = io.Copy(f, src)
			src.Close()
			if err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", n, err)
			}
		} else if _, err := f.Write(bf.Data); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
