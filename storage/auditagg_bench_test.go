package storage_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pic-cell/cell/cell/audit"
	"github.com/pic-cell/cell/storage"
)

// Benchmark of issue 10, in the style of issue 2's: the ratio against an anchor
// measured in the same run, the two sides alternating in rounds.

// todayAppend is Audit.Append's transaction body as it was before issue 10 (no
// cleaning of the entry's text, no counting of refusals), copied here as the
// anchor: the next sequence number and the previous hash from the last record,
// the canonical encoding, SHA-256 over both, one Put. Its records are the same as
// the new code's for clean text, so both sides extend one chain.
func todayAppend(tx *bolt.Tx, e storage.Entry) error {
	b := tx.Bucket([]byte("audit")).Bucket([]byte("entries"))
	var prev [32]byte
	k, v := b.Cursor().Last()
	if k != nil {
		if len(v) < 64 {
			return fmt.Errorf("audit: entry %d is damaged", binary.BigEndian.Uint64(k))
		}
		copy(prev[:], v[32:64])
		e.Seq = binary.BigEndian.Uint64(k) + 1
	} else {
		e.Seq = 1
	}
	if e.Time == "" {
		e.Time = time.Now().UTC().Format(storage.TimeFormat)
	}
	canon := e.Canonical()
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canon)
	var sum [32]byte
	h.Sum(sum[:0])
	rec := make([]byte, 0, 64+len(canon))
	rec = append(rec, prev[:]...)
	rec = append(rec, sum[:]...)
	rec = append(rec, canon...)
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], e.Seq)
	if err := b.Put(key[:], rec); err != nil {
		return err
	}
	e.Prev, e.Hash = hex.EncodeToString(prev[:]), hex.EncodeToString(sum[:])
	return nil
}

// benchRefusals are the anonymous refusals of a flood: 16 sources, and every
// fourth a login with a name that is no account (looked up and hashed when its
// window is written).
var benchRefusals = func() []storage.Entry {
	out := make([]storage.Entry, 64)
	for i := range out {
		e := storage.Entry{Actor: "anonymous", SourceIP: fmt.Sprintf("198.51.100.%d", i%16), Action: "POST /api/peers", TargetType: "peer", Result: "not_logged_in"}
		if i%4 == 0 {
			e.Action, e.TargetType, e.Result = "auth.login", "user", "bad_credentials"
			e.Actor, e.TargetID = fmt.Sprintf("guess-%d", i), fmt.Sprintf("guess-%d", i)
		}
		out[i] = e
	}
	return out
}()

func benchRefusal(i int) storage.Entry { return benchRefusals[i%len(benchRefusals)] }

// BenchmarkAuditAppendAggregated compares the append of a change as the cell
// makes it now, with aggregation on (audit.Log: the entry stamped, its text
// cleaned, the chain extended, and beside each change one anonymous refusal
// counted through Log.Refused), with today's plain append (todayAppend) of the
// same change, in BenchmarkAuditAppend's transaction patterns:
//
//	batch16: Log.Record (bbolt's Batch) from 16 goroutines against Batch of todayAppend.
//	serial:  one Update per change (a capability's Within) against one Update of todayAppend.
//	tx256:   256 changes in one Update: the CPU cost of the append itself.
//
// Target: agg/plain ≤ 1.1 (the median over rounds; the ratio of the totals is
// reported too). refused-ns/op is what counting one refusal costs alone, where
// today each was an append of its own.
func BenchmarkAuditAppendAggregated(b *testing.B) {
	for _, mode := range []struct {
		name    string
		workers int
		perTx   int
		chunk   int
	}{{"batch16", 16, 0, 128}, {"serial", 1, 1, 16}, {"tx256", 1, 256, 256}} {
		b.Run(mode.name, func(b *testing.B) {
			db := benchOpen(b)
			l, err := audit.Open(db, slog.New(slog.DiscardHandler), time.Now, rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			a := db.Audit()
			var fails atomic.Int64
			var refusal atomic.Int64
			agg := func(n int) {
				switch {
				case mode.workers > 1:
					parallel(n, mode.workers, func(i int) {
						if _, err := l.Record(benchEntry(i)); err != nil {
							fails.Add(1)
						}
						if err := l.Refused(benchRefusal(int(refusal.Add(1)))); err != nil {
							fails.Add(1)
						}
					})
				default:
					for start := 0; start < n; start += mode.perTx {
						end := min(start+mode.perTx, n)
						if err := db.Update(func(tx *bolt.Tx) error {
							for i := start; i < end; i++ {
								if _, err := a.AppendTx(tx, l.Stamp(benchEntry(i))); err != nil {
									return err
								}
							}
							return nil
						}); err != nil {
							fails.Add(1)
						}
						for i := start; i < end; i++ {
							if err := l.Refused(benchRefusal(int(refusal.Add(1)))); err != nil {
								fails.Add(1)
							}
						}
					}
				}
			}
			plain := func(n int) {
				switch {
				case mode.workers > 1:
					parallel(n, mode.workers, func(i int) {
						if err := storage.BoltOf(db).Batch(func(tx *bolt.Tx) error { return todayAppend(tx, benchEntry(i)) }); err != nil {
							fails.Add(1)
						}
					})
				default:
					for start := 0; start < n; start += mode.perTx {
						if err := db.Update(func(tx *bolt.Tx) error {
							for i := start; i < min(start+mode.perTx, n); i++ {
								if err := todayAppend(tx, benchEntry(i)); err != nil {
									return err
								}
							}
							return nil
						}); err != nil {
							fails.Add(1)
						}
					}
				}
			}
			agg(mode.chunk) // warm up both
			plain(mode.chunk)
			b.ResetTimer()
			ta, tp, median := alternate(b.N, mode.chunk, agg, plain)
			b.StopTimer()
			// Counting alone, for scale.
			const refusals = 100000
			t0 := time.Now()
			for i := range refusals {
				l.Refused(benchRefusal(i))
			}
			tr := time.Since(t0)
			if fails.Load() > 0 {
				b.Fatalf("%d appends failed", fails.Load())
			}
			if err := l.Flush(); err != nil {
				b.Fatal(err)
			}
			if v, err := a.Verify(nil); err != nil || !v.OK {
				b.Fatalf("the benchmark's chain does not verify: %+v %v", v, err)
			}
			b.ReportMetric(float64(ta.Nanoseconds())/float64(b.N), "agg-ns/op")
			b.ReportMetric(float64(tp.Nanoseconds())/float64(b.N), "plain-ns/op")
			b.ReportMetric(median, "agg/plain")
			b.ReportMetric(float64(ta)/float64(tp), "agg/plain-total")
			b.ReportMetric(float64(tr.Nanoseconds())/refusals, "refused-ns/op")
		})
	}
}
