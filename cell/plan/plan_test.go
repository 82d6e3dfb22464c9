package plan

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func key(b byte) wireguard.Key {
	var k wireguard.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func snapshot(host Host) Snapshot {
	sn, _ := config.Network{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: "fd77::/64"}.Subnets()
	allow := storage.PeerPolicy{Internet: storage.Allow, LAN: storage.Deny, Peers: storage.Deny}
	return Snapshot{SetUp: true, Subnets: sn, CellKey: key(1), Host: host,
		// Out of order on purpose: Build sorts.
		Peers: []Peer{
			{Name: "phone", PublicKey: key(3), PSK: key(4), Addr4: netip.MustParseAddr("10.77.0.3"), Addr6: netip.MustParseAddr("fd77::3"), Enabled: true, Policy: allow},
			{Name: "laptop", PublicKey: key(5), PSK: key(6), Addr4: netip.MustParseAddr("10.77.0.2"), Addr6: netip.MustParseAddr("fd77::2"), Enabled: false, Policy: allow},
		},
		Forwards: []storage.Forward{{Proto: "tcp", Port: 8080, Peer: "phone", ToPort: 80}, {Proto: "udp", Port: 9, Peer: "gone", ToPort: 9}},
		Domain:   "home.example.org",
		DNS:      DNSSection{RatePerSecond: 20},
		Records:  []storage.DNSRecord{{ID: 1, Name: "www", Type: "CNAME", Value: "phone", TTL: 300}},
	}
}

// Build is golden-tested: the whole desired state of a small cell, in tun mode
// (device, link, firewall) and in netstack mode (the device alone).
func TestBuildGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		host Host
	}{
		{"tun", Host{Interface: "wg0", WAN: "eth0", LAN: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
			LocalTCP: []uint16{53, 3000}, LocalUDP: []uint16{53}, Links: true, Firewall: true,
			DNS: true, Upstreams: []string{"198.18.0.53"}, Front: true, HostAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.20")}}},
		{"netstack", Host{Interface: "wg0", Userspace: true, DNS: true, LAN: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
			Front: true, FrontNames: []string{"localhost", "home.example.org"}, HostAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.77.0.1")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.MarshalIndent(readable(Build(snapshot(c.host))), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", c.name+".golden.json")
			if *update {
				os.WriteFile(path, got, 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("Build differs from %s (-want +got):\n%s", path, d)
			}
			if again, _ := json.MarshalIndent(readable(Build(snapshot(c.host))), "", "  "); string(again)+"\n" != string(got) {
				t.Error("Build is not deterministic")
			}
		})
	}
}

func TestBuildBeforeSetupIsEmpty(t *testing.T) {
	s := snapshot(Host{Links: true, Firewall: true})
	s.SetUp = false
	if d := Build(s); d.Links != nil || d.Firewall != nil || len(d.WireGuard.Peers) != 0 || len(d.Addresses) != 0 {
		t.Errorf("Build before setup = %+v, want nothing", d)
	}
	if d := Build(s); d.Front != nil {
		t.Errorf("a front without Host.Front: %+v", d.Front)
	}
}

// The front is built before setup (the wizard is reached through it), for the
// host's names and addresses alone.
func TestBuildFrontBeforeSetup(t *testing.T) {
	s := snapshot(Host{Front: true, FrontNames: []string{"localhost"}, HostAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.20")}})
	s.SetUp = false
	d := Build(s)
	if d.Front == nil || !slices.Equal(d.Front.Names, []string{"localhost"}) ||
		!slices.Equal(d.Front.Addresses, []netip.Addr{netip.MustParseAddr("192.168.1.20")}) {
		t.Errorf("the front before setup: %+v", d.Front)
	}
}

// readable is d with its keys in base64, as wg shows them, so the golden files
// read like a configuration.
func readable(d Desired) any {
	type peer struct {
		PublicKey, PresharedKey string
		AllowedIPs              []netip.Prefix
	}
	wg := struct {
		PrivateKey string
		ListenPort int
		Peers      []peer
	}{PrivateKey: d.WireGuard.PrivateKey.String(), ListenPort: d.WireGuard.ListenPort}
	for _, p := range d.WireGuard.Peers {
		wg.Peers = append(wg.Peers, peer{p.PublicKey.String(), p.PresharedKey.String(), p.AllowedIPs})
	}
	return map[string]any{"Addresses": d.Addresses, "WireGuard": wg, "Links": d.Links, "Firewall": d.Firewall,
		"Userspace": d.Userspace, "DNS": d.DNS, "Front": d.Front}
}

// The tls section's ACME reaches the front for the cell's domain alone, once
// the cell has one; off, the front has no ACME.
func TestBuildFrontACME(t *testing.T) {
	host := Host{Front: true, FrontNames: []string{"localhost"}, HostAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.20")}}
	s := snapshot(host)
	if d := Build(s); d.Front == nil || d.Front.ACME != nil {
		t.Fatalf("ACME off: %+v", d.Front)
	}
	s.TLS = TLSSection{ACME: true, ACMECA: "https://acme.example/directory", Email: "admin@example.org", ACMECARoot: "PEM"}
	d := Build(s)
	want := &FrontACME{Names: []string{s.Domain}, Directory: "https://acme.example/directory", Email: "admin@example.org", RootPEM: "PEM"}
	if d.Front == nil || d.Front.ACME == nil || !slices.Equal(d.Front.ACME.Names, want.Names) || d.Front.ACME.Directory != want.Directory ||
		d.Front.ACME.Email != want.Email || d.Front.ACME.RootPEM != want.RootPEM {
		t.Errorf("ACME on: %+v", d.Front)
	}
	s.SetUp = false
	if d := Build(s); d.Front == nil || d.Front.ACME != nil {
		t.Errorf("before setup (no domain yet): %+v", d.Front)
	}
}
