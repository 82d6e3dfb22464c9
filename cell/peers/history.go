package peers

import (
	"context"
	"time"

	"sync"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// The traffic history behind GET /api/wireguard/history: every HistoryInterval
// the cell reads WireGuard's per-peer byte counters and keeps, per peer, the
// bytes of each interval (the difference from the sample before) for the last
// HistoryKeep samples (24 h).
//
// It is in memory only: a restarted cell starts with an empty history. Memory is
// bounded: 16 bytes per point (rx, tx) in a fixed ring per peer, plus 8 bytes per
// sample for the shared timestamps: 1,440 × 16 B ≈ 23 KB per peer (2.3 MB at
// 100 peers, 23 MB at 1,000), allocated when a peer's first point arrives. A
// deleted peer's ring goes at the next sample.
//
// A counter that went down (the device was rebuilt, the cell restarted, the
// peer was disabled and enabled again) is a reset, not a negative amount: that
// interval counts the bytes since the reset. A peer absent from the device (the
// device down or unreadable, the peer disabled) has intervals of zero, and so
// has the one in which it comes back (a new baseline: its counters may or may
// not have started again).
const (
	HistoryInterval = 60 * time.Second
	HistoryKeep     = 1440
)

// TrafficHistory is GET /api/wireguard/history.
type TrafficHistory struct {
	IntervalSeconds int           `json:"interval_seconds"`
	Peers           []PeerTraffic `json:"peers"`
}

// PeerTraffic is one peer's intervals, oldest first.
type PeerTraffic struct {
	Name   string         `json:"name"`
	Points []TrafficPoint `json:"points"`
}

// TrafficPoint is the traffic of the interval that ended at T.
type TrafficPoint struct {
	T       time.Time `json:"t"`
	RxBytes uint64    `json:"rx_bytes"`
	TxBytes uint64    `json:"tx_bytes"`
}

// history is the sampler's state; every method holds mu.
type history struct {
	mu       sync.Mutex
	interval time.Duration
	keep     int
	n        int64       // samples taken
	times    []time.Time // ring of the samples' times, by sample number mod keep
	peers    map[string]*series
}

// series is one peer's ring. Its points are the samples first..n-1 (the ones
// still in the ring); the counters are the last sample's, for the next delta.
type series struct {
	pub    string
	first  int64 // number of the sample of its first point
	rx, tx []uint64
	// the counters at the last sample, when the peer was on the device
	lastRx, lastTx uint64
	onDevice       bool
}

func newHistory(interval time.Duration, keep int) *history {
	return &history{interval: interval, keep: keep, times: make([]time.Time, keep), peers: map[string]*series{}}
}

// sample records one sample at now of the peers (stored) with the device's
// counters st (by public key).
func (h *history) sample(now time.Time, peers []storage.Peer, st map[string]wireguard.PeerStats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now = now.UTC().Truncate(time.Second)
	live := make(map[string]bool, len(peers))
	slot := int(h.n % int64(h.keep))
	for _, p := range peers {
		live[p.Name] = true
		s := h.peers[p.Name]
		if s == nil || s.pub != p.PublicKey { // new, or deleted and added again
			s = &series{pub: p.PublicKey, first: h.n + 1}
			h.peers[p.Name] = s
		}
		var rx, tx uint64
		cur, ok := st[p.PublicKey]
		if ok && s.onDevice {
			rx, tx = delta(s.lastRx, cur.RxBytes), delta(s.lastTx, cur.TxBytes)
		}
		s.lastRx, s.lastTx, s.onDevice = cur.RxBytes, cur.TxBytes, ok
		if s.first > h.n { // its baseline: no interval of its ends here
			continue
		}
		if s.rx == nil {
			s.rx, s.tx = make([]uint64, h.keep), make([]uint64, h.keep)
		}
		s.rx[slot], s.tx[slot] = rx, tx
	}
	for name := range h.peers {
		if !live[name] {
			delete(h.peers, name)
		}
	}
	h.times[slot] = now
	h.n++
}

// delta is the bytes between two readings of a counter; one that went down
// was reset, and counts from zero.
func delta(last, cur uint64) uint64 {
	if cur < last {
		return cur
	}
	return cur - last
}

// points is a peer's intervals, oldest first.
func (h *history) points(name string) []TrafficPoint {
	out := []TrafficPoint{}
	s := h.peers[name]
	if s == nil || s.rx == nil {
		return out
	}
	from := max(s.first, h.n-int64(h.keep))
	for i := from; i < h.n; i++ {
		slot := int(i % int64(h.keep))
		out = append(out, TrafficPoint{T: h.times[slot], RxBytes: s.rx[slot], TxBytes: s.tx[slot]})
	}
	return out
}

// SampleTraffic takes one sample of every peer's counters at now: what the
// sampler does each interval (tests call it with their own clock).
func (c *Peers) SampleTraffic(now time.Time) error {
	ps, err := c.db.Peers().List()
	if err != nil {
		return err
	}
	c.history.sample(now, ps, c.stats())
	return nil
}

// RunTrafficHistory samples at once and then every interval until ctx ends;
// onErr hears a failed sample (the next one tries again).
func (c *Peers) RunTrafficHistory(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(c.history.interval)
	defer t.Stop()
	for {
		if err := c.SampleTraffic(c.now()); err != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WireGuardHistory is every peer's traffic per interval, or one peer's when
// peer is not "" (an unknown one is peer_not_found). A peer added since the
// last sample has no points yet.
func (c *Peers) WireGuardHistory(peer string) (TrafficHistory, error) {
	out := TrafficHistory{IntervalSeconds: int(c.history.interval / time.Second), Peers: []PeerTraffic{}}
	ps, err := c.db.Peers().List()
	if err != nil {
		return out, err
	}
	if peer != "" && !names.ValidLabel(peer) {
		return out, fault.Errorf(fault.ErrNotFound, "peer_not_found", "no peer named %s", names.Quote(peer))
	}
	c.history.mu.Lock()
	defer c.history.mu.Unlock()
	for _, p := range ps {
		if peer == "" || p.Name == peer {
			out.Peers = append(out.Peers, PeerTraffic{Name: p.Name, Points: c.history.points(p.Name)})
		}
	}
	if peer != "" && len(out.Peers) == 0 {
		return out, fault.Errorf(fault.ErrNotFound, "peer_not_found", "no peer named %s", names.Quote(peer))
	}
	return out, nil
}
