// Package audit owns the cell's tamper-evident log as a capability: appending
// entries that no change stored them already, the signed checkpoints (the key
// lives in the vault), queries, verification and export.
//
// Capabilities write the audit entry of a change themselves, in the
// transaction that stores the change (storage.Audit.AppendTx through a
// storage.Within), so a crash keeps both or neither; the HTTP layer appends
// only refusals and changes that store nothing of their own (login, log
// levels). Background actors (update rollback, later exit failover and DDNS)
// append through Record.
//
// Bounded under abuse (issue 10):
//
//   - Refusals of requests without a session are counted, not appended one by
//     one (Refused, refusals.go): one entry per source, actor, action, target,
//     result and minute (Window), the count and the first and last time in its
//     details, written when the window closes, at every Checkpoint and before a
//     query or export reads the log; a crash loses at most the open window's
//     counts. At most MaxRefusalKeys+FoldedKeys+1 entries per window, however
//     many sources or names a flood uses. Every change, and every refusal of a
//     logged-in request, still has its own entry at once.
//   - A typed user name that names no account (a refused login's actor and
//     target) is logged as UnknownUser: "unknown user" and 8 hex digits of an
//     HMAC keyed from the checkpoint key, never the text. storage cleans every
//     entry's text (control characters escaped, bounded) before hashing it.
//   - Retention (retention.go): the config's "audit" section (keep_days,
//     max_entries; 365 and 200,000 by default). Checkpoint prunes the oldest
//     beyond either in batches of PruneBatch, each transaction storing the
//     signed base of what remains, so Verify and exports still prove the rest
//     and say where it starts.
//   - ExportTo streams from one read transaction: the base, every entry, and a
//     checkpoint signed for exactly those, in bounded memory.
package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pic-cell/cell/storage"
)

// KeyName is the vault entry of the checkpoint key.
const KeyName = "audit/checkpoint-key"

// Log is the audit capability.
type Log struct {
	db     *storage.DB
	log    *slog.Logger
	now    func() time.Time
	signer ed25519.PrivateKey
	// nameKey keys the short hash that stands for an unknown user name.
	nameKey []byte
	// refusals counts the refusals of anonymous requests of the open window.
	refusals refusals
	// pruneMu lets one prune run at a time.
	pruneMu sync.Mutex
}

// Open loads (creating once) the checkpoint key and signs a first checkpoint: a
// log without one is reported as unverifiable.
func Open(db *storage.DB, log *slog.Logger, now func() time.Time, rand io.Reader) (*Log, error) {
	l := &Log{db: db, log: log, now: now}
	seed, err := db.Vault.Get(KeyName)
	if errors.Is(err, storage.ErrNotFound) {
		seed = make([]byte, ed25519.SeedSize)
		if _, err := io.ReadFull(rand, seed); err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
		if err := db.Vault.Put(KeyName, seed); err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("audit key in the vault is damaged")
	}
	l.signer = ed25519.NewKeyFromSeed(seed)
	k := sha256.Sum256(append([]byte("pic-audit unknown user v1\x00"), seed...))
	l.nameKey = k[:]
	if _, err := l.Checkpoint(); err != nil {
		return nil, fmt.Errorf("audit checkpoint: %w", err)
	}
	return l, nil
}

// Stamp fills the entry's time if the caller left it empty.
func (l *Log) Stamp(e storage.Entry) storage.Entry {
	if e.Time == "" {
		e.Time = l.now().UTC().Format(storage.TimeFormat)
	}
	return e
}

// Record appends an entry on its own. Callers pass names and non-secret values
// only; details are never filled from request bodies wholesale.
func (l *Log) Record(e storage.Entry) (storage.Entry, error) {
	out, err := l.db.Audit().Append(l.Stamp(e))
	if err != nil {
		l.log.Error("append failed", "action", e.Action, "err", err)
		return out, err
	}
	l.log.Debug("appended", "seq", out.Seq, "action", e.Action, "result", e.Result)
	return out, nil
}

// PublicKey is the key that signs checkpoints, for offline verification.
func (l *Log) PublicKey() ed25519.PublicKey { return l.signer.Public().(ed25519.PublicKey) }

