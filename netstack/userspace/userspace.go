// Package userspace is the cell's network in netstack mode (-wg-mode
// netstack): the WireGuard device is attached to gVisor's userspace TCP/IP
// stack instead of a kernel TUN interface, and that stack, not the kernel,
// does what the tun mode's routing, nftables table and masquerade do. Nothing
// on the host changes and no privilege is needed: no TUN, no routes, no
// nftables, no sysctls. It is the tailscale-style "userspace networking"
// design (tailscale's wgengine/netstack).
//
// # What a peer's packet meets
//
// Every packet the WireGuard device decrypts is looked at once, in the TUN
// shim (tun.go, filter.go), before gVisor sees it:
//
//   - To one of the cell's own tunnel addresses (Options.Addresses): handed
//     to gVisor, which answers pings itself and delivers TCP and UDP to the
//     listeners opened with ListenTCP and ListenUDP (the cell's API and DNS
//     server). A port nothing listens on may be mapped to a host address by
//     Policy.Services; otherwise TCP gets a RST and UDP is dropped.
//   - To another peer (a destination inside Policy.Tunnel): routed straight
//     back out of the WireGuard device as the kernel would (hop limit minus
//     one), never terminated, so the peers see each other's real addresses
//     and any protocol works. Allowed when the source's Access.Peers is set
//     and the destination is a peer in the policy; replies to a flow the
//     other side opened are allowed by a small connection table (per
//     protocol, addresses and ports; TCP entries live 1 h, others 2 min,
//     at most 16,384 entries), as the tun mode's "ct state established" does.
//   - TCP and UDP to anywhere else: gVisor's stack runs in promiscuous mode
//     with spoofing on and default routes for 0.0.0.0/0 and ::/0, so it
//     accepts flows to any address; its TCP and UDP forwarders
//     (tcp.NewForwarder, udp.NewForwarder) hand every new flow to this
//     package, which checks the policy and opens the flow as an ordinary
//     host socket with net.Dialer, then splices the two. TCP is dialled
//     before the peer's handshake completes, so a refused or unreachable
//     destination is a RST to the peer, and each direction is half-closed
//     on its own (FIN for FIN). The host socket leaves from the host's own
//     address, so that is what the destination sees: the tun mode's
//     masquerade.
//   - ICMP echo requests to anywhere else (if the policy allows the
//     destination): the host pings the destination with an unprivileged
//     ICMP socket (SOCK_DGRAM, IPPROTO_ICMP) and the peer gets its reply
//     only if the destination answered within 3 s. When the host does not
//     permit such sockets (net.ipv4.ping_group_range excludes the cell's
//     group, the default outside systemd), the echo is answered locally
//     instead, as tailscale does: the peer then learns only that the policy
//     allows the destination, not that it is up. Logged once.
//   - Anything else (other protocols to non-cell destinations, ICMP other
//     than echo, loopback, link-local and multicast destinations): dropped
//     without an answer.
//
// # Policy
//
// SetPolicy replaces the whole policy at once and is consulted at every
// flow's setup; flows that a new policy no longer allows are closed.
// Per source tunnel address (each of a peer's IPv4 and IPv6 addresses is a
// key) Access says whether it may reach the internet, the LAN (destinations
// inside Policy.LAN) and other peers. A source that is not in the policy
// gets nothing at all, not even the cell's own addresses; a disabled peer is
// simply left out. Until the first SetPolicy the device keeps netstack
// mode's old behaviour: every peer on the device reaches the cell's own
// addresses (ping, listeners) and nothing beyond.
//
// Whatever the policy, a peer never reaches the host itself through a
// forwarded flow: loopback, unspecified, link-local (so also the
// 169.254.169.254 metadata service), multicast and broadcast destinations
// and every address of the host's own interfaces are refused. The host's
// services are reachable only as the cell's services: a listener opened
// with ListenTCP or ListenUDP, or an explicit Policy.Services mapping (for
// example TCP 3000 on the tunnel address to 127.0.0.1:3000). IPv4-mapped
// IPv6 destinations are judged as the IPv4 address they map.
//
// # Limits
//
// Defaults (Limits, each can be changed in Options): 4,096 TCP flows, at
// most 1,024 of them from one source address; 1,024 UDP flows, 256 per
// source; 256 TCP connection attempts being dialled at once (gVisor's
// forwarder ignores further SYNs, the peer retransmits); 64 host pings at
// once (further echo requests are dropped); host dials time out after 10 s.
// A UDP flow (one host socket per peer address and port and destination)
// ends after 60 s without a datagram either way, 10 s for DNS (port 53).
// Forwarded TCP flows have no idle timeout: both sides keep TCP keepalive on
// (the gVisor side probes after 2 min idle, every 30 s, 4 probes) so flows
// of a peer that vanished end in about 4 minutes.
//
// # What userspace mode cannot do
//
// No port forwards from the WAN to peers (the host has no address to
// forward and nothing is DNATed); peers' flows leave from the host's
// address and sockets, so the destination cannot tell peers apart and the
// host's own firewall, routing and source address selection apply; no
// protocols other than TCP, UDP and ICMP echo beyond the cell; ICMP errors
// from the internet (unreachable, too big) are not relayed to peers;
// fragmented echo requests beyond the cell go unanswered.
//
// # Throughput
//
// Packets enter gVisor through its generic receive offload (consecutive
// segments of a TCP flow in one WireGuard batch become one large segment)
// with their checksums taken as valid, since WireGuard authenticated them;
// gVisor's packets leave in batches of up to 128 per read. Each forwarded
// byte is then copied once per direction between gVisor and the host
// socket. BenchmarkThroughput measures TCP from a client through the cell
// to the internet: netstack mode about 0.65 of the tun mode's cell on a
// 2-core machine (about 300 against 450 MB/s), 0.45 to 0.5 without GRO.
//
// # Using it
//
// The wireguard package opens the Stack in netstack mode and hands it out as
// wireguard.Userspace (WG.Userspace, nil in tun mode). The daemon, after
// opening the device with its tunnel addresses:
//
//	us := dev.Userspace()
//	// The same declaration tun mode gives the firewall (firewall.Ruleset),
//	// again on every change: peers added, removed, enabled, disabled,
//	// their policy edited. Disabled peers are left out.
//	p := userspace.Policy{Peers: map[netip.Addr]userspace.Access{},
//		Tunnel: []netip.Prefix{rs.Tunnel4, rs.Tunnel6}, LAN: rs.LAN}
//	for _, fp := range rs.Peers {
//		if fp.Enabled {
//			acc := userspace.Access{Internet: fp.Internet, LAN: fp.LAN, Peers: fp.Peers}
//			p.Peers[fp.Addr4], p.Peers[fp.Addr6] = acc, acc
//		}
//	}
//	us.SetPolicy(p)
//	// The API for peers, on each tunnel address (its handlers see the
//	// peer's tunnel address in r.RemoteAddr):
//	l, _ := us.ListenTCP(netip.AddrPortFrom(cell4, 3000))
//	go apiServer.Serve(l)
//	// The DNS server, UDP and TCP (github.com/miekg/dns):
//	pc, _ := us.ListenUDP(netip.AddrPortFrom(cell4, 53))
//	tl, _ := us.ListenTCP(netip.AddrPortFrom(cell4, 53))
//	go (&dns.Server{PacketConn: pc, Handler: h}).ActivateAndServe()
//	go (&dns.Server{Listener: tl, Handler: h}).ActivateAndServe()
//
// The ruleset's WAN interface, local ports and port forwards have no
// meaning here: flows leave however the host routes them, the cell's
// services are what it listens on. Listeners close with the device; a
// server shut down first closes its own.
// Policy.Services is the alternative for a service that cannot take a
// listener (it sees connections from the host's loopback, not the peer).
// Fake is the test double. Close is called by the WireGuard device's Close
// and joins every goroutine the package started, flows included.
package userspace

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Policy is the whole desired forwarding state. The zero Policy forwards
// nothing and lets no one in. Zero addresses and prefixes (a peer without
// IPv6, a cell without an IPv6 subnet) are skipped.
type Policy struct {
	// Peers is the access of each source address. A peer's IPv4 and IPv6
	// tunnel addresses are separate keys. Sources not listed get nothing.
	Peers map[netip.Addr]Access
	// Tunnel is the peers' subnets (10.77.0.0/24, fd77::/64): destinations
	// inside are peer-to-peer traffic.
	Tunnel []netip.Prefix
	// LAN is the networks that count as the LAN; destinations inside need
	// Access.LAN, every other destination Access.Internet.
	LAN []netip.Prefix
	// Services maps ports of the cell's own tunnel addresses on which nothing
	// listens (ListenTCP, ListenUDP take precedence) to host addresses to
	// dial, for example the API on 127.0.0.1:3000. Any source in Peers may
	// use them. The host service sees the connection come from the host.
	Services []Service
}

