//go:build !linux

package update

import "errors"

// TrybootReboot is Linux's (tryboot_linux.go).
func TrybootReboot() error { return errors.New("tryboot needs Linux on a Raspberry Pi") }
