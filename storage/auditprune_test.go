package storage

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func signWith(priv ed25519.PrivateKey) func(Checkpoint) Checkpoint {
	return func(c Checkpoint) Checkpoint {
		c.Time = "t"
		c.PublicKey = hex.EncodeToString(priv.Public().(ed25519.PublicKey))
		c.Signature = hex.EncodeToString(ed25519.Sign(priv, c.SignedMessage()))
		return c
	}
}

// TestAuditPruneKeepsTheChainVerifiable: a prune removes the oldest entries (by
// time, by count, in batches, never the newest), stores the signed base and a head
// checkpoint with them, drops the checkpoints it made useless, and the rest
// verifies from the base; forging or dropping the base, a head checkpoint passed
// off as a base, and the first kept entry deleted are each caught.
func TestAuditPruneKeepsTheChainVerifiable(t *testing.T) {
	db := openTest(t)
	a := db.Audit()
	pub, priv := signer(t)
	fillAudit(t, db, 100) // times 0..99 s after the epoch
	checkpoint(t, a, priv)
	fillAudit(t, db, 100) // times again 0..99: the chain is what counts, not the clock
	sign := signWith(priv)
	before := time.Unix(30, 0).UTC().Format(TimeFormat)

	n, err := a.Prune(Retention{Before: before, Batch: 1000, Sign: sign})
	if err != nil || n != 30 {
		t.Fatalf("pruned %d by age, %v; want 30", n, err)
	}
	v, err := a.Verify(pub)
	if err != nil || !v.OK || v.FirstSeq != 31 || v.Entries != 170 || v.Base == nil || v.Base.Size != 30 || v.Checkpoint.Size != 200 {
		t.Fatalf("verify after pruning: %+v %v", v, err)
	}
	n, _ = a.Prune(Retention{MaxEntries: 50, Batch: 40, Sign: sign})
	if n != 40 {
		t.Fatalf("a batch of 40 pruned %d", n)
	}
	for n == 40 {
		n, _ = a.Prune(Retention{MaxEntries: 50, Batch: 40, Sign: sign})
	}
	v, _ = a.Verify(pub)
	if !v.OK || v.FirstSeq != 151 || v.Entries != 50 {
		t.Fatalf("verify after pruning to 50: %+v", v)
	}
	// The checkpoint at 100 was pruned with its entries.
	db.bolt.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketAudit).Bucket(bucketCheckpts).Cursor().First()
		if readU64(k) < 150 {
			t.Errorf("checkpoint %d of pruned entries kept", readU64(k))
		}
		return nil
	})
	// Never the newest.
	a.Prune(Retention{Before: "9999", Batch: 1000, Sign: sign})
	if v, _ = a.Verify(pub); !v.OK || v.Entries != 1 || v.FirstSeq != 200 {
		t.Fatalf("verify after pruning everything old: %+v", v)
	}
	fillAudit(t, db, 10)
	checkpoint(t, a, priv)
	if v, _ = a.Verify(pub); !v.OK || v.Entries != 11 {
		t.Fatalf("verify after appending: %+v", v)
	}

	putBase := func(c Checkpoint) {
		raw, _ := json.Marshal(c)
		db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketAudit).Put(keyAuditBase, raw) })
	}
	good, _, _ := a.Base()
	// A base signed by another key.
	_, otherPriv := signer(t)
	putBase(signWith(otherPriv)(Checkpoint{Kind: KindBase, Size: good.Size, Head: good.Head}))
	if v, _ = a.Verify(pub); v.OK || v.CheckpointOK || !strings.Contains(v.Reason, "base") {
		t.Fatalf("a base signed by another key: %+v", v)
	}
	// A head checkpoint passed off as the base (same size and head, signed as a checkpoint).
	fake := sign(Checkpoint{Size: good.Size, Head: good.Head})
	fake.Kind = KindBase
	putBase(fake)
	if v, _ = a.Verify(pub); v.OK {
		t.Fatalf("a head checkpoint relabelled as the base verified: %+v", v)
	}
	// A base that claims more was pruned than was (hiding nothing, but lying).
	putBase(sign(Checkpoint{Kind: KindBase, Size: good.Size + 1, Head: good.Head}))
	if v, _ = a.Verify(pub); v.OK || v.FirstBadSeq == nil || *v.FirstBadSeq != good.Size+2 {
		t.Fatalf("a base one entry too far: %+v", v)
	}
	// No base at all: the log seems to start at 1, and does not.
	db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketAudit).Delete(keyAuditBase) })
	if v, _ = a.Verify(pub); v.OK || v.FirstBadSeq == nil || *v.FirstBadSeq != 1 {
		t.Fatalf("the base removed: %+v", v)
	}
	putBase(good)
	if v, _ = a.Verify(pub); !v.OK {
		t.Fatalf("the good base back: %+v", v)
	}
	// The first kept entry deleted: caught at its place.
	db.bolt.Update(func(tx *bolt.Tx) error { return entriesBucket(tx).Delete(u64(good.Size + 1)) })
	if v, _ = a.Verify(pub); v.OK || v.FirstBadSeq == nil || *v.FirstBadSeq != good.Size+1 {
		t.Fatalf("the first kept entry deleted: %+v", v)
	}
}

