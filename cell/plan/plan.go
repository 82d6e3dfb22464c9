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
	"slices"
	"sort"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/netstack/bridge"
	"github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/userspace"
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
	// Userspace: the device is gVisor's (netstack mode), which forwards the
	// peers' flows itself under a policy instead of the kernel's firewall.
	Userspace bool
	// DNS: the cell runs its DNS server; Upstreams are the uplink's resolvers
	// (from DHCP on the appliance, /etc/resolv.conf elsewhere), used when the
	// config names none.
	DNS       bool
	Upstreams []string
	// Front: the cell runs its front (Caddy, in front of the API, with a
	// certificate for each of the cell's names and addresses). FrontNames are
	// names the host adds ("localhost" on a development host), HostAddrs the
	// addresses the front answers on besides the tunnel's (the uplink's).
	Front      bool
	FrontNames []string
	HostAddrs  []netip.Addr
	// Services: the bridge for service containers (tun mode, root).
	Services ServicesHost
}

// DNSSection is the "dns" section of the config document.
type DNSSection struct {
	// Upstreams override the uplink's resolvers: "198.18.0.53",
	// "[2001:db8::53]:53", "tls://dns.example@198.18.0.53:853".
	Upstreams     []string `json:"upstreams"`
	RatePerSecond int      `json:"rate_per_second"` // per source; 0 is the server's default (50)
	Burst         int      `json:"burst"`           // 0 is the server's default (100)
}

// TLSSection is the "tls" section of the config document: how the front gets
// the certificate of the cell's domain. Off by default: a home cell's domain
// often does not point at it (or its port 80 is not reachable from the
// internet), and then only the vault's CA can sign for it.
type TLSSection struct {
	// ACME: ask a public CA (ACME, HTTP-01 on port 80) for the domain's
	// certificate first; the vault's CA stays the fallback.
	ACME bool `json:"acme"`
	// ACMECA is the CA's directory URL (https); "" is Let's Encrypt's.
	ACMECA string `json:"acme_ca"`
	// Email is given to the CA with the account (optional).
	Email string `json:"email"`
	// ACMECARoot is a PEM root to trust for the CA's directory besides the
	// system's (a private ACME CA's); optional.
	ACMECARoot string `json:"acme_ca_root,omitempty"`
}

// Snapshot is one read transaction's worth of state, plus the host.
type Snapshot struct {
	SetUp    bool // false before setup: nothing to build
	Subnets  config.Subnets
	CellKey  wireguard.Key
	Peers    []Peer // by name
	Forwards []storage.Forward
	Domain   string // the cell's domain: its zone
	DNS      DNSSection
	TLS      TLSSection
	Records  []storage.DNSRecord // the zone's custom records
	// Services are the installed services (by id) and ServicesSubnet the
	// bridge's network.
	Services       []Service
	ServicesSubnet netip.Prefix
	Host           Host
}

// Desired is the whole state of the kernel parts.
type Desired struct {
	// Addresses are the device's own tunnel addresses (netstack mode bakes
	// them into the device; tun mode gives them to the link).
	Addresses []netip.Addr
	WireGuard wireguard.Config
	Links     *links.Config     // nil without a links part
	Firewall  *firewall.Ruleset // nil without a firewall part
	Userspace *userspace.Policy // nil unless the device is gVisor's
	DNS       *dns.Config       // nil without a DNS server
	Front     *Front            // nil without a front; built before setup too
	Bridge    *bridge.Config    // nil without a bridge part (the services' network)
}

// Front is what the front serves TLS for: the names and addresses its
// certificates are made for.
type Front struct {
	Names     []string     // the cell's domain (once set up), then the host's names
	Addresses []netip.Addr // the host's, then the tunnel's (once set up)
	// ACME is set when the tls section turns ACME on (and the cell has a
	// domain): the names to ask the public CA for first.
	ACME *FrontACME `json:",omitempty"`
	// Sites are the installed services the front proxies to, by host name.
	Sites []FrontSite `json:",omitempty"`
}

// FrontSite is one service behind the front: https://<Host>/ goes to Upstream.
type FrontSite struct {
	Host     string // "files.home.example.org"
	Upstream netip.AddrPort
}

// FrontACME is the public CA the front asks first for Names.
type FrontACME struct {
	Names     []string // the cell's domain
	Directory string   // "" is Let's Encrypt's
	Email     string
	RootPEM   string // extra root for the directory's TLS
}

// Build computes Desired from s. It is pure: same snapshot, same answer.
func Build(s Snapshot) Desired {
	var d Desired
	if s.Host.Front {
		d.Front = buildFront(s)
	}
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
	if s.Host.Userspace {
		pol := userspace.Policy{Peers: map[netip.Addr]userspace.Access{}, Tunnel: []netip.Prefix{sn.V4}, LAN: s.Host.LAN}
		if sn.V6.IsValid() {
			pol.Tunnel = append(pol.Tunnel, sn.V6)
		}
		for _, p := range peers {
			addUserspacePeer(&pol, p)
		}
		d.Userspace = &pol
	}
	if s.Host.DNS {
		d.DNS = buildDNS(s, peers)
	}
	buildServices(s, &d)
	return d
}

