// Package firmware is the map of the cell's firmware; the code lives in its
// subpackages, and it imports nothing of the rest of the cell.
//
//	firmware/image    builds the disk image from config.json (cellctl image build)
//	firmware/release  what a root carries about itself (/etc/cell/release.json)
//	firmware/bundle   the signed update bundle (cellctl update build; the device's checks)
//	firmware/update   the device side: A/B roots, trial boot, commit, rollback
//	firmware/bootfs   in-place reads and one-byte rewrites of the boot FAT
//	firmware/grow     the data partition fills the disk (first boot, cellctl flash)
//	firmware/qemu     boots an amd64 image under OVMF (cellctl vm run; the image tests),
//	                  and the rpi image on QEMU's emulated Pi 3
//	cmd/cell-init     the image's init: growing /perm, the watchdog, gokrazy.Boot,
//	                  the trial switch, supervision
//
// The daemon reaches the firmware through update.Device (httpapi's /api/system
// routes); the operator through cellctl's image, vm, flash, keygen and update
// commands.
package firmware
