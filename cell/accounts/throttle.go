package accounts

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// The failure throttle. Failed logins (and wrong current passwords in a password
// change) are counted per key; Login uses two keys, the account at the source
// ("the admin from 192.168.1.7") and the source alone, never the account alone:
// failures from elsewhere never stop a right password from an address that has
// not failed, so nobody can lock the admin out from their own machine.
//
//   - An attempt is counted before it is hashed: reserve takes a place under every
//     key (failures in the window plus attempts in flight must stay under the
//     limit), and the outcome turns it into a failure or gives it back. Seventeen
//     guesses sent at once are ten hashed and seven refused.
//   - The limit-th failure inside the window locks the key: every attempt under it
//     is refused without hashing, the right password too, for the window, doubled
//     at each new lock of the same key (15 min, 30 min, 1 h, ... at most lockMax). A
//     key's lock count is forgotten once it has not been locked for forgetAfter.
//   - The table holds at most maxKeys keys. When it is full a new key takes the
//     place of the oldest one (by last failure or attempt) that is not limited now:
//     a key that is locked, at its limit or with attempts in flight is never
//     dropped, so a spray of addresses cannot lift a lock. Should every key be
//     limited, the new key's attempt goes on uncounted (the hasher's fair share
//     still bounds it) rather than refusing a stranger.
//   - IPv6 sources are counted per /64 (sourceGroup): one host picks addresses in
//     its /64 at will.
const (
	failLimit   = 10
	failWindow  = 15 * time.Minute
	lockMax     = 24 * time.Hour
	forgetAfter = 24 * time.Hour
	// maxThrottleKeys bounds the table: about 250 bytes a key, 8 MiB in all.
	maxThrottleKeys = 32768
)

// sourceGroup is what the throttles and the hasher's fair share count a source
// address as: an IPv4 address alone, an IPv6 address by its /64 (a v4-mapped one as
// IPv4). Anything that is not an address (the front without a forwarded address) is
// its own group.
func sourceGroup(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}

type throttle struct {
	limit   int
	window  time.Duration
	maxKeys int

	mu    sync.Mutex
	keys  map[string]*failures
	order *list.List // of *failures, least recently touched first
}

// failures is one key's state.
type failures struct {
	key     string
	fails   []time.Time // inside the window, oldest first, at most limit
	pending int         // attempts reserved and being hashed
	until   time.Time   // locked until then
	locks   int         // locks so far: each doubles the next
	elem    *list.Element
}

func newThrottle(limit int, window time.Duration) *throttle {
	return &throttle{limit: limit, window: window, maxKeys: maxThrottleKeys, keys: map[string]*failures{}, order: list.New()}
}

// pruneLocked drops the failures that left the window and a lock count that has
// had its time.
func (t *throttle) pruneLocked(f *failures, now time.Time) {
	i := 0
	for i < len(f.fails) && now.Sub(f.fails[i]) >= t.window {
		i++
	}
	if i > 0 {
		f.fails = append(f.fails[:0], f.fails[i:]...)
	}
	if f.locks > 0 && now.Sub(f.until) >= forgetAfter {
		f.locks = 0
	}
}

// limitedLocked reports whether f refuses attempts now, and for how long.
func (t *throttle) limitedLocked(f *failures, now time.Time) (bool, time.Duration) {
	t.pruneLocked(f, now)
	if now.Before(f.until) {
		return true, f.until.Sub(now)
	}
	if len(f.fails)+f.pending >= t.limit {
		return true, time.Second // attempts in flight: their outcome frees a place or locks
	}
	return false, 0
}

// idleLocked reports whether f holds nothing worth keeping.
func (t *throttle) idleLocked(f *failures, now time.Time) bool {
	t.pruneLocked(f, now)
	return len(f.fails) == 0 && f.pending == 0 && f.locks == 0 && !now.Before(f.until)
}

// reservation is one attempt's place under its keys; exactly one of fail,
// succeed or release ends it.
type reservation struct {
	t    *throttle
	keys []*failures // nil where the table had no room
}

// reserve counts an attempt under every key before it is hashed, or says how long
// the first limited key asks to wait.
func (t *throttle) reserve(now time.Time, keys ...string) (*reservation, time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, k := range keys {
		if f := t.keys[k]; f != nil {
			if lim, d := t.limitedLocked(f, now); lim && d > wait {
				wait = d
			}
		}
	}
	if wait > 0 {
		return nil, wait, false
	}
	r := &reservation{t: t, keys: make([]*failures, len(keys))}
	for i, k := range keys {
		f := t.keys[k]
		if f == nil {
			if f = t.addLocked(k, now); f == nil {
				continue
			}
		}
		f.pending++
		t.order.MoveToBack(f.elem)
		r.keys[i] = f
	}
	return r, 0, true
}

// addLocked makes a key's entry, making room first when the table is full; nil
// when every key is limited now.
func (t *throttle) addLocked(k string, now time.Time) *failures {
	if len(t.keys) >= t.maxKeys && !t.evictLocked(now) {
		return nil
	}
	f := &failures{key: k}
	f.elem = t.order.PushBack(f)
	t.keys[k] = f
	return f
}

