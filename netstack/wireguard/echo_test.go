package wireguard

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/echo"
	"golang.zx2c4.com/wireguard/conn"
)

func nonce(t testing.TB) [16]byte {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		t.Fatal(err)
	}
	return n
}

// batch is a receive function that hands out fixed datagrams, the way the
// real bind fills the device's buffers.
type batch struct {
	datagrams [][]byte
	from      []netip.AddrPort
	eps       []conn.Endpoint
}

func (b *batch) receive(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	for i, d := range b.datagrams {
		sizes[i] = copy(packets[i], d)
		eps[i] = b.eps[i]
	}
	return len(b.datagrams), nil
}

func newBatch(datagrams ...[]byte) *batch {
	b := &batch{datagrams: datagrams}
	for i := range datagrams {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), uint16(40000+i))
		b.from = append(b.from, ap)
		b.eps = append(b.eps, &conn.StdNetEndpoint{AddrPort: ap})
	}
	return b
}

func buffers(n int) ([][]byte, []int, []conn.Endpoint) {
	packets := make([][]byte, n)
	for i := range packets {
		packets[i] = make([]byte, 1500)
	}
	return packets, make([]int, n), make([]conn.Endpoint, n)
}

func TestEchoReceiverTakesPayloads(t *testing.T) {
	n1, n2 := nonce(t), nonce(t)
	handshake := make([]byte, 148)
	handshake[0] = 1 // a WireGuard handshake initiation
	data := make([]byte, 96)
	data[0] = 4
	unmarked := echo.Payload(n2)
	unmarked[0] = 1 // the payload's shape without the marker: WireGuard's
	bent := echo.Payload(n2)
	bent[147] = 1 // marked but not a payload: dropped, not recorded
	in := newBatch(handshake, echo.Payload(n1), data, unmarked, bent)
	heard := newEchoLog()
	r := &echoReceiver{fn: in.receive, heard: heard}

	packets, sizes, eps := buffers(8)
	n, err := r.receive(packets, sizes, eps)
	if err != nil || n != 5 {
		t.Fatalf("receive = %d, %v; want the inner batch of 5", n, err)
	}
	wantSizes := []int{148, 0, 96, 148, 0}
	for i, want := range wantSizes {
		if sizes[i] != want {
			t.Errorf("datagram %d: size %d, want %d (marked ones taken out, the rest untouched)", i, sizes[i], want)
		}
	}
	if from, ok, _ := heard.find(n1); !ok || from != in.from[1] {
		t.Errorf("nonce 1 heard = %v, %v; want from %v", from, ok, in.from[1])
	}
	if _, ok, _ := heard.find(n2); ok {
		t.Error("a datagram without the marker, or a malformed one, was recorded")
	}
}

func TestEchoLogKeepsTheLast64(t *testing.T) {
	l := newEchoLog()
	var all [][16]byte
	for i := range 100 {
		n := nonce(t)
		all = append(all, n)
		l.add(echoArrival{nonce: n, from: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(i+1))})
	}
	for i, n := range all {
		from, ok, _ := l.find(n)
		if want := i >= 100-echoKeep; ok != want {
			t.Errorf("nonce %d remembered = %v, want %v", i, ok, want)
		} else if ok && from.Port() != uint16(i+1) {
			t.Errorf("nonce %d from %v, want port %d", i, from, i+1)
		}
	}
}

// wireGuardBatch is a full batch of WireGuard transport datagrams.
func wireGuardBatch() *batch {
	var ds [][]byte
	for range conn.IdealBatchSize {
		d := make([]byte, 1400)
		d[0] = 4
		ds = append(ds, d)
	}
	return newBatch(ds...)
}

func TestEchoReceiverAllocatesNothing(t *testing.T) {
	in := wireGuardBatch()
	r := &echoReceiver{fn: in.receive, heard: newEchoLog()}
	packets, sizes, eps := buffers(conn.IdealBatchSize)
	allocs := testing.AllocsPerRun(100, func() { r.receive(packets, sizes, eps) })
	if allocs != 0 {
		t.Errorf("the wrapped receive allocates %.1f times per batch, want 0", allocs)
	}
}

// BenchmarkEchoReceiver compares the wrapped receive function with the
// plain one on the same batches of WireGuard datagrams. The plain one only
// copies the datagrams into the buffers; the real bind makes a system call
// per batch too, so the ratio here is an upper bound of the cost.
func BenchmarkEchoReceiver(b *testing.B) {
	in := wireGuardBatch()
	r := &echoReceiver{fn: in.receive, heard: newEchoLog()}
	packets, sizes, eps := buffers(conn.IdealBatchSize)
	const rounds = 200
	measure := func(fn conn.ReceiveFunc) time.Duration {
		start := time.Now()
		for range rounds {
			fn(packets, sizes, eps)
		}
		return time.Since(start)
	}
	// The fastest of many short runs of each, alternating which goes
	// first: the least disturbed by the other work on the machine.
	plain, wrapped := time.Duration(1<<62), time.Duration(1<<62)
	i := 0
	for b.Loop() {
		if i++; i%2 == 0 {
			plain = min(plain, measure(in.receive))
			wrapped = min(wrapped, measure(r.receive))
		} else {
			wrapped = min(wrapped, measure(r.receive))
			plain = min(plain, measure(in.receive))
		}
	}
	b.ReportMetric(float64(wrapped)/float64(plain), "x-plain-bind")
}

