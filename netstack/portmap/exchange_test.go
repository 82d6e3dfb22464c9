package portmap

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGateway answers NAT-PMP and PCP on port 5351 of a random loopback
// address (127.0.0.0/8 is all loopback on Linux, so no root is needed and
// parallel tests do not meet). It ignores the first drop requests.
type fakeGateway struct {
	addr netip.Addr
	pc   *net.UDPConn

	mu   sync.Mutex
	pcp  bool // answers PCP's ANNOUNCE; otherwise as a NAT-PMP-only router
	drop int
	seen []string
	maps map[uint16]uint32 // internal port -> lifetime
}

func newFakeGateway(t *testing.T, drop int) *fakeGateway {
	t.Helper()
	for range 10 {
		a := netip.AddrFrom4([4]byte{127, byte(rand.IntN(250) + 1), byte(rand.IntN(250) + 1), byte(rand.IntN(250) + 1)})
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, pmpPort)))
		if err != nil {
			continue
		}
		g := &fakeGateway{addr: a, pc: pc, drop: drop, maps: map[uint16]uint32{}}
		t.Cleanup(func() { pc.Close() })
		go g.serve()
		return g
	}
	t.Fatal("no free loopback address for a fake gateway")
	return nil
}

func (g *fakeGateway) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := g.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := buf[:n]
		g.mu.Lock()
		g.seen = append(g.seen, fmt.Sprintf("v%d op%d", req[0], req[1]))
		if g.drop > 0 {
			g.drop--
			g.mu.Unlock()
			continue
		}
		var resp []byte
		switch {
		case req[0] == pmpVersion && req[1] == pmpOpExternal:
			// First something to ignore (an answer to another opcode),
			// then the answer.
			g.pc.WriteToUDPAddrPort([]byte{0, 129, 0, 0}, from)
			resp = []byte{0, 128, 0, 0, 0, 0, 0, 7, 198, 18, 4, 2}
		case req[0] == pmpVersion && req[1] == pmpOpMapUDP && n == 12:
			internal := binary.BigEndian.Uint16(req[4:])
			life := binary.BigEndian.Uint32(req[8:])
			ext := binary.BigEndian.Uint16(req[6:])
			if life == 0 {
				delete(g.maps, internal)
				ext = 0
			} else {
				g.maps[internal] = life
			}
			resp = make([]byte, 16)
			resp[1] = 129
			binary.BigEndian.PutUint32(resp[4:], 7)
			binary.BigEndian.PutUint16(resp[8:], internal)
			binary.BigEndian.PutUint16(resp[10:], ext)
			binary.BigEndian.PutUint32(resp[12:], life)
		case req[0] == pcpVersion && req[1] == pcpOpAnnounce && g.pcp:
			resp = make([]byte, 24)
			resp[0], resp[1] = pcpVersion, 0x80|pcpOpAnnounce
		case req[0] == pcpVersion && req[1] == pcpOpMap && n >= 60:
			life := binary.BigEndian.Uint32(req[4:])
			var m pcpMap
			copy(m.Nonce[:], req[24:36])
			m.Protocol = req[36]
			m.Internal = binary.BigEndian.Uint16(req[40:])
			m.External = binary.BigEndian.Uint16(req[42:]) + 1 // another port than suggested
			m.ExtAddr = netip.MustParseAddr("198.18.4.2")
			if life == 0 {
				delete(g.maps, m.Internal)
			} else {
				g.maps[m.Internal] = life
			}
			resp = pcpResponseBytes(0, life, m)
		case req[0] != pmpVersion:
			// As a NAT-PMP server answers PCP (RFC 6887 §9): its own
			// version, unsupported version, the epoch.
			resp = []byte{0, 128 + req[1]&0x7f, 0, 1, 0, 0, 0, 7}
		default:
			resp = []byte{0, 128 + req[1], 0, 5} // unsupported opcode
		}
		g.mu.Unlock()
		g.pc.WriteToUDPAddrPort(resp, from)
	}
}

func (g *fakeGateway) active() map[uint16]uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[uint16]uint32{}
	for k, v := range g.maps {
		out[k] = v
	}
	return out
}

