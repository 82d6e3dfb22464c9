package userspace

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// ListenTCP listens inside the stack on one of the cell's own tunnel
// addresses, so that peers reach a service of the cell there (the HTTP API:
// http.Serve(l, handler)). Connections' RemoteAddr is the peer's tunnel
// address and port. Closing the listener, or the stack, ends Accept.
func (s *Stack) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	if err := s.checkListen(ap); err != nil {
		return nil, err
	}
	fa, proto := fullAddr(ap)
	l, err := gonet.ListenTCP(s.stack, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("userspace: listen tcp %v: %w", ap, err)
	}
	tl := &tcpListener{TCPListener: l, s: s}
	if !s.track(tl) {
		return nil, ErrClosed
	}
	return tl, nil
}

// ListenUDP opens a UDP socket inside the stack on one of the cell's own
// tunnel addresses (the DNS server: dns.Server{PacketConn: pc}). ReadFrom
// reports the peer's tunnel address and port; WriteTo answers it.
func (s *Stack) ListenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	if err := s.checkListen(ap); err != nil {
		return nil, err
	}
	fa, proto := fullAddr(ap)
	c, err := gonet.DialUDP(s.stack, &fa, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("userspace: listen udp %v: %w", ap, err)
	}
	uc := &udpConn{UDPConn: c, s: s}
	if !s.track(uc) {
		return nil, ErrClosed
	}
	return uc, nil
}

// checkListen allows the cell's own addresses only: the stack accepts
// packets to every address, so a wildcard listener would capture peers'
// flows to the whole internet.
func (s *Stack) checkListen(ap netip.AddrPort) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !s.isOwn(ap.Addr().Unmap()) {
		return fmt.Errorf("userspace: listen on %v: not one of the cell's tunnel addresses %v", ap, s.own)
	}
	return nil
}

type tcpListener struct {
	*gonet.TCPListener
	s    *Stack
	once sync.Once
}

// Close stops listening; a blocked Accept returns an error.
func (l *tcpListener) Close() error {
	l.once.Do(func() {
		l.s.untrack(l)
		l.Shutdown() // wakes Accept
		l.TCPListener.Close()
	})
	return nil
}

type udpConn struct {
	*gonet.UDPConn
	s    *Stack
	once sync.Once
}

func (c *udpConn) Close() error {
	c.once.Do(func() {
		c.s.untrack(c)
		c.UDPConn.Close()
	})
	return nil
}
