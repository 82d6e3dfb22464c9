package accounts

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/fault"
)

func TestThrottleWindow(t *testing.T) {
	th := newThrottle(3, time.Minute)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if th.Blocked(t0, "k") {
			t.Fatalf("blocked after %d failures", i)
		}
		th.Fail(t0, "k")
	}
	if !th.Blocked(t0, "k") || th.Blocked(t0, "other") {
		t.Fatal("the limit is not per key")
	}
	if th.Blocked(t0.Add(61*time.Second), "k") {
		t.Fatal("failures outside the window still count")
	}
	th.Fail(t0, "k")
	th.Reset("k")
	if th.Blocked(t0, "k") {
		t.Fatal("reset did not forget")
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
	// Occupy every slot and fill the waiting room, then one more must be refused.
	for i := 0; i < cap(h.slots); i++ {
		h.slots <- struct{}{}
	}
	h.waiting.Store(maxWaiting)
	if _, err := h.Hash("x"); !errors.Is(err, fault.ErrTooMany) {
		t.Fatalf("err = %v, want ErrTooMany", err)
	}
}
