package system_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/wireguard"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const wgPort = 51820

var quiet = slog.New(slog.DiscardHandler)

type peer struct {
	name     string
	key, psk wireguard.Key
	v4, v6   netip.Addr
}

// cell is the cell's network side assembled from its parts in the cell
// namespace, the way cmd/cell assembles it in the appliance.
type cell struct {
	t     testing.TB
	ns    *nstest.NS
	key   wireguard.Key
	wg    *wireguard.WG
	fw    *firewall.NFT
	links *links.Netlink
	rs    firewall.Ruleset
	peers []peer
}

func newKey(t testing.TB) wireguard.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func startCell(t testing.TB, ns *nstest.NS, withFirewall bool) *cell {
	t.Helper()
	c := &cell{t: t, ns: ns, key: newKey(t)}
	err := ns.Run(func() error {
		var err error
		c.wg, err = wireguard.Open(wireguard.Options{Mode: wireguard.ModeTUN, Name: "wg0", Logger: quiet})
		if err != nil {
			return err
		}
		if err := c.wg.Set(wireguard.Config{PrivateKey: c.key, ListenPort: wgPort}); err != nil {
			return err
		}
		// Links in the thread inside the namespace so that forwarding is
		// the namespace's.
		c.links, err = links.New(links.Options{Logger: quiet})
		if err != nil {
			return err
		}
		return c.links.Set(links.Config{Interface: "wg0", Forwarding: true, Addresses: []netip.Prefix{
			netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd77::1/64")}})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.wg.Close(); c.links.Close() })
	c.rs = firewall.Ruleset{WGInterface: "wg0", WGPort: wgPort, WAN: nstest.CellWANIf,
		Tunnel4: netip.MustParsePrefix("10.77.0.0/24"), Tunnel6: netip.MustParsePrefix("fd77::/64"),
		LocalTCP: []uint16{53, 3000}, LocalUDP: []uint16{53}}
	if withFirewall {
		c.fw, err = firewall.New(firewall.Options{NetNS: ns.Fd(), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.fw.Close() })
		c.apply()
	}
	return c
}

func (c *cell) apply() {
	c.t.Helper()
	if c.fw != nil {
		if err := c.fw.Set(c.rs); err != nil {
			c.t.Fatal(err)
		}
	}
	var wps []wireguard.Peer
	for i, p := range c.peers {
		if c.fw != nil && !c.rs.Peers[i].Enabled {
			continue // a disabled peer is off the device too: no handshake
		}
		wps = append(wps, wireguard.Peer{PublicKey: p.key.PublicKey(), PresharedKey: p.psk,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.v4, 32), netip.PrefixFrom(p.v6, 128)}})
	}
	if err := c.wg.Set(wireguard.Config{PrivateKey: c.key, ListenPort: wgPort, Peers: wps}); err != nil {
		c.t.Fatal(err)
	}
}

// addPeer adds a peer with the default policy (internet yes, peers no) and
// returns the wg-quick text its device would be given.
func (c *cell) addPeer(name string) string {
	n := len(c.peers) + 2
	p := peer{name: name, key: newKey(c.t), psk: newKey(c.t),
		v4: netip.AddrFrom4([4]byte{10, 77, 0, byte(n)}), v6: netip.MustParseAddr(fmt.Sprintf("fd77::%x", n))}
	c.peers = append(c.peers, p)
	c.rs.Peers = append(c.rs.Peers, firewall.Peer{Addr4: p.v4, Addr6: p.v6, Enabled: true, Internet: true, LAN: true})
	c.apply()
	return fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = %s/24, %s/64

[Peer]
PublicKey = %s
PresharedKey = %s
Endpoint = %s:%d
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`, p.key, p.v4, p.v6, c.key.PublicKey(), p.psk, nstest.CellWAN, wgPort)
}

// TestTunnelNATPolicyAndCutoff: handshake, pings over v4 and v6, NAT seen
// by the internet, peer-to-peer by policy, and disable cutting traffic
// within a second.
func TestTunnelNATPolicyAndCutoff(t *testing.T) {
	top := nstest.NewTopology(t)
	c := startCell(t, top.Cell, true)
	a := nstest.NewClient(t, top.A, c.addPeer("a"), nil)
	b := nstest.NewClient(t, top.B, c.addPeer("b"), nil)
	_ = b

	if !top.A.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatal("client-a cannot ping the cell's tunnel address")
	}
	if !top.A.WaitPing("fd77::1", 5*time.Second) {
		t.Error("client-a cannot ping the cell over IPv6")
	}
	if !top.B.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatal("client-b cannot ping the cell")
	}
	st, err := c.wg.Stats()
	if err != nil || len(st) != 2 || st[0].LastHandshake.IsZero() || st[1].LastHandshake.IsZero() {
		t.Errorf("cell stats = %+v, %v; want two peers with handshakes", st, err)
	}
	got, err := top.A.Get(nstest.ServerAddr+":80", "/", 5*time.Second)
	if err != nil || got != nstest.CellWAN {
		t.Errorf("server saw client-a as %q (%v), want the cell's WAN address %s", got, err, nstest.CellWAN)
	}
	// IPv6 too: the peer's ULA address is masqueraded to the cell's.
	got, err = top.A.Get("["+nstest.ServerAddr6+"]:80", "/", 5*time.Second)
	if err != nil || got != nstest.CellWAN6 {
		t.Errorf("server saw client-a over IPv6 as %q (%v), want the cell's WAN address %s", got, err, nstest.CellWAN6)
	}

	// Peer to peer: denied until a's policy allows it.
	if top.A.Ping("10.77.0.3", time.Second) {
		t.Error("client-a reached client-b with peers denied")
	}
	c.rs.Peers[0].Peers = true
	c.apply()
	if !top.A.WaitPing("10.77.0.3", 3*time.Second) {
		t.Error("client-a cannot reach client-b with peers allowed")
	}
	if !top.A.WaitPing("fd77::3", 3*time.Second) {
		t.Error("client-a cannot reach client-b over IPv6 with peers allowed")
	}

	// Internet denied: the server becomes unreachable, the cell not.
	c.rs.Peers[0].Internet = false
	c.apply()
	if _, err := top.A.Get(nstest.ServerAddr+":80", "/", time.Second); err == nil {
		t.Error("client-a reached the internet with internet denied")
	}
	if !top.A.Ping("10.77.0.1", time.Second) {
		t.Error("client-a lost the cell when only internet was denied")
	}
	c.rs.Peers[0].Internet = true
	c.apply()

	// The LAN: a home network behind the cell's uplink (192.168.50.0/24 on
	// the same wire), reachable per the lan policy while the internet stays.
	top.WAN.Exec(t, "ip", "addr", "add", "192.168.50.1/24", "dev", "to-cell")
	top.Cell.Exec(t, "ip", "addr", "add", "192.168.50.2/24", "dev", nstest.CellWANIf)
	serveOn(t, top.WAN, "192.168.50.1:80", "lan printer")
	c.rs.LAN = []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}
	c.apply()
	if got, err := top.A.Get("192.168.50.1:80", "/", 3*time.Second); err != nil || got != "lan printer" {
		t.Errorf("client-a to the LAN with lan allowed: %q, %v", got, err)
	}
	c.rs.Peers[0].LAN = false
	c.apply()
	if _, err := top.A.Get("192.168.50.1:80", "/", time.Second); err == nil {
		t.Error("client-a reached the LAN with lan denied")
	}
	if got, err := top.A.Get(nstest.ServerAddr+":80", "/", 3*time.Second); err != nil || got != nstest.CellWAN {
		t.Errorf("client-a lost the internet when only the LAN was denied: %q, %v", got, err)
	}

	// Disable: traffic stops within one second.
	if !top.A.WaitPing("10.77.0.1", 3*time.Second) {
		t.Fatal("client-a lost the cell before disabling")
	}
	c.rs.Peers[0].Enabled = false
	start := time.Now()
	c.apply()
	for top.A.Ping("10.77.0.1", 200*time.Millisecond) {
		if time.Since(start) > time.Second {
			t.Fatal("client-a still reaches the cell a second after disable")
		}
	}
	if top.A.Ping(nstest.ServerAddr, time.Second) {
		t.Error("disabled client-a still reaches the internet")
	}
	if !top.B.Ping("10.77.0.1", time.Second) {
		t.Error("disabling a cut b off too")
	}
	_ = a
}
