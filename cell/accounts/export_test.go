package accounts

import (
	"io"
	"time"
)

// Hooks and constants for the tests of package accounts_test.

const (
	FailLimit          = failLimit
	FailWindow         = failWindow
	MaxThrottleKeys    = maxThrottleKeys
	SuccessLimitUser   = successLimitUser
	SuccessEveryUser   = successEveryUser
	SuccessLimitSource = successLimitSource
	MaxWaiting         = maxWaiting
)

// NewHasherWithSlots is NewHasher with slots hashes at once (not half the CPUs).
func NewHasherWithSlots(memoryKiB uint32, r io.Reader, slots int) *Hasher {
	h := NewHasher(memoryKiB, r)
	h.queue = newFairQueue(slots, maxWaiting, time.Now)
	return h
}

// OnHash makes h call fn with the source group before every hash under its cap
// (fn may block: the hash waits for it, holding its slot).
func OnHash(h *Hasher, fn func(source string)) { h.onHash = fn }

// OnWait makes h call fn with the source group of every hash that waits for a turn.
func OnWait(h *Hasher, fn func(source string)) { h.queue.onArrive = fn }

// Waiting is how many hashes wait for a turn.
func Waiting(h *Hasher) int {
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	return len(h.queue.waiters)
}

// ThrottleKeys is how many keys the failure throttle holds.
func ThrottleKeys(a *Accounts) int { return a.throttle.size() }

// SourceGroup is what an address is counted as.
func SourceGroup(ip string) string { return sourceGroup(ip) }

// TarpitSleep makes a's tarpit call fn instead of sleeping.
func TarpitSleep(a *Accounts, fn func(time.Duration)) { a.refused.sleep = fn }

const TarpitAfter = tarpitAfter
