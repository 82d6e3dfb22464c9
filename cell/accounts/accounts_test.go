package accounts

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/fault"
)

func TestThrottleLimitAndGrowingLock(t *testing.T) {
	th := newThrottle(3, time.Minute)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		r, _, ok := th.reserve(t0, "k")
		if !ok {
			t.Fatalf("refused after %d failures", i)
		}
		r.fail(t0)
	}
	if _, wait, ok := th.reserve(t0, "k"); ok || wait != time.Minute {
		t.Fatalf("the limit-th failure: reserve ok=%v wait=%v, want a lock of a minute", ok, wait)
	}
	if _, _, ok := th.reserve(t0, "other"); !ok {
		t.Fatal("the limit is not per key")
	}
	// Each new lock of the same key lasts twice as long as the one before.
	at := t0
	for lock, want := 1, 2*time.Minute; lock < 4; lock, want = lock+1, want*2 {
		at = at.Add(th.lockFor(lock - 1))
		for i := 0; i < 3; i++ {
			r, wait, ok := th.reserve(at, "k")
			if !ok {
				t.Fatalf("lock %d: refused at failure %d after the lock ended (wait %v)", lock, i, wait)
			}
			r.fail(at)
		}
		if _, wait, ok := th.reserve(at, "k"); ok || wait != want {
			t.Fatalf("lock %d: ok=%v wait=%v, want %v", lock+1, ok, wait, want)
		}
	}
	if th.lockFor(100) != lockMax {
		t.Fatalf("the lock grows past %v: %v", lockMax, th.lockFor(100))
	}
	// A day after its last lock a key starts again from the shortest.
	at = at.Add(th.lockFor(3) + forgetAfter)
	for i := 0; i < 3; i++ {
		r, _, _ := th.reserve(at, "k")
		r.fail(at)
	}
	if _, wait, _ := th.reserve(at, "k"); wait != time.Minute {
		t.Fatalf("lock after a quiet day: %v, want a minute", wait)
	}
}

func TestThrottleCountsBeforeTheOutcome(t *testing.T) {
	th := newThrottle(3, time.Minute)
	t0 := time.Unix(1000, 0)
	var rs []*reservation
	for i := 0; i < 3; i++ {
		r, _, ok := th.reserve(t0, "user", "src")
		if !ok {
			t.Fatalf("attempt %d in flight refused", i)
		}
		rs = append(rs, r)
	}
	if _, _, ok := th.reserve(t0, "user", "src"); ok {
		t.Fatal("a 4th attempt was let through while 3 were in flight")
	}
	// A success gives the places back and clears the first key only.
	rs[0].fail(t0)
	rs[1].succeed(t0)
	rs[2].release(t0)
	th.mu.Lock()
	u, s := th.keys["user"], th.keys["src"]
	th.mu.Unlock()
	if u != nil || s == nil || len(s.fails) != 1 || s.pending != 0 {
		t.Fatalf("after fail, succeed, release: user %+v, source %+v", u, s)
	}
}

