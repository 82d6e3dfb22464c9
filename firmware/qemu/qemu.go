// Package qemu boots an amd64 cell image in qemu-system-x86_64 under OVMF (UEFI),
// with the cell's ports forwarded to the host: `cellctl vm run` for development,
// and the boot, update and rollback tests. KVM is used when a probe finds it
// really works (see KVM); otherwise QEMU emulates in software (TCG, a boot then
// takes ~30 s). StartRpi boots the Raspberry Pi image on qemu-system-aarch64's
// emulated Pi 3 instead (rpi.go says what that does and does not run).
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Binary is the emulator; OVMF files are Debian's (package ovmf).
var (
	Binary       = "qemu-system-x86_64"
	ovmfCodeGlob = []string{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"}
	ovmfVarsGlob = []string{"/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd"}
)

// Forward is a host port forwarded to a guest port.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostPort  int
	GuestPort int
}

// Options configure a VM.
type Options struct {
	Image    string
	Forwards []Forward
	// Serial receives the guest's serial console (kernel and gokrazy logs).
	Serial io.Writer
	// MemoryMiB defaults to 1024.
	MemoryMiB int
	// Snapshot keeps the image unchanged (writes go to a temporary overlay).
	Snapshot bool
	// Watchdog adds an emulated i6300esb watchdog (the gokrazy amd64 kernel
	// has its driver built in) that resets the machine when it fires, as a
	// board's hardware watchdog does.
	Watchdog bool
}

// VM is a running QEMU process.
type VM struct {
	cmd     *exec.Cmd
	vars    string
	done    chan struct{}
	waitErr error
	Started time.Time
}

// ovmf returns the firmware code and variable template files.
func ovmf() (code, vars string, err error) {
	for i := range ovmfCodeGlob {
		if fileExists(ovmfCodeGlob[i]) && fileExists(ovmfVarsGlob[i]) {
			return ovmfCodeGlob[i], ovmfVarsGlob[i], nil
		}
	}
	return "", "", errors.New("OVMF not found (Debian package ovmf)")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Available reports why VMs cannot run here, or nil.
func Available() error {
	if _, err := exec.LookPath(Binary); err != nil {
		return fmt.Errorf("%s not found (Debian package qemu-system-x86): %w", Binary, err)
	}
	_, _, err := ovmf()
	return err
}

// Args returns QEMU's command line for opts, with the writable UEFI variable
// store at varsPath.
func Args(opts Options, code, varsPath string) []string {
	mem := opts.MemoryMiB
	if mem == 0 {
		mem = 1024
	}
	args := []string{
		"-machine", "q35", "-m", fmt.Sprint(mem), "-smp", "2",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + varsPath,
		"-drive", "file=" + opts.Image + ",format=raw,if=virtio,cache=unsafe",
		// No -no-reboot: updates reboot the guest, and it must come back.
		"-nographic", "-serial", "stdio", "-monitor", "none",
	}
	if KVM() {
		args = append(args, "-enable-kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg")
	}
	if opts.Snapshot {
		args = append(args, "-snapshot")
	}
	if opts.Watchdog {
		args = append(args, "-device", "i6300esb", "-action", "watchdog=reset")
	}
	var fwd []string
	for _, f := range opts.Forwards {
		fwd = append(fwd, fmt.Sprintf("hostfwd=%s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort))
	}
	netdev := "user,id=net0"
	if len(fwd) > 0 {
		netdev += "," + strings.Join(fwd, ",")
	}
	return append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0")
}

// Start boots opts.Image. The VM runs until ctx ends, Kill is called or the
// guest powers off.
func Start(ctx context.Context, opts Options) (*VM, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	code, varsTemplate, _ := ovmf()
	// Each VM gets its own copy of the UEFI variable store: OVMF writes to it
	// (boot entries), and two VMs must not share one.
	vars, err := os.CreateTemp("", "cell-ovmf-vars-*.fd")
	if err != nil {
		return nil, err
	}
	src, err := os.Open(varsTemplate)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(vars, src)
	src.Close()
	vars.Close()
	if err != nil {
		return nil, err
	}
	cmd := command(ctx, Binary, Args(opts, code, vars.Name()), opts.Serial)
	vm := &VM{cmd: cmd, vars: vars.Name(), done: make(chan struct{}), Started: time.Now()}
	if err := cmd.Start(); err != nil {
		os.Remove(vars.Name())
		return nil, err
	}
	go func() {
		vm.waitErr = cmd.Wait()
		os.Remove(vm.vars)
		close(vm.done)
	}()
	return vm, nil
}

// Kill stops the VM at once, like pulling the power cord.
func (vm *VM) Kill() error {
	if vm.cmd.Process != nil {
		vm.cmd.Process.Kill()
	}
	<-vm.done
	return nil
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Err is QEMU's exit status once Done is closed.
func (vm *VM) Err() error { return vm.waitErr }

// FreePort asks the kernel for a free TCP port on the loopback interface.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitHTTP polls url until it answers 200 or ctx ends; it returns the body.
func WaitHTTP(ctx context.Context, url string) ([]byte, error) {
	client := &http.Client{Timeout: 3 * time.Second}
	var lastErr error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return body, nil
			}
			lastErr = fmt.Errorf("%s: %s", url, resp.Status)
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// command is QEMU's command: its output (the serial console) to serial, no
// input (QEMU would read stdin as the console's; tests have none).
func command(ctx context.Context, bin string, args []string, serial io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = serial, serial
	if serial == nil {
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	}
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
