package qemu

import (
	"strings"
	"testing"
	"time"
)

func TestKVMVirtFlags(t *testing.T) {
	for _, tc := range []struct {
		name, cpuinfo string
		want          bool
	}{
		{"intel", "processor\t: 0\nflags\t\t: fpu vme de vmx sse2\n", true},
		{"amd", "processor\t: 0\nflags\t\t: fpu svm lahf_lm\n", true},
		{"no virtualisation", "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor\n", false},
		// Substrings of other flags are not the flag.
		{"svm_lock only", "flags\t\t: fpu svm_lock nrip_save\n", false},
		// The "vmx flags" line lists VMX features, not the vmx flag.
		{"vmx flags line only", "flags\t\t: fpu sse2\nvmx flags\t: vnmi preemption_timer\n", false},
		{"flag at the end", "flags\t\t: fpu vmx", true},
		{"empty", "", false},
	} {
		if got := hasVirtFlag([]byte(tc.cpuinfo)); got != tc.want {
			t.Errorf("%s: hasVirtFlag = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestKVMProbeTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	a := probeWithin(func() (bool, string) { <-release; return true, "too late" }, 50*time.Millisecond)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a stuck probe held the caller for %v, want about 50ms", took)
	}
	if a.kvm {
		t.Error("a probe that timed out gave KVM, want software emulation")
	}
	if want := "software emulation: the KVM probe did not finish"; !strings.HasPrefix(a.reason, want) {
		t.Errorf("reason %q, want it to start with %q", a.reason, want)
	}
}

func TestKVMProbeVerdicts(t *testing.T) {
	if a := probeWithin(func() (bool, string) { return true, "it ran" }, time.Second); !a.kvm || a.reason != "KVM: it ran" {
		t.Errorf("got %+v, want KVM with reason %q", a, "KVM: it ran")
	}
	if a := probeWithin(func() (bool, string) { return false, "no" }, time.Second); a.kvm || a.reason != "software emulation: no" {
		t.Errorf("got %+v, want software emulation with reason %q", a, "software emulation: no")
	}
	a := probeWithin(func() (bool, string) { panic("boom") }, time.Second)
	if a.kvm || !strings.Contains(a.reason, "boom") {
		t.Errorf("a panicking probe gave %+v, want software emulation naming the panic", a)
	}
}
