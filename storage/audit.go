package storage

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Entry is one record of the audit log. Details never hold a secret: the code that
// builds an entry passes only names, counts and non-secret values.
type Entry struct {
	Seq        uint64            `json:"seq"`
	Time       string            `json:"time"` // UTC, TimeFormat
	Actor      string            `json:"actor"`
	SourceIP   string            `json:"source_ip"`
	Action     string            `json:"action"`
	TargetType string            `json:"target_type"`
	TargetID   string            `json:"target_id"`
	Result     string            `json:"result"`
	Details    map[string]string `json:"details"`
	Prev       string            `json:"prev"` // hex SHA-256 of the entry before (zeros for the first)
	Hash       string            `json:"hash"` // hex SHA-256(prev bytes || canonical encoding)
}

// TimeFormat is the fixed-width time layout of audit entries, so the canonical
// encoding of a time never depends on how many trailing zeros it had.
const TimeFormat = "2006-01-02T15:04:05.000000000Z"

// canonicalEntry fixes the field order of the canonical encoding; encoding/json sorts
// the details map's keys, and a nil map is encoded as {}.
type canonicalEntry struct {
	Seq        uint64            `json:"seq"`
	Time       string            `json:"time"`
	Actor      string            `json:"actor"`
	SourceIP   string            `json:"source_ip"`
	Action     string            `json:"action"`
	TargetType string            `json:"target_type"`
	TargetID   string            `json:"target_id"`
	Result     string            `json:"result"`
	Details    map[string]string `json:"details"`
}

// Canonical is the byte encoding an entry's hash covers: its fields but prev and hash,
// as JSON in a fixed order.
func (e Entry) Canonical() []byte {
	d := e.Details
	if d == nil {
		d = map[string]string{}
	}
	b, _ := json.Marshal(canonicalEntry{e.Seq, e.Time, e.Actor, e.SourceIP, e.Action, e.TargetType, e.TargetID, e.Result, d})
	return b
}

// ChainHash is the hash of an entry given the previous entry's hash.
func ChainHash(prev [32]byte, canonical []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canonical)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Stored record layout: prev (32 bytes) | hash (32 bytes) | canonical JSON. Verifying
// the chain then costs one SHA-256 over the bytes and no JSON decoding.
const recordHeader = 64

// Checkpoint is a signed statement of the log's size and head hash, so that dropping
// the newest entries is caught against the last checkpoint. Size is the sequence
// number of the newest entry, so it stays valid once the oldest are pruned.
//
// A checkpoint of kind KindBase is the base of a pruned log: every entry up to Size
// was pruned, and the first kept entry (Size+1) has Head as its prev hash. Its
// signature covers another message than a head checkpoint's, so neither can stand
// in for the other.
type Checkpoint struct {
	Kind      string `json:"kind,omitempty"` // "" (a head checkpoint) or KindBase
	Size      uint64 `json:"size"`
	Head      string `json:"head"`
	Time      string `json:"time"`
	PublicKey string `json:"public_key"` // hex ed25519
	Signature string `json:"signature"`  // hex ed25519 over SignedMessage
}

// KindBase marks the signed base of a pruned log.
const KindBase = "base"

// SignedMessage is what a checkpoint's signature covers.
func (c Checkpoint) SignedMessage() []byte {
	prefix := "pic-audit-checkpoint v1\n"
	if c.Kind != "" {
		prefix = "pic-audit-" + c.Kind + " v1\n"
	}
	return []byte(prefix + strconv.FormatUint(c.Size, 10) + "\n" + c.Head + "\n" + c.Time + "\n")
}

// VerifySignature checks the checkpoint against pub, the key the caller trusts.
func (c Checkpoint) VerifySignature(pub ed25519.PublicKey) bool {
	sig, err := hex.DecodeString(c.Signature)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return false
	}
	return ed25519.Verify(pub, c.SignedMessage(), sig)
}

// Audit is the typed store of the hash-chained audit log.
type Audit struct{ db *DB }

// Audit returns the audit store.
func (db *DB) Audit() Audit { return Audit{db} }

// Append assigns the next sequence number and the chain hash to e and stores it.
// Concurrent appends are coalesced into shared transactions (bbolt's Batch), each
// still durable when Append returns.
func (a Audit) Append(e Entry) (Entry, error) {
	var out Entry
	err := a.db.bolt.Batch(func(tx *bolt.Tx) error {
		var err error
		out, err = appendEntry(tx, e)
		return err
	})
	return out, err
}

// AppendTx appends inside a caller's transaction, so a change and its audit entry
// commit together.
func (a Audit) AppendTx(tx *bolt.Tx, e Entry) (Entry, error) { return appendEntry(tx, e) }

func entriesBucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketAudit).Bucket(bucketEntries)
}

func appendEntry(tx *bolt.Tx, e Entry) (Entry, error) {
	b := entriesBucket(tx)
	var prev [32]byte
	k, v := b.Cursor().Last()
	if k != nil {
		if len(v) < recordHeader {
			return Entry{}, fmt.Errorf("audit: entry %d is damaged", readU64(k))
		}
		copy(prev[:], v[32:64])
		e.Seq = readU64(k) + 1
	} else {
		e.Seq = 1
	}
	if e.Time == "" {
		e.Time = time.Now().UTC().Format(TimeFormat)
	}
	e = e.Clean()
	canon := e.Canonical()
	sum := ChainHash(prev, canon)
	rec := make([]byte, 0, recordHeader+len(canon))
	rec = append(rec, prev[:]...)
	rec = append(rec, sum[:]...)
	rec = append(rec, canon...)
	if err := b.Put(u64(e.Seq), rec); err != nil {
		return Entry{}, err
	}
	e.Prev = hex.EncodeToString(prev[:])
	e.Hash = hex.EncodeToString(sum[:])
	return e, nil
}

// decodeRecord turns a stored record back into an Entry.
func decodeRecord(v []byte) (Entry, error) {
	if len(v) < recordHeader {
		return Entry{}, errors.New("record too short")
	}
	var c canonicalEntry
	if err := json.Unmarshal(v[recordHeader:], &c); err != nil {
		return Entry{}, err
	}
	return Entry{
		Seq: c.Seq, Time: c.Time, Actor: c.Actor, SourceIP: c.SourceIP, Action: c.Action,
		TargetType: c.TargetType, TargetID: c.TargetID, Result: c.Result, Details: c.Details,
		Prev: hex.EncodeToString(v[:32]), Hash: hex.EncodeToString(v[32:64]),
	}, nil
}

// Filter selects entries; zero fields match everything.
type Filter struct {
	Actor, Action, TargetType, TargetID, Result string
	Since, Until                                time.Time // inclusive bounds
	Limit, Offset                               int
}

func (f Filter) match(e Entry) bool {
	if f.Actor != "" && e.Actor != f.Actor || f.Action != "" && e.Action != f.Action ||
		f.TargetType != "" && e.TargetType != f.TargetType || f.TargetID != "" && e.TargetID != f.TargetID ||
		f.Result != "" && e.Result != f.Result {
		return false
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		t, err := time.Parse(TimeFormat, e.Time)
		if err != nil || !f.Since.IsZero() && t.Before(f.Since) || !f.Until.IsZero() && t.After(f.Until) {
			return false
		}
	}
	return true
}

// Query returns the matching entries, newest first, after skipping Offset and up to
// Limit (0: all), and the number that matched in all.
func (a Audit) Query(f Filter) ([]Entry, int, error) {
	var out []Entry
	total := 0
	err := a.db.bolt.View(func(tx *bolt.Tx) error {
		c := entriesBucket(tx).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			e, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("audit: entry %d: %w", readU64(k), err)
			}
			if !f.match(e) {
				continue
			}
			total++
			if total > f.Offset && (f.Limit <= 0 || len(out) < f.Limit) {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, total, err
}

// Each calls fn for every entry in sequence order; stored bytes that do not decode
// are handed over as an Entry with only Seq set, so an export still shows the damage.
func (a Audit) Each(fn func(Entry) error) error {
	return a.db.bolt.View(func(tx *bolt.Tx) error {
		return entriesBucket(tx).ForEach(func(k, v []byte) error {
			e, err := decodeRecord(v)
			if err != nil {
				e = Entry{Seq: readU64(k)}
			}
			return fn(e)
		})
	})
}

// Records returns the raw stored records in key order (for verification and tests).
func (a Audit) Records() ([][]byte, error) {
	var out [][]byte
	err := a.db.bolt.View(func(tx *bolt.Tx) error {
		return entriesBucket(tx).ForEach(func(k, v []byte) error {
			out = append(out, append(append(make([]byte, 0, 8+len(v)), k...), v...))
			return nil
		})
	})
	return out, err
}

// Head returns the number of entries and the hash of the newest.
func (a Audit) Head() (uint64, string, error) {
	var n uint64
	head := hex.EncodeToString(make([]byte, 32))
	err := a.db.bolt.View(func(tx *bolt.Tx) error {
		k, v := entriesBucket(tx).Cursor().Last()
		if k != nil && len(v) >= recordHeader {
			n = readU64(k)
			head = hex.EncodeToString(v[32:64])
		}
		return nil
	})
	return n, head, err
}

// PutCheckpoint stores a signed checkpoint.
func (a Audit) PutCheckpoint(c Checkpoint) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return a.db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAudit).Bucket(bucketCheckpts).Put(u64(c.Size), raw)
	})
}

