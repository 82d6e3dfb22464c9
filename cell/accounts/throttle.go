package accounts

import (
	"sync"
	"time"
)

// throttle counts failed logins per key (a username, a source address) in a sliding
// window; once limit failures are inside the window, further attempts are refused
// without hashing. It keeps at most maxKeys keys so a spray of names cannot grow it
// without bound; past that the oldest entries are dropped.
type throttle struct {
	limit  int
	window time.Duration

	mu   sync.Mutex
	fail map[string][]time.Time
}

const maxThrottleKeys = 100000

func newThrottle(limit int, window time.Duration) *throttle {
	return &throttle{limit: limit, window: window, fail: map[string][]time.Time{}}
}

func (t *throttle) recentLocked(key string, now time.Time) []time.Time {
	ts := t.fail[key]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= t.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(t.fail, key)
	} else {
		t.fail[key] = ts
	}
	return ts
}

// Blocked reports whether any key has reached the limit.
func (t *throttle) Blocked(now time.Time, keys ...string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		if len(t.recentLocked(k, now)) >= t.limit {
			return true
		}
	}
	return false
}

// Fail records a failure for every key.
func (t *throttle) Fail(now time.Time, keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.fail) > maxThrottleKeys {
		for k := range t.fail {
			t.recentLocked(k, now)
		}
		for k := range t.fail {
			if len(t.fail) <= maxThrottleKeys/2 {
				break
			}
			delete(t.fail, k)
		}
	}
	for _, k := range keys {
		ts := t.recentLocked(k, now)
		if len(ts) < 2*t.limit { // more is never needed to decide
			t.fail[k] = append(ts, now)
		}
	}
}

// Reset forgets the failures of a key (after a successful login for a user).
func (t *throttle) Reset(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fail, key)
}
