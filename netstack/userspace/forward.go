package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCP keepalive of the gVisor side of forwarded flows.
const (
	keepaliveIdle     = 2 * time.Minute
	keepaliveInterval = 30 * time.Second
	keepaliveCount    = 4
)

// SetPolicy replaces the policy. New flows are judged by it at once; open
// flows it no longer allows (or now sends elsewhere) are closed. It reports
// an error, and changes nothing, for an invalid policy.
func (s *Stack) SetPolicy(p Policy) error {
	c, err := compile(p)
	if err != nil {
		return err
	}
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	s.policy.Store(c)
	var cut []*flow
	s.flows.mu.Lock()
	for f := range s.flows.all {
		if to, ok := s.decide(f.udp, f.src, f.dst, c); !ok || to != f.to {
			cut = append(cut, f)
		}
	}
	s.flows.mu.Unlock()
	for _, f := range cut {
		f.abort()
	}
	if len(cut) > 0 {
		s.log.Info("policy closed flows it no longer allows", "flows", len(cut))
	}
	return nil
}

// classify says what dst is to pol. dst is unmapped.
func (s *Stack) classify(dst netip.Addr, pol *compiled) class {
	switch {
	case s.isOwn(dst):
		return classCell
	case alwaysRefused(dst) || s.isHostAddr(dst):
		return classRefused
	case inAny(pol.tunnel, dst):
		return classPeer
	case inAny(pol.lan, dst):
		return classLAN
	}
	return classInternet
}

func (s *Stack) isHostAddr(a netip.Addr) bool {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if time.Since(s.host.at) > hostAddrsTTL {
		s.host = hostAddrs{at: time.Now(), addrs: readHostAddrs()}
	}
	return s.host.addrs[a]
}

// decide is the policy for a new TCP or UDP flow from src to dst: the host
// address to dial, or false.
func (s *Stack) decide(isUDP bool, src, dst netip.AddrPort, pol *compiled) (netip.AddrPort, bool) {
	acc, ok := pol.peers[src.Addr()]
	if !ok && pol.set {
		return netip.AddrPort{}, false
	}
	switch c := s.classify(dst.Addr(), pol); c {
	case classCell:
		to, ok := pol.services[serviceKey{isUDP, dst.Port()}]
		return to, ok
	case classPeer:
		return netip.AddrPort{}, false // routed by the shim, never terminated
	default:
		return dst, pol.set && acc.allows(c)
	}
}

func idAddrs(id stack.TransportEndpointID) (src, dst netip.AddrPort) {
	sa, _ := netip.AddrFromSlice(id.RemoteAddress.AsSlice())
	da, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	return netip.AddrPortFrom(sa.Unmap(), id.RemotePort), netip.AddrPortFrom(da.Unmap(), id.LocalPort)
}

// flow is one forwarded TCP or UDP flow.
type flow struct {
	udp          bool
	src, dst, to netip.AddrPort
	peer, host   net.Conn
	ep           tcpip.Endpoint // the peer side's, TCP only
	closeOnce    sync.Once
}

// close ends the flow: a FIN (TCP) to both sides once both directions are
// done.
func (f *flow) close() {
	f.closeOnce.Do(func() {
		f.peer.Close()
		f.host.Close()
	})
}

// abort ends the flow with a RST to both sides (TCP): an error on one side,
// or a policy that no longer allows it.
func (f *flow) abort() {
	if f.ep != nil {
		f.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	}
	if tc, ok := f.host.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	f.close()
}

type flowCount struct {
	udp bool
	src netip.Addr
}

// flowTable counts and holds the open flows.
type flowTable struct {
	mu        sync.Mutex
	tcp, udp  int
	perSource map[flowCount]int
	all       map[*flow]struct{}
}

// reserve takes a slot for a flow from src, within the limits.
func (s *Stack) reserve(isUDP bool, src netip.Addr) bool {
	t := &s.flows
	t.mu.Lock()
	defer t.mu.Unlock()
	total, max, perMax := &t.tcp, s.limits.TCPFlows, s.limits.TCPFlowsPerSource
	if isUDP {
		total, max, perMax = &t.udp, s.limits.UDPFlows, s.limits.UDPFlowsPerSource
	}
	k := flowCount{isUDP, src}
	if *total >= max || t.perSource[k] >= perMax {
		return false
	}
	*total++
	t.perSource[k]++
	return true
}

func (s *Stack) release(isUDP bool, src netip.Addr) {
	t := &s.flows
	t.mu.Lock()
	defer t.mu.Unlock()
	k := flowCount{isUDP, src}
	if isUDP {
		t.udp--
	} else {
		t.tcp--
	}
	if t.perSource[k]--; t.perSource[k] <= 0 {
		delete(t.perSource, k)
	}
}

func (s *Stack) addFlow(f *flow) {
	s.flows.mu.Lock()
	s.flows.all[f] = struct{}{}
	s.flows.mu.Unlock()
}

func (s *Stack) removeFlow(f *flow) {
	s.flows.mu.Lock()
	delete(s.flows.all, f)
	s.flows.mu.Unlock()
}

// Flows reports the numbers of open forwarded TCP and UDP flows.
func (s *Stack) Flows() (tcp, udp int) {
	s.flows.mu.Lock()
	defer s.flows.mu.Unlock()
	for f := range s.flows.all {
		if f.udp {
			udp++
		} else {
			tcp++
		}
	}
	return tcp, udp
}

