package userspace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingTimeout is how long the host waits for the destination's echo reply.
const pingTimeout = 3 * time.Second

// echo answers a peer's echo request to a destination beyond the cell:
// with the destination's own answer when the host can ping, locally when it
// may not (see the package documentation).
func (s *Stack) echo(p []byte, pk packet, pol *compiled, acc Access) {
	dst := pk.dst.Unmap()
	if c := s.classify(dst, pol); !acc.allows(c) {
		return
	}
	// p is WireGuard's buffer, reused once Write returns: work on a copy.
	req := bytes.Clone(p)
	pk, _ = parse(req)
	if !s.hostPing.Load() {
		s.answerEcho(req, pk.v6)
		return
	}
	select {
	case s.pingSlots <- struct{}{}:
	default:
		return // too many pings in flight
	}
	started := s.goTracked(func() {
		defer func() { <-s.pingSlots }()
		switch err := s.hostEcho(dst, pk); {
		case err == nil:
			s.answerEcho(req, pk.v6)
		case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EPROTONOSUPPORT):
			s.hostPing.Store(false)
			s.pingLocalLog.Do(func() {
				s.log.Info("the host does not allow unprivileged ICMP sockets (net.ipv4.ping_group_range); echo requests beyond the cell are answered locally", "err", err)
			})
			s.answerEcho(req, pk.v6)
		default:
			s.log.Debug("echo beyond the cell unanswered", "dst", dst, "err", err)
		}
	})
	if !started {
		<-s.pingSlots
	}
}

// hostEcho pings dst from the host with an unprivileged ICMP socket, with
// the peer's sequence number and payload, and waits for the reply.
func (s *Stack) hostEcho(dst netip.Addr, pk packet) error {
	network, laddr := "udp4", "0.0.0.0"
	var typ, replyTyp icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if dst.Is6() {
		network, laddr = "udp6", "::"
		typ, replyTyp, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return err
	}
	if !s.track(c) {
		return ErrClosed
	}
	defer func() { s.untrack(c); c.Close() }()
	seq := int(binary.BigEndian.Uint16(pk.l4[6:8]))
	data := pk.l4[8:]
	msg, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(pk.sport), Seq: seq, Data: data}}).Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(msg, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(pingTimeout))
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != replyTyp {
			continue
		}
		// The kernel chose the identifier; the sequence and payload say it
		// is ours.
		if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq && bytes.Equal(e.Data, data) {
			if ua, ok := from.(*net.UDPAddr); ok {
				if a, ok := netip.AddrFromSlice(ua.IP); ok && a.Unmap() == dst {
					return nil
				}
			}
		}
	}
}

// answerEcho turns the echo request req (a whole IP packet, owned by the
// caller) into its reply and sends it to WireGuard.
func (s *Stack) answerEcho(req []byte, v6 bool) {
	if v6 {
		// Swap the addresses (the checksum's pseudo-header sums them, so
		// it does not change), hop limit 64, type 128 -> 129.
		var a [16]byte
		copy(a[:], req[8:24])
		copy(req[8:24], req[24:40])
		copy(req[24:40], a[:])
		req[7] = 64
		icmp := req[40:]
		old := binary.BigEndian.Uint16(icmp[0:2])
		icmp[0] = 129
		binary.BigEndian.PutUint16(icmp[2:4], csumAdjust(binary.BigEndian.Uint16(icmp[2:4]), old, binary.BigEndian.Uint16(icmp[0:2])))
	} else {
		var a [4]byte
		copy(a[:], req[12:16])
		copy(req[12:16], req[16:20])
		copy(req[16:20], a[:])
		old := binary.BigEndian.Uint16(req[8:10])
		req[8] = 64
		binary.BigEndian.PutUint16(req[10:12], csumAdjust(binary.BigEndian.Uint16(req[10:12]), old, binary.BigEndian.Uint16(req[8:10])))
		icmp := req[int(req[0]&0xf)*4:]
		old = binary.BigEndian.Uint16(icmp[0:2])
		icmp[0] = 0
		binary.BigEndian.PutUint16(icmp[2:4], csumAdjust(binary.BigEndian.Uint16(icmp[2:4]), old, binary.BigEndian.Uint16(icmp[0:2])))
	}
	s.sendOut(req)
}
