// Package image builds the cell's firmware disk image from an instance
// definition (config.json), the job gokrazy's packer does for gokrazy
// appliances; the packer is not available here, so the builder is ours, made of
// well-kept parts.
//
// The disk (GPT, written with github.com/diskfs/go-diskfs) has four partitions
// in gokrazy's order, so that gokrazy's init finds them:
//
//	1 boot   FAT32  kernel (gokrazy/kernel.amd64 or kernel.rpi), command line;
//	                amd64: systemd-boot as EFI/BOOT/BOOTX64.EFI + loader/entries/gokrazy.conf;
//	                rpi:   the Pi firmware (gokrazy/firmware), device trees, config.txt;
//	                the permanent entry, loader.conf and config.txt padded by a
//	                comment, so that a kernel update's commit rewrites them in
//	                place; slot-a/ and slot-b/ appear with the first kernel
//	                update (firmware/update; BundleBootFiles is what a bundle carries)
//	                setup-code.txt: the cell's one-time setup code (Options.SetupCode),
//	                copied by the init to /run/cell at boot (package release)
//	2 root A squashfs  /gokrazy/init (cmd/cell-init), gokrazy's dhcp and ntp,
//	                /user/<package> for each configured package, /etc/cell/release.json,
//	                CA certificates, kernel modules, /var -> /perm/var (as gokrazy's);
//	                the container runtime (containerd.go): /user/containerd,
//	                /user/containerd-shim-runc-v2, /user/runc, /etc/containerd/config.toml,
//	                and the services' OCI archives in /usr/share/pic/images
//	3 root B squashfs  empty until the first update (package firmware/update)
//	4 perm   ext4   formatted at build time, so the first boot finds /perm ready;
//	                grown to the end of the card, and formatted again at full size,
//	                by the init at the first boot or by cellctl flash (firmware/grow)
//
// The kernel command line names the root relative to the boot partition's GUID
// (root=PARTUUID=<boot>/PARTNROFF=1), so a root switch changes one digit in place.
//
// Two quirks of go-diskfs are worked around here, each where it happens: the
// squashfs is built in a file of its own (CreateFilesystem would hand it the
// disk's sector size as block size) and finalized from inside its workspace
// (symlink targets are read relative to the working directory); and the FAT32 it
// writes is corrected so that fsck.vfat accepts it (fatfix.go).
//
// The container runtime is built here, not downloaded: containerd and its shim
// (no cgo) and runc (cgo: nsenter is C, seccomp is libseccomp, linked
// statically from Debian's libseccomp-dev for the target; arm64 with
// aarch64-linux-gnu-gcc and libseccomp-dev:arm64) from the versions go.mod
// pins, into a per-GOARCH cache whose binaries go build relinks only when
// something changed. They add about 48 MiB to the root (the squashfs is not
// compressed). gokrazy's supervisor sets PATH=/user:/gokrazy over every
// program's own environment, so the three sit in /user, where containerd finds
// the shim and the shim runc. Of the kernel features containers need, both
// gokrazy kernels have namespaces (but no user namespaces on amd64),
// cgroup v2, overlayfs, veth, bridge and seccomp filters; the amd64 kernel
// lacks the memory controller (CONFIG_MEMCG) and CPU bandwidth
// (CONFIG_CFS_BANDWIDTH), so runc cannot apply a memory or CPU limit there
// (images/runtime leaves them out; the Pi's kernel has both). The init logs
// the controllers.
//
// gokrazy's own web interface is not exposed: the image carries no gokr-pw.txt,
// so gokrazy serves it only on its Unix socket, which the cell uses to reboot.
package image
