package update

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// TrybootReboot restarts a Raspberry Pi so that its firmware reads
// tryboot.txt instead of config.txt for this one boot: reboot(2) with
// LINUX_REBOOT_CMD_RESTART2 and the argument "0 tryboot", which the Pi's
// kernel (Raspberry Pi's tree, which gokrazy's kernel.rpi is built from)
// passes to the firmware as its reboot flag, as `reboot '0 tryboot'` does on
// Raspberry Pi OS. gokrazy's reboot cannot pass the flag, so the services are
// not stopped first: the file systems are synced, and the cell's database
// survives an abrupt stop as it survives a power cut.
func TrybootReboot() error {
	unix.Sync()
	arg, err := unix.BytePtrFromString("0 tryboot")
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2,
		unix.LINUX_REBOOT_CMD_RESTART2, uintptr(unsafe.Pointer(arg)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
