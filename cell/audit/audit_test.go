package audit

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/storage"
)

// clock is a test's clock: it moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t *testing.T) (*Log, *storage.DB, *clock) {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	book, err := logs.Open(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)}
	l, err := Open(db, book.Logger("audit"), c.now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Flush() })
	return l, db, c
}

func head(t *testing.T, db *storage.DB) uint64 {
	t.Helper()
	n, _, err := db.Audit().Head()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func refusal(src, result string) storage.Entry {
	return storage.Entry{Actor: Anonymous, SourceIP: src, Action: "POST /api/peers", TargetType: "peer", Result: result}
}

// TestRefusalsCountedPerWindow: refusals of anonymous requests are counted, one
// entry per key and window, written when the next window's first refusal comes
// (or at Flush); nothing is written while the window is open.
func TestRefusalsCountedPerWindow(t *testing.T) {
	l, db, c := open(t)
	n0 := head(t, db)
	for i := range 1000 {
		src := "198.51.100.1"
		if i%10 == 0 {
			src = "198.51.100.2"
		}
		if err := l.Refused(refusal(src, "not_logged_in")); err != nil {
			t.Fatal(err)
		}
	}
	l.Refused(refusal("198.51.100.1", "bad_csrf_token"))
	if n := head(t, db); n != n0 {
		t.Fatalf("%d entries written while the window is open", n-n0)
	}
	c.add(Window)
	l.Refused(refusal("198.51.100.1", "not_logged_in")) // the next window's first closes this one
	if n := head(t, db); n != n0+3 {
		t.Fatalf("closing the window wrote %d entries, want 3", n-n0)
	}
	entries, _, err := db.Audit().Query(storage.Filter{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, e := range entries {
		got[e.SourceIP+" "+e.Result] = Count(e)
		if e.Actor != Anonymous || e.Details["first"] == "" || e.Details["last"] == "" {
			t.Errorf("entry %+v", e)
		}
	}
	if got["198.51.100.1 not_logged_in"] != 900 || got["198.51.100.2 not_logged_in"] != 100 || got["198.51.100.1 bad_csrf_token"] != 1 {
		t.Fatalf("counts %v", got)
	}
	// Query writes the open window's counts first.
	entries, _, _ = l.Query(storage.Filter{Limit: 1})
	if len(entries) != 1 || Count(entries[0]) != 1 || head(t, db) != n0+4 {
		t.Fatalf("query did not write the open window: %+v", entries)
	}
	if v, _ := l.Verify(); !v.OK {
		t.Fatalf("verify: %+v", v)
	}
}

// TestRefusalKeysBounded: however many sources or names a flood uses, one window
// writes at most MaxRefusalKeys + FoldedKeys + 1 entries, and the counts add up.
func TestRefusalKeysBounded(t *testing.T) {
	l, db, _ := open(t)
	n0 := head(t, db)
	const n = 5000
	for i := range n {
		e := refusal(fmt.Sprintf("2001:db8::%x", i), fmt.Sprintf("code_%d", i%100))
		e.Action = fmt.Sprintf("POST /api/x%d", i%50)
		if err := l.Refused(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	written := head(t, db) - n0
	if written > MaxRefusalKeys+FoldedKeys+1 {
		t.Fatalf("%d entries for one window, want at most %d", written, MaxRefusalKeys+FoldedKeys+1)
	}
	entries, _, _ := db.Audit().Query(storage.Filter{Limit: int(written)})
	var sum uint64
	for _, e := range entries {
		sum += Count(e)
	}
	if sum != n {
		t.Fatalf("the counts add up to %d, want %d", sum, n)
	}
}

// TestUnknownUserHidden: a refused login's typed name is kept only when it names
// an account.
func TestUnknownUserHidden(t *testing.T) {
	l, db, _ := open(t)
	if err := db.Users().Create(storage.User{Username: "alice", Role: storage.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alice", "hunter2-password", "=HYPERLINK(\"x\")\r\n"} {
		e := refusal("192.0.2.1", "bad_credentials")
		e.Action, e.Actor, e.TargetType, e.TargetID = "auth.login", name, "user", name
		l.Refused(e)
	}
	entries, _, _ := l.Query(storage.Filter{Action: "auth.login"})
	actors := map[string]bool{}
	for _, e := range entries {
		actors[e.Actor] = true
		if e.TargetID != e.Actor {
			t.Errorf("target %q, actor %q", e.TargetID, e.Actor)
		}
	}
	want := []string{"alice", l.UnknownUser("hunter2-password"), l.UnknownUser("=HYPERLINK(\"x\")\r\n")}
	for _, w := range want {
		if !actors[w] {
			t.Errorf("actors %v lack %q", actors, w)
		}
	}
	recs, _ := db.Audit().Records()
	for _, r := range recs {
		if strings.Contains(string(r), "hunter2") || strings.Contains(string(r), "HYPERLINK") {
			t.Fatalf("a typed name is stored: %s", r)
		}
	}
}

// TestPruneByAgeAndCount: Prune removes the oldest by age and by count, keeps
// verifying from the signed base, and a tampered entry is still caught.
func TestPruneByAgeAndCount(t *testing.T) {
	l, db, c := open(t)
	for _, n := range []int{1000, 2000} {
		if err := db.Update(func(tx *storage.Tx) error {
			for i := range n {
				e := l.Stamp(storage.Entry{Actor: "admin", Action: "config.update", Result: "ok", Details: map[string]string{"i": fmt.Sprint(i)}})
				if _, err := db.Audit().AppendTx(tx, e); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		c.add(40 * 24 * time.Hour) // the first 1000 are 40 days older than the next 2000
	}
	c.add(-40 * 24 * time.Hour)
	last := head(t, db)
	// By age: keep 30 days.
	n, err := l.Prune(Retention{KeepDays: 30, MaxEntries: 10000})
	if err != nil || n != 1000 {
		t.Fatalf("pruned %d by age, %v; want 1000", n, err)
	}
	v, _ := l.Verify()
	if !v.OK || v.FirstSeq != last-1999 || v.Entries != 2000 || v.Base == nil || v.Base.Kind != storage.KindBase {
		t.Fatalf("verify after pruning by age: %+v", v)
	}
	// By count: keep 1500, more than one batch's worth would be 5000.
	if n, err = l.Prune(Retention{KeepDays: 30, MaxEntries: 1500}); err != nil || n != 500 {
		t.Fatalf("pruned %d by count, %v; want 500", n, err)
	}
	v, _ = l.Verify()
	if !v.OK || v.FirstSeq != last-1499 || v.Entries != 1500 || v.Checkpoint.Size != last {
		t.Fatalf("verify after pruning by count: %+v", v)
	}
	// The export starts at the base, and appends go on from the head.
	var first storage.Entry
	var base *storage.Checkpoint
	cp, err := l.ExportTo(func(b *storage.Checkpoint) error { base = b; return nil }, func(e storage.Entry) error {
		if first.Seq == 0 {
			first = e
		}
		return nil
	})
	if err != nil || base == nil || first.Seq != base.Size+1 || first.Prev != base.Head || cp.Size != last {
		t.Fatalf("export after pruning: base %+v, first %d, checkpoint %+v, %v", base, first.Seq, cp, err)
	}
	if e, err := l.Record(storage.Entry{Actor: "admin", Action: "after", Result: "ok"}); err != nil || e.Seq != last+1 {
		t.Fatalf("append after pruning: %+v %v", e, err)
	}
	if v, _ = l.Verify(); !v.OK {
		t.Fatalf("verify after appending to the pruned log: %+v", v)
	}
	// Never the newest: a retention that would take everything leaves one.
	c.add(3650 * 24 * time.Hour)
	if _, err := l.Prune(Retention{KeepDays: 1, MaxEntries: 1000}); err != nil {
		t.Fatal(err)
	}
	if v, _ = l.Verify(); !v.OK || v.Entries != 1 || v.FirstSeq != last+1 {
		t.Fatalf("verify after pruning all but the newest: %+v", v)
	}
}

// TestCheckpointPrunesPerConfig: the health loop's Checkpoint reads the config's
// retention and prunes, in batches of PruneBatch entries.
func TestCheckpointPrunesPerConfig(t *testing.T) {
	l, db, _ := open(t)
	if _, err := db.Settings().PutConfigAudited(map[string]any{"audit": Retention{KeepDays: 365, MaxEntries: 1000}},
		storage.Entry{Actor: "admin", Action: "config.update", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *storage.Tx) error {
		for i := range 12000 {
			if _, err := db.Audit().AppendTx(tx, storage.Entry{Actor: "admin", Action: "x", Result: "ok", Details: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	v, _ := l.Verify()
	if !v.OK || v.Entries != 1000 {
		t.Fatalf("after the checkpoint: %+v", v)
	}
}
