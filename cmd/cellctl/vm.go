package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/pic-cell/cell/firmware/qemu"
)

func init() {
	register("vm", "boot the amd64 image in QEMU with its front (HTTPS, HTTP) and WireGuard forwarded (vm run)", (*CLI).vm)
}

// vm: `cellctl vm run [-image cell.img] [-https 8443] [-http 8080] [-wg 51820] [-snapshot]`.
// The cell's front listens on the guest's 443 and 80 (its API only on the
// guest's loopback), so those are what the host reaches.
func (c *CLI) vm(args []string) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(c.Stderr, "usage: cellctl vm run [-image cell.img] [-https PORT] [-http PORT] [-wg PORT] [-snapshot]")
		return errUsage
	}
	fs := c.newFlagSet("vm run")
	img := fs.String("image", "cell.img", "the amd64 disk image (cellctl image build)")
	httpsPort := fs.Int("https", 8443, "host port forwarded to the cell's port 443 (its front: the API and the admin UI over HTTPS)")
	httpPort := fs.Int("http", 8080, "host port forwarded to the cell's port 80 (redirects to HTTPS; /ca.crt)")
	wgPort := fs.Int("wg", 51820, "host UDP port forwarded to the cell's WireGuard port 51820")
	snapshot := fs.Bool("snapshot", false, "keep the image unchanged (writes go to a throwaway overlay)")
	mem := fs.Int("m", 1024, "memory in MiB")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if _, err := os.Stat(*img); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	accel := qemu.KVMReason()
	if !qemu.KVM() {
		accel += "; the first answer takes about 30 s"
	}
	fmt.Fprintf(c.Stderr, "booting %[1]s\n  Accel:     %[2]s\n"+
		"  HTTPS:     https://127.0.0.1:%[4]d (the front; its certificate names the guest's %[3]s and the cell's domain)\n"+
		"  HTTP:      http://127.0.0.1:%[5]d (redirects; the cell's CA at /ca.crt)\n"+
		"  WireGuard: 127.0.0.1:%[6]d/udp\n"+
		"  cellctl:   cellctl trust -device https://%[3]s -ca-url http://127.0.0.1:%[5]d/ca.crt\n"+
		"             cellctl status -device https://%[3]s -connect 127.0.0.1:%[4]d\n"+
		"  Ctrl-C stops the VM.\n",
		*img, accel, guestAddr, *httpsPort, *httpPort, *wgPort)
	vm, err := qemu.Start(ctx, qemu.Options{
		Image:     *img,
		Serial:    c.Stdout,
		MemoryMiB: *mem,
		Snapshot:  *snapshot,
		Watchdog:  true, // an i6300esb, as a box has a hardware watchdog: a hung guest resets
		Forwards: []qemu.Forward{
			{Proto: "tcp", HostPort: *httpsPort, GuestPort: 443},
			{Proto: "tcp", HostPort: *httpPort, GuestPort: 80},
			{Proto: "udp", HostPort: *wgPort, GuestPort: 51820},
		},
	})
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		vm.Kill()
		return nil
	case <-vm.Done():
		return vm.Err()
	}
}

// guestAddr is the address QEMU's user network gives the guest.
const guestAddr = "10.0.2.15"