// LastCheckpoint returns the checkpoint of the largest size; found is false when none
// has been signed yet.
func (a Audit) LastCheckpoint() (c Checkpoint, found bool, err error) {
	err = a.db.bolt.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketAudit).Bucket(bucketCheckpts).Cursor().Last()
		if k == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &c)
	})
	return c, found, err
}

// Verification is the outcome of checking the chain.
type Verification struct {
	OK bool `json:"ok"`
	// Entries is how many entries were checked: FirstSeq to the newest.
	Entries     uint64  `json:"entries"`
	FirstBadSeq *uint64 `json:"first_bad_seq"`
	Head        string  `json:"head"`
	// FirstSeq is where the checked log starts: 1, or Base.Size+1 once the oldest
	// entries were pruned.
	FirstSeq   uint64      `json:"first_seq"`
	Checkpoint *Checkpoint `json:"checkpoint"`
	// Base is the signed base of a pruned log (nil: nothing was pruned): the
	// entries before FirstSeq are gone, and the first kept entry's prev hash is
	// Base.Head.
	Base *Checkpoint `json:"base,omitempty"`
	// CheckpointOK is false when there is no checkpoint or its signature (or the
	// base's) is wrong; FirstBadSeq is then null, as no entry is at fault.
	CheckpointOK bool   `json:"checkpoint_ok"`
	Reason       string `json:"reason,omitempty"`
}

// Verifier checks a chain fed one entry at a time, in stored order. It is shared by
// the cell's own check (raw records) and the offline check of an export (entries).
type Verifier struct {
	cp, base *Checkpoint
	first    uint64 // the sequence number the chain starts at
	next     uint64
	head     [32]byte
	bad      *uint64
	reason   string
	count    uint64
	atCheck  string // the head hash after cp.Size entries
	cpBad    bool   // the checkpoint is missing or its signature is wrong
	baseBad  string // why the base itself is unusable
}

// NewVerifier starts a check at sequence 1 against the last checkpoint (nil: none).
func NewVerifier(cp *Checkpoint) *Verifier { return NewVerifierFrom(nil, cp) }

// NewVerifierFrom starts a check of a pruned log at its signed base (nil: the log
// starts at sequence 1): the first entry must be Base.Size+1 with Base.Head as its
// prev hash.
func NewVerifierFrom(base, cp *Checkpoint) *Verifier {
	v := &Verifier{cp: cp, base: base, first: 1, next: 1}
	if base == nil {
		return v
	}
	v.first, v.next = base.Size+1, base.Size+1
	h, err := hex.DecodeString(base.Head)
	switch {
	case base.Kind != KindBase:
		v.baseBad = "the base is not a signed base of a pruned log"
	case err != nil || len(h) != 32:
		v.baseBad = "the base's head is not a hash"
	default:
		copy(v.head[:], h)
		if cp != nil && cp.Size == base.Size {
			v.atCheck = base.Head
		}
	}
	return v
}

// advance records a verified entry.
func (v *Verifier) advance(sum [32]byte) {
	v.head = sum
	if v.cp != nil && v.next-1 == v.cp.Size {
		v.atCheck = hex.EncodeToString(sum[:])
	}
}

// failCheckpoint records a fault of the checkpoint itself, which names no entry.
func (v *Verifier) failCheckpoint(why string) {
	if v.bad == nil && v.reason == "" {
		v.reason = why
		v.cpBad = true
	}
}

func (v *Verifier) fail(seq uint64, why string) {
	if v.bad == nil {
		v.bad = &seq
		v.reason = why
	}
}

// AddRecord checks one stored record (key: the 8-byte sequence; value: prev, hash,
// canonical encoding).
func (v *Verifier) AddRecord(key, val []byte) {
	v.count++
	if v.bad != nil {
		return
	}
	want := v.next
	v.next++
	if len(key) != 8 || readU64(key) != want {
		v.fail(want, fmt.Sprintf("expected entry %d, found key %d (deleted, reordered or duplicated)", want, readU64(key)))
		return
	}
	if len(val) < recordHeader {
		v.fail(want, "record too short")
		return
	}
	if !bytes.Equal(val[:32], v.head[:]) {
		v.fail(want, v.prevMismatch(want))
		return
	}
	canon := val[recordHeader:]
	if !canonicalSeqIs(canon, want) {
		v.fail(want, "sequence number inside the entry does not match its place")
		return
	}
	sum := ChainHash(v.head, canon)
	if !bytes.Equal(sum[:], val[32:64]) {
		v.fail(want, "hash does not match the entry's contents")
		return
	}
	v.advance(sum)
}

