package storage_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pic-cell/cell/storage"
)

// Benchmarks of issue 2, each reporting a ratio against an anchor measured in the
// same run, side by side: the two variants alternate in rounds so that drift in the
// machine (page cache, other load) falls on both.

func benchOpen(b *testing.B) *storage.DB {
	b.Helper()
	db, err := storage.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// benchEntry is an audit entry as the API writes for a config change.
func benchEntry(i int) storage.Entry {
	return storage.Entry{
		Actor: "admin", SourceIP: "192.168.1.20", Action: "config.update", TargetType: "config", TargetID: "cell",
		Result: "ok", Details: map[string]string{"changed": "cell.name,cell.domain", "cell.name": fmt.Sprintf("home-%d", i), "cell.domain": "home.example.org"},
	}
}

// The bare log is nested like the audit log (audit/entries), so both dirty the same
// number of bucket pages per commit.
var bareParent, bareBucket = []byte("bench_bare"), []byte("entries")

// bareAppend is the same append without the chain: the next sequence number from the
// last key, the same canonical encoding, a record of the same size (64 zero bytes
// where prev and hash would be), one Put. No previous hash is read, nothing hashed.
func bareAppend(tx *bolt.Tx, e storage.Entry) error {
	bk := tx.Bucket(bareParent).Bucket(bareBucket)
	seq := uint64(1)
	if k, _ := bk.Cursor().Last(); k != nil {
		seq = binary.BigEndian.Uint64(k) + 1
	}
	e.Seq = seq
	if e.Time == "" {
		e.Time = time.Now().UTC().Format(storage.TimeFormat)
	}
	canon := e.Canonical()
	rec := make([]byte, 64, 64+len(canon))
	rec = append(rec, canon...)
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], seq)
	return bk.Put(key[:], rec)
}

// alternate runs a and b for n operations each, in rounds of chunk (which of the two
// goes first alternates too), and returns the time each took in all and the median
// over the rounds of a's time over b's: a stall of the disk that lands on one side in
// one round moves the total, not the median.
func alternate(n, chunk int, a, b func(n int)) (ta, tb time.Duration, median float64) {
	timed := func(fn func(int), c int) time.Duration {
		t0 := time.Now()
		fn(c)
		return time.Since(t0)
	}
	var ratios []float64
	for round, done := 0, 0; done < n; round, done = round+1, done+chunk {
		c := min(chunk, n-done)
		var da, db time.Duration
		if round%2 == 0 {
			da = timed(a, c)
			db = timed(b, c)
		} else {
			db = timed(b, c)
			da = timed(a, c)
		}
		ta, tb = ta+da, tb+db
		ratios = append(ratios, float64(da)/float64(db))
	}
	slices.Sort(ratios)
	return ta, tb, ratios[len(ratios)/2]
}