// sign fills a checkpoint's time, key and signature.
func (l *Log) sign(c storage.Checkpoint) storage.Checkpoint {
	c.Time = l.now().UTC().Format(storage.TimeFormat)
	c.PublicKey = hex.EncodeToString(l.PublicKey())
	c.Signature = hex.EncodeToString(ed25519.Sign(l.signer, c.SignedMessage()))
	return c
}

// Checkpoint writes the refusals counted so far (the open window too), prunes
// what the retention of the config says goes (in bounded batches), then signs the
// log's current size and head when it grew since the last checkpoint, and returns
// the newest checkpoint. The health loop calls it at every run, and the cell at
// Close.
func (l *Log) Checkpoint() (storage.Checkpoint, error) {
	if err := l.Flush(); err != nil {
		l.log.Error("writing the counted refusals failed", "err", err)
	}
	if _, err := l.Prune(l.Retention()); err != nil {
		l.log.Error("pruning failed", "err", err)
	}
	a := l.db.Audit()
	last, found, err := a.LastCheckpoint()
	if err != nil {
		return last, err
	}
	n, head, err := a.Head()
	if err != nil {
		return last, err
	}
	if found && last.Size == n {
		return last, nil
	}
	cp := l.sign(storage.Checkpoint{Size: n, Head: head})
	return cp, a.PutCheckpoint(cp)
}

// Query is GET /api/audit. The refusals counted so far are written first, so the
// answer has them.
func (l *Log) Query(f storage.Filter) ([]storage.Entry, int, error) {
	if err := l.Flush(); err != nil {
		l.log.Error("writing the counted refusals failed", "err", err)
	}
	return l.db.Audit().Query(f)
}

// Verify checks the chain from its base (a pruned log) against the last
// checkpoint, signed by this cell's key.
func (l *Log) Verify() (storage.Verification, error) { return l.db.Audit().Verify(l.PublicKey()) }

// Export hands every entry to fn in order and returns the checkpoint, signed for
// this export, that the export ends with. See ExportTo.
func (l *Log) Export(fn func(storage.Entry) error) (storage.Checkpoint, error) {
	return l.ExportTo(nil, fn)
}

// ExportTo streams the log from one read transaction: start gets the signed base
// of a pruned log (nil: nothing was pruned, the log starts at 1) before any
// entry, fn every entry from the base to the head in order, and the checkpoint it
// returns, signed for this export, covers exactly them. Nothing is collected, so
// memory stays bounded however long the log is. The refusals counted so far are
// written first.
func (l *Log) ExportTo(start func(base *storage.Checkpoint) error, fn func(storage.Entry) error) (storage.Checkpoint, error) {
	if err := l.Flush(); err != nil {
		l.log.Error("writing the counted refusals failed", "err", err)
	}
	var cp storage.Checkpoint
	fresh := false
	err := l.db.Audit().View(func(v storage.AuditView) error {
		base, hasBase, err := v.Base()
		if err != nil {
			return err
		}
		size, head := v.Head()
		last, found, err := v.LastCheckpoint()
		if err != nil {
			return err
		}
		if found && last.Size == size && last.Head == head {
			cp = last
		} else {
			cp, fresh = l.sign(storage.Checkpoint{Size: size, Head: head}), true
		}
		if start != nil {
			var bp *storage.Checkpoint
			if hasBase {
				bp = &base
			}
			if err := start(bp); err != nil {
				return err
			}
		}
		return v.Each(size, fn)
	})
	if err == nil && fresh {
		// Kept as the newest checkpoint; the export is signed either way.
		if perr := l.db.Audit().PutCheckpoint(cp); perr != nil {
			l.log.Error("storing the export's checkpoint failed", "err", perr)
		}
	}
	return cp, err
}

// Check is the audit part's health: the log's head reads.
func (l *Log) Check(context.Context) storage.PartStatus {
	if _, _, err := l.db.Audit().Head(); err != nil {
		return storage.PartStatus{State: storage.StateDown, Reason: err.Error()}
	}
	return storage.PartStatus{State: storage.StateOK}
}

// Within returns the storage.Within that appends e (stamped) in a store's
// transaction. Capabilities use it for the entry of their change.
func (l *Log) Within(e storage.Entry) storage.Within {
	e = l.Stamp(e)
	return func(tx *storage.Tx) error {
		_, err := l.db.Audit().AppendTx(tx, e)
		return err
	}
}
