package portmap

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ssdpGateway answers M-SEARCHes on port 1900 of a random loopback address,
// ignoring the first ignore datagrams (a firewall that dropped the answers
// to them), and counts what it received.
type ssdpGateway struct {
	addr netip.Addr
	got  atomic.Int32
}

func newSSDPGateway(t *testing.T, ignore int32) *ssdpGateway {
	t.Helper()
	var pc *net.UDPConn
	g := &ssdpGateway{}
	for range 10 {
		a := netip.AddrFrom4([4]byte{127, byte(rand.IntN(250) + 1), byte(rand.IntN(250) + 1), byte(rand.IntN(250) + 1)})
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 1900)))
		if err == nil {
			pc, g.addr = c, a
			break
		}
	}
	if pc == nil {
		t.Fatal("no loopback address free for a fake SSDP gateway")
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !strings.HasPrefix(string(buf[:n]), "M-SEARCH * HTTP/1.1\r\n") {
				continue
			}
			if g.got.Add(1) <= ignore {
				continue
			}
			resp := fmt.Sprintf("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://%s:5000/rootDesc.xml\r\n\r\n", g.addr)
			pc.WriteToUDPAddrPort([]byte(resp), from)
		}
	}()
	return g
}

// TestUnicastSearchResends: when the answers to the first searches are lost
// (the cell's firewall came up while they were out), the searches sent again
// find the gateway within the search's deadline; once it answered, nothing
// more is sent.
func TestUnicastSearchResends(t *testing.T) {
	g := newSSDPGateway(t, int32(len(igdTargets)))
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	locs, err := unicastSearch(ctx, g.addr, netip.MustParseAddr("127.0.0.1"))
	if err != nil || len(locs) == 0 {
		t.Fatalf("search: %v %v; want the gateway found by the second round", locs, err)
	}
	if want := fmt.Sprintf("http://%s:5000/rootDesc.xml", g.addr); locs[0].String() != want {
		t.Errorf("location %s, want %s", locs[0], want)
	}
	// Two rounds of two searches, and no third round after the answer.
	if n := g.got.Load(); n != int32(2*len(igdTargets)) {
		t.Errorf("the gateway got %d searches, want %d (two rounds)", n, 2*len(igdTargets))
	}
}

// TestUnicastSearchBounded: a gateway that never answers gets one round per
// searchResend until the deadline, not a flood.
func TestUnicastSearchBounded(t *testing.T) {
	g := newSSDPGateway(t, 1<<30)
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	locs, err := unicastSearch(ctx, g.addr, netip.MustParseAddr("127.0.0.1"))
	if err != nil || len(locs) != 0 {
		t.Errorf("search of a silent gateway: %v %v, want nothing and no error", locs, err)
	}
	time.Sleep(100 * time.Millisecond)
	rounds := int(1200*time.Millisecond/searchResend) + 1
	if n := int(g.got.Load()); n < 2*len(igdTargets) || n > rounds*len(igdTargets) {
		t.Errorf("the silent gateway got %d searches, want %d to %d", n, 2*len(igdTargets), rounds*len(igdTargets))
	}
}
