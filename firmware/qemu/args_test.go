package qemu

import (
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	args := strings.Join(Args(Options{Image: "/x/cell.img", Snapshot: true, Forwards: []Forward{
		{Proto: "tcp", HostPort: 8080, GuestPort: 80}, {Proto: "udp", HostPort: 51820, GuestPort: 51820},
	}}, "/ovmf/code.fd", "/tmp/vars.fd"), " ")
	for _, want := range []string{
		"if=pflash,format=raw,readonly=on,file=/ovmf/code.fd",
		"if=pflash,format=raw,file=/tmp/vars.fd",
		"file=/x/cell.img,format=raw,if=virtio",
		"-snapshot",
		"user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:51820-:51820",
		"-m 1024",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU arguments lack %q:\n%s", want, args)
		}
	}
	// Forwards bind the host's loopback only: a development VM is not on the LAN.
	if strings.Contains(args, "hostfwd=tcp::") || strings.Contains(args, "0.0.0.0") {
		t.Errorf("a forward listens beyond loopback: %s", args)
	}
	if strings.Contains(args, "-no-reboot") {
		t.Error("-no-reboot would turn an update's reboot into a power-off")
	}
	accel := strings.Contains(args, "-enable-kvm") != strings.Contains(args, "-accel tcg")
	if !accel {
		t.Errorf("want exactly one of KVM or TCG: %s", args)
	}
}
