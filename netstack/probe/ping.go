package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const echoes = 3

// icmpConn is an ICMP socket of either kind.
type icmpConn struct {
	c     *icmp.PacketConn
	raw   bool // a raw socket: replies are ours to match
	proto int  // 1 or 58
	v6    bool
}

func listenICMP(v6 bool) (*icmpConn, error) {
	dgram, raw, proto, any := "udp4", "ip4:icmp", 1, "0.0.0.0"
	if v6 {
		dgram, raw, proto, any = "udp6", "ip6:ipv6-icmp", 58, "::"
	}
	if c, err := icmp.ListenPacket(dgram, any); err == nil {
		return &icmpConn{c: c, proto: proto, v6: v6}, nil
	}
	c, err := icmp.ListenPacket(raw, any)
	if err != nil {
		return nil, fmt.Errorf("the cell may not send ICMP here: neither net.ipv4.ping_group_range nor raw sockets allow it (%v)", plain(err))
	}
	return &icmpConn{c: c, raw: true, proto: proto, v6: v6}, nil
}

func (p *Prober) ping(ctx context.Context, q parsed, res *Result) error {
	addrs, why, err := p.resolve(ctx, q.host, 0)
	if err != nil || why != "" {
		res.Detail = why
		return err
	}
	dst := addrs[0]
	res.Address = dst.String()
	ic, err := listenICMP(dst.Is6())
	if err != nil {
		res.Detail = err.Error()
		return nil
	}
	defer ic.c.Close()
	stop := context.AfterFunc(ctx, func() { ic.c.SetDeadline(time.Now()) })
	defer stop()

	var idb [2]byte
	rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if !ic.raw {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	wait := p.o.Timeout / echoes
	var rtts []time.Duration
	var unreachable string
	for seq := 1; seq <= echoes && ctx.Err() == nil; seq++ {
		payload := make([]byte, 16)
		rand.Read(payload)
		var typ icmp.Type = ipv4.ICMPTypeEcho
		if ic.v6 {
			typ = ipv6.ICMPTypeEchoRequest
		}
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		sent := time.Now()
		deadline := sent.Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		ic.c.SetReadDeadline(deadline)
		if _, err := ic.c.WriteTo(b, to); err != nil {
			res.Detail = fmt.Sprintf("cannot send to %s: %s", dst, plain(err))
			return nil
		}
		if rtt, unr, ok := ic.await(dst, id, seq, payload, sent); ok {
			rtts = append(rtts, rtt)
		} else if unr != "" {
			unreachable = unr
		}
	}
	sum, lo, hi := time.Duration(0), time.Duration(0), time.Duration(0)
	for i, r := range rtts {
		sum += r
		if i == 0 || r < lo {
			lo = r
		}
		hi = max(hi, r)
	}
	loss := 100 * (echoes - len(rtts)) / echoes
	switch {
	case len(rtts) > 0:
		res.OK = true
		res.RTT = sum / time.Duration(len(rtts))
		res.Detail = fmt.Sprintf("%d of %d replies from %s (%d%% lost), round trip min/avg/max %s/%s/%s",
			len(rtts), echoes, dst, loss, ms(lo), ms(res.RTT), ms(hi))
	case unreachable != "":
		res.Detail = fmt.Sprintf("no reply from %s: %s", dst, unreachable)
	default:
		res.Detail = fmt.Sprintf("no reply from %s (%d echoes sent, 100%% lost)", dst, echoes)
	}
	return nil
}

// await reads until the reply to echo seq arrives or the read deadline
// passes; a raw socket also reports a destination unreachable about it.
func (ic *icmpConn) await(dst netip.Addr, id, seq int, payload []byte, sent time.Time) (time.Duration, string, bool) {
	buf := make([]byte, 1500)
	for {
		n, from, err := ic.c.ReadFrom(buf)
		if err != nil {
			return 0, "", false
		}
		got := time.Since(sent)
		m, err := icmp.ParseMessage(ic.proto, buf[:n])
		if err != nil {
			continue
		}
		switch body := m.Body.(type) {
		case *icmp.Echo:
			if m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply {
				continue
			}
			if body.Seq != seq || !bytes.Equal(body.Data, payload) || !sameAddr(from, dst) {
				continue
			}
			if ic.raw && body.ID != id {
				continue
			}
			return got, "", true
		case *icmp.DstUnreach:
			if ic.raw && quotesEcho(body.Data, ic.v6, id, seq) {
				return 0, fmt.Sprintf("destination unreachable, says %s", addrOf(from)), false
			}
		}
	}
}

// quotesEcho: the packet quoted in an ICMP error is our echo request.
func quotesEcho(b []byte, v6 bool, id, seq int) bool {
	hl := 40
	if !v6 {
		if len(b) < 20 {
			return false
		}
		hl = int(b[0]&0x0f) * 4
	}
	if len(b) < hl+8 {
		return false
	}
	e := b[hl:]
	return int(binary.BigEndian.Uint16(e[4:6])) == id && int(binary.BigEndian.Uint16(e[6:8])) == seq
}

func addrOf(a net.Addr) string {
	switch a := a.(type) {
	case *net.IPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	}
	return a.String()
}

func sameAddr(a net.Addr, want netip.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == want
}
