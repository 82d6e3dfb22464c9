package main

import (
	"net/netip"
	"os"
	"testing"

	"github.com/pic-cell/cell/cell/logs"
)

func TestNetworkFlags(t *testing.T) {
	book, err := logs.Open(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer book.Close()
	if _, err := network("kernel", "", "127.0.0.1:3000", book, &tunnelServices{}, nil); err == nil {
		t.Error("-wg-mode kernel was accepted")
	}
	n, err := network("netstack", "eth9", "127.0.0.1:3000", book, &tunnelServices{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Mode != "netstack" || n.Firewall != nil || n.Links != nil {
		t.Errorf("netstack mode touches the host: %+v", n)
	}
	dev, err := n.Open([]netip.Addr{netip.MustParseAddr("10.77.0.1")})
	if err != nil {
		t.Fatalf("netstack device: %v", err)
	}
	dev.Close()

	f, err := parseFlags([]string{"-wg-mode", "tun", "-wan", "eth1"})
	if err != nil || f.wgMode != "tun" || f.wan != "eth1" {
		t.Errorf("flags = %+v, %v", f, err)
	}
	if f, _ := parseFlags(nil); f.wgMode != "netstack" {
		t.Errorf("default -wg-mode = %q, want netstack (unprivileged)", f.wgMode)
	}
	if os.Geteuid() != 0 {
		return
	}
	n, err = network("tun", "wan9", "127.0.0.1:3001", book, &tunnelServices{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Firewall.Close()
	defer n.Links.Close()
	if n.WAN != "wan9" || len(n.LocalTCP) != 2 || n.LocalTCP[1] != 3001 {
		t.Errorf("tun network = %+v, want WAN wan9 and the API port open to the tunnel", n)
	}
}
