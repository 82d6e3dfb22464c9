package accounts

import (
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/fault"
)

// fairQueue shares the hasher's places (slots hashing at once, plus the waiting
// room) among sources, so that one source cannot starve the others: a peer's login
// loop or a flood from some addresses must not keep the admin's login, from an
// address that asked little, from its turn.
//
//   - Share: a source holds at most places / (sources holding places, itself
//     included) of them, at least one. Alone it may use them all.
//   - Turn: a freed slot goes to the waiter whose source asked least lately: its
//     demand, the number of hashes it asked for, halved every demandHalfLife. A quiet
//     address goes before every busy one; among equals, the first come.
//   - Full room: a newcomer takes the place of the waiter whose source holds the
//     most (among those, the one that asked most, then the newest) when that source
//     holds more than one place more than the newcomer's, or one more and it asked at
//     least as much; the waiter displaced gets login_busy. Otherwise the newcomer
//     gets it. When a flood of new addresses starts, the first to get places are
//     level with a quiet newcomer and go first: at most one room of hashes.
type fairQueue struct {
	now     func() time.Time
	places  int
	maxWait int

	mu      sync.Mutex
	free    int            // slots no one hashes in
	held    map[string]int // per source: hashing + waiting
	waiters []*waiter
	demand  *counts
	seq     uint64

	// onArrive, when set (tests), is called with each source as it asks, before it
	// waits.
	onArrive func(source string)
}

type waiter struct {
	source string
	seq    uint64
	turn   chan bool // true: hash now; false: displaced
}

const (
	demandHalfLife   = 30 * time.Second
	maxDemandSources = 4096
)

func newFairQueue(slots, waiting int, now func() time.Time) *fairQueue {
	return &fairQueue{now: now, places: slots + waiting, maxWait: waiting, free: slots,
		held: map[string]int{}, demand: newCounts(demandHalfLife, maxDemandSources)}
}

func errBusy(format string, args ...any) error {
	return retryAfter(fault.Errorf(fault.ErrTooMany, "login_busy", format, args...), time.Second)
}

// demandLocked is source's demand now.
func (q *fairQueue) demandLocked(source string, now time.Time) float64 {
	return q.demand.get(source, now)
}

// askLocked adds one to source's demand and returns it; the demand of a source
// holding a place is never forgotten.
func (q *fairQueue) askLocked(source string, now time.Time) float64 {
	return q.demand.add(source, now, func(s string) bool { return q.held[s] > 0 })
}

// acquire waits for a slot to hash in, or refuses with login_busy.
func (q *fairQueue) acquire(source string) error {
	now := q.now()
	q.mu.Lock()
	d := q.askLocked(source, now)
	active := len(q.held)
	if q.held[source] == 0 {
		active++
	}
	if share := max(1, q.places/active); q.held[source] >= share {
		q.mu.Unlock()
		return errBusy("this address already has its share of the logins being checked (%d); try again in a moment", share)
	}
	if q.free > 0 {
		q.free--
		q.held[source]++
		q.mu.Unlock()
		return nil
	}
	if len(q.waiters) >= q.maxWait {
		i := q.victimLocked(now)
		v := q.waiters[i]
		hv, hn := q.held[v.source], q.held[source]
		if !(hv > hn+1 || hv == hn+1 && q.demandLocked(v.source, now) >= d) {
			q.mu.Unlock()
			return errBusy("too many logins at once; try again in a moment")
		}
		q.removeLocked(i)
		q.dropLocked(v.source)
		v.turn <- false
	}
	w := &waiter{source: source, seq: q.seq, turn: make(chan bool, 1)}
	q.seq++
	q.waiters = append(q.waiters, w)
	q.held[source]++
	hook := q.onArrive
	q.mu.Unlock()
	if hook != nil {
		hook(source)
	}
	if !<-w.turn {
		return errBusy("too many logins at once; try again in a moment")
	}
	return nil
}

// victimLocked is the index of the waiter to displace first.
func (q *fairQueue) victimLocked(now time.Time) int {
	best := 0
	for i := 1; i < len(q.waiters); i++ {
		a, b := q.waiters[i], q.waiters[best]
		ha, hb := q.held[a.source], q.held[b.source]
		if ha != hb {
			if ha > hb {
				best = i
			}
			continue
		}
		da, db := q.demandLocked(a.source, now), q.demandLocked(b.source, now)
		if da > db || da == db && a.seq > b.seq {
			best = i
		}
	}
	return best
}

func (q *fairQueue) removeLocked(i int) {
	q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
}

func (q *fairQueue) dropLocked(source string) {
	if q.held[source]--; q.held[source] <= 0 {
		delete(q.held, source)
	}
}

// release ends source's hash and gives the slot to the next waiter.
func (q *fairQueue) release(source string) {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropLocked(source)
	if len(q.waiters) == 0 {
		q.free++
		return
	}
	best := 0
	for i := 1; i < len(q.waiters); i++ {
		a, b := q.waiters[i], q.waiters[best]
		da, db := q.demandLocked(a.source, now), q.demandLocked(b.source, now)
		if da < db || da == db && a.seq < b.seq {
			best = i
		}
	}
	w := q.waiters[best]
	q.removeLocked(best)
	w.turn <- true
}
