package userspace_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/userspace"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// tunCell assembles the tun mode's cell in ns from its parts (a kernel TUN
// device, addresses and forwarding, the nftables table with masquerade), as
// cmd/cell does on the appliance.
func tunCell(b *testing.B, ns *nstest.NS, cellKey wireguard.Key, p nsPeer) {
	var dev *wireguard.WG
	var ln *links.Netlink
	err := ns.Run(func() (err error) {
		if dev, err = wireguard.Open(wireguard.Options{Mode: wireguard.ModeTUN, Name: "wg0", Logger: quiet}); err != nil {
			return err
		}
		if err := dev.Set(wireguard.Config{PrivateKey: cellKey, ListenPort: wgPort, Peers: []wireguard.Peer{p.device()}}); err != nil {
			return err
		}
		if ln, err = links.New(links.Options{Logger: quiet}); err != nil {
			return err
		}
		return ln.Set(links.Config{Interface: "wg0", Forwarding: true, Addresses: []netip.Prefix{
			netip.PrefixFrom(cell4, 24), netip.PrefixFrom(cell6, 64)}})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dev.Close(); ln.Close() })
	fw, err := firewall.New(firewall.Options{NetNS: ns.Fd(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fw.Close() })
	if err := fw.Set(firewall.Ruleset{WGInterface: "wg0", WGPort: wgPort, WAN: nstest.CellWANIf, Tunnel4: tunnel4, Tunnel6: tunnel6,
		Peers: []firewall.Peer{{Addr4: p.v4, Addr6: p.v6, Enabled: true, Internet: true}}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkThroughput compares TCP from a client through the cell to the
// internet server in netstack mode (the cell an unprivileged process, its
// flows spliced through host sockets) with the same through the tun mode's
// cell (kernel forwarding and NAT), in two identical topologies measured
// alternately in the same run. The ratio is the median of each round's
// pair. Target: ratio >= 0.5.
func BenchmarkThroughput(b *testing.B) {
	us := nstest.NewTopology(b)
	usKey, usPeer := key(b), newNSPeer(b, 2)
	startCell(b, us.Cell, cellConfig{PrivateKey: usKey, ListenPort: wgPort, Addresses: []netip.Addr{cell4, cell6},
		Peers: []wireguard.Peer{usPeer.device()},
		Policy: userspace.Policy{Peers: map[netip.Addr]userspace.Access{usPeer.v4: {Internet: true}, usPeer.v6: {Internet: true}},
			Tunnel: []netip.Prefix{tunnel4, tunnel6}}})
	nstest.NewClient(b, us.A, usPeer.quick(usKey), nil)
	us.WAN.Sink(b, nstest.ServerAddr+":5001")

	tun := nstest.NewTopology(b)
	tunKey, tunPeer := key(b), newNSPeer(b, 2)
	tunCell(b, tun.Cell, tunKey, tunPeer)
	nstest.NewClient(b, tun.A, tunPeer.quick(tunKey), nil)
	tun.WAN.Sink(b, nstest.ServerAddr+":5001")

	if !us.A.WaitPing(cell4.String(), 10*time.Second) || !tun.A.WaitPing(cell4.String(), 10*time.Second) {
		b.Fatal("no tunnel")
	}
	var viaUS, viaTUN, ratios []float64
	for b.Loop() {
		for range 5 {
			u := us.A.Throughput(b, nstest.ServerAddr+":5001", time.Second)
			k := tun.A.Throughput(b, nstest.ServerAddr+":5001", time.Second)
			viaUS, viaTUN, ratios = append(viaUS, u), append(viaTUN, k), append(ratios, u/k)
		}
	}
	b.ReportMetric(median(viaUS)/1e6, "netstack-MB/s")
	b.ReportMetric(median(viaTUN)/1e6, "tun-MB/s")
	b.ReportMetric(median(ratios), "ratio")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