// parallel runs fn n times over workers goroutines.
func parallel(n, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkAuditAppend compares Audit.Append (hash chain) with bareAppend in three
// transaction patterns, the same for both sides:
//
//	batch16: bbolt's Batch (what Append uses) from 16 goroutines, as concurrent API
//	         requests append; one fsync per batch.
//	serial:  one Update, so one fsync, per append.
//	tx256:   256 appends in one Update: the CPU cost of the append itself, fsync
//	         amortised away (the chain's own cost shows most here).
//
// Target: chain/bare ≤ 1.1 (the median over rounds; the ratio of the totals is
// reported too).
func BenchmarkAuditAppend(b *testing.B) {
	for _, mode := range []struct {
		name    string
		workers int // >1: Batch from that many goroutines
		perTx   int // appends per Update when workers is 1
		chunk   int // appends per round of each side
	}{{"batch16", 16, 0, 128}, {"serial", 1, 1, 16}, {"tx256", 1, 256, 256}} {
		b.Run(mode.name, func(b *testing.B) {
			db := benchOpen(b)
			if err := db.Update(func(tx *bolt.Tx) error {
				p, err := tx.CreateBucket(bareParent)
				if err != nil {
					return err
				}
				_, err = p.CreateBucket(bareBucket)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			a := db.Audit()
			chainOne := func(tx *bolt.Tx, i int) error {
				_, err := a.AppendTx(tx, benchEntry(i))
				return err
			}
			bareOne := func(tx *bolt.Tx, i int) error { return bareAppend(tx, benchEntry(i)) }
			var fails atomic.Int64
			run := func(one func(*bolt.Tx, int) error, batched func(int) error) func(n int) {
				return func(n int) {
					var err error
					switch {
					case mode.workers > 1:
						parallel(n, mode.workers, func(i int) {
							if err := batched(i); err != nil {
								fails.Add(1)
							}
						})
						return
					default:
						for start := 0; start < n; start += mode.perTx {
							err = db.Update(func(tx *bolt.Tx) error {
								for i := start; i < min(start+mode.perTx, n); i++ {
									if err := one(tx, i); err != nil {
										return err
									}
								}
								return nil
							})
							if err != nil {
								fails.Add(1)
							}
						}
					}
				}
			}
			chain := run(chainOne, func(i int) error { _, err := a.Append(benchEntry(i)); return err })
			bare := run(bareOne, func(i int) error {
				return storage.BoltOf(db).Batch(func(tx *bolt.Tx) error { return bareOne(tx, i) })
			})
			chain(mode.chunk) // warm up both
			bare(mode.chunk)
			b.ResetTimer()
			tc, tb, median := alternate(b.N, mode.chunk, chain, bare)
			b.StopTimer()
			if fails.Load() > 0 {
				b.Fatalf("%d appends failed", fails.Load())
			}
			if v, err := a.Verify(nil); err != nil || !v.OK {
				b.Fatalf("the benchmark's chain does not verify: %+v %v", v, err)
			}
			b.ReportMetric(float64(tc.Nanoseconds())/float64(b.N), "chain-ns/op")
			b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), "bare-ns/op")
			b.ReportMetric(median, "chain/bare")
			b.ReportMetric(float64(tc)/float64(tb), "chain/bare-total")
		})
	}
}

// BenchmarkAuditVerify compares Audit.Verify over a 20,000-entry log with SHA-256 of
// the same stored bytes (every record's prev|hash|canonical, concatenated), in process
// (crypto/sha256) and, where it exists, with the sha256sum command over a file of them
// (its process start included). Reported as throughput ratios, verify/sha256: target
// ≥ 0.5.
func BenchmarkAuditVerify(b *testing.B) {
	const entries = 20000
	db := benchOpen(b)
	a := db.Audit()
	for start := 0; start < entries; start += 5000 {
		if err := db.Update(func(tx *bolt.Tx) error {
			for i := start; i < start+5000; i++ {
				if _, err := a.AppendTx(tx, benchEntry(i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	recs, err := a.Records() // key (8 bytes) | stored value
	if err != nil {
		b.Fatal(err)
	}
	var all []byte
	for _, r := range recs {
		all = append(all, r[8:]...)
	}
	file := filepath.Join(b.TempDir(), "records")
	if err := os.WriteFile(file, all, 0o600); err != nil {
		b.Fatal(err)
	}
	sha256sum, lookErr := exec.LookPath("sha256sum")

	var tVerify, tSHA, tSum time.Duration
	var sink [32]byte
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		v, err := a.Verify(nil)
		tVerify += time.Since(t0)
		if err != nil || !v.OK || v.Entries != entries {
			b.Fatalf("verify: %+v, %v", v, err)
		}
		t0 = time.Now()
		sink = sha256.Sum256(all)
		tSHA += time.Since(t0)
		if lookErr == nil {
			t0 = time.Now()
			out, err := exec.Command(sha256sum, file).Output()
			tSum += time.Since(t0)
			if err != nil || len(out) < 64 || string(out[:64]) != fmt.Sprintf("%x", sink) {
				b.Fatalf("sha256sum: %v, %q", err, out)
			}
		}
	}
	b.StopTimer()
	mb := float64(len(all)) / 1e6
	b.ReportMetric(mb*float64(b.N)/tVerify.Seconds(), "verify-MB/s")
	b.ReportMetric(mb*float64(b.N)/tSHA.Seconds(), "sha256-MB/s")
	b.ReportMetric(float64(tSHA)/float64(tVerify), "verify/sha256")
	if lookErr == nil {
		b.ReportMetric(mb*float64(b.N)/tSum.Seconds(), "sha256sum-MB/s")
		b.ReportMetric(float64(tSum)/float64(tVerify), "verify/sha256sum")
	}
}