// Access is what one source address may reach beyond the cell's own
// addresses, which every source in the policy may reach.
type Access struct {
	Internet bool // any destination outside Tunnel and LAN
	LAN      bool // destinations inside Policy.LAN
	Peers    bool // other peers (destinations inside Policy.Tunnel)
}

// Service maps one port of the cell's tunnel addresses to a host address.
type Service struct {
	Proto string         // "tcp" or "udp"
	Port  uint16         // the port on the cell's tunnel addresses
	To    netip.AddrPort // the host address to dial, 127.0.0.1:3000
}

// Limits bound what peers can make the cell hold. Zero fields take the
// defaults named in the package documentation.
type Limits struct {
	TCPFlows, TCPFlowsPerSource int
	UDPFlows, UDPFlowsPerSource int
	// TCPDialing is gVisor's forwarder's limit of connection attempts in
	// flight (SYNs received, host dial not finished).
	TCPDialing int
	Pings      int
	// UDPIdle ends a UDP flow after that long without a datagram; DNSIdle
	// does for flows to port 53.
	UDPIdle, DNSIdle time.Duration
	DialTimeout      time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.TCPFlows, 4096)
	def(&l.TCPFlowsPerSource, 1024)
	def(&l.UDPFlows, 1024)
	def(&l.UDPFlowsPerSource, 256)
	def(&l.TCPDialing, 256)
	def(&l.Pings, 64)
	defd(&l.UDPIdle, 60*time.Second)
	defd(&l.DNSIdle, 10*time.Second)
	defd(&l.DialTimeout, 10*time.Second)
	return l
}

