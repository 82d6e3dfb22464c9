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
package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// Checkpoint signs the log's current size and head when it grew since the last
// checkpoint, and returns the newest checkpoint.
func (l *Log) Checkpoint() (storage.Checkpoint, error) {
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
	cp := storage.Checkpoint{Size: n, Head: head, Time: l.now().UTC().Format(storage.TimeFormat), PublicKey: hex.EncodeToString(l.PublicKey())}
	cp.Signature = hex.EncodeToString(ed25519.Sign(l.signer, cp.SignedMessage()))
	return cp, a.PutCheckpoint(cp)
}

// Query is GET /api/audit.
func (l *Log) Query(f storage.Filter) ([]storage.Entry, int, error) { return l.db.Audit().Query(f) }

// Verify checks the chain against the last checkpoint, signed by this cell's key.
func (l *Log) Verify() (storage.Verification, error) { return l.db.Audit().Verify(l.PublicKey()) }

// Export hands every entry to fn in order, after signing a fresh checkpoint that
// the export ends with.
func (l *Log) Export(fn func(storage.Entry) error) (storage.Checkpoint, error) {
	cp, err := l.Checkpoint()
	if err != nil {
		return cp, err
	}
	n := uint64(0)
	err = l.db.Audit().Each(func(e storage.Entry) error {
		if n >= cp.Size { // entries appended after the checkpoint wait for the next export
			return nil
		}
		n++
		return fn(e)
	})
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
