package dns

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Per-source limits (the package doc gives the reasons).
const (
	DefaultRate  = 50   // queries a second from one source address
	DefaultBurst = 100  // queries at once from one source address
	maxSources   = 4096 // source addresses tracked; beyond, one is forgotten
)

// source is one querying address: its token bucket and its counters.
type source struct {
	tokens  float64
	last    time.Time
	queries uint64
	limited uint64
}

// sources is the table of querying addresses. One mutex: a query holds it
// for a map lookup and a little arithmetic.
type sources struct {
	mu      sync.Mutex
	m       map[netip.Addr]*source
	refused atomic.Uint64 // queries from outside the allowed prefixes
	limited atomic.Uint64 // queries over a source's limit
}

// admit counts a query from a and reports whether its bucket had a token.
// rate <= 0 means no limit.
func (t *sources) admit(a netip.Addr, now time.Time, rate, burst float64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[a]
	if s == nil {
		if t.m == nil {
			t.m = map[netip.Addr]*source{}
		}
		if len(t.m) >= maxSources {
			for k := range t.m { // the map's own random order: any one goes
				delete(t.m, k)
				break
			}
		}
		s = &source{tokens: burst, last: now}
		t.m[a] = s
	}
	s.queries++
	if rate <= 0 {
		return true
	}
	if dt := now.Sub(s.last).Seconds(); dt > 0 {
		s.tokens = min(burst, s.tokens+dt*rate)
		s.last = now
	}
	if s.tokens < 1 {
		s.limited++
		t.limited.Add(1)
		return false
	}
	s.tokens--
	return true
}

// SourceStats is one querying address's counts.
type SourceStats struct {
	Addr    netip.Addr
	Queries uint64 // every query from it, limited ones included
	Limited uint64 // queries dropped over its rate limit
}

func (t *sources) stats() []SourceStats {
	t.mu.Lock()
	out := make([]SourceStats, 0, len(t.m))
	for a, s := range t.m {
		out = append(out, SourceStats{Addr: a, Queries: s.queries, Limited: s.limited})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(x, y SourceStats) int {
		return cmp.Or(cmp.Compare(y.Queries, x.Queries), x.Addr.Compare(y.Addr))
	})
	return out
}

func allowed(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
