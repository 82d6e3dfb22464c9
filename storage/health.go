package storage

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// HealthRecord is the outcome of one run of the health checker.
type HealthRecord struct {
	Time  time.Time             `json:"time"`
	Parts map[string]PartStatus `json:"parts"`
}

// PartStatus is the state of one part of the cell: ok, degraded, down or
// not_configured, with a short reason.
type PartStatus struct {
	// State is one of StateOK, StateDegraded, StateDown, StateNotConfigured.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Health is the typed store of the health history, bounded to a number of records.
type Health struct{ db *DB }

// Health returns the health history store.
func (db *DB) Health() Health { return Health{db} }

// Append stores a record and prunes the oldest beyond keep.
func (h Health) Append(r HealthRecord, keep int) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return h.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHealth)
		if err := b.Put(u64(uint64(r.Time.UnixNano())), raw); err != nil {
			return err
		}
		// Walk from the newest: whatever lies past the first keep records goes.
		var old [][]byte
		n := 0
		c := b.Cursor()
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			if n++; n > keep {
				old = append(old, append([]byte(nil), k...))
			}
		}
		return deleteKeys(b, old)
	})
}

// Recent returns up to limit records, newest first.
func (h Health) Recent(limit int) ([]HealthRecord, error) {
	var out []HealthRecord
	err := h.db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHealth).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var r HealthRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Part states.
const (
	StateOK            = "ok"
	StateDegraded      = "degraded"
	StateDown          = "down"
	StateNotConfigured = "not_configured"
)
