package storage

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

var (
	keyConfig        = []byte("config")
	keySetupComplete = []byte("setup/complete")
	prefixSetupStep  = "setup/step/"
)

// Settings is the typed store of the settings bucket: the cell's config document and
// the setup wizard's progress.
type Settings struct{ db *DB }

// Settings returns the settings store.
func (db *DB) Settings() Settings { return Settings{db} }

// get decodes the JSON stored under key into dst; found is false when none is.
func (s Settings) get(key []byte, dst any) (found bool, err error) {
	err = s.db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketSettings).Get(key)
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, dst)
	})
	if err != nil {
		return false, fmt.Errorf("settings: %s: %w", key, err)
	}
	return found, nil
}

// Config decodes the stored config into dst; found is false when none is stored yet.
func (s Settings) Config(dst any) (found bool, err error) { return s.get(keyConfig, dst) }

// PutConfigAudited stores the config document and appends its audit entry in one
// transaction: a crash keeps both or neither.
func (s Settings) PutConfigAudited(cfg any, e Entry) (Entry, error) {
	return s.PutConfigAuditedWithin(cfg, e, nil)
}

// PutConfigAuditedWithin is PutConfigAudited with the caller's own writes in
// the same transaction (a secret the changed section refers to, in the vault).
func (s Settings) PutConfigAuditedWithin(cfg any, e Entry, within Within) (Entry, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return Entry{}, fmt.Errorf("settings: config: %w", err)
	}
	var out Entry
	err = s.db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSettings).Put(keyConfig, raw); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeConfig})
		if err := within.run(tx); err != nil {
			return err
		}
		out, err = appendEntry(tx, e)
		return err
	})
	return out, err
}

// SetupComplete reports whether setup has been completed.
func (s Settings) SetupComplete() (bool, error) {
	var done bool
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		done = tx.Bucket(bucketSettings).Get(keySetupComplete) != nil
		return nil
	})
	return done, err
}

// SetupStep decodes the stored data of a wizard step into dst.
func (s Settings) SetupStep(name string, dst any) (found bool, err error) {
	return s.get([]byte(prefixSetupStep+name), dst)
}

// PutSetupStep stores a wizard step's data, refusing once setup is complete; within
// (its audit entry) commits with it.
func (s Settings) PutSetupStep(name string, data any, within Within) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSettings)
		if err := refuseIfComplete(b); err != nil {
			return err
		}
		if err := b.Put([]byte(prefixSetupStep+name), raw); err != nil {
			return err
		}
		return within.run(tx)
	})
}

// CompleteSetup, in one transaction, stores the config, creates the first admin user
// and marks setup complete, so a crash cannot leave a half-set-up cell. It refuses
// when setup was completed before.
func (s Settings) CompleteSetup(cfg any, admin User, within Within) error {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSettings)
		if err := refuseIfComplete(b); err != nil {
			return err
		}
		if err := putUser(tx, admin, true); err != nil {
			return err
		}
		if err := b.Put(keyConfig, raw); err != nil {
			return err
		}
		// The steps held only what the config and the user now hold.
		var steps [][]byte
		c := b.Cursor()
		prefix := []byte(prefixSetupStep)
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			steps = append(steps, append([]byte(nil), k...))
		}
		if err := deleteKeys(b, steps); err != nil {
			return err
		}
		if err := b.Put(keySetupComplete, []byte("1")); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeConfig})
		return within.run(tx)
	})
}

// refuseIfComplete is the one check every setup write makes inside its transaction.
func refuseIfComplete(b *bolt.Bucket) error {
	if b.Get(keySetupComplete) != nil {
		return fmt.Errorf("setup is complete: %w", ErrConflict)
	}
	return nil
}