func TestNATPMPClientAgainstAFakeGateway(t *testing.T) {
	g := newFakeGateway(t, 0)
	c := NewNATPMP(g.addr, netip.Addr{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	a, err := c.ExternalAddr(ctx)
	if err != nil || a != netip.MustParseAddr("198.18.4.2") {
		t.Fatalf("ExternalAddr = %v, %v; want 198.18.4.2 (after ignoring the stray answer)", a, err)
	}
	m, err := c.Map(ctx, netip.AddrPortFrom(netip.Addr{}, 51820), 51820, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != NATPMP || m.External != netip.MustParseAddrPort("198.18.4.2:51820") || m.Internal.Port() != 51820 || m.Lifetime != time.Hour || !m.Internal.Addr().IsLoopback() {
		t.Errorf("mapping %+v", m)
	}
	if g.active()[51820] != 3600 {
		t.Errorf("gateway's mappings %v, want 51820 for 3600 s", g.active())
	}
	if err := c.Unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	if len(g.active()) != 0 {
		t.Errorf("after Unmap the gateway has %v", g.active())
	}
}

func TestPCPClientAgainstAFakeGateway(t *testing.T) {
	g := newFakeGateway(t, 0)
	local := netip.MustParseAddr("127.0.0.1")
	c := NewPCP(g.addr, local)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.ExternalAddr(ctx); err == nil {
		t.Error("PCP ExternalAddr before any mapping: no error")
	}
	m, err := c.Map(ctx, netip.AddrPortFrom(local, 51820), 51820, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The router assigned another port: the mapping says so.
	if m.Protocol != PCP || m.External != netip.MustParseAddrPort("198.18.4.2:51821") || m.Internal != netip.AddrPortFrom(local, 51820) || m.Lifetime != 90*time.Second {
		t.Errorf("mapping %+v", m)
	}
	if a, err := c.ExternalAddr(ctx); err != nil || a != netip.MustParseAddr("198.18.4.2") {
		t.Errorf("ExternalAddr after a mapping = %v, %v", a, err)
	}
	if err := c.Unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	if len(g.active()) != 0 {
		t.Errorf("after Unmap the gateway has %v", g.active())
	}
}

func TestExchangeRetransmits(t *testing.T) {
	g := newFakeGateway(t, 2) // lost twice: answered on the third send, after 250 + 500 ms
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := NewNATPMP(g.addr, netip.Addr{}).ExternalAddr(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t0); el < 700*time.Millisecond || el > 2*time.Second {
		t.Errorf("answered after %v, want about 750 ms (two timeouts, 250 and 500 ms)", el)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) != 3 {
		t.Errorf("gateway saw %q, want three sends", g.seen)
	}
}

func TestExchangeBounded(t *testing.T) {
	g := newFakeGateway(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := NewNATPMP(g.addr, netip.Addr{}).ExternalAddr(ctx)
	if err == nil || !strings.Contains(err.Error(), "no answer from the router") {
		t.Errorf("err = %v, want no answer", err)
	}
	if el := time.Since(t0); el > time.Second {
		t.Errorf("gave up after %v, want at the 600 ms deadline", el)
	}

	// Nothing listening: the ICMP error ends it at once.
	closed := netip.AddrFrom4([4]byte{127, 0, 0, byte(rand.IntN(200) + 20)})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	t0 = time.Now()
	_, err = NewNATPMP(closed, netip.Addr{}).ExternalAddr(ctx2)
	if err == nil || time.Since(t0) > time.Second {
		t.Errorf("no listener: err = %v after %v, want an error at once", err, time.Since(t0))
	}
}

// TestDiscoverPrefersPCP: a router speaking both port-5351 protocols gives
// PCP then NAT-PMP; a NAT-PMP-only one (answering PCP in version 0) only
// NAT-PMP. No UPnP device answers on loopback.
func TestDiscoverPrefersPCP(t *testing.T) {
	for _, both := range []bool{true, false} {
		g := newFakeGateway(t, 0)
		g.mu.Lock()
		g.pcp = both
		g.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		t0 := time.Now()
		cs, err := Discover(ctx, g.addr, netip.MustParseAddr("127.0.0.1"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var got []Protocol
		for _, c := range cs {
			got = append(got, c.Protocol())
		}
		want := []Protocol{NATPMP}
		if both {
			want = []Protocol{PCP, NATPMP}
		}
		if !slices.Equal(got, want) {
			t.Errorf("pcp %v: Discover = %v, want %v", both, got, want)
		}
		if el := time.Since(t0); el > 2500*time.Millisecond {
			t.Errorf("Discover took %v, want about the SSDP wait (1.2 s)", el)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := Discover(ctx, netip.MustParseAddr("2001:db8::1"), netip.Addr{}); err == nil {
		t.Error("an IPv6 gateway: no error")
	}
}
