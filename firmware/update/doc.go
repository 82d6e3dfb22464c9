// Package update is the device side of firmware updates: it checks a signed bundle,
// writes the new root to the inactive root partition, boots it once on trial, and
// makes it permanent only when the new system reports healthy. It owns the trial
// state on /perm and the root selection on the boot partition.
//
// # Partitions and the permanent root
//
// The disk has boot (FAT32), root A (partition 2), root B (3) and perm (ext4, 4).
// The kernel command line on the boot partition names the permanent root relative
// to the boot partition: root=PARTUUID=<boot>/PARTNROFF=1 for A, =2 for B. On amd64
// that line is in systemd-boot's loader/entries/gokrazy.conf, on the Pi in
// cmdline.txt; both files carry it on both targets and are changed together. A
// switch rewrites that one digit in place (package bootfs finds its bytes on the
// partition), a single-sector write, as gokrazy itself switches roots. Nothing else
// ever writes to the boot partition after flashing.
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
//  3. The state says "pending": slot, version, the slot and version it came from.
//     The daemon asks gokrazy's init (over its Unix socket) to stop the services,
//     unmount /perm and reboot. On amd64 gokrazy reboots by kexec with the kernel
//     and cmdline.txt from the boot partition, which is why cmdline.txt is kept in
//     step with the systemd-boot entry there.
//  4. The kernel mounts the permanent (old) root. Its init (cmd/cell-init), after
//     gokrazy.Boot, sees "pending", writes "trying" (so that this happens once),
//     mounts the new root and switches into it (move mount, chroot, exec its
//     /gokrazy/init), the way gokrazy's own try_boot_inactive switch works. This is
//     the init-level trial switch: it needs no help from UEFI or the Pi firmware,
//     so it works the same on both targets.
//  5. The new root's init sees "trying" on the slot it runs from: it is on trial.
//     It polls the daemon's /health (release.HealthURL) until it answers 200 with
//     "ok": true, which the daemon says only once its database is open and
//     migrated and its parts are up, for at most release.TrialTimeout.
//  6. Healthy: the boot partition is made to name the new root (the commit), then
//     the state says "committed". Not healthy in time: the boot partition is made
//     to name the old root (normally already so), the state says "rolled_back"
//     with the reason, and the device reboots into the old root.
//  7. Any other way out of the trial (the new kernel-level boot crashes, init
//     panics, PID 1 exits, power is cut) ends in a reboot (panic=10 on the command
//     line): the kernel mounts the old root, whose init finds "trying" for a slot
//     it is not running from and records "rolled_back: the trial boot did not
//     report healthy".
//
// The daemon reports the state (GET /api/system/update, Device.Status) and
// writes each outcome to the audit log once (Device.Report, called as outcomes
// appear and before a new update replaces the state). The API's install step is
// audited by the API itself.
//
// # Power cuts
//
// Before step 3 the boot partition and the permanent root are untouched: a cut
// while writing leaves "writing", which the next boot (on the old root) turns into
// "failed: interrupted". Between the commit's boot-partition write and its state
// write, the next boot comes up on the new root still "trying" and simply checks
// health again; every step is idempotent for that reason.
//
// # Limits
//
// Only the root is A/B: the boot partition (kernel, boot loader) is not, so a
// bundle carries a root only; a kernel update needs a re-flash. A new system that
// hangs without crashing and without its init's deadline firing (e.g. a kernel
// hang) needs the hardware watchdog, which gokrazy's init pets when the board has one.
package update
