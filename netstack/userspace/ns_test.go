package userspace_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/userspace"
	"github.com/pic-cell/cell/netstack/wireguard"
)

const wgPort = 51820

// nsPeer is a client of the namespace cell.
type nsPeer struct {
	key, psk wireguard.Key
	v4, v6   netip.Addr
}

func (p nsPeer) device() wireguard.Peer {
	return wireguard.Peer{PublicKey: p.key.PublicKey(), PresharedKey: p.psk,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.v4, 32), netip.PrefixFrom(p.v6, 128)}}
}

// quick is the wg-quick text the cell would hand p: everything through the
// tunnel.
func (p nsPeer) quick(cell wireguard.Key) string {
	return fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = %s/24, %s/64

[Peer]
PublicKey = %s
PresharedKey = %s
Endpoint = %s:%d
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`, p.key, p.v4, p.v6, cell.PublicKey(), p.psk, nstest.CellWAN, wgPort)
}

func newNSPeer(t testing.TB, n byte) nsPeer {
	return nsPeer{key: key(t), psk: key(t), v4: netip.AddrFrom4([4]byte{10, 77, 0, n}), v6: netip.MustParseAddr(fmt.Sprintf("fd77::%d", n))}
}

// udpWhoami answers every datagram to addr inside ns with the sender's
// address as it sees it.
func udpWhoami(t testing.TB, ns *nstest.NS, addr string) {
	var c net.PacketConn
	if err := ns.Run(func() (err error) { c, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo([]byte(from.(*net.UDPAddr).IP.String()), from)
		}
	}()
}

// udpFrom sends one datagram from inside ns and returns the answer.
func udpFrom(ns *nstest.NS, addr string) (string, error) {
	var got string
	err := ns.Run(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = roundTrip(c, "who am i", 3*time.Second)
		return err
	})
	return got, err
}

// TestNamespaceCell is netstack mode as it runs on a development machine:
// the cell process unprivileged in its namespace, real wireguard-go
// clients (kernel TUN, configured from wg-quick text) in theirs, and the
// "internet" server seeing the cell's WAN address.
func TestNamespaceCell(t *testing.T) {
	top := nstest.NewTopology(t)
	// Let nobody (gid 65534) open ICMP sockets in the cell namespace, so
	// that pings beyond the cell are real.
	if err := top.Cell.Run(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647\n"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	udpWhoami(t, top.WAN, nstest.ServerAddr+":7007")
	cellKey := key(t)
	a, b := newNSPeer(t, 2), newNSPeer(t, 3)
	policy := func(accA, accB userspace.Access) userspace.Policy {
		return userspace.Policy{
			Peers:  map[netip.Addr]userspace.Access{a.v4: accA, a.v6: accA, b.v4: accB, b.v6: accB},
			Tunnel: []netip.Prefix{tunnel4, tunnel6},
			LAN:    []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
		}
	}
	cell := startCell(t, top.Cell, cellConfig{
		PrivateKey: cellKey, ListenPort: wgPort, Addresses: []netip.Addr{cell4, cell6},
		Peers:  []wireguard.Peer{a.device(), b.device()},
		Policy: policy(userspace.Access{Internet: true, Peers: true}, userspace.Access{LAN: true}),
		HTTP:   netip.AddrPortFrom(cell4, 3000), DNS: netip.AddrPortFrom(cell4, 53),
	})
	if cell.uid != 65534 {
		t.Errorf("the cell runs as uid %d, want nobody", cell.uid)
	}
	nstest.NewClient(t, top.A, a.quick(cellKey), nil)
	nstest.NewClient(t, top.B, b.quick(cellKey), nil)
	if !top.A.WaitPing(cell4.String(), 10*time.Second) {
		t.Fatal("client-a cannot ping the cell")
	}
	if !top.B.WaitPing(cell4.String(), 10*time.Second) {
		t.Fatal("client-b cannot ping the cell")
	}
	if !top.A.WaitPing(cell6.String(), 5*time.Second) {
		t.Error("client-a cannot ping the cell over IPv6")
	}

	// The internet, over TCP (v4, v6) and UDP, from the cell's address.
	if got, err := top.A.Get(nstest.ServerAddr+":80", "/", 5*time.Second); err != nil || got != nstest.CellWAN {
		t.Errorf("the server saw client-a as %q (%v), want the cell's WAN address", got, err)
	}
	if got, err := top.A.Get("["+nstest.ServerAddr6+"]:80", "/", 5*time.Second); err != nil || got != nstest.CellWAN6 {
		t.Errorf("the server saw client-a over IPv6 as %q (%v), want the cell's WAN address", got, err)
	}
	if got, err := udpFrom(top.A, nstest.ServerAddr+":7007"); err != nil || got != nstest.CellWAN {
		t.Errorf("the UDP server saw client-a as %q (%v), want the cell's WAN address", got, err)
	}
	// Pings beyond the cell are the host's: answered when the server is up,
	// not when nothing is there.
	if !top.A.Ping(nstest.ServerAddr, 3*time.Second) {
		t.Error("client-a cannot ping the internet server")
	}
	if !top.A.Ping(nstest.ServerAddr6, 3*time.Second) {
		t.Error("client-a cannot ping the internet server over IPv6")
	}
	if top.A.Ping("198.18.0.99", 4*time.Second) {
		t.Error("a ping to an address where nothing answers got a reply")
	}

	// The cell's own services on its tunnel address.
	if got, err := top.A.Get(cell4.String()+":3000", "/", 5*time.Second); err != nil || got != a.v4.String() {
		t.Errorf("API on the tunnel address: %q, %v; want it to see client-a's tunnel address", got, err)
	}
	for _, tcp := range []string{"+notcp", "+tcp"} {
		if got := strings.TrimSpace(top.A.Exec(t, "dig", "+short", "+time=2", "+tries=2", tcp, "@"+cell4.String(), "cell.test")); got != cell4.String() {
			t.Errorf("dig %s cell.test = %q, want %v", tcp, got, cell4)
		}
	}
	if got := strings.TrimSpace(top.B.Exec(t, "dig", "+short", "+time=2", "@"+cell4.String(), "whoami", "TXT")); got != `"`+b.v4.String()+`"` {
		t.Errorf("the DNS server saw client-b as %s, want its tunnel address", got)
	}

	// Peer to peer: a may, b may only answer.
	if !top.A.Ping(b.v4.String(), 3*time.Second) {
		t.Error("client-a cannot ping client-b")
	}
	if top.B.Ping(a.v4.String(), time.Second) {
		t.Error("client-b pinged client-a without Peers access")
	}

	// client-b has no internet: a RST for TCP, silence for UDP and ping.
	if _, err := top.B.Get(nstest.ServerAddr+":80", "/", 5*time.Second); !refused(err) {
		t.Errorf("client-b to the internet: %v, want connection refused", err)
	}
	if _, err := udpFrom(top.B, nstest.ServerAddr+":7007"); err == nil {
		t.Error("client-b reached the internet over UDP")
	}
	if top.B.Ping(nstest.ServerAddr, time.Second) {
		t.Error("client-b pinged the internet")
	}
	// ... until the policy says so, and a loses it.
	cell.setPolicy(policy(userspace.Access{}, userspace.Access{Internet: true}))
	if got, err := top.B.Get(nstest.ServerAddr+":80", "/", 5*time.Second); err != nil || got != nstest.CellWAN {
		t.Errorf("client-b after the policy change: %q, %v", got, err)
	}
	if _, err := top.A.Get(nstest.ServerAddr+":80", "/", 5*time.Second); !refused(err) {
		t.Errorf("client-a after losing internet: %v, want connection refused", err)
	}

	// The host was never touched: no ruleset, no interface.
	if rules := top.Cell.Exec(t, "nft", "list", "ruleset"); strings.TrimSpace(rules) != "" {
		t.Errorf("netstack mode left nftables rules in the cell namespace:\n%s", rules)
	}
	links := top.Cell.Exec(t, "ip", "-o", "link", "show")
	if n := strings.Count(links, "\n"); n != 2 || !strings.Contains(links, nstest.CellWANIf) {
		t.Errorf("the cell namespace has interfaces besides lo and %s:\n%s", nstest.CellWANIf, links)
	}
	if n := cell.close(); n > 0 {
		t.Errorf("%d goroutines outlived the cell device", n)
	}
	if log := cell.stderr.String(); strings.Contains(log, "answered locally") {
		t.Errorf("the cell answered pings itself although the namespace allows ICMP sockets:\n%s", log)
	}
	if testing.Verbose() {
		t.Logf("cell log:\n%s", cell.stderr.String())
	}
}
