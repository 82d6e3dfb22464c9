//go:build !linux || !amd64

package qemu

import "runtime"

// probeKVM knows only Linux's KVM API with x86 register layouts; elsewhere
// QEMU emulates.
func probeKVM() (bool, string) {
	return false, "the KVM probe supports only linux/amd64 hosts, this is " + runtime.GOOS + "/" + runtime.GOARCH
}