// TestEchoHeardByDevice sends payloads to a real device's WireGuard port
// while the device's handshake and traffic go on.
func TestEchoHeardByDevice(t *testing.T) {
	cell, client, cellCfg, _ := pair(t)
	port := cellCfg.ListenPort
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}

	// A datagram shaped like the payload but without the marker is the
	// device's, and never recorded.
	n0 := nonce(t)
	unmarked := echo.Payload(n0)
	unmarked[0] = 1
	if _, err := sock.WriteTo(unmarked, to); err != nil {
		t.Fatal(err)
	}
	n1 := nonce(t)
	if _, err := sock.WriteTo(echo.Payload(n1), to); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	from, err := cell.WaitEcho(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	if want := sock.LocalAddr().(*net.UDPAddr).AddrPort(); from != want {
		t.Errorf("heard from %v, want %v", from, want)
	}
	if got, ok := cell.EchoHeard(n1); !ok || got != from {
		t.Errorf("EchoHeard = %v, %v; want %v", got, ok, from)
	}
	if _, ok := cell.EchoHeard(n0); ok {
		t.Error("a datagram without the marker was recorded")
	}
	if _, ok := client.EchoHeard(n1); ok {
		t.Error("the client heard a payload sent to the cell")
	}

	// Payloads keep arriving while the tunnel comes up and carries traffic.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				sock.WriteTo(echo.Payload(nonce(t)), to)
			}
		}
	}()
	waitPing(t, client, "10.77.0.2", "10.77.0.1")
	for range 20 {
		if err := ping(client, "10.77.0.2", "10.77.0.1", 2*time.Second); err != nil {
			t.Fatalf("ping with payloads arriving beside it: %v", err)
		}
	}
	close(stop)
	<-done

	// WaitEcho gives up when its context ends.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := cell.WaitEcho(short, nonce(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitEcho for a nonce never sent = %v, want the deadline", err)
	}
}

// endpoint is a conn.Endpoint with a remembered local source.
type endpoint struct {
	dst netip.AddrPort
	src netip.Addr
}

func (e *endpoint) ClearSrc()           { e.src = netip.Addr{} }
func (e *endpoint) SrcToString() string { return e.src.String() }
func (e *endpoint) DstToString() string { return e.dst.String() }
func (e *endpoint) DstToBytes() []byte  { b, _ := e.dst.MarshalBinary(); return b }
func (e *endpoint) DstIP() netip.Addr   { return e.dst.Addr() }
func (e *endpoint) SrcIP() netip.Addr   { return e.src }

// staleBind refuses sends from a remembered source, as the kernel refuses a
// local address the host no longer has.
type staleBind struct {
	conn.Bind // nil: only Send and ParseEndpoint are called
	sent      []endpoint
	down      bool // every send fails
}

func (b *staleBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.sent = append(b.sent, *ep.(*endpoint))
	if b.down || ep.SrcIP().IsValid() {
		return syscall.EINVAL
	}
	return nil
}

func (b *staleBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	return &endpoint{dst: ap}, err
}

func TestSendRetriesWithoutStaleSource(t *testing.T) {
	inner := &staleBind{}
	b := newEchoBind(inner)
	ep := &endpoint{dst: netip.MustParseAddrPort("198.18.1.2:40000"), src: netip.MustParseAddr("198.18.0.2")}
	if err := b.Send([][]byte{{4, 0, 0, 0}}, ep); err != nil {
		t.Fatalf("Send = %v, want the retry without the source to succeed", err)
	}
	if len(inner.sent) != 2 || inner.sent[1].dst != ep.dst || inner.sent[1].src.IsValid() {
		t.Errorf("sends = %+v, want the stale one, then one to %v without a source", inner.sent, ep.dst)
	}
	if ep.src != netip.MustParseAddr("198.18.0.2") {
		t.Errorf("the device's endpoint was changed: %+v", ep)
	}

	// A send that fails without a source is not retried.
	inner.sent, inner.down = nil, true
	if err := b.Send([][]byte{{4}}, &endpoint{dst: ep.dst}); !errors.Is(err, syscall.EINVAL) || len(inner.sent) != 1 {
		t.Errorf("Send = %v after %d attempts, want the error after 1", err, len(inner.sent))
	}
}