// evictLocked drops the least recently touched key that is not limited now. Keys it
// passes over (limited ones) go to the back, so a table full of locks costs one pass.
func (t *throttle) evictLocked(now time.Time) bool {
	for n := t.order.Len(); n > 0; n-- {
		e := t.order.Front()
		f := e.Value.(*failures)
		if lim, _ := t.limitedLocked(f, now); !lim && f.pending == 0 {
			t.order.Remove(e)
			delete(t.keys, f.key)
			return true
		}
		t.order.MoveToBack(e)
	}
	return false
}

func (t *throttle) doneLocked(f *failures) {
	if f.pending > 0 {
		f.pending--
	}
}

// dropIfIdleLocked forgets a key that holds nothing any more.
func (t *throttle) dropIfIdleLocked(f *failures, now time.Time) {
	if t.keys[f.key] == f && t.idleLocked(f, now) {
		t.order.Remove(f.elem)
		delete(t.keys, f.key)
	}
}

// fail turns the attempt into a failure under every key; the limit-th failure in
// the window locks the key.
func (r *reservation) fail(now time.Time) {
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range r.keys {
		if f == nil {
			continue
		}
		t.doneLocked(f)
		t.pruneLocked(f, now)
		f.fails = append(f.fails, now)
		if len(f.fails) > t.limit {
			f.fails = append(f.fails[:0], f.fails[len(f.fails)-t.limit:]...)
		}
		if len(f.fails) >= t.limit && !now.Before(f.until) {
			f.until = now.Add(t.lockFor(f.locks))
			f.locks++
			f.fails = f.fails[:0]
		}
		if t.keys[f.key] == f {
			t.order.MoveToBack(f.elem)
		}
	}
}

// lockFor is the length of a key's lock after it was locked n times before: the
// window, doubled each time.
func (t *throttle) lockFor(n int) time.Duration {
	d := t.window
	for ; n > 0 && d < lockMax; n-- {
		d *= 2
	}
	return min(d, lockMax)
}

// succeed ends the attempt as a success: the first key (the account at the
// source) forgets its failures and locks; the others (the source alone) only give
// their place back, so logging in to one's own account between guesses at others
// does not reset the source.
func (r *reservation) succeed(now time.Time) {
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, f := range r.keys {
		if f == nil {
			continue
		}
		t.doneLocked(f)
		if i == 0 {
			f.fails, f.locks, f.until = f.fails[:0], 0, time.Time{}
		}
		t.dropIfIdleLocked(f, now)
	}
}

// release gives the places back without an outcome (the attempt never reached a
// password check: the hasher was busy, the database failed).
func (r *reservation) release(now time.Time) {
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range r.keys {
		if f == nil {
			continue
		}
		t.doneLocked(f)
		t.dropIfIdleLocked(f, now)
	}
}

// size is the number of keys held (tests).
func (t *throttle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// The success limit. Even right passwords cost a hash each, so logins that succeed
// are limited per account and per source too, as token buckets: an account may log
// in successLimitUser times at once and then once every successEveryUser; a source
// successLimitSource times and then once every successEverySource. While a bucket is
// empty every login for that account (or from that source) is refused before
// hashing, since whether it would succeed is not known then; only someone who knows
// a password can empty a bucket. Buckets are checked before hashing and taken
// after a success, so logins in flight at once may overdraw one; the debt is paid
// back before the next.
const (
	successLimitUser   = 10
	successEveryUser   = 30 * time.Second
	successLimitSource = 20
	successEverySource = 15 * time.Second
	maxBuckets         = 4096
)

type bucketSpec struct {
	burst int
	every time.Duration
}

type successLimit struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newSuccessLimit() *successLimit { return &successLimit{buckets: map[string]*bucket{}} }

func (b *bucket) refill(spec bucketSpec, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(spec.burst), b.tokens+float64(d)/float64(spec.every))
		b.at = now
	}
}

// allow reports how long to wait when a key's bucket is empty (zero: go ahead).
func (s *successLimit) allow(now time.Time, spec bucketSpec, key string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		return 0
	}
	b.refill(spec, now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(spec.every))
}

// take spends one token of a key's bucket.
func (s *successLimit) take(now time.Time, spec bucketSpec, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		if len(s.buckets) >= maxBuckets {
			s.pruneLocked(now)
		}
		b = &bucket{tokens: float64(spec.burst), at: now}
		s.buckets[key] = b
	}
	b.refill(spec, now)
	b.tokens--
}

// pruneLocked drops the buckets that are full again (as good as absent), and when
// that is not enough any, down to half the table.
func (s *successLimit) pruneLocked(now time.Time) {
	full := max(successEveryUser*successLimitUser, successEverySource*successLimitSource)
	for k, b := range s.buckets {
		if now.Sub(b.at) >= full {
			delete(s.buckets, k)
		}
	}
	for k := range s.buckets {
		if len(s.buckets) < maxBuckets/2 {
			break
		}
		delete(s.buckets, k)
	}
}