// acceptTCP runs, on a goroutine gVisor's forwarder starts, for every SYN
// no listener takes: it dials the destination from the host first and
// completes the peer's handshake only if that worked.
func (s *Stack) acceptTCP(r *tcp.ForwarderRequest) {
	if !s.enter() {
		r.Complete(true)
		return
	}
	defer s.exit()
	src, dst := idAddrs(r.ID())
	to, ok := s.decide(false, src, dst, s.policy.Load())
	if !ok {
		s.log.Debug("tcp refused", "src", src, "dst", dst)
		r.Complete(true) // RST
		return
	}
	if !s.reserve(false, src.Addr()) {
		s.log.Debug("tcp over the flow limit", "src", src, "dst", dst)
		r.Complete(true)
		return
	}
	defer s.release(false, src.Addr())
	ctx, cancel := context.WithTimeout(s.ctx, s.limits.DialTimeout)
	hc, err := s.dial(ctx, "tcp", to.String())
	cancel()
	if err != nil {
		s.log.Debug("tcp dial failed", "src", src, "dst", dst, "to", to, "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		hc.Close()
		return
	}
	r.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	idle, intvl := tcpip.KeepaliveIdleOption(keepaliveIdle), tcpip.KeepaliveIntervalOption(keepaliveInterval)
	ep.SetSockOpt(&idle)
	ep.SetSockOpt(&intvl)
	ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
	pc := gonet.NewTCPConn(&wq, ep)
	f := &flow{src: src, dst: dst, to: to, peer: pc, host: hc, ep: ep}
	s.addFlow(f)
	defer s.removeFlow(f)
	if !s.track(f) {
		return
	}
	defer s.untrack(f)
	// A policy change between decide and addFlow would have missed f.
	if to2, ok := s.decide(false, src, dst, s.policy.Load()); !ok || to2 != to {
		f.abort()
		return
	}
	s.splice(f, pc, hc.(halfCloser))
}

// Close lets a flow sit among the Stack's closers.
func (f *flow) Close() error { f.close(); return nil }

// halfCloser is a TCP connection whose directions close on their own.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// splice copies both ways until both are done: EOF on one side is a FIN
// (CloseWrite) to the other; an error on either aborts both.
func (s *Stack) splice(f *flow, peer, host halfCloser) {
	defer f.close()
	done := make(chan struct{})
	if !s.goTracked(func() {
		defer close(done)
		pipe(f, host, peer)
	}) {
		return
	}
	pipe(f, peer, host)
	<-done
}

func pipe(f *flow, dst, src halfCloser) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				f.abort()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			dst.CloseWrite()
			return
		}
		if err != nil {
			f.abort()
			return
		}
	}
}

// acceptUDP runs, inside gVisor's packet delivery, for every datagram no
// endpoint takes: a new flow. Its host socket is opened on a goroutine.
func (s *Stack) acceptUDP(r *udp.ForwarderRequest) {
	src, dst := idAddrs(r.ID())
	to, ok := s.decide(true, src, dst, s.policy.Load())
	if !ok {
		s.log.Debug("udp refused", "src", src, "dst", dst)
		return
	}
	if !s.reserve(true, src.Addr()) {
		s.log.Debug("udp over the flow limit", "src", src, "dst", dst)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq) // takes this first datagram
	if terr != nil {
		s.release(true, src.Addr())
		return
	}
	pc := gonet.NewUDPConn(&wq, ep)
	idle := s.limits.UDPIdle
	if dst.Port() == 53 {
		idle = s.limits.DNSIdle
	}
	if !s.goTracked(func() {
		defer s.release(true, src.Addr())
		s.udpFlow(pc, src, dst, to, idle)
	}) {
		pc.Close()
		s.release(true, src.Addr())
	}
}

func (s *Stack) udpFlow(pc *gonet.UDPConn, src, dst, to netip.AddrPort, idle time.Duration) {
	hc, err := s.dial(s.ctx, "udp", to.String())
	if err != nil {
		s.log.Debug("udp dial failed", "src", src, "dst", dst, "to", to, "err", err)
		pc.Close()
		return
	}
	f := &flow{udp: true, src: src, dst: dst, to: to, peer: pc, host: hc}
	s.addFlow(f)
	defer s.removeFlow(f)
	if !s.track(f) {
		return
	}
	defer s.untrack(f)
	if to2, ok := s.decide(true, src, dst, s.policy.Load()); !ok || to2 != to {
		f.close()
		return
	}
	var last atomic.Int64 // unix nanoseconds of the last datagram either way
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	relay := func(dst, src net.Conn) {
		defer f.close()
		buf := make([]byte, 65535)
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction is busy
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue // one datagram refused (ICMP port unreachable)
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil && !isTransient(err) {
				return
			}
		}
	}
	if !s.goTracked(func() { defer close(done); relay(pc, hc) }) {
		f.close()
		return
	}
	relay(hc, pc)
	<-done
}

// isTransient is a UDP write error that does not end the flow (the
// destination refused an earlier datagram: ICMP port unreachable; a full
// buffer).
func isTransient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOBUFS)
}
