//go:build amd64

package qemu

import (
	"os"
	"strings"
	"testing"
)

// The numbers are <linux/kvm.h>'s on x86_64; the sized ones are built from the
// Go structures, so a wrong field makes them differ.
func TestKVMIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xae01},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0xae04},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0xae41},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0xae47},
		{"KVM_RUN", kvmRun, 0xae80},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

// noVirtFlags skips on CPUs with vmx/svm: there the verdict depends on the
// host's KVM, not on the flags.
func noVirtFlags(t *testing.T) {
	t.Helper()
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no CPU flags to check: %v", err)
	}
	if hasVirtFlag(cpuinfo) {
		t.Skip("this CPU has vmx/svm; the no-flags verdict needs a host without them")
	}
}

func TestKVMWithoutVirtFlags(t *testing.T) {
	noVirtFlags(t)
	if KVM() {
		t.Errorf("KVM() = true on a CPU without vmx/svm, want false (reason %q)", KVMReason())
	}
	reason := KVMReason()
	if !strings.HasPrefix(reason, "software emulation: ") || !strings.Contains(reason, "CPU flags have no vmx/svm") {
		t.Errorf("KVMReason() = %q, want software emulation because the CPU flags have no vmx/svm", reason)
	}
	if _, err := os.Stat("/dev/kvm"); err == nil && !strings.Contains(reason, "/dev/kvm opens") {
		t.Errorf("KVMReason() = %q, want it to say that /dev/kvm opens all the same", reason)
	}
}

func TestArgsUseTCGWithoutKVM(t *testing.T) {
	noVirtFlags(t)
	args := strings.Join(Args(Options{Image: "/x/cell.img"}, "/ovmf/code.fd", "/tmp/vars.fd"), " ")
	if !strings.Contains(args, "-accel tcg") {
		t.Errorf("QEMU arguments lack -accel tcg on a CPU without vmx/svm:\n%s", args)
	}
	if strings.Contains(args, "-enable-kvm") || strings.Contains(args, "-cpu host") {
		t.Errorf("QEMU arguments ask for KVM on a CPU without vmx/svm:\n%s", args)
	}
}

// TestKVMRunGuestExits runs the probe's guest machinery wherever /dev/kvm
// lets it, and checks that the exit reason is read from the right place: hlt
// exits HLT, an out instruction exits I/O.
func TestKVMRunGuestExits(t *testing.T) {
	if err := canOpenKVM(); err != nil {
		t.Skip(err)
	}
	exit, err := runGuest([]byte{hlt})
	if err != nil {
		t.Skipf("KVM runs no guest here: %v", err)
	}
	if exit != kvmExitHLT {
		t.Errorf("hlt guest: exit reason %d, want %d (HLT)", exit, kvmExitHLT)
	}
	const kvmExitIO = 2
	// out 0x10, al
	exit, err = runGuest([]byte{0xe6, 0x10, hlt})
	if err != nil {
		t.Fatal(err)
	}
	if exit != kvmExitIO {
		t.Errorf("out guest: exit reason %d, want %d (I/O)", exit, kvmExitIO)
	}
}
