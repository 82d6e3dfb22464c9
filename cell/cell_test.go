package cell

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/storage"
)

func newCell(t *testing.T) *Cell {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	book, _ := logs.Open(logs.Options{})
	c, err := New(Options{DB: db, Logs: book, HashMemoryKiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMergePatchRFC7386(t *testing.T) {
	// The examples of RFC 7386 §A.
	cases := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	}
	for _, c := range cases {
		var target, patch, want any
		json.Unmarshal([]byte(c.target), &target)
		json.Unmarshal([]byte(c.patch), &patch)
		json.Unmarshal([]byte(c.want), &want)
		got := mergePatch(target, patch)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("merge %s with %s (-want +got):\n%s", c.target, c.patch, d)
		}
	}
}

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
	c := newCell(t)
	phc, err := c.HashPassword("correct horse battery")
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
	h := newHasher(0, rand.Reader)
	phc, err := h.Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("production parameters: %s", phc)
	}
}

func TestHasherRefusesAFlood(t *testing.T) {
	h := newHasher(64, rand.Reader)
	// Occupy every slot and fill the waiting room, then one more must be refused.
	for i := 0; i < cap(h.slots); i++ {
		h.slots <- struct{}{}
	}
	h.waiting.Store(maxWaiting)
	if _, err := h.Hash("x"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("err = %v, want ErrTooMany", err)
	}
}

func TestDefaultULAIsStableAndValid(t *testing.T) {
	c := newCell(t)
	a, b := c.defaultULA(), c.defaultULA()
	p, err := netip.ParsePrefix(a)
	if a != b || err != nil || p.Bits() != 64 || p.Addr().As16()[0] != 0xfd {
		t.Fatalf("ULA %s / %s: %v", a, b, err)
	}
	if err := (NetworkConfig{WGPort: 1, SubnetV4: "10.77.0.0/24", SubnetV6: a, WANInterface: "auto"}).validate(); err != nil {
		t.Fatal(err)
	}
}

func TestStatusPartsAndOverall(t *testing.T) {
	c := newCell(t)
	st := c.Status(t.Context())
	if st.State != StateOK || st.Parts["storage"].State != StateOK || st.Parts["wireguard"].State != StateNotConfigured {
		t.Fatalf("status = %+v", st)
	}
	c.RegisterPart("wireguard", func(context.Context) storage.PartStatus {
		return storage.PartStatus{State: StateDown, Reason: "no device"}
	})
	c.RegisterPart("dns", func(context.Context) storage.PartStatus { return storage.PartStatus{State: StateDegraded} })
	st = c.Status(t.Context())
	if st.State != StateDown || st.Parts["wireguard"].Reason != "no device" {
		t.Fatalf("status with a down part = %+v", st)
	}
	rec, err := c.CheckHealth(t.Context())
	if err != nil || rec.Parts["dns"].State != StateDegraded {
		t.Fatalf("health record = %+v, %v", rec, err)
	}
	hist, _ := c.HealthHistory(10)
	if len(hist) != 1 {
		t.Fatalf("history has %d records", len(hist))
	}
}
