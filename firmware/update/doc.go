// Package update is the device side of firmware updates: it checks a signed bundle,
// writes the new root to the inactive root partition, and, when the bundle carries
// a kernel, the kernel's boot files to the inactive slot's directory of the boot
// partition; it boots the new system once on trial and makes it permanent only
// when the new system reports healthy. It owns the trial state on /perm and the
// boot partition's choice of what boots.
//
// # Partitions and the permanent root
//
// The disk has boot (FAT32), root A (partition 2), root B (3) and perm (ext4, 4).
// The kernel command line on the boot partition names the permanent root relative
// to the boot partition: root=PARTUUID=<boot>/PARTNROFF=1 for A, =2 for B. On amd64
// that line is in systemd-boot's loader/entries/gokrazy.conf, on the Pi in
// cmdline.txt; both files carry it on both targets and are changed together. A
// root switch rewrites that one digit in place (package bootfs finds its bytes on
// the partition), a single-sector write, as gokrazy itself switches roots.
//
// # The boot partition, per slot
//
// A root-only bundle changes nothing on the boot partition but that digit. A
// kernel bundle (package bundle: parts "boot/vmlinuz", "boot/cmdline.txt", on the
// Pi also device trees and overlays) brings a kernel for the new root, and the
// boot partition holds one kernel per slot:
//
//	/vmlinuz, /cmdline.txt           the kernel the image was flashed with, and
//	                                 its command line (gokrazy's kexec reads both)
//	/slot-a/, /slot-b/               a bundle's boot files: vmlinuz (Pi: also
//	                                 cmdline.txt, *.dtb, overlays/), made on first use
//	amd64, systemd-boot:
//	/loader/loader.conf              "default *": the first entry in systemd-boot's order
//	/loader/entries/gokrazy.conf     the permanent entry: linux <kernel>, options
//	                                 <command line>; padded by a comment to 500
//	                                 bytes, so a commit rewrites it in place
//	/loader/entries/cell-b+1.conf    a trial entry: sort-key cell-trial, version,
//	                                 linux /slot-b/vmlinuz, options with root B
//	Pi firmware:
//	/config.txt                      the permanent choice: no os_prefix (the
//	                                 flashed files) or os_prefix=slot-b/; padded
//	/tryboot.txt                     a trial: config.txt with os_prefix=slot-b/
//
// The kernel goes to the directory the permanent boot does not use: slot-b for
// root B, slot-a for root A, unless root-only updates since have left the
// permanent boot using that one (its kernel with the other root), then the other.
// The bundle's command line is the one a fresh image boots; the device replaces
// its root= with its own (the bundle cannot know the boot partition's GUID).
//
// The trial uses the firmware's own one-time boot, so that a kernel that never
// reaches init (a panic, a hang that the watchdog resets, a power cut) ends on
// the old system without anything on the device having to run:
//
//   - amd64: systemd-boot's automatic boot assessment. The trial entry's name
//     carries a counter of one try (cell-b+1.conf). Before it boots an entry
//     with a counter, systemd-boot renames it with one try less (cell-b+0-1.conf),
//     and an entry with no tries left is sorted after every other. The trial
//     entry has a sort key and the permanent one none, and systemd-boot sorts
//     entries with a sort key first; loader.conf's default is "*", the first
//     entry in that order: the trial while it has its try, the permanent entry
//     after. Verified in QEMU with Debian 12's systemd-boot 252
//     (firmware/qemu/kernel_test.go).
//   - Pi: the firmware's tryboot. tryboot.txt is config.txt with the slot's
//     os_prefix (which the firmware puts before the kernel, cmdline.txt, the
//     device trees and the overlays); the firmware reads it instead of
//     config.txt for one boot after a reboot with the tryboot flag
//     (TrybootReboot: reboot(2) with "0 tryboot"), and config.txt on every
//     other boot. The Pi's firmware is not emulated: the files are unit-tested,
//     the reboot and the firmware's reading of them are not proven here.
//
// gokrazy reboots amd64 by kexec, with /vmlinuz and /cmdline.txt, bypassing UEFI
// and systemd-boot; GokrazyReboot asks for kexec only while that boots what the
// firmware would (the permanent kernel is /vmlinuz and no trial is armed), and
// otherwise reboots through the firmware. The boot loader itself (systemd-boot's
// BOOTX64.EFI, the Pi's start*.elf and bootcode.bin) is not in bundles: the
// firmware loads exactly one of it, with nothing to fall back to, so replacing it
// cannot be tried once and undone; a new one comes with a re-flash.
//
// Writing the boot FAT (fatwrite.go) follows one rule for power cuts: write only
// space nothing references (free clusters, free directory slots), sync, then make
// it visible with one small write (a file's 32-byte directory entry, an entry's
// first byte when a file is removed); the permanent files change only by
// same-length in-place rewrites of one sector. A cut at any point leaves every
// file of the permanent boot as it was, at worst clusters nothing references,
// which the next install frees again. fsck.vfat checks the result in the tests.
//
// # One update, step by step
//
//  1. Apply reads the whole bundle (already spooled to /perm by the API) and checks
//     the signature, the target, the versions and every part's SHA-256. A refusal
//     here has written nothing: not the inactive root, not the boot partition, not
//     the state file.
//  2. The state file (/perm/cell-firmware/state.json, replaced by rename and
//     fsynced) says "writing". The root is streamed to the inactive partition,
//     hashed again on the way (the file could change between the passes), synced,
//     and read back and hashed a third time.
//  3. The state says "pending": slot, version, the slot and version it came from
//     (and for a kernel bundle its kernel and command line; its boot files are
//     written after this, and the trial entry last). The daemon asks gokrazy's
//     init (over its Unix socket) to stop the services, unmount /perm and reboot.
//     On amd64 gokrazy reboots by kexec with the kernel and cmdline.txt from the
//     boot partition, which is why cmdline.txt is kept in step with the
//     systemd-boot entry there, and never by kexec when the firmware must choose
//     (see above). On the Pi a kernel trial reboots with the tryboot flag.
//  4. The kernel mounts the permanent (old) root. Its init (cmd/cell-init), after
//     gokrazy.Boot, sees "pending", writes "trying" (so that this happens once),
//     mounts the new root and switches into it (move mount, chroot, exec its
//     /gokrazy/init), the way gokrazy's own try_boot_inactive switch works. This is
//     the init-level trial switch: it needs no help from UEFI or the Pi firmware,
//     so it works the same on both targets. A kernel update is not switched
//     into: the firmware has booted the trial's kernel and root already, and
//     its init finds "pending" on the slot it runs from and writes "trying".
//  5. The new root's init sees "trying" on the slot it runs from: it is on trial.
//     It polls the daemon's /health (release.HealthURL) until it answers 200 with
//     "ok": true, which the daemon says only once its database is open and
//     migrated and its parts are up, for at most release.TrialTimeout.
//  6. Healthy: the boot partition is made to name the new root (the commit;
//     for a kernel, the permanent entry or config.txt is rewritten to name the
//     slot's kernel and root, then the trial files are removed), then the state
//     says "committed". Not healthy in time: the boot partition is made
//     to name the old root (normally already so), the state says "rolled_back"
//     with the reason, and the device reboots into the old root.
//  7. Any other way out of the trial (the new kernel-level boot crashes, init
//     panics, PID 1 exits, power is cut) ends in a reboot (panic=10 on the command
//     line): the kernel mounts the old root, whose init finds "trying" for a slot
//     it is not running from and records "rolled_back: the trial boot did not
//     report healthy". A kernel trial that never reached init comes back the
//     same way, by the firmware's counter: the old init finds "pending" for
//     another slot and records that the new kernel never reached init.
//
// The daemon reports the state (GET /api/system/update, Device.Status) and
// writes each outcome to the audit log once (Device.Report, called as outcomes
// appear and before a new update replaces the state). The API's install step is
// audited by the API itself.
//
// # Power cuts
//
// Before step 3 the boot partition's permanent files and the permanent root are
// untouched: a cut while writing the root leaves "writing", which the next boot
// (on the old root) turns into "failed: interrupted". A cut while a kernel's boot
// files are written leaves "pending" and no trial entry: the next boot is the
// permanent entry's, whose init records the rollback. Between the commit's
// boot-partition write and its state write, the next boot comes up on the new
// root still "trying" (for a kernel: through the blessed permanent entry) and
// simply checks health again; every step is idempotent for that reason.
//
// # Limits
//
// A root-only bundle after a kernel update keeps the running kernel, whose
// modules are in the old root: bundles should carry the kernel they were built
// with (cellctl update build -kernel) whenever go.mod's kernel changed. Images
// flashed before kernel updates have an unpadded permanent entry and
// loader.conf; the device refuses kernel bundles there (nothing written) and a
// re-flash is needed once. The Pi's kernel with its device trees and overlays
// is about 48 MiB, so the Pi's boot partition must hold three of them (the
// flashed one and two slots: the Pi's image has a 256 MiB boot partition); the
// device refuses a bundle that does not fit.
// The Pi's trial reboot does not stop the services first (gokrazy's reboot
// cannot pass the tryboot flag): the file systems are synced and the reboot is
// abrupt. A new system that hangs without crashing is reset by the hardware
// watchdog, which the init feeds only while the cell answers (cmd/cell-init's
// watchdog.go): during a trial the reset lands on the permanent root.
package update
