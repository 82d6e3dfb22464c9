// Package firewall owns the cell's nftables table, `inet pic`: input
// filtering for the cell itself, forwarding between peers, the LAN and the
// internet, masquerade on the WAN interface and port forwards, and the
// fence around the services bridge (netstack/bridge): peers reach services
// only through the front (the cell itself), a service reaches the internet
// only when allowed, and never the LAN, the tunnel or the cell's own ports.
//
// The table is the cell's alone and is rebuilt whole, in one netlink batch,
// whenever its structure changes; it is never appended to. Per-peer policy
// lives in named sets keyed by the peer's tunnel addresses, so a change to one
// peer is a handful of set elements whatever the number of peers.
//
// Firewall is the small interface the rest of the cell sees; NFT is the
// real one (github.com/google/nftables over netlink), Fake the test double.
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// TableName is the name of the cell's table (family inet).
const TableName = "pic"

// Ruleset is the whole desired state of the table.
type Ruleset struct {
	WGInterface string // required; the tunnel interface, "wg0"
	WGPort      uint16 // required; the WireGuard UDP port, open from anywhere
	// WAN is the uplink interface: peers' internet traffic is masqueraded
	// out of it and port forwards arrive on it. Optional: without it peers
	// reach only the cell, the LAN and each other.
	WAN      string
	Tunnel4  netip.Prefix   // required; the peers' IPv4 subnet, 10.77.0.0/24
	Tunnel6  netip.Prefix   // optional; the peers' ULA /64
	LAN      []netip.Prefix // optional; networks behind the WAN that count as "LAN"
	LocalTCP []uint16       // optional; cell services (API, DNS) open to lo and the tunnel only
	LocalUDP []uint16       // optional; as LocalTCP, for UDP (DNS)
	WANTCP   []uint16       // optional; cell services open from everywhere (the web UI)
	Peers    []Peer         // optional
	Forwards []Forward      // optional
	Services *Services      // optional; nil: no services bridge
}

// Services is the services bridge as the firewall sees it.
type Services struct {
	Bridge  string       // required; the bridge interface, "pic-svc0"
	Subnet  netip.Prefix // required; the services' IPv4 subnet, 10.77.250.0/24
	Gateway netip.Addr   // required; the cell's address on the bridge, 10.77.250.1
	// Egress are the services allowed to reach the internet, out of the
	// WAN only (never the LAN, private or reserved ranges).
	Egress []netip.Addr
}

// clone copies s deeply, so that a caller's later change to its Egress does
// not change what the firewall thinks it applied.
func (s *Services) clone() *Services {
	if s == nil {
		return nil
	}
	c := *s
	c.Egress = slices.Clone(s.Egress)
	return &c
}

// sameServices reports whether a and b make the same rules (the order of
// Egress aside).
func sameServices(a, b *Services) bool {
	if a == nil || b == nil {
		return a == b
	}
	ea, eb := slices.Clone(a.Egress), slices.Clone(b.Egress)
	slices.SortFunc(ea, netip.Addr.Compare)
	slices.SortFunc(eb, netip.Addr.Compare)
	return a.Bridge == b.Bridge && a.Subnet == b.Subnet && a.Gateway == b.Gateway && slices.Equal(ea, eb)
}

func (s *Services) validate(rs Ruleset) error {
	if s.Bridge == "" || len(s.Bridge) > 15 {
		return errors.New("firewall: services bridge name required (at most 15 bytes)")
	}
	if s.Bridge == rs.WGInterface || s.Bridge == rs.WAN {
		return fmt.Errorf("firewall: services bridge %q is also the tunnel or the WAN", s.Bridge)
	}
	if !s.Subnet.IsValid() || !s.Subnet.Addr().Is4() || s.Subnet != s.Subnet.Masked() {
		return fmt.Errorf("firewall: services subnet %v is not an IPv4 network", s.Subnet)
	}
	if s.Subnet.Overlaps(rs.Tunnel4) {
		return fmt.Errorf("firewall: services subnet %v overlaps the tunnel %v", s.Subnet, rs.Tunnel4)
	}
	for _, l := range rs.LAN {
		if s.Subnet.Overlaps(l) {
			return fmt.Errorf("firewall: services subnet %v overlaps the LAN %v", s.Subnet, l)
		}
	}
	if !s.Subnet.Contains(s.Gateway) {
		return fmt.Errorf("firewall: services gateway %v outside %v", s.Gateway, s.Subnet)
	}
	seen := map[netip.Addr]bool{}
	for _, a := range s.Egress {
		if !s.Subnet.Contains(a) || a == s.Gateway || seen[a] {
			return fmt.Errorf("firewall: service egress address %v (outside the subnet, the gateway or twice)", a)
		}
		seen[a] = true
	}
	return nil
}

