package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Session is a logged-in browser or client. It is stored under the SHA-256 of its id;
// the id itself exists only in the client's cookie.
type Session struct {
	Key       string    `json:"-"` // hex SHA-256 of the id, the bucket key
	Username  string    `json:"username"`
	Role      string    `json:"role"`
	CSRFToken string    `json:"csrf_token"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// MustChangePassword: the session began with a one-time password and may do
	// nothing but change it (the API enforces it).
	MustChangePassword bool `json:"must_change_password,omitempty"`
}

// SessionKey is the storage key of a session id.
func SessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// Sessions is the typed store of the sessions bucket.
type Sessions struct{ db *DB }

// Sessions returns the sessions store.
func (db *DB) Sessions() Sessions { return Sessions{db} }

// Create stores a new session for id, and, when replacing is a previous session id,
// deletes that one in the same transaction (rotation at login).
func (s Sessions) Create(id string, sess Session, replacing string) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error { return putSession(s.db, tx, id, sess, replacing) })
}

func putSession(db *DB, tx *bolt.Tx, id string, sess Session, replacing string) error {
	raw, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketSessions)
	if replacing != "" {
		db.invalidateSessions(tx)
		if err := b.Delete([]byte(SessionKey(replacing))); err != nil {
			return err
		}
	}
	return b.Put([]byte(SessionKey(id)), raw)
}

// clearMustChange lifts the password-change gate from the session stored under
// key (a hashed id; empty: none) once its user has set a password. The caller
// has invalidated the session cache in tx.
func clearMustChange(tx *bolt.Tx, key string) error {
	if key == "" {
		return nil
	}
	b := tx.Bucket(bucketSessions)
	raw := b.Get([]byte(key))
	if raw == nil {
		return nil
	}
	var sess Session
	if err := json.Unmarshal(raw, &sess); err != nil {
		return err
	}
	if !sess.MustChangePassword {
		return nil
	}
	sess.MustChangePassword = false
	out, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), out)
}

type cachedSession struct {
	gen  uint64
	sess Session
}

// invalidate drops every cached session now and again when tx commits.
func (db *DB) invalidateSessions(tx *bolt.Tx) {
	db.sessGen.Add(1)
	tx.OnCommit(func() {
		db.sessGen.Add(1)
		db.sessCache.Clear() // what is cached is stale now; keep the map small
	})
}

// Get returns the session for id if it exists and has not expired at now.
func (s Sessions) Get(id string, now time.Time) (Session, error) {
	var sess Session
	key := SessionKey(id)
	gen := s.db.sessGen.Load()
	if c, ok := s.db.sessCache.Load(key); ok && c.(cachedSession).gen == gen {
		sess = c.(cachedSession).sess
		if !now.Before(sess.ExpiresAt) {
			return Session{}, fmt.Errorf("session expired: %w", ErrNotFound)
		}
		return sess, nil
	}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketSessions).Get([]byte(key))
		if raw == nil {
			return fmt.Errorf("session: %w", ErrNotFound)
		}
		return json.Unmarshal(raw, &sess)
	})
	if err != nil {
		return Session{}, err
	}
	if !now.Before(sess.ExpiresAt) {
		return Session{}, fmt.Errorf("session expired: %w", ErrNotFound)
	}
	sess.Key = key
	s.db.sessCache.Store(key, cachedSession{gen: gen, sess: sess})
	return sess, nil
}

// Delete ends the session for id.
func (s Sessions) Delete(id string) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		s.db.invalidateSessions(tx)
		return tx.Bucket(bucketSessions).Delete([]byte(SessionKey(id)))
	})
}

// PruneExpired deletes the sessions that expired before now and says how many.
func (s Sessions) PruneExpired(now time.Time) (int, error) {
	n := 0
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		var dead [][]byte
		b.ForEach(func(k, v []byte) error {
			var sess Session
			if json.Unmarshal(v, &sess) != nil || !now.Before(sess.ExpiresAt) {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		n = len(dead)
		if n > 0 {
			s.db.invalidateSessions(tx)
		}
		return deleteKeys(b, dead)
	})
	return n, err
}

// deleteSessionsOf ends every session of a user but the one stored under keep.
func (db *DB) deleteSessionsOf(tx *bolt.Tx, username, keep string) error {
	db.invalidateSessions(tx)
	b := tx.Bucket(bucketSessions)
	var dead [][]byte
	b.ForEach(func(k, v []byte) error {
		if string(k) == keep {
			return nil
		}
		var sess Session
		if err := json.Unmarshal(v, &sess); err != nil || sess.Username == username {
			dead = append(dead, append([]byte(nil), k...))
		}
		return nil
	})
	return deleteKeys(b, dead)
}

// deleteKeys deletes after iterating, because deleting under a moving bbolt cursor
// can skip the following key.
func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
