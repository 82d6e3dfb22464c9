package userspace

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// IP protocol numbers the shim looks at.
const (
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoFragment = 44 // IPv6 fragment header
	protoICMPv6   = 58
)

// packet is what the shim reads of an IP packet's headers.
type packet struct {
	v6           bool
	src, dst     netip.Addr
	proto        uint8
	l4           []byte // the transport header and payload; nil for non-first fragments
	sport, dport uint16 // TCP and UDP ports; ICMP echo: the identifier as sport (request) or dport (reply)
	echoReq      bool
}

// parse reads p's headers; ok is false for anything too short to be IP.
func parse(p []byte) (pk packet, ok bool) {
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return pk, false
		}
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || len(p) < ihl {
			return pk, false
		}
		pk.src = netip.AddrFrom4([4]byte(p[12:16]))
		pk.dst = netip.AddrFrom4([4]byte(p[16:20]))
		pk.proto = p[9]
		frag := binary.BigEndian.Uint16(p[6:8])
		if frag&0x1fff == 0 { // the first (or only) fragment holds the transport header
			pk.l4 = p[ihl:]
		}
		if frag&0x2000 != 0 && pk.proto == protoICMP {
			pk.l4 = nil // a fragmented ping is not answered
		}
	case 6:
		if len(p) < 40 {
			return pk, false
		}
		pk.v6 = true
		pk.src = netip.AddrFrom16([16]byte(p[8:24]))
		pk.dst = netip.AddrFrom16([16]byte(p[24:40]))
		pk.proto = p[6]
		pk.l4 = p[40:]
	default:
		return pk, false
	}
	switch pk.proto {
	case protoTCP, protoUDP:
		if len(pk.l4) >= 4 {
			pk.sport = binary.BigEndian.Uint16(pk.l4[0:2])
			pk.dport = binary.BigEndian.Uint16(pk.l4[2:4])
		}
	case protoICMP, protoICMPv6:
		if len(pk.l4) >= 8 {
			req, rep := uint8(8), uint8(0)
			if pk.v6 {
				req, rep = 128, 129
			}
			switch pk.l4[0] {
			case req:
				pk.echoReq = true
				pk.sport = binary.BigEndian.Uint16(pk.l4[4:6])
			case rep:
				pk.dport = binary.BigEndian.Uint16(pk.l4[4:6])
			}
		}
	}
	return pk, true
}

// inbound decides the fate of one packet WireGuard decrypted (see the
// package documentation).
func (s *Stack) inbound(p []byte, g *gro.GRO) {
	pk, ok := parse(p)
	if !ok {
		return
	}
	pol := s.policy.Load()
	src, dst := pk.src.Unmap(), pk.dst.Unmap()
	acc, known := pol.peers[src]
	if pol.set && !known {
		return // sources outside the policy get nothing
	}
	if s.isOwn(dst) {
		s.inject(p, pk.v6, g)
		return
	}
	if !pol.set {
		return // nothing beyond the cell until there is a policy
	}
	if inAny(pol.tunnel, dst) {
		s.routePeer(p, pk, pol, acc)
		return
	}
	if alwaysRefused(dst) {
		return // martians (gVisor would drop and log them), multicast
	}
	switch pk.proto {
	case protoTCP, protoUDP, protoFragment:
		// The forwarders decide (RST for TCP, silence for UDP); IPv6
		// fragments are reassembled first.
		s.inject(p, pk.v6, g)
	case protoICMP, protoICMPv6:
		if pk.echoReq {
			s.echo(p, pk, pol, acc)
		}
	}
}

// routePeer sends a packet between two peers back out of the WireGuard
// device, decrementing its hop limit.
func (s *Stack) routePeer(p []byte, pk packet, pol *compiled, acc Access) {
	src, dst := pk.src.Unmap(), pk.dst.Unmap()
	if _, ok := pol.peers[dst]; !ok {
		return // not a peer, or a disabled one
	}
	key := flowKey{proto: pk.proto, a: src, b: dst, ap: pk.sport, bp: pk.dport}
	switch {
	case acc.Peers:
		s.conns.note(key, time.Now())
	case s.conns.replyTo(key, time.Now()):
	default:
		return
	}
	out := make([]byte, len(p))
	copy(out, p)
	if pk.v6 {
		if out[7] <= 1 {
			return
		}
		out[7]--
	} else {
		if out[8] <= 1 {
			return
		}
		// TTL is the high byte of the word at 8; adjust the checksum.
		old := binary.BigEndian.Uint16(out[8:10])
		out[8]--
		binary.BigEndian.PutUint16(out[10:12], csumAdjust(binary.BigEndian.Uint16(out[10:12]), old, binary.BigEndian.Uint16(out[8:10])))
	}
	s.sendOut(out)
}

// csumAdjust updates an Internet checksum for one 16-bit word changing
// from old to new (RFC 1624, eqn. 3).
func csumAdjust(sum, old, new uint16) uint16 {
	x := uint32(^sum) + uint32(^old) + uint32(new)
	x = (x & 0xffff) + (x >> 16)
	x = (x & 0xffff) + (x >> 16)
	return ^uint16(x)
}

// flowKey is one direction of a peer-to-peer flow: a to b with ports (the
// echo identifier for pings).
type flowKey struct {
	proto  uint8
	a, b   netip.Addr
	ap, bp uint16
}

// conntrack remembers the peer-to-peer flows a peer with Access.Peers
// opened, so that the other side may answer even without Access.Peers.
type conntrack struct {
	mu    sync.Mutex
	seen  map[flowKey]time.Time
	swept time.Time
}

const (
	conntrackMax  = 16384
	conntrackTCP  = time.Hour
	conntrackRest = 2 * time.Minute
)

func ttl(proto uint8) time.Duration {
	if proto == protoTCP {
		return conntrackTCP
	}
	return conntrackRest
}

func (c *conntrack) note(k flowKey, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[flowKey]time.Time{}
	}
	if _, ok := c.seen[k]; !ok && len(c.seen) >= conntrackMax {
		if now.Sub(c.swept) < time.Second {
			return // full, and swept just now: the reply direction waits
		}
		c.swept = now
		for key, t := range c.seen {
			if now.Sub(t) > ttl(key.proto) {
				delete(c.seen, key)
			}
		}
		if len(c.seen) >= conntrackMax {
			return
		}
	}
	c.seen[k] = now
}

// replyTo reports whether k (b's packet to a, as seen) answers a flow a
// opened, and keeps that flow alive.
func (c *conntrack) replyTo(k flowKey, now time.Time) bool {
	orig := flowKey{proto: k.proto, a: k.b, b: k.a, ap: k.bp, bp: k.ap}
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.seen[orig]
	if !ok || now.Sub(t) > ttl(k.proto) {
		return false
	}
	c.seen[orig] = now
	return true
}
