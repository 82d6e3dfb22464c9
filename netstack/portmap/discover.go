package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// Discover finds which protocols the router at gateway answers and returns
// a client for each, PCP first, then NAT-PMP, then UPnP (see the package
// comment). local is the cell's address on the uplink: SSDP searches from
// it and NAT-PMP/PCP send from it to gateway:5351. All probes run at once
// and end with ctx; give it 2 to 3 seconds (the SSDP search alone takes
// just over one).
//
// A router that answers with a refusal (NAT-PMP's "network failure", for
// one) still speaks the protocol, and its client is returned: mapping
// through it will say why it fails. The error is non-nil only when no
// protocol answered at all.
func Discover(ctx context.Context, gateway, local netip.Addr) ([]Client, error) {
	gateway, local = gateway.Unmap(), local.Unmap()
	if !gateway.Is4() {
		return nil, fmt.Errorf("no IPv4 gateway to ask (got %v)", gateway)
	}
	var (
		wg                      sync.WaitGroup
		pcpC, pmpC              Client
		upnpCs                  []Client
		pcpErr, pmpErr, upnpErr error
	)
	wg.Add(3)
	go func() {
		defer wg.Done()
		c := &pcp{gateway: gateway, local: local}
		pcpErr = c.announce(ctx)
		if answered(pcpErr) && !unsupportedVersion(pcpErr) {
			pcpC = c
		}
	}()
	go func() {
		defer wg.Done()
		c := &natpmp{gateway, local}
		_, pmpErr = c.ExternalAddr(ctx)
		if answered(pmpErr) {
			pmpC = c
		}
	}()
	go func() {
		defer wg.Done()
		upnpCs, upnpErr = discoverUPnP(ctx, gateway, local)
	}()
	wg.Wait()
	var out []Client
	if pcpC != nil {
		out = append(out, pcpC)
	}
	if pmpC != nil {
		out = append(out, pmpC)
	}
	out = append(out, upnpCs...)
	if len(out) == 0 {
		return nil, fmt.Errorf("the router at %s answers none of PCP, NAT-PMP and UPnP: %w", gateway, errors.Join(pcpErr, pmpErr, upnpErr))
	}
	return out, nil
}

// answered reports whether err is nil or the router's own refusal.
func answered(err error) bool {
	var re *ResultError
	return err == nil || errors.As(err, &re)
}

func unsupportedVersion(err error) bool {
	var re *ResultError
	return errors.As(err, &re) && re.Code == 1
}

// DefaultGateway returns the IPv4 default gateway through iface and the
// cell's source address towards it, from the kernel's routing table
// (netlink).
func DefaultGateway(iface string) (gateway, local netip.Addr, err error) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return gateway, local, fmt.Errorf("interface %s: %w", iface, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return gateway, local, fmt.Errorf("routes of %s: %w", iface, err)
	}
	best := -1
	for i, r := range routes {
		if r.Gw == nil || (r.Dst != nil && !isDefault(r.Dst)) {
			continue
		}
		if best < 0 || r.Priority < routes[best].Priority {
			best = i
		}
	}
	if best < 0 {
		return gateway, local, fmt.Errorf("no IPv4 default route through %s", iface)
	}
	gateway, _ = netip.AddrFromSlice(routes[best].Gw.To4())
	if src, ok := netip.AddrFromSlice(routes[best].Src.To4()); ok && routes[best].Src != nil {
		return gateway, src, nil
	}
	got, err := netlink.RouteGetWithOptions(routes[best].Gw, &netlink.RouteGetOptions{Oif: iface})
	if err == nil {
		for _, r := range got {
			if src, ok := netip.AddrFromSlice(r.Src.To4()); ok && r.Src != nil {
				return gateway, src, nil
			}
		}
	}
	return gateway, local, fmt.Errorf("no IPv4 source address on %s towards %s", iface, gateway)
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
