package storage

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyAuditBase is the signed base of a pruned log, a JSON Checkpoint of kind
// KindBase, stored in the audit bucket beside its entries and checkpoints
// buckets. It is absent until the first prune: the log then starts at 1 from a
// zero prev hash.
var keyAuditBase = []byte("base")

// AuditView reads the audit log inside one read transaction: the base, the last
// checkpoint, the head and the entries all come from the same snapshot, so an
// export or a check never sees a prune half done.
type AuditView struct{ tx *bolt.Tx }

// View runs fn in one read transaction of the audit log.
func (a Audit) View(fn func(AuditView) error) error {
	return a.db.bolt.View(func(tx *bolt.Tx) error { return fn(AuditView{tx}) })
}

// Base returns the signed base of a pruned log; found is false while nothing was
// pruned.
func (v AuditView) Base() (c Checkpoint, found bool, err error) { return baseOf(v.tx) }

func baseOf(tx *bolt.Tx) (c Checkpoint, found bool, err error) {
	raw := tx.Bucket(bucketAudit).Get(keyAuditBase)
	if raw == nil {
		return c, false, nil
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, true, fmt.Errorf("audit: base: %w", err)
	}
	return c, true, nil
}

// Base returns the signed base of a pruned log (found false: nothing pruned yet).
func (a Audit) Base() (c Checkpoint, found bool, err error) {
	err = a.View(func(v AuditView) error {
		c, found, err = v.Base()
		return err
	})
	return c, found, err
}

// LastCheckpoint returns the checkpoint of the largest size.
func (v AuditView) LastCheckpoint() (c Checkpoint, found bool, err error) {
	k, raw := v.tx.Bucket(bucketAudit).Bucket(bucketCheckpts).Cursor().Last()
	if k == nil {
		return c, false, nil
	}
	return c, true, json.Unmarshal(raw, &c)
}

// Head returns the sequence number and hash of the newest entry (0 and zeros when
// the log is empty).
func (v AuditView) Head() (uint64, string) {
	k, val := entriesBucket(v.tx).Cursor().Last()
	if k == nil || len(val) < recordHeader {
		return 0, hex.EncodeToString(make([]byte, 32))
	}
	return readU64(k), hex.EncodeToString(val[32:64])
}

// Each calls fn for every entry up to sequence number upTo, oldest first; stored
// bytes that do not decode are handed over as an Entry with only Seq set, so an
// export still shows the damage. Nothing is collected: memory stays bounded
// however long the log is.
func (v AuditView) Each(upTo uint64, fn func(Entry) error) error {
	c := entriesBucket(v.tx).Cursor()
	for k, val := c.First(); k != nil && readU64(k) <= upTo; k, val = c.Next() {
		e, err := decodeRecord(val)
		if err != nil {
			e = Entry{Seq: readU64(k)}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// Retention says which of the oldest entries Prune removes.
type Retention struct {
	// Before removes the entries whose time is before it (TimeFormat; "": no age
	// limit). Times of that layout compare as strings.
	Before string
	// MaxEntries removes the oldest beyond that many (0: no count limit).
	MaxEntries uint64
	// Batch bounds the entries one call removes, so one transaction stays short.
	Batch int
	// Sign fills a checkpoint's time, public key and signature.
	Sign func(Checkpoint) Checkpoint
}

// Prune removes the oldest entries that Retention says go, at most r.Batch, and in
// the same transaction stores the signed base of what remains (the first kept
// entry's sequence number minus one and its prev hash) and a signed checkpoint of
// the head, and deletes the checkpoints older than the base. The newest entry is
// always kept, so the chain goes on from it. It returns how many entries went.
func (a Audit) Prune(r Retention) (int, error) {
	if r.Sign == nil || r.Batch <= 0 {
		return 0, errors.New("audit: prune needs a signer and a batch size")
	}
	n := 0
	err := a.db.bolt.Update(func(tx *bolt.Tx) error {
		n = 0
		b := entriesBucket(tx)
		c := b.Cursor()
		lastK, lastV := c.Last()
		firstK, _ := c.First()
		if lastK == nil || len(lastV) < recordHeader {
			return nil
		}
		first, last := readU64(firstK), readU64(lastK)
		var excess uint64
		if count := last - first + 1; r.MaxEntries > 0 && count > r.MaxEntries {
			excess = count - r.MaxEntries
		}
		var doomed [][]byte
		var keptK, keptV []byte
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq := readU64(k)
			if seq == last || len(doomed) >= r.Batch ||
				uint64(len(doomed)) >= excess && !(r.Before != "" && entryTimeBefore(v, r.Before)) {
				keptK, keptV = k, v
				break
			}
			doomed = append(doomed, append([]byte(nil), k...))
		}
		if len(doomed) == 0 {
			return nil
		}
		if len(keptV) < recordHeader {
			return fmt.Errorf("audit: entry %d is damaged", readU64(keptK))
		}
		base := r.Sign(Checkpoint{Kind: KindBase, Size: readU64(keptK) - 1, Head: hex.EncodeToString(keptV[:32])})
		head := r.Sign(Checkpoint{Size: last, Head: hex.EncodeToString(lastV[32:64])})
		if err := deleteKeys(b, doomed); err != nil {
			return err
		}
		n = len(doomed)
		raw, err := json.Marshal(base)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketAudit).Put(keyAuditBase, raw); err != nil {
			return err
		}
		cps := tx.Bucket(bucketAudit).Bucket(bucketCheckpts)
		if raw, err = json.Marshal(head); err != nil {
			return err
		}
		if err := cps.Put(u64(head.Size), raw); err != nil {
			return err
		}
		// Checkpoints of pruned entries prove nothing any more.
		var old [][]byte
		cc := cps.Cursor()
		for k, _ := cc.First(); k != nil && readU64(k) < base.Size && len(old) < r.Batch; k, _ = cc.Next() {
			old = append(old, append([]byte(nil), k...))
		}
		return deleteKeys(cps, old)
	})
	return n, err
}

// entryTimeBefore reads the time of a stored record (the canonical encoding's
// second field) and compares it with t, both in TimeFormat. A record whose time
// cannot be read is not old.
func entryTimeBefore(rec []byte, t string) bool {
	if len(rec) < recordHeader {
		return false
	}
	canon := rec[recordHeader:]
	const key = `,"time":"`
	i := bytes.Index(canon, []byte(key))
	if i < 0 {
		return false
	}
	rest := canon[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j != len(TimeFormat) {
		return false
	}
	return string(rest[:j]) < t
}
