package uplink

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// State is what the uplink looks like now.
type State struct {
	Interface string         // the default route's interface
	Gateway   netip.Addr     // its IPv4 gateway; invalid when the route has none (PPP) or only IPv6 has a default route
	Addrs     []netip.Prefix // the interface's global addresses
	Public    []netip.Addr   // those of Addrs that Classify calls public
}

// ErrNoUplink is returned by Read when there is no default route.
var ErrNoUplink = errors.New("no default route: the cell has no way to the internet")

// Read reports the uplink: the interface named iface, or when iface is ""
// the interface of the main table's default route (IPv4 first, lowest
// metric). It reads the network namespace of the calling thread.
func Read(iface string) (State, error) {
	var st State
	var link netlink.Link
	gw, idx, err := defaultRoute(netlink.FAMILY_V4)
	if err != nil {
		return st, err
	}
	if iface != "" {
		if link, err = netlink.LinkByName(iface); err != nil {
			return st, fmt.Errorf("uplink: interface %q: %w", iface, err)
		}
		if idx != link.Attrs().Index {
			gw = netip.Addr{} // the default route is elsewhere
		}
	} else {
		if idx == 0 {
			if _, idx, err = defaultRoute(netlink.FAMILY_V6); err != nil {
				return st, err
			}
		}
		if idx == 0 {
			return st, ErrNoUplink
		}
		if link, err = netlink.LinkByIndex(idx); err != nil {
			return st, fmt.Errorf("uplink: the default route's interface (index %d): %w", idx, err)
		}
	}
	st.Interface = link.Attrs().Name
	st.Gateway = gw
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return st, fmt.Errorf("uplink: addresses of %s: %w", st.Interface, err)
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE || a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		p, ok := prefixOf(a.IPNet)
		if !ok {
			continue
		}
		st.Addrs = append(st.Addrs, p)
		if Classify(p.Addr()) == KindPublic {
			st.Public = append(st.Public, p.Addr())
		}
	}
	// IPv4 first, then in address order, so that two reads of the same
	// state compare equal.
	slices.SortFunc(st.Addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	slices.SortFunc(st.Public, func(a, b netip.Addr) int { return a.Compare(b) })
	return st, nil
}

// defaultRoute returns the gateway and interface index of the main table's
// default route of family with the lowest metric; index 0 when there is none.
func defaultRoute(family int) (netip.Addr, int, error) {
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("uplink: read the routing table: %w", err)
	}
	var best *netlink.Route
	for i := range routes {
		r := &routes[i]
		if !isDefault(*r) || (r.Type != 0 && r.Type != unix.RTN_UNICAST) {
			continue
		}
		if best == nil || r.Priority < best.Priority {
			best = r
		}
	}
	if best == nil {
		return netip.Addr{}, 0, nil
	}
	gwIP, idx := best.Gw, best.LinkIndex
	if idx == 0 && len(best.MultiPath) > 0 { // ECMP: the first next hop
		gwIP, idx = best.MultiPath[0].Gw, best.MultiPath[0].LinkIndex
	}
	gw, _ := netip.AddrFromSlice(gwIP)
	gw = gw.Unmap()
	if !gw.Is4() {
		gw = netip.Addr{}
	}
	return gw, idx, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

// Kinds of address Classify returns.
const (
	KindPublic        = "public"
	KindPrivate       = "private"       // RFC 1918, IPv6 ULA fc00::/7
	KindCGNAT         = "cgnat"         // 100.64.0.0/10, RFC 6598
	KindLoopback      = "loopback"      // 127/8, ::1
	KindLinkLocal     = "link-local"    // 169.254/16, fe80::/10
	KindMulticast     = "multicast"     // 224/4, ff00::/8
	KindUnspecified   = "unspecified"   // 0.0.0.0, ::
	KindDocumentation = "documentation" // 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32
	KindReserved      = "reserved"      // 0/8, 192.0.0/24, 240/4 and broadcast
	KindInvalid       = "invalid"       // the zero netip.Addr
)

var ranges = []struct {
	p    netip.Prefix
	kind string
}{
	{netip.MustParsePrefix("10.0.0.0/8"), KindPrivate},
	{netip.MustParsePrefix("172.16.0.0/12"), KindPrivate},
	{netip.MustParsePrefix("192.168.0.0/16"), KindPrivate},
	{netip.MustParsePrefix("fc00::/7"), KindPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), KindCGNAT},
	{netip.MustParsePrefix("192.0.2.0/24"), KindDocumentation},
	{netip.MustParsePrefix("198.51.100.0/24"), KindDocumentation},
	{netip.MustParsePrefix("203.0.113.0/24"), KindDocumentation},
	{netip.MustParsePrefix("2001:db8::/32"), KindDocumentation},
	{netip.MustParsePrefix("0.0.0.0/8"), KindReserved},
	{netip.MustParsePrefix("192.0.0.0/24"), KindReserved},
	{netip.MustParsePrefix("240.0.0.0/4"), KindReserved},
}

// Classify says what kind of address a is: KindPublic, KindPrivate, KindCGNAT,
// KindLoopback, KindLinkLocal, KindMulticast, KindUnspecified, KindDocumentation, KindReserved or
// Invalid. IPv4-mapped IPv6 addresses are classified as their IPv4 address.
// The benchmarking ranges 198.18.0.0/15 and 2001:2::/48 are KindPublic (the
// tests' internet; see the package documentation).
func Classify(a netip.Addr) string {
	if !a.IsValid() {
		return KindInvalid
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return KindUnspecified
	case a.IsLoopback():
		return KindLoopback
	case a.IsLinkLocalUnicast():
		return KindLinkLocal
	case a.IsMulticast():
		return KindMulticast
	}
	for _, r := range ranges {
		if r.p.Contains(a) {
			return r.kind
		}
	}
	if a.Is4() {
		if a.IsGlobalUnicast() {
			return KindPublic
		}
		return KindReserved // 255.255.255.255
	}
	if !a.IsGlobalUnicast() {
		return KindReserved
	}
	return KindPublic
}
