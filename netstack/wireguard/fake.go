package wireguard

import (
	"slices"
	"sync"
)

// Fake is an in-memory Device for unit tests. It records the configuration
// it was given and reports it back; it moves no packets.
type Fake struct {
	mu     sync.Mutex
	cfg    Config
	peers  map[Key]Peer
	closed bool
	// Sets counts calls that changed something, for tests that check
	// idempotence.
	Sets int
	// Err, when set, is returned by every method.
	Err error
}

var _ Device = (*Fake)(nil)

// NewFake returns an empty fake device.
func NewFake() *Fake { return &Fake{peers: map[Key]Peer{}} }

// Set implements Device.
func (f *Fake) Set(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usableLocked(); err != nil {
		return err
	}
	var cur deviceState
	cur.PrivateKey, cur.ListenPort = f.cfg.PrivateKey, f.cfg.ListenPort
	for _, p := range f.peers {
		cur.Peers = append(cur.Peers, p)
	}
	if diffUAPI(cur, cfg) != "" {
		f.Sets++
	}
	f.cfg = cfg
	f.peers = make(map[Key]Peer, len(cfg.Peers))
	for _, p := range cfg.Peers {
		f.peers[p.PublicKey] = p
	}
	return nil
}

// PutPeer implements Device.
func (f *Fake) PutPeer(p Peer) error {
	if err := p.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usableLocked(); err != nil {
		return err
	}
	f.peers[p.PublicKey] = p
	return nil
}

// RemovePeer implements Device.
func (f *Fake) RemovePeer(pub Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usableLocked(); err != nil {
		return err
	}
	delete(f.peers, pub)
	return nil
}

// Stats implements Device: every peer, never handshaken.
func (f *Fake) Stats() ([]PeerStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.usableLocked(); err != nil {
		return nil, err
	}
	var out []PeerStats
	for _, p := range f.peers {
		out = append(out, PeerStats{PublicKey: p.PublicKey})
	}
	slices.SortFunc(out, func(a, b PeerStats) int { return slices.Compare(a.PublicKey[:], b.PublicKey[:]) })
	return out, nil
}

// Peers returns the configured peers, sorted by public key.
func (f *Fake) Peers() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Peer
	for _, p := range f.peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return slices.Compare(a.PublicKey[:], b.PublicKey[:]) })
	return out
}

// Close implements Device.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// usableLocked is the error every method returns first: the injected one,
// or ErrClosed. f.mu must be held.
func (f *Fake) usableLocked() error {
	if f.Err != nil {
		return f.Err
	}
	if f.closed {
		return ErrClosed
	}
	return nil
}
