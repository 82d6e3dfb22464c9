// Package plan is the pure half of the reconcile loop: Build turns one
// consistent read of the database (a Snapshot) into the whole desired state of
// the kernel parts (Desired: the WireGuard device, the tunnel link, the
// firewall). It does no I/O, so it is tested against golden files, and the
// loop (cell/reconcile) is the only place that applies it.
//
// It is a leaf: capabilities use its per-peer helpers and the Live view of the
// running network without importing the loop.
package plan

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"sort"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// CellKeyName is the vault entry of the cell's WireGuard private key.
const CellKeyName = "wireguard/private-key"

// Peer is one stored peer with what the kernel needs of it.
type Peer struct {
	Name      string
	PublicKey wireguard.Key
	PSK       wireguard.Key
	Addr4     netip.Addr
	Addr6     netip.Addr // invalid without an IPv6 tunnel
	Enabled   bool
	Policy    storage.PeerPolicy
}

// Host is what the loop learnt of the machine and its flags (the impure inputs).
type Host struct {
	Interface          string // "wg0"
	WAN                string // the uplink; "" when none was found
	LAN                []netip.Prefix
	LocalTCP, LocalUDP []uint16
	Links, Firewall    bool // whether those parts exist (tun mode)
}

// Snapshot is one read transaction's worth of state, plus the host.
type Snapshot struct {
	SetUp    bool // false before setup: nothing to build
	Subnets  config.Subnets
	CellKey  wireguard.Key
	Peers    []Peer // by name
	Forwards []storage.Forward
	Host     Host
}

// Desired is the whole state of the kernel parts.
type Desired struct {
	// Addresses are the device's own tunnel addresses (netstack mode bakes
	// them into the device; tun mode gives them to the link).
	Addresses []netip.Addr
	WireGuard wireguard.Config
	Links     *links.Config     // nil without a links part
	Firewall  *firewall.Ruleset // nil without a firewall part
}

// Build computes Desired from s. It is pure: same snapshot, same answer.
func Build(s Snapshot) Desired {
	var d Desired
	if !s.SetUp {
		return d
	}
	sn := s.Subnets
	d.Addresses = []netip.Addr{sn.Cell4}
	if sn.Cell6.IsValid() {
		d.Addresses = append(d.Addresses, sn.Cell6)
	}
	d.WireGuard = wireguard.Config{PrivateKey: s.CellKey, ListenPort: sn.Port}
	peers := append([]Peer(nil), s.Peers...)
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	for _, p := range peers {
		if p.Enabled {
			d.WireGuard.Peers = append(d.WireGuard.Peers, WGPeer(p))
		}
	}
	if s.Host.Links {
		lc := links.Config{Interface: s.Host.Interface, MTU: 1420, Forwarding: true,
			Addresses: []netip.Prefix{netip.PrefixFrom(sn.Cell4, sn.V4.Bits())}}
		if sn.Cell6.IsValid() {
			lc.Addresses = append(lc.Addresses, netip.PrefixFrom(sn.Cell6, sn.V6.Bits()))
		}
		d.Links = &lc
	}
	if s.Host.Firewall {
		rs := firewall.Ruleset{WGInterface: s.Host.Interface, WGPort: uint16(sn.Port), WAN: s.Host.WAN,
			Tunnel4: sn.V4, Tunnel6: sn.V6, LAN: s.Host.LAN, LocalTCP: s.Host.LocalTCP, LocalUDP: s.Host.LocalUDP}
		byName := map[string]Peer{}
		for _, p := range peers {
			rs.Peers = append(rs.Peers, FirewallPeer(p))
			byName[p.Name] = p
		}
		for _, f := range s.Forwards {
			if p, ok := byName[f.Peer]; ok {
				rs.Forwards = append(rs.Forwards, firewall.Forward{Proto: f.Proto, Port: f.Port, To: p.Addr4, ToPort: f.ToPort})
			}
		}
		d.Firewall = &rs
	}
	return d
}

// WGPeer is a peer as the device knows it.
func WGPeer(p Peer) wireguard.Peer {
	wp := wireguard.Peer{PublicKey: p.PublicKey, PresharedKey: p.PSK,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.Addr4, 32)}}
	if p.Addr6.IsValid() {
		wp.AllowedIPs = append(wp.AllowedIPs, netip.PrefixFrom(p.Addr6, 128))
	}
	return wp
}

// FirewallPeer is a peer as the firewall knows it.
func FirewallPeer(p Peer) firewall.Peer {
	return firewall.Peer{Addr4: p.Addr4, Addr6: p.Addr6, Enabled: p.Enabled,
		Internet: p.Policy.Internet == storage.Allow, LAN: p.Policy.LAN == storage.Allow, Peers: p.Policy.Peers == storage.Allow}
}

// PrivateKey clamps 32 random bytes into a Curve25519 private key.
func PrivateKey(b []byte) wireguard.Key {
	var k wireguard.Key
	copy(k[:], b)
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k
}

// Live is what the running network shows the capabilities: read atomically,
// never waiting on an apply.
type Live struct {
	Mode      string // "tun" or "netstack"; "" when no network is attached
	Interface string
	Running   bool // the device is open
	WAN       string
	LAN       []netip.Prefix
	Firewall  bool // the cell programs nftables (tun mode)
	// WireGuard and FirewallState are the parts' last results.
	WireGuard     storage.PartStatus
	FirewallState storage.PartStatus
}

// ParseKey reads a base64 WireGuard key.
func ParseKey(s string) (wireguard.Key, error) {
	var k wireguard.Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, errors.New("not a base64 WireGuard key")
	}
	copy(k[:], b)
	return k, nil
}