// Options say how to build the stack.
type Options struct {
	// Addresses are the cell's own tunnel addresses (10.77.0.1, fd77::1);
	// required.
	Addresses []netip.Addr
	MTU       int          // optional; 1420
	Logger    *slog.Logger // optional
	Limits    Limits       // optional
}

// ErrClosed is returned by a closed stack.
var ErrClosed = errors.New("userspace: stack closed")

// compiled is a Policy prepared for lookups on every packet. It is never
// modified after SetPolicy stores it.
type compiled struct {
	set      bool // false until the first SetPolicy
	peers    map[netip.Addr]Access
	tunnel   []netip.Prefix
	lan      []netip.Prefix
	services map[serviceKey]netip.AddrPort
}

type serviceKey struct {
	udp  bool
	port uint16
}

func compile(p Policy) (*compiled, error) {
	c := &compiled{set: true, peers: make(map[netip.Addr]Access, len(p.Peers)), services: map[serviceKey]netip.AddrPort{}}
	for a, acc := range p.Peers {
		if a.IsValid() {
			c.peers[a.Unmap()] = acc
		}
	}
	for _, pr := range p.Tunnel {
		if pr.IsValid() {
			c.tunnel = append(c.tunnel, pr.Masked())
		}
	}
	for _, pr := range p.LAN {
		if pr.IsValid() {
			c.lan = append(c.lan, pr.Masked())
		}
	}
	for _, s := range p.Services {
		if (s.Proto != "tcp" && s.Proto != "udp") || s.Port == 0 || !s.To.IsValid() || s.To.Port() == 0 {
			return nil, errors.New("userspace: policy with an invalid service (want tcp or udp, a port and a host address with a port)")
		}
		c.services[serviceKey{s.Proto == "udp", s.Port}] = s.To
	}
	return c, nil
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// class is what a destination is to the policy.
type class int

const (
	classRefused  class = iota // never forwarded
	classCell                  // one of the cell's own tunnel addresses
	classPeer                  // inside the tunnel subnets
	classLAN                   // inside the LAN prefixes
	classInternet              // everything else
)

// allows reports whether acc may open a flow to a destination of class c.
func (acc Access) allows(c class) bool {
	switch c {
	case classLAN:
		return acc.LAN
	case classInternet:
		return acc.Internet
	case classPeer:
		return acc.Peers
	}
	return false
}

// alwaysRefused are destinations no peer reaches through a forwarded flow
// whatever the policy: they are the host itself or not unicast.
func alwaysRefused(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	if a.Is4() {
		b := a.As4()
		// 0.0.0.0/8 ("this network": Linux connects 0.x to the host
		// itself) and the limited broadcast.
		return b[0] == 0 || a == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return false
}

// hostAddrs caches the addresses of the host's interfaces: refused as
// destinations so that a peer cannot reach the host's own services through
// a forwarded flow.
type hostAddrs struct {
	at    time.Time
	addrs map[netip.Addr]bool
}

const hostAddrsTTL = 5 * time.Second

func readHostAddrs() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return m
	}
	for _, ifa := range ifas {
		if n, ok := ifa.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				m[a.Unmap()] = true
			}
		}
	}
	return m
}
