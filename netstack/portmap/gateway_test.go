package portmap

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pic-cell/cell/netstack/nstest"
)

// TestDefaultGateway reads the default route of an interface from the
// kernel inside a namespace: the gateway, and the source address towards
// it (the second address of the interface when the route names it).
func TestDefaultGateway(t *testing.T) {
	nstest.RequireRoot(t)
	lan, router := nstest.NewNS(t, "lan"), nstest.NewNS(t, "router")
	nstest.Veth(t, router, "lan", "192.168.77.1/24", lan, "eth0", "192.168.77.2/24")
	nstest.Veth(t, router, "lan2", "192.168.78.1/24", lan, "other", "192.168.78.2/24")

	call := func(iface string) (gw, local netip.Addr, err error) {
		lan.Run(func() error {
			gw, local, err = DefaultGateway(iface)
			return nil
		})
		return
	}
	if _, _, err := call("eth0"); err == nil || !strings.Contains(err.Error(), "no IPv4 default route through eth0") {
		t.Errorf("without a default route: err = %v", err)
	}
	lan.Exec(t, "ip", "route", "add", "default", "via", "192.168.77.1")
	gw, local, err := call("eth0")
	if err != nil || gw != netip.MustParseAddr("192.168.77.1") || local != netip.MustParseAddr("192.168.77.2") {
		t.Errorf("DefaultGateway(eth0) = %v, %v, %v; want 192.168.77.1, 192.168.77.2", gw, local, err)
	}
	lan.Exec(t, "ip", "addr", "add", "192.168.77.3/24", "dev", "eth0")
	lan.Exec(t, "ip", "route", "replace", "default", "via", "192.168.77.1", "src", "192.168.77.3")
	if gw, local, err := call("eth0"); err != nil || gw != netip.MustParseAddr("192.168.77.1") || local != netip.MustParseAddr("192.168.77.3") {
		t.Errorf("with src: %v, %v, %v; want 192.168.77.1, 192.168.77.3", gw, local, err)
	}
	if _, _, err := call("other"); err == nil {
		t.Error("an interface without the default route: no error")
	}
	if _, _, err := call("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("a missing interface: err = %v", err)
	}
}
