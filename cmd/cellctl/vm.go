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
	register("vm", "boot the amd64 image in QEMU with the API and WireGuard forwarded (vm run)", (*CLI).vm)
}

// vm: `cellctl vm run [-image cell.img] [-http 8080] [-wg 51820] [-snapshot]`.
func (c *CLI) vm(args []string) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(c.Stderr, "usage: cellctl vm run [-image cell.img] [-http PORT] [-wg PORT] [-snapshot]")
		return errUsage
	}
	fs := c.newFlagSet("vm run")
	img := fs.String("image", "cell.img", "the amd64 disk image (cellctl image build)")
	httpPort := fs.Int("http", 8080, "host port forwarded to the cell's port 80")
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
	fmt.Fprintf(c.Stderr, "booting %s\n  Accel:     %s\n  API:       http://127.0.0.1:%d/health\n  WireGuard: 127.0.0.1:%d/udp\n  Ctrl-C stops the VM.\n",
		*img, accel, *httpPort, *wgPort)
	vm, err := qemu.Start(ctx, qemu.Options{
		Image:     *img,
		Serial:    c.Stdout,
		MemoryMiB: *mem,
		Snapshot:  *snapshot,
		Forwards: []qemu.Forward{
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
