package links

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pic-cell/cell/netstack/nstest"
)

// TestSetInNamespace configures a dummy interface twice and then with fewer
// addresses, checking `ip addr` each time.
func TestSetInNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "links")
	ns.Exec(t, "ip", "tuntap", "add", "dev", "wg0", "mode", "tun")
	ns.Exec(t, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wanpeer")
	ns.Exec(t, "ip", "link", "set", "wan0", "up")
	ns.Exec(t, "ip", "addr", "add", "198.18.0.2/24", "dev", "wan0")
	ns.Exec(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	ns.Exec(t, "ip", "addr", "add", "10.99.0.1/24", "dev", "wg0") // stale, must go

	proc := t.TempDir()
	for _, f := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		os.MkdirAll(filepath.Dir(filepath.Join(proc, f)), 0o755)
		os.WriteFile(filepath.Join(proc, f), []byte("0\n"), 0o644)
	}
	l, err := New(Options{NetNS: ns.Fd(), ProcSys: proc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := Config{Interface: "wg0", MTU: 1420, Forwarding: true, Addresses: []netip.Prefix{
		netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd77::1/64")}}
	for i := range 2 {
		if err := l.Set(cfg); err != nil {
			t.Fatalf("Set #%d: %v", i+1, err)
		}
		out := ns.Exec(t, "ip", "-o", "addr", "show", "dev", "wg0")
		for _, want := range []string{"10.77.0.1/24", "fd77::1/64", "mtu 1420"} {
			if !strings.Contains(out+ns.Exec(t, "ip", "link", "show", "wg0"), want) {
				t.Errorf("Set #%d: wg0 lacks %s:\n%s", i+1, want, out)
			}
		}
		if strings.Contains(out, "10.99.0.1") {
			t.Errorf("Set #%d: stale address kept:\n%s", i+1, out)
		}
	}
	for _, f := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if b, _ := os.ReadFile(filepath.Join(proc, f)); string(b) != "1\n" {
			t.Errorf("%s = %q, want 1", f, b)
		}
	}
	cfg.Addresses = cfg.Addresses[:1]
	if err := l.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if out := ns.Exec(t, "ip", "-o", "addr", "show", "dev", "wg0"); strings.Contains(out, "fd77::1") {
		t.Errorf("removed address still there:\n%s", out)
	}
	ns.Exec(t, "ip", "addr", "add", "192.168.1.20/24", "dev", "wan0")
	if lan, err := l.LANPrefixes("wan0"); err != nil || len(lan) != 1 || lan[0] != netip.MustParsePrefix("192.168.1.0/24") {
		t.Errorf("LANPrefixes(wan0) = %v, %v; want [192.168.1.0/24] (198.18.0.0/24 is not private)", lan, err)
	}
	if wan, err := l.DefaultRouteInterface(); err != nil || wan != "wan0" {
		t.Errorf("DefaultRouteInterface() = %q, %v; want wan0", wan, err)
	}
	l.Close()
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