func (v *Verifier) prevMismatch(seq uint64) string {
	if seq == v.first && v.base != nil {
		return "prev hash does not match the signed base of the pruned log"
	}
	return "prev hash does not match the entry before"
}

// AddEntry checks one entry as exported (its canonical encoding is rebuilt from the
// fields).
func (v *Verifier) AddEntry(e Entry) {
	v.count++
	if v.bad != nil {
		return
	}
	want := v.next
	v.next++
	if e.Seq != want {
		v.fail(want, fmt.Sprintf("expected entry %d, found %d (deleted, reordered or duplicated)", want, e.Seq))
		return
	}
	if e.Prev != hex.EncodeToString(v.head[:]) {
		v.fail(want, v.prevMismatch(want))
		return
	}
	sum := ChainHash(v.head, e.Canonical())
	if e.Hash != hex.EncodeToString(sum[:]) {
		v.fail(want, "hash does not match the entry's contents")
		return
	}
	v.advance(sum)
}

// canonicalSeqIs checks the `{"seq":N,` prefix without decoding the whole entry.
func canonicalSeqIs(canon []byte, seq uint64) bool {
	const p = `{"seq":`
	if !bytes.HasPrefix(canon, []byte(p)) {
		return false
	}
	rest := canon[len(p):]
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return err == nil && n == seq
}

// Result finishes the check: the base's signature (a pruned log), the chain, then
// the checkpoint's signature against the key the caller trusts (nil: not checked),
// its size and its head.
func (v *Verifier) Result(trusted ed25519.PublicKey) Verification {
	cp, base := v.cp, v.base
	res := Verification{Entries: v.count, Head: hex.EncodeToString(v.head[:]), Checkpoint: cp, Base: base, FirstSeq: v.first}
	last := v.first - 1 + v.count // the sequence number of the newest entry seen
	if base != nil {
		switch {
		case v.baseBad != "":
			// The chain cannot be checked from a base that is not one.
			v.bad, v.reason = nil, ""
			v.failCheckpoint(v.baseBad)
		case trusted != nil && !base.VerifySignature(trusted):
			v.failCheckpoint("the base of the pruned log is not signed by the trusted key")
		case v.bad == nil && v.count == 0:
			v.fail(v.first, fmt.Sprintf("the log was pruned before entry %d but has no entry from there on", v.first))
		}
	}
	if v.bad == nil && !v.cpBad && cp != nil {
		switch {
		case cp.Kind != "":
			v.failCheckpoint("the closing checkpoint is a " + cp.Kind + ", not a checkpoint of the log's head")
		case trusted != nil && !cp.VerifySignature(trusted):
			v.failCheckpoint("the checkpoint's signature does not verify with the trusted key")
		case last < cp.Size:
			has := fmt.Sprintf("has %d entries", last)
			if v.first > 1 {
				has = fmt.Sprintf("ends at entry %d", last)
			}
			v.fail(last+1, fmt.Sprintf("the log %s but the signed checkpoint says %d: entries were dropped", has, cp.Size))
		case cp.Size+1 < v.first:
			v.failCheckpoint(fmt.Sprintf("the checkpoint (size %d) is older than the pruned log's base (entries from %d): it proves nothing about the newest entries", cp.Size, v.first))
		case cp.Size > 0 && v.atCheck != cp.Head:
			v.fail(cp.Size, "the entry at the checkpoint does not have the signed head hash")
		}
	}
	if v.bad == nil && cp == nil && v.count > 0 && trusted != nil {
		v.failCheckpoint("there is no signed checkpoint, so dropped newest entries could not be noticed")
	}
	res.FirstBadSeq, res.Reason = v.bad, v.reason
	res.OK = v.bad == nil && !v.cpBad
	res.CheckpointOK = cp != nil && !v.cpBad
	return res
}

// Verify checks the whole stored chain from its base (a pruned log) and the last
// checkpoint, signed by trusted, all read in one transaction.
func (a Audit) Verify(trusted ed25519.PublicKey) (Verification, error) {
	var res Verification
	err := a.View(func(av AuditView) error {
		base, hasBase, err := av.Base()
		if err != nil {
			return err
		}
		cp, found, err := av.LastCheckpoint()
		if err != nil {
			return err
		}
		var bp, cpp *Checkpoint
		if hasBase {
			bp = &base
		}
		if found {
			cpp = &cp
		}
		v := NewVerifierFrom(bp, cpp)
		entriesBucket(av.tx).ForEach(func(k, val []byte) error {
			v.AddRecord(k, val)
			return nil
		})
		res = v.Result(trusted)
		return nil
	})
	return res, err
}