func TestThrottleEvictionKeepsLocks(t *testing.T) {
	th := newThrottle(3, time.Minute)
	th.maxKeys = 8
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		r, _, _ := th.reserve(t0, "locked")
		r.fail(t0)
	}
	// Three more at their limit with attempts in flight: limited too.
	var inFlight []*reservation
	for i := 0; i < 3; i++ {
		r, _, _ := th.reserve(t0, "busy")
		inFlight = append(inFlight, r)
	}
	r, _, _ := th.reserve(t0, "old")
	r.fail(t0)
	for i := 0; i < 1000; i++ {
		at := t0.Add(time.Duration(i+1) * time.Millisecond)
		r, _, ok := th.reserve(at, fmt.Sprint("spray", i))
		if !ok {
			t.Fatalf("spray %d refused", i)
		}
		r.fail(at)
		if th.size() > th.maxKeys {
			t.Fatalf("the table grew to %d keys", th.size())
		}
		if i == 0 {
			th.mu.Lock()
			_, old := th.keys["old"]
			th.mu.Unlock()
			if !old {
				t.Fatal("a key was evicted before the table was full")
			}
		}
	}
	th.mu.Lock()
	_, old := th.keys["old"]
	th.mu.Unlock()
	if old {
		t.Fatal("the oldest unlimited key survived 1,000 newer ones")
	}
	if _, _, ok := th.reserve(t0.Add(time.Second), "locked"); ok {
		t.Fatal("a spray of keys lifted a lock")
	}
	if _, _, ok := th.reserve(t0.Add(time.Second), "busy"); ok {
		t.Fatal("a spray of keys dropped the attempts in flight")
	}
	for _, r := range inFlight {
		r.release(t0)
	}
	// A table full of locks: a new key is let through uncounted, not refused.
	th2 := newThrottle(1, time.Minute)
	th2.maxKeys = 4
	for i := 0; i < 4; i++ {
		r, _, _ := th2.reserve(t0, fmt.Sprint(i))
		r.fail(t0)
	}
	r, _, ok := th2.reserve(t0, "stranger")
	if !ok || r.keys[0] != nil || th2.size() != 4 {
		t.Fatalf("a table full of locks: ok=%v size=%d", ok, th2.size())
	}
	r.fail(t0)
}

func TestSourceGroup(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                  "192.0.2.7",
		"::ffff:192.0.2.7":           "192.0.2.7",
		"2001:db8:1:2:aaaa::1":       "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff:0:9": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":            "2001:db8:1:3::/64",
		"fe80::1%eth0":               "fe80::/64",
		"front":                      "front",
		"":                           "",
	} {
		if got := sourceGroup(in); got != want {
			t.Errorf("sourceGroup(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSuccessLimit(t *testing.T) {
	s := newSuccessLimit()
	spec := bucketSpec{burst: 3, every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if w := s.allow(t0, spec, "k"); w != 0 {
			t.Fatalf("login %d refused for %v", i, w)
		}
		s.take(t0, spec, "k")
	}
	if w := s.allow(t0, spec, "k"); w != 10*time.Second {
		t.Fatalf("4th login: wait %v, want 10s", w)
	}
	if w := s.allow(t0, spec, "other"); w != 0 {
		t.Fatal("the limit is not per key")
	}
	if w := s.allow(t0.Add(10*time.Second), spec, "k"); w != 0 {
		t.Fatalf("a token did not come back after 10s: wait %v", w)
	}
}

func TestPasswordHashPHC(t *testing.T) {
	h := NewHasher(64, rand.Reader)
	phc, err := h.Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=64,t=2,p=1$") {
		t.Fatalf("phc = %s", phc)
	}
	if !verifyPHC(phc, "correct horse battery") || verifyPHC(phc, "correct horse batterz") {
		t.Fatal("verify is wrong")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=2,p=1$AA$AA", "$argon2id$v=19$m=x$AA$AA", "plain"} {
		if verifyPHC(bad, "x") {
			t.Fatalf("%q verified", bad)
		}
	}
}

func TestProductionHashParameters(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: hashes with 19 MiB")
	}
	h := NewHasher(0, rand.Reader)
	phc, err := h.Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("production parameters: %s", phc)
	}
}

func TestHasherRefusesAFlood(t *testing.T) {
	h := NewHasher(64, rand.Reader)
	// Occupy every slot and fill the waiting room from as many sources, then a
	// source that already holds a place must be refused.
	q := h.queue
	q.mu.Lock()
	q.free = 0
	for i := 0; i < q.places; i++ {
		q.held[fmt.Sprint("src", i)]++
	}
	for i := 0; i < q.maxWait; i++ {
		q.waiters = append(q.waiters, &waiter{source: fmt.Sprint("src", i), turn: make(chan bool, 1)})
	}
	q.mu.Unlock()
	if _, err := h.Verify("src3", "", "x"); !errors.Is(err, fault.ErrTooMany) {
		t.Fatalf("err = %v, want ErrTooMany", err)
	}
}
