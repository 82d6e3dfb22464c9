package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pic-cell/cell/netstack/echo"
	"golang.zx2c4.com/wireguard/conn"
)

// The reachability test's receiving half. An outside echo service (package
// echo) sends a 148-byte datagram starting with the marker f0 'p' 'i' 'c' to
// the cell's public endpoint; if the port forward works it arrives at the
// WireGuard port. echoBind wraps the conn.Bind the device reads from: a
// datagram that starts with the marker is taken out of the batch (its size
// set to zero, which wireguard-go skips) before the device sees it, and a
// well-formed payload's nonce is remembered with its source and time.
//
// The data path pays one comparison per datagram: WireGuard's messages start
// with their type (1 to 4), so a first byte other than 0xf0 is passed on at
// once; nothing is allocated and no lock is taken unless the marker is there.
// Only the last 64 nonces are kept, so a flood of marked datagrams costs a
// ring buffer's worth of memory and nothing more.
//
// Wrapping the bind has one side effect on Linux: wireguard-go's "sticky
// socket" route listener runs only for its own *conn.StdNetBind type. That
// listener clears a peer's remembered local source address when the route to
// the peer changes. Without it a reply to a peer could keep naming a local
// address the cell no longer has (its uplink's address changed) until the
// peer's next packet refreshes it, and the kernel refuses such a send. Send
// therefore retries a failed send once without the remembered source, letting
// the kernel choose; a failing send is the only path that pays for it. (This
// version of wireguard-go remembers the local address only where the kernel
// does not coalesce received datagrams, UDP GRO; where it does, as on current
// kernels, there is no source to go stale and the retry never runs.)

// echoKeep is how many reachability nonces are remembered.
const echoKeep = 64

// echoArrival is one reachability payload that arrived.
type echoArrival struct {
	nonce [16]byte
	from  netip.AddrPort
	at    time.Time
}

// echoLog remembers the last echoKeep arrivals.
type echoLog struct {
	mu      sync.Mutex
	ring    [echoKeep]echoArrival
	next    int           // where the next arrival goes
	n       int           // how many are in ring
	arrived chan struct{} // closed and replaced at each arrival
}

func newEchoLog() *echoLog { return &echoLog{arrived: make(chan struct{})} }

func (l *echoLog) add(a echoArrival) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = a
	l.next = (l.next + 1) % echoKeep
	l.n = min(l.n+1, echoKeep)
	close(l.arrived)
	l.arrived = make(chan struct{})
}

// find returns the newest arrival of nonce and a channel closed at the next
// arrival.
func (l *echoLog) find(nonce [16]byte) (netip.AddrPort, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 1; i <= l.n; i++ {
		a := &l.ring[(l.next-i+echoKeep)%echoKeep]
		if a.nonce == nonce {
			return a.from, true, l.arrived
		}
	}
	return netip.AddrPort{}, false, l.arrived
}

// echoBind is the device's bind with reachability payloads taken out.
type echoBind struct {
	conn.Bind
	heard *echoLog
}

func newEchoBind(b conn.Bind) *echoBind { return &echoBind{Bind: b, heard: newEchoLog()} }

// Open implements conn.Bind: the inner bind's receive functions, wrapped.
func (b *echoBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		r := &echoReceiver{fn: fn, heard: b.heard}
		// wireguard-go names its receive goroutines in logs by the
		// function's name; keep "v4" and "v6".
		switch fn.PrettyName() {
		case "v4":
			fns[i] = r.receiveIPv4
		case "v6":
			fns[i] = r.receiveIPv6
		default:
			fns[i] = r.receive
		}
	}
	return fns, actual, nil
}

// Send implements conn.Bind; see the file's comment for the retry.
func (b *echoBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.Bind.Send(bufs, ep)
	if err == nil {
		return nil
	}
	var gso conn.ErrUDPGSODisabled
	if errors.As(err, &gso) {
		return err // the inner bind retried already, and says so
	}
	if !ep.SrcIP().IsValid() {
		return err
	}
	// A fresh endpoint to the same address, without a source: ep is shared
	// with the device's other senders and is not changed.
	fresh, perr := b.Bind.ParseEndpoint(ep.DstToString())
	if perr != nil {
		return err
	}
	return b.Bind.Send(bufs, fresh)
}

// echoReceiver wraps one receive function.
type echoReceiver struct {
	fn    conn.ReceiveFunc
	heard *echoLog
}

func (r *echoReceiver) receiveIPv4(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(packets, sizes, eps)
}

func (r *echoReceiver) receiveIPv6(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(packets, sizes, eps)
}

func (r *echoReceiver) receive(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	n, err := r.fn(packets, sizes, eps)
	for i := range n {
		if sizes[i] >= 4 && packets[i][0] == echo.Marker[0] {
			r.take(packets[i][:sizes[i]], eps[i])
			sizes[i] = 0
		}
	}
	return n, err
}

// take records a datagram that starts like the marker; the caller drops it
// either way (no WireGuard message starts with 0xf0).
func (r *echoReceiver) take(p []byte, ep conn.Endpoint) {
	nonce, ok := echo.ParsePayload(p)
	if !ok {
		return
	}
	var from netip.AddrPort
	if se, ok := ep.(*conn.StdNetEndpoint); ok {
		from = se.AddrPort
	} else if ep != nil {
		from, _ = netip.ParseAddrPort(ep.DstToString())
	}
	r.heard.add(echoArrival{nonce: nonce, from: from, at: time.Now()})
}

// EchoHeard reports whether a reachability payload with nonce (package
// echo) arrived at the WireGuard port, and from where, among the last 64
// that arrived.
func (w *WG) EchoHeard(nonce [16]byte) (from netip.AddrPort, ok bool) {
	from, ok, _ = w.echo.find(nonce)
	return from, ok
}

// WaitEcho waits until a reachability payload with nonce arrives at the
// WireGuard port, or has arrived already, and reports its source; it fails
// when ctx ends first.
func (w *WG) WaitEcho(ctx context.Context, nonce [16]byte) (netip.AddrPort, error) {
	for {
		from, ok, arrived := w.echo.find(nonce)
		if ok {
			return from, nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return netip.AddrPort{}, fmt.Errorf("wireguard: the reachability test's datagram did not arrive at the WireGuard port: %w", ctx.Err())
		}
	}
}