// buildFront lists the cell's names and addresses, without repeats: the
// domain and the tunnel addresses once set up, the host's always (the setup
// wizard is reached through the front).
func buildFront(s Snapshot) *Front {
	f := &Front{}
	if s.SetUp && s.Domain != "" {
		f.Names = append(f.Names, s.Domain)
		if s.TLS.ACME {
			f.ACME = &FrontACME{Names: []string{s.Domain}, Directory: s.TLS.ACMECA, Email: s.TLS.Email, RootPEM: s.TLS.ACMECARoot}
		}
	}
	for _, n := range s.Host.FrontNames {
		if !slices.Contains(f.Names, n) {
			f.Names = append(f.Names, n)
		}
	}
	addrs := append([]netip.Addr(nil), s.Host.HostAddrs...)
	if s.SetUp {
		addrs = append(addrs, s.Subnets.Cell4, s.Subnets.Cell6)
	}
	for _, a := range addrs {
		if a.IsValid() && !slices.Contains(f.Addresses, a) {
			f.Addresses = append(f.Addresses, a)
		}
	}
	return f
}

// addUserspacePeer puts p's access into pol: a disabled peer gets none.
func addUserspacePeer(pol *userspace.Policy, p Peer) {
	if !p.Enabled {
		return
	}
	acc := userspace.Access{Internet: p.Policy.Internet == storage.Allow, LAN: p.Policy.LAN == storage.Allow, Peers: p.Policy.Peers == storage.Allow}
	pol.Peers[p.Addr4] = acc
	if p.Addr6.IsValid() {
		pol.Peers[p.Addr6] = acc
	}
}

// UserspacePolicy is the netstack mode's forwarding policy of peers alone (the
// loop's one-peer path rebuilds it from the peers it has applied).
func UserspacePolicy(base userspace.Policy, peers []Peer) userspace.Policy {
	pol := base
	pol.Peers = make(map[netip.Addr]userspace.Access, 2*len(peers))
	for _, p := range peers {
		addUserspacePeer(&pol, p)
	}
	return pol
}

// buildDNS is the split-horizon zone: inside the tunnel the cell's own name is
// its tunnel address, every peer answers by name, and the admin's records
// follow; everything else goes to the upstreams.
func buildDNS(s Snapshot, peers []Peer) *dns.Config {
	sn := s.Subnets
	c := &dns.Config{Zone: dns.Zone{Domain: s.Domain}, Upstreams: s.DNS.Upstreams,
		Allowed: []netip.Prefix{sn.V4}, RatePerSecond: s.DNS.RatePerSecond, Burst: s.DNS.Burst}
	if len(c.Upstreams) == 0 {
		c.Upstreams = s.Host.Upstreams
	}
	if sn.V6.IsValid() {
		c.Allowed = append(c.Allowed, sn.V6)
	}
	c.Zone.Records = append(c.Zone.Records, dns.Record{Name: "@", Type: "A", Value: sn.Cell4.String()})
	if sn.Cell6.IsValid() {
		c.Zone.Records = append(c.Zone.Records, dns.Record{Name: "@", Type: "AAAA", Value: sn.Cell6.String()})
	}
	for _, p := range peers {
		c.Zone.Records = append(c.Zone.Records, PeerRecords(p)...)
	}
	for _, r := range s.Records {
		c.Zone.Records = append(c.Zone.Records, dns.Record{Name: r.Name, Type: r.Type, Value: r.Value, TTL: r.TTL})
	}
	return c
}

// PeerRecords are a peer's names in the zone: <peer>.<domain> A and AAAA.
func PeerRecords(p Peer) []dns.Record {
	rs := []dns.Record{{Name: p.Name, Type: "A", Value: p.Addr4.String(), TTL: PeerTTL}}
	if p.Addr6.IsValid() {
		rs = append(rs, dns.Record{Name: p.Name, Type: "AAAA", Value: p.Addr6.String(), TTL: PeerTTL})
	}
	return rs
}

// PeerTTL is short: a peer deleted and its name given to another must not
// linger in the household's caches.
const PeerTTL = 60

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
	// Addresses are the cell's own tunnel addresses, once built.
	Addresses []netip.Addr
	// WireGuard, FirewallState and DNS are the parts' last results.
	WireGuard     storage.PartStatus
	FirewallState storage.PartStatus
	DNS           storage.PartStatus
	// Front is the front's last result (the caddy part).
	Front storage.PartStatus
	// Services is the services bridge's last result.
	Services storage.PartStatus
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
