package firewall

import (
	"errors"
	"net/netip"
	"sync"
)

// Fake is an in-memory Firewall for unit tests: it keeps the last ruleset
// it was given.
type Fake struct {
	mu      sync.Mutex
	rs      Ruleset
	set     bool
	closed  bool
	Applies int   // Set calls that changed something
	Err     error // returned by Set when non-nil
}

var _ Firewall = (*Fake)(nil)

// Set implements Firewall.
func (f *Fake) Set(rs Ruleset) error {
	if err := rs.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if f.Err != nil {
		return f.Err
	}
	if !f.set || !sameStructure(f.rs, rs) || !samePeers(f.rs.Peers, rs.Peers) {
		f.Applies++
	}
	f.rs, f.set = rs, true
	return nil
}

func samePeers(a, b []Peer) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[Peer]int, len(a))
	for _, p := range a {
		m[p]++
	}
	for _, p := range b {
		if m[p] == 0 {
			return false
		}
		m[p]--
	}
	return true
}

// Ruleset returns the last ruleset Set was given.
func (f *Fake) Ruleset() Ruleset {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rs
}

// Close implements Firewall.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// PutPeer implements Firewall.
func (f *Fake) PutPeer(p Peer) error {
	if err := p.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if !f.set {
		return errors.New("firewall: PutPeer before the table was built")
	}
	for i, q := range f.rs.Peers {
		if q.Addr4 == p.Addr4 {
			f.rs.Peers[i] = p
			return nil
		}
	}
	f.rs.Peers = append(f.rs.Peers, p)
	return nil
}

// RemovePeer implements Firewall.
func (f *Fake) RemovePeer(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	for i, q := range f.rs.Peers {
		if q.Addr4 == a {
			f.rs.Peers = append(f.rs.Peers[:i:i], f.rs.Peers[i+1:]...)
			return nil
		}
	}
	return nil
}