// Peer is one peer's addresses and policy.
type Peer struct {
	Addr4    netip.Addr // required
	Addr6    netip.Addr // optional
	Enabled  bool       // false: every packet from or to the peer is dropped
	Internet bool       // may reach the internet through the WAN
	LAN      bool       // may reach the LAN networks
	Peers    bool       // may reach other peers
}

// Forward is a port forward from the WAN to a peer.
type Forward struct {
	Proto  string     // required; "tcp" or "udp"
	Port   uint16     // required; the port on the WAN
	To     netip.Addr // required; the peer's IPv4 tunnel address
	ToPort uint16     // required; the port on the peer
}

// Firewall is the cell's firewall.
type Firewall interface {
	// Set makes the table equal rs. When only peers changed since the last
	// Set, it sends just their set elements; otherwise it rebuilds the table.
	// Calling it again with the same rs sends nothing.
	Set(rs Ruleset) error
	// PutPeer adds or changes one peer's set elements and RemovePeer removes
	// them (by IPv4 address): the constant-cost path for a single peer after
	// a Set built the table.
	PutPeer(p Peer) error
	RemovePeer(addr4 netip.Addr) error
	// Close releases the netlink connection; the table stays (the kernel
	// keeps filtering while the cell restarts). Calling it again does nothing.
	Close() error
}

// ErrClosed is returned by a closed firewall.
var ErrClosed = errors.New("firewall: closed")

func (rs Ruleset) validate() error {
	if rs.WGInterface == "" || len(rs.WGInterface) > 15 {
		return errors.New("firewall: WireGuard interface name required (at most 15 bytes)")
	}
	if len(rs.WAN) > 15 {
		return errors.New("firewall: WAN interface name too long")
	}
	if rs.WGPort == 0 {
		return errors.New("firewall: WireGuard port required")
	}
	if !rs.Tunnel4.IsValid() || !rs.Tunnel4.Addr().Is4() {
		return errors.New("firewall: IPv4 tunnel subnet required")
	}
	if rs.Tunnel6.IsValid() && !rs.Tunnel6.Addr().Is6() {
		return errors.New("firewall: tunnel6 is not IPv6")
	}
	for _, p := range rs.LAN {
		if !p.IsValid() {
			return errors.New("firewall: invalid LAN prefix")
		}
	}
	seen := map[netip.Addr]bool{}
	for _, p := range rs.Peers {
		if err := p.validate(); err != nil {
			return err
		}
		if seen[p.Addr4] || (p.Addr6.IsValid() && seen[p.Addr6]) {
			return fmt.Errorf("firewall: peer address %v used twice", p.Addr4)
		}
		seen[p.Addr4] = true
		if p.Addr6.IsValid() {
			seen[p.Addr6] = true
		}
	}
	if rs.Services != nil {
		if err := rs.Services.validate(rs); err != nil {
			return err
		}
	}
	for _, f := range rs.Forwards {
		if f.Proto != "tcp" && f.Proto != "udp" {
			return fmt.Errorf("firewall: forward protocol %q", f.Proto)
		}
		if f.Port == 0 || f.ToPort == 0 || !f.To.Is4() {
			return errors.New("firewall: forward needs ports and an IPv4 peer address")
		}
	}
	return nil
}

func (p Peer) validate() error {
	if !p.Addr4.Is4() {
		return fmt.Errorf("firewall: peer address %v is not IPv4", p.Addr4)
	}
	if p.Addr6.IsValid() && !p.Addr6.Is6() {
		return fmt.Errorf("firewall: peer address %v is not IPv6", p.Addr6)
	}
	return nil
}

// sameStructure reports whether a and b differ at most in their peers, which
// live in set elements only.
func sameStructure(a, b Ruleset) bool {
	return a.WGInterface == b.WGInterface && a.WGPort == b.WGPort && a.WAN == b.WAN &&
		a.Tunnel4 == b.Tunnel4 && a.Tunnel6 == b.Tunnel6 &&
		slices.Equal(a.LAN, b.LAN) && slices.Equal(a.LocalTCP, b.LocalTCP) &&
		slices.Equal(a.LocalUDP, b.LocalUDP) && slices.Equal(a.WANTCP, b.WANTCP) &&
		slices.Equal(a.Forwards, b.Forwards) && sameServices(a.Services, b.Services)
}

// The per-peer sets. Each peer is an element of the sets its policy puts it
// in, once for its IPv4 and once for its IPv6 address.
const (
	setDisabled = "disabled"
	setInternet = "internet"
	setLAN      = "lan"
	setPeers    = "peers"
)

var peerSets = []string{setDisabled, setInternet, setLAN, setPeers}

// membership lists the sets (without the 4/6 suffix) p belongs to.
func membership(p Peer) []string {
	var out []string
	if !p.Enabled {
		out = append(out, setDisabled)
	}
	if p.Internet {
		out = append(out, setInternet)
	}
	if p.LAN {
		out = append(out, setLAN)
	}
	if p.Peers {
		out = append(out, setPeers)
	}
	return out
}
