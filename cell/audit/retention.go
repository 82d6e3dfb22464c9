package audit

import (
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// Retention is the "audit" section of the config: how much of the log is kept.
// The oldest entries beyond either bound are pruned (see Prune).
type Retention struct {
	KeepDays   int `json:"keep_days"`   // entries older than this many days go; 1–3650
	MaxEntries int `json:"max_entries"` // the oldest beyond this many go; 1,000–10,000,000
}

// DefaultRetention keeps a year, and at most 200,000 entries (about 70 MB).
func DefaultRetention() Retention { return Retention{KeepDays: 365, MaxEntries: 200000} }

// Validate checks the section.
func (r Retention) Validate() error {
	if r.KeepDays < 1 || r.KeepDays > 3650 {
		return fault.Invalid("invalid_keep_days", "audit.keep_days must be from 1 to 3650 (got %d)", r.KeepDays)
	}
	if r.MaxEntries < 1000 || r.MaxEntries > 10_000_000 {
		return fault.Invalid("invalid_max_entries", "audit.max_entries must be from 1000 to 10000000 (got %d)", r.MaxEntries)
	}
	return nil
}

// Section is the "audit" section of the config document.
func Section() config.Section {
	return config.Section{Name: "audit", New: func() any { r := DefaultRetention(); return &r },
		Validate: func(v any) error { return v.(*Retention).Validate() }}
}

// Retention reads the section from the stored config (the defaults before setup,
// or when it cannot be read).
func (l *Log) Retention() Retention {
	r := DefaultRetention()
	d, found, err := config.Load(l.db)
	if err != nil {
		l.log.Error("reading the audit retention failed; using the defaults", "err", err)
		return r
	}
	if found {
		if err := d.Decode("audit", &r); err != nil || r.Validate() != nil {
			l.log.Error("the audit retention in the config is not valid; using the defaults", "err", err)
			return DefaultRetention()
		}
	}
	return r
}

// Prune batches: one transaction removes at most PruneBatch entries, and one call
// at most PruneBatches of them (a log far over its bounds, such as one upgraded
// from before retention, shrinks over several runs of the health loop).
const (
	PruneBatch   = 5000
	PruneBatches = 20
)

// Prune removes the oldest entries beyond r, in batches, each in its own
// transaction that also stores the signed base of what remains (so GET
// /api/audit/verify and the exports still prove the rest) and a checkpoint of the
// head. The newest entry always stays. It returns how many went.
func (l *Log) Prune(r Retention) (int, error) {
	l.pruneMu.Lock()
	defer l.pruneMu.Unlock()
	before := l.now().Add(-time.Duration(r.KeepDays) * 24 * time.Hour).UTC().Format(storage.TimeFormat)
	total := 0
	for range PruneBatches {
		n, err := l.db.Audit().Prune(storage.Retention{Before: before, MaxEntries: uint64(r.MaxEntries), Batch: PruneBatch, Sign: l.sign})
		total += n
		if err != nil {
			return total, err
		}
		if n < PruneBatch {
			break
		}
	}
	if total > 0 {
		l.log.Info("pruned the oldest audit entries", "count", total, "keep_days", r.KeepDays, "max_entries", r.MaxEntries)
	}
	return total, nil
}
