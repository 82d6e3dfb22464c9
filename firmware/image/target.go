package image

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Target is a board the image builder knows.
type Target struct {
	Name   string // "amd64" or "rpi"
	GOARCH string
	// KernelModule holds vmlinuz and lib/modules (and, on the Pi, the device trees
	// and overlays).
	KernelModule string
	// FirmwareModule holds the Pi's boot firmware (bootcode.bin, start*.elf); empty
	// on UEFI machines.
	FirmwareModule string
	// CC is the C compiler for the target (runc needs cgo; see containerd.go),
	// and Triplet Debian's multiarch name, under which its static libseccomp
	// (/usr/lib/<triplet>/libseccomp.a) and pkg-config files are.
	CC      string
	Triplet string
}

var targets = map[string]Target{
	"amd64": {Name: "amd64", GOARCH: "amd64", KernelModule: "github.com/gokrazy/kernel.amd64",
		CC: "gcc", Triplet: "x86_64-linux-gnu"},
	"rpi": {Name: "rpi", GOARCH: "arm64", KernelModule: "github.com/gokrazy/kernel.rpi",
		FirmwareModule: "github.com/gokrazy/firmware", CC: "aarch64-linux-gnu-gcc", Triplet: "aarch64-linux-gnu"},
}

// TargetByName returns the target called name.
func TargetByName(name string) (Target, error) {
	t, ok := targets[name]
	if !ok {
		return Target{}, fmt.Errorf("unknown target %q (want amd64 or rpi)", name)
	}
	return t, nil
}

// moduleDir finds a module's files the way the go command does, so that the
// versions in go.mod (and go.sum's hashes) decide which kernel goes into the image.
func moduleDir(goTool, workDir, module string) (string, error) {
	cmd := exec.Command(goTool, "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = workDir
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("go list -m %s: %v: %s", module, err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s: %v", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		// Listed but not downloaded yet.
		dl := exec.Command(goTool, "mod", "download", module)
		dl.Dir = workDir
		if out, err := dl.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go mod download %s: %v: %s", module, err, out)
		}
		return moduleDir(goTool, workDir, module)
	}
	return filepath.Clean(dir), nil
}
