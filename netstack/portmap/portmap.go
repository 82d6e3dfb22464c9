// Package portmap asks the home router to forward the cell's WireGuard UDP
// port from its public address, so that a phone on mobile data reaches the
// cell with no port forward set up by hand.
//
// Routers speak one (or several) of three protocols, and the package speaks
// all three:
//
//   - PCP (RFC 6887), the MAP opcode, written here (wire.go, pmp.go): one UDP round
//     trip to the gateway's port 5351, a lease, the external address in the
//     answer. The client's IPv4 address travels as an IPv4-mapped IPv6
//     address, as the RFC requires.
//   - NAT-PMP (RFC 6886), PCP's predecessor on the same port, also written
//     here: it is a dozen bytes each way, and sharing the
//     retransmission code with PCP is simpler than adapting a library.
//   - UPnP IGD (WANIPConnection v1 and v2, WANPPPConnection v1) through
//     github.com/huin/goupnp: SSDP discovery from the cell's address on the
//     uplink, then SOAP calls to the device whose description is served by
//     the uplink's gateway (another UPnP device on the LAN cannot forward
//     the gateway's port).
//
// Discover probes all three at once within the caller's deadline and returns
// the clients that answered, in order of preference: PCP, NAT-PMP, UPnP. The
// two port-5351 protocols come first because each maps with a datagram each
// way and a real lease (PCP even reports the external address in the same
// answer); UPnP needs
// HTTP, XML and SOAP, and many IGDs handle leases badly (some refuse any
// lease but "forever", so the UPnP client retries with 0 and the Keeper's
// deletion at shutdown matters all the more). Tailscale's portmapper makes
// the same probe-everything choice.
//
// Keeper keeps one UDP port mapped for the life of the cell: it maps through
// the first client that succeeds (falling back to the next), renews at half
// the granted lifetime (NAT-PMP's recommended lease is 7200 s, the default
// here; routers may grant less), follows a change of the uplink's gateway or
// of the cell's address (deleting the old mapping, then trying the protocol
// that worked before on the new uplink at once, and discovering again only
// when that fails: a discovery waits over a second for SSDP answers), and
// removes the mapping when its context ends, with a short deadline of its
// own so that a dead router cannot hold up shutdown. Its Status says in plain words what happened, including the case
// no mapping can fix: a router whose own public address is in 100.64.0.0/10
// (carrier-grade NAT), where the cell cannot be reached without a relay,
// and one whose public address is private (a second router in front).
//
// Sockets are opened from several goroutines (the probes run at once, and
// net/http dials from its own), so the process using the package must live
// in the uplink's network namespace: one thread switched into it is not
// enough. The tests run the Keeper in a child process for that reason.
//
// Fake is an in-memory Client for other packages' unit tests.
package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Protocol names a port mapping protocol.
type Protocol string

// The protocols, as they appear in status and logs.
const (
	UPnP   Protocol = "upnp"
	NATPMP Protocol = "natpmp"
	PCP    Protocol = "pcp"
)

// Mapping is one UDP port mapping the router granted.
type Mapping struct {
	Protocol Protocol
	Internal netip.AddrPort // the cell's LAN address and port
	External netip.AddrPort // the router's public address and port as the router reports it
	Lifetime time.Duration  // as granted; 0 means until deleted (UPnP's "forever")
	Expires  time.Time      // zero when Lifetime is 0
}

func (m Mapping) String() string {
	return fmt.Sprintf("%s udp %s -> %s for %s", m.Protocol, m.External, m.Internal, m.Lifetime)
}

// Client maps UDP ports through one router with one protocol.
type Client interface {
	Protocol() Protocol
	// Map asks for external -> internal for lifetime; the router may
	// grant another external port or a shorter lifetime, which the
	// returned Mapping reports. Mapping again renews.
	Map(ctx context.Context, internal netip.AddrPort, external uint16, lifetime time.Duration) (Mapping, error)
	// Unmap deletes a mapping Map returned.
	Unmap(ctx context.Context, m Mapping) error
	// ExternalAddr is the router's public address as it reports it.
	ExternalAddr(ctx context.Context) (netip.Addr, error)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// CGNAT reports whether a is in 100.64.0.0/10 (RFC 6598 shared address
// space): a router with such a public address is itself behind the
// provider's NAT, and no mapping on it makes the cell reachable.
func CGNAT(a netip.Addr) bool { return cgnat.Contains(a.Unmap()) }