// TestAuditBaseCannotCloseAnExport: an export's closing checkpoint must be a head
// checkpoint; the base (signed too) cannot stand in for it to hide newer entries.
func TestAuditBaseCannotCloseAnExport(t *testing.T) {
	pub, priv := signer(t)
	var entries []Entry
	head := [32]byte{}
	for i := uint64(1); i <= 5; i++ {
		e := Entry{Seq: i, Time: "t", Actor: "a", Prev: hex.EncodeToString(head[:])}
		head = ChainHash(head, e.Canonical())
		e.Hash = hex.EncodeToString(head[:])
		entries = append(entries, e)
	}
	base := signWith(priv)(Checkpoint{Kind: KindBase, Size: 3, Head: entries[2].Hash})
	v := NewVerifier(&base)
	for _, e := range entries[:3] {
		v.AddEntry(e)
	}
	if r := v.Result(pub); r.OK {
		t.Fatalf("a base closed an export: %+v", r)
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"admin":                  "admin",
		"line\nbreak\r":          `line\x0abreak\x0d`,
		"a\x00b\x1b[31m":         `a\x00b\x1b[31m`,
		"rtl\u202eexe":           `rtl\u202eexe`,
		"bad\xffutf8":            "bad\uFFFDutf8",
		"ünïcödé ok":             "ünïcödé ok",
		strings.Repeat("x", 200): strings.Repeat("x", MaxTextLen-3) + "…",
	} {
		got := CleanText(in, MaxTextLen)
		if got != want {
			t.Errorf("CleanText(%q) = %q, want %q", in, got, want)
		}
		if CleanText(got, MaxTextLen) != got {
			t.Errorf("CleanText is not idempotent on %q", got)
		}
	}
	long := CleanText(strings.Repeat("ü", 2048), MaxTextLen)
	if len(long) > MaxTextLen || !strings.HasSuffix(long, "…") {
		t.Errorf("long text cleaned to %d bytes: %q", len(long), long)
	}
	e := Entry{Actor: "x\ny", Details: map[string]string{"k\n": strings.Repeat("v", 5000)}}.Clean()
	if e.Actor != `x\x0ay` || len(e.Details[`k\x0a`]) > MaxDetailLen {
		t.Errorf("Clean = %+v", e)
	}
}

func TestCSVNeutral(t *testing.T) {
	for in, want := range map[string]string{
		"=1+1": "'=1+1", "+1": "'+1", "-1": "'-1", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\rx": "'\rx",
		"'x": "''x", "admin": "admin", "": "", "a=b": "a=b",
	} {
		if got := CSVNeutral(in); got != want {
			t.Errorf("CSVNeutral(%q) = %q, want %q", in, got, want)
		}
		if CSVUnneutral(CSVNeutral(in)) != in {
			t.Errorf("CSVUnneutral does not undo CSVNeutral(%q)", in)
		}
	}
}
