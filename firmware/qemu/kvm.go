package qemu

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"sync"
	"time"
)

// probeTimeout bounds the KVM probe: a vCPU that halts returns at once, but a
// broken host must cost a development boot seconds, not a hang.
const probeTimeout = 5 * time.Second

// accel is the probe's verdict, cached for the life of the process: it cannot
// change without a reboot of the host, and each probe creates a VM.
type accel struct {
	kvm    bool
	reason string
}

var kvmProbe = sync.OnceValue(func() accel { return probeWithin(probeKVM, probeTimeout) })

// KVM reports whether hardware virtualisation works: the CPU has vmx or svm,
// and a tiny test VM on /dev/kvm ran a vCPU to its hlt instruction. A /dev/kvm
// that merely opens is not enough: without vmx/svm QEMU under OVMF stops with
// "KVM internal error ... emulation failure" and hangs.
func KVM() bool { return kvmProbe().kvm }

// KVMReason says which accelerator QEMU gets and why, for logs and messages,
// e.g. "software emulation: /dev/kvm opens but the CPU flags have no vmx/svm".
func KVMReason() string { return kvmProbe().reason }

// probeWithin runs probe with a deadline and turns a timeout or a panic into
// software emulation. A probe stuck in the kernel leaks its goroutine; that is
// the price of never blocking a caller.
func probeWithin(probe func() (bool, string), timeout time.Duration) accel {
	done := make(chan accel, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- accel{reason: fmt.Sprintf("software emulation: the KVM probe panicked: %v", r)}
			}
		}()
		ok, why := probe()
		if ok {
			done <- accel{kvm: true, reason: "KVM: " + why}
			return
		}
		done <- accel{reason: "software emulation: " + why}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-done:
		return a
	case <-t.C:
		return accel{reason: fmt.Sprintf("software emulation: the KVM probe did not finish within %v", timeout)}
	}
}

// hasVirtFlag reports whether a /proc/cpuinfo text lists vmx (Intel) or svm
// (AMD) among a processor's flags. Only the "flags" key counts: newer kernels
// also print a "vmx flags" line, and names such as svm_lock must not match.
func hasVirtFlag(cpuinfo []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
	}
	return false
}
