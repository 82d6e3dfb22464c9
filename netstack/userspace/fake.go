package userspace

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Fake stands in for a Stack in unit tests of the cell: it records the
// policy and opens the "tunnel" listeners on loopback, so a test can reach
// the service the cell serves there (Addr says where).
type Fake struct {
	mu       sync.Mutex
	policy   Policy
	sets     int
	own      []netip.Addr
	listened map[string]net.Addr // "tcp 10.77.0.1:3000" -> where it really listens
	// Err, when set, is returned by every method.
	Err error
}

// NewFake returns a fake whose tunnel addresses are own.
func NewFake(own ...netip.Addr) *Fake {
	return &Fake{own: own, listened: map[string]net.Addr{}}
}

// SetPolicy records p.
func (f *Fake) SetPolicy(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if _, err := compile(p); err != nil {
		return err
	}
	f.policy = p
	f.sets++
	return nil
}

// Policy returns the last policy set and how many times SetPolicy succeeded.
func (f *Fake) Policy() (Policy, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy, f.sets
}

func (f *Fake) check(ap netip.AddrPort) error {
	if f.Err != nil {
		return f.Err
	}
	for _, a := range f.own {
		if a == ap.Addr() {
			return nil
		}
	}
	return fmt.Errorf("userspace: listen on %v: not one of the cell's tunnel addresses %v", ap, f.own)
}

// ListenTCP listens on a loopback port in place of ap.
func (f *Fake) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ap); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.listened["tcp "+ap.String()] = l.Addr()
	return l, nil
}

// ListenUDP opens a loopback socket in place of ap.
func (f *Fake) ListenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ap); err != nil {
		return nil, err
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.listened["udp "+ap.String()] = c.LocalAddr()
	return c, nil
}

// Addr reports where the fake really listens for ("tcp" or "udp", ap), nil
// if nothing was opened there.
func (f *Fake) Addr(network string, ap netip.AddrPort) net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listened[network+" "+ap.String()]
}
