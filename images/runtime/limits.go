package runtime

import (
	"bufio"
	"os"
	"strings"
)

// Kernel is what the host's kernel can enforce of a Spec's limits. A kernel
// built without the memory controller (gokrazy's amd64 kernel) or without
// CPU bandwidth control (CONFIG_CFS_BANDWIDTH) makes runc refuse a
// container that asks for that limit; the adapter leaves such a limit out
// rather than leave the service down, and says so (Unenforced).
type Kernel struct {
	Memory, CPU, Pids bool
}

// HostKernel reads what the running kernel has: the controllers from
// /proc/cgroups (cgroup v1 and v2 alike), and CPU bandwidth from the sysctl
// that exists only with it.
func HostKernel() Kernel {
	return kernelFrom(readFile("/proc/cgroups"), fileExists("/proc/sys/kernel/sched_cfs_bandwidth_slice_us"))
}

func kernelFrom(cgroups string, cfsBandwidth bool) Kernel {
	enabled := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(cgroups))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && !strings.HasPrefix(f[0], "#") && f[3] == "1" {
			enabled[f[0]] = true
		}
	}
	return Kernel{Memory: enabled["memory"], CPU: enabled["cpu"] && cfsBandwidth, Pids: enabled["pids"]}
}

// Unenforced names the limits of a Spec that k cannot enforce.
func (k Kernel) Unenforced() []string {
	var out []string
	if !k.Memory {
		out = append(out, "memory")
	}
	if !k.CPU {
		out = append(out, "cpu")
	}
	if !k.Pids {
		out = append(out, "pids")
	}
	return out
}

// enforceable drops from s the limits k cannot enforce.
func (k Kernel) enforceable(s Spec) Spec {
	if !k.Memory {
		s.MemoryBytes = 0
	}
	if !k.CPU {
		s.CPUMillis = 0
	}
	if !k.Pids {
		s.Pids = 0
	}
	return s
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
