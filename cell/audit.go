package cell

import (
	"crypto/ed25519"
	"encoding/hex"

	"github.com/pic-cell/cell/storage"
)

// Record appends an entry to the audit log. Callers pass names and non-secret values
// only; details are never filled from request bodies wholesale.
func (c *Cell) Record(e storage.Entry) (storage.Entry, error) {
	if e.Time == "" {
		e.Time = c.now().UTC().Format(storage.TimeFormat)
	}
	out, err := c.db.Audit().Append(e)
	if err != nil {
		c.audlog.Error("append failed", "action", e.Action, "err", err)
		return out, err
	}
	c.audlog.Debug("appended", "seq", out.Seq, "action", e.Action, "result", e.Result)
	return out, nil
}

// AuditPublicKey is the key that signs checkpoints, for offline verification.
func (c *Cell) AuditPublicKey() ed25519.PublicKey { return c.signer.Public().(ed25519.PublicKey) }

// Checkpoint signs the log's current size and head when it grew since the last
// checkpoint, and returns the newest checkpoint.
func (c *Cell) Checkpoint() (storage.Checkpoint, error) {
	a := c.db.Audit()
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
	cp := storage.Checkpoint{Size: n, Head: head, Time: c.now().UTC().Format(storage.TimeFormat), PublicKey: hex.EncodeToString(c.AuditPublicKey())}
	cp.Signature = hex.EncodeToString(ed25519.Sign(c.signer, cp.SignedMessage()))
	if err := a.PutCheckpoint(cp); err != nil {
		return cp, err
	}
	return cp, nil
}

// AuditQuery is GET /api/audit.
func (c *Cell) AuditQuery(f storage.Filter) ([]storage.Entry, int, error) {
	return c.db.Audit().Query(f)
}

// VerifyAudit checks the chain against the last checkpoint, signed by this cell's key.
func (c *Cell) VerifyAudit() (storage.Verification, error) {
	return c.db.Audit().Verify(c.AuditPublicKey())
}

// AuditExport hands every entry to fn in order, after signing a fresh checkpoint that
// the export ends with.
func (c *Cell) AuditExport(fn func(storage.Entry) error) (storage.Checkpoint, error) {
	cp, err := c.Checkpoint()
	if err != nil {
		return cp, err
	}
	n := uint64(0)
	err = c.db.Audit().Each(func(e storage.Entry) error {
		if n >= cp.Size { // entries appended after the checkpoint wait for the next export
			return nil
		}
		n++
		return fn(e)
	})
	return cp, err
}
