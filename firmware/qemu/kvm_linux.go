//go:build amd64

package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The KVM API as in <linux/kvm.h>. The structures are x86's, hence amd64
// only; the sizes inside the ioctl numbers come from the Go types so that a
// layout mistake changes the number (and kvm_linux_test.go pins the numbers).
const (
	kvmAPIVersion = 12

	kvmio     = 0xAE
	iocWrite  = 1
	iocRead   = 2
	iocNRBits = 8

	kvmGetAPIVersion       = kvmio<<iocNRBits | 0x00
	kvmCreateVM            = kvmio<<iocNRBits | 0x01
	kvmGetVCPUMmapSize     = kvmio<<iocNRBits | 0x04
	kvmCreateVCPU          = kvmio<<iocNRBits | 0x41
	kvmSetUserMemoryRegion = iocWrite<<30 | unsafe.Sizeof(kvmUserspaceMemoryRegion{})<<16 | kvmio<<iocNRBits | 0x46
	kvmSetTSSAddr          = kvmio<<iocNRBits | 0x47
	kvmRun                 = kvmio<<iocNRBits | 0x80
	kvmSetRegs             = iocWrite<<30 | unsafe.Sizeof(kvmRegs{})<<16 | kvmio<<iocNRBits | 0x82
	kvmGetSregs            = iocRead<<30 | unsafe.Sizeof(kvmSregs{})<<16 | kvmio<<iocNRBits | 0x83
	kvmSetSregs            = iocWrite<<30 | unsafe.Sizeof(kvmSregs{})<<16 | kvmio<<iocNRBits | 0x84

	kvmExitHLT = 5
	// exit_reason sits after request_interrupt_window, immediate_exit and
	// six bytes of padding in struct kvm_run.
	kvmRunExitReasonOffset = 8

	// The guest: one page at 0x1000 whose first byte is hlt, run in real mode.
	guestAddr = 0x1000
	guestSize = 0x1000
	hlt       = 0xf4
	// tssAddr is where QEMU puts the three pages Intel needs to run real-mode
	// code without unrestricted guest support; AMD ignores it.
	tssAddr = 0xfffbd000
)

var kvmExitNames = map[uint32]string{
	0: "unknown", 2: "I/O", 6: "MMIO", 8: "shutdown", 9: "entry failure", 17: "internal error",
}

type kvmUserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

type kvmSegment struct {
	Base                                           uint64
	Limit                                          uint32
	Selector                                       uint16
	Type, Present, DPL, DB, S, L, G, AVL, Unusable uint8
	_                                              uint8
}

type kvmDtable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

type kvmSregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT         kvmSegment
	GDT, IDT                                kvmDtable
	CR0, CR2, CR3, CR4, CR8, EFER, APICBase uint64
	InterruptBitmap                         [4]uint64
}

// probeKVM checks the CPU flags, then has KVM run a one-instruction guest.
// Each failure says which step failed, for the message that names the
// accelerator.
func probeKVM() (bool, string) {
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false, fmt.Sprintf("cannot read the CPU flags: %v", err)
	}
	devErr := canOpenKVM()
	if !hasVirtFlag(cpuinfo) {
		if devErr == nil {
			return false, "/dev/kvm opens but the CPU flags have no vmx/svm (no hardware virtualisation, e.g. a VM without nested virtualisation)"
		}
		return false, fmt.Sprintf("the CPU flags have no vmx/svm, and %v", devErr)
	}
	if devErr != nil {
		return false, devErr.Error()
	}
	if err := runHaltingVCPU(); err != nil {
		return false, "the CPU flags have vmx/svm but " + err.Error()
	}
	return true, "the CPU flags have vmx/svm and a test vCPU ran to its hlt"
}

func canOpenKVM() error {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("/dev/kvm does not open: %w", err)
	}
	unix.Close(fd)
	return nil
}

// runHaltingVCPU runs a guest whose only instruction is hlt: the first exit
// must be HLT.
func runHaltingVCPU() error {
	exit, err := runGuest([]byte{hlt})
	if err != nil {
		return err
	}
	if exit != kvmExitHLT {
		name := kvmExitNames[exit]
		if name == "" {
			name = "see <linux/kvm.h>"
		}
		return fmt.Errorf("a test vCPU stopped with KVM exit reason %d (%s), not %d (HLT)", exit, name, kvmExitHLT)
	}
	return nil
}

// runGuest creates a VM with one page of memory holding code, points a
// real-mode vCPU at it, runs it and returns its first exit reason.
func runGuest(code []byte) (uint32, error) {
	if len(code) > guestSize {
		return 0, fmt.Errorf("guest code of %d bytes exceeds its %d-byte page", len(code), guestSize)
	}
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("/dev/kvm does not open: %w", err)
	}
	defer unix.Close(kvm)
	v, err := unix.IoctlRetInt(kvm, kvmGetAPIVersion)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != kvmAPIVersion {
		return 0, fmt.Errorf("KVM_GET_API_VERSION is %d, want %d", v, kvmAPIVersion)
	}
	// Mapped before the VM exists so that it is unmapped only after the VM's
	// descriptor is closed (defers run last first): KVM never holds a slot
	// over a hole.
	mem, err := unix.Mmap(-1, 0, guestSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem, code)
	vm, err := ioctlArg(kvm, kvmCreateVM, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer unix.Close(vm)
	if _, err := ioctlArg(vm, kvmSetTSSAddr, tssAddr); err != nil {
		return 0, fmt.Errorf("KVM_SET_TSS_ADDR: %w", err)
	}

	region := kvmUserspaceMemoryRegion{
		GuestPhysAddr: guestAddr,
		MemorySize:    guestSize,
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
	}
	if err := ioctlPtr(vm, kvmSetUserMemoryRegion, unsafe.Pointer(&region)); err != nil {
		return 0, fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}

	vcpu, err := ioctlArg(vm, kvmCreateVCPU, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(vcpu)
	size, err := unix.IoctlRetInt(kvm, kvmGetVCPUMmapSize)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if size < kvmRunExitReasonOffset+4 {
		return 0, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE is %d bytes, too small for struct kvm_run", size)
	}
	run, err := unix.Mmap(vcpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mapping struct kvm_run: %w", err)
	}
	defer unix.Munmap(run)

	var sregs kvmSregs
	if err := ioctlPtr(vcpu, kvmGetSregs, unsafe.Pointer(&sregs)); err != nil {
		return 0, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	// A vCPU resets to cs base 0xffff0000; the code is at guestAddr.
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := ioctlPtr(vcpu, kvmSetSregs, unsafe.Pointer(&sregs)); err != nil {
		return 0, fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	// Bit 1 of rflags is reserved and must be set.
	regs := kvmRegs{RIP: guestAddr, RFLAGS: 2}
	if err := ioctlPtr(vcpu, kvmSetRegs, unsafe.Pointer(&regs)); err != nil {
		return 0, fmt.Errorf("KVM_SET_REGS: %w", err)
	}

	// The Go runtime's preemption signals can interrupt KVM_RUN before the
	// guest exits; that is a retry, not a verdict.
	for tries := 0; ; tries++ {
		_, err = ioctlArg(vcpu, kvmRun, 0)
		if !errors.Is(err, unix.EINTR) || tries == 100 {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("KVM_RUN: %w", err)
	}
	return binary.NativeEndian.Uint32(run[kvmRunExitReasonOffset:]), nil
}

func ioctlArg(fd int, req uintptr, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// ioctlPtr keeps p an unsafe.Pointer up to the Syscall call, where the
// conversion to uintptr must happen for the pointer to stay valid.
func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p)); errno != 0 {
		return errno
	}
	return nil
}
