package runtime

import (
	"slices"
	"testing"
)

func TestKernelLimits(t *testing.T) {
	const full = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\nmemory\t0\t1\t1\npids\t0\t1\t1\n"
	// gokrazy's amd64 kernel: no memory controller, no CPU bandwidth.
	const gokrazy = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\npids\t0\t1\t1\n"
	const memOff = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\nmemory\t0\t1\t0\npids\t0\t1\t1\n" // cgroup_disable=memory (a Pi's default)
	for _, c := range []struct {
		name    string
		cgroups string
		cfs     bool
		want    []string
	}{
		{"full", full, true, nil},
		{"gokrazy amd64", gokrazy, false, []string{"memory", "cpu"}},
		{"memory disabled", memOff, true, []string{"memory"}},
		{"nothing", "", false, []string{"memory", "cpu", "pids"}},
	} {
		k := kernelFrom(c.cgroups, c.cfs)
		if got := k.Unenforced(); !slices.Equal(got, c.want) {
			t.Errorf("%s: unenforced %v, want %v", c.name, got, c.want)
		}
		s := k.enforceable(Spec{ID: "files", Image: "x", MemoryBytes: 1 << 27, CPUMillis: 500, Pids: 64})
		if (s.MemoryBytes == 0) != slices.Contains(c.want, "memory") || (s.CPUMillis == 0) != slices.Contains(c.want, "cpu") || (s.Pids == 0) != slices.Contains(c.want, "pids") {
			t.Errorf("%s: enforceable spec %+v", c.name, s)
		}
	}
	// This host, read for real: the test machine has every controller.
	t.Logf("this kernel can enforce: %+v", HostKernel())
}
