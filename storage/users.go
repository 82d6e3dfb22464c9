package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Roles a user can have.
const (
	RoleAdmin = "admin"
	RolePeer  = "peer"
)

// User is an account that can log in. PasswordHash is an argon2id PHC string; it never
// leaves the cell.
//
// A peer's account starts with a one-time password instead (or an admin's reset
// gives one): OneTimeHash is its OneTimeKey, and PasswordHash is empty. The
// first login with it sets MustChangePassword, after which it no longer logs in
// but still proves the person to change-password; setting a password clears
// both. Accounts stored before one-time passwords existed have neither field.
type User struct {
	Username           string    `json:"username"`
	Role               string    `json:"role"`
	PasswordHash       string    `json:"password_hash"`
	OneTimeHash        string    `json:"one_time_hash,omitempty"`
	MustChangePassword bool      `json:"must_change_password,omitempty"`
	CreatedAt          time.Time `json:"created_at"`
	PasswordAt         time.Time `json:"password_changed_at"`
}

// OneTimeKey is what is stored of a one-time password: its SHA-256, in hex. A
// one-time password is 128 random bits, so unlike a person's password it needs
// no slow hash to resist guessing (the same reasoning as SessionKey).
func OneTimeKey(password string) string {
	sum := sha256.Sum256([]byte(password))
	return hex.EncodeToString(sum[:])
}

// Users is the typed store of the users bucket.
type Users struct{ db *DB }

// Users returns the users store.
func (db *DB) Users() Users { return Users{db} }

// Get returns the named user.
func (s Users) Get(name string) (User, error) {
	var u User
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		u, err = getUser(tx, name)
		return err
	})
	return u, err
}

func getUser(tx *bolt.Tx, name string) (User, error) {
	var u User
	raw := tx.Bucket(bucketUsers).Get([]byte(name))
	if raw == nil {
		return u, fmt.Errorf("user %q: %w", name, ErrNotFound)
	}
	return u, json.Unmarshal(raw, &u)
}

// Create adds a user, refusing a name that is taken.
func (s Users) Create(u User) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error { return putUser(tx, u, true) })
}

// CreateTx adds a user inside a caller's transaction.
func (s Users) CreateTx(tx *bolt.Tx, u User) error { return putUser(tx, u, true) }

// DeleteTx removes a user and every session of theirs inside a caller's transaction.
func (s Users) DeleteTx(tx *bolt.Tx, name string) error {
	if err := tx.Bucket(bucketUsers).Delete([]byte(name)); err != nil {
		return err
	}
	return s.db.deleteSessionsOf(tx, name, "")
}

func putUser(tx *bolt.Tx, u User, mustBeNew bool) error {
	b := tx.Bucket(bucketUsers)
	if mustBeNew && b.Get([]byte(u.Username)) != nil {
		return fmt.Errorf("user %q: %w", u.Username, ErrExists)
	}
	raw, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return b.Put([]byte(u.Username), raw)
}

// SetPassword replaces a user's password hash and ends their sessions, except the one
// whose hashed id is keep (empty: end them all), in one transaction.
func (s Users) SetPassword(name, hash string, now time.Time, keep string, within Within) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		u, err := getUser(tx, name)
		if err != nil {
			return err
		}
		u.PasswordHash = hash
		u.PasswordAt = now
		u.OneTimeHash, u.MustChangePassword = "", false
		if err := putUser(tx, u, false); err != nil {
			return err
		}
		if err := s.db.deleteSessionsOf(tx, name, keep); err != nil {
			return err
		}
		if err := clearMustChange(tx, keep); err != nil {
			return err
		}
		return within.run(tx)
	})
}

// SetOneTime gives a user a new one-time password (its OneTimeKey) in place of
// their password, and ends all their sessions, in one transaction: an admin's
// reset that the person finishes by choosing their own password.
func (s Users) SetOneTime(name, oneTimeKey string, now time.Time, within Within) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		u, err := getUser(tx, name)
		if err != nil {
			return err
		}
		u.PasswordHash, u.OneTimeHash, u.MustChangePassword = "", oneTimeKey, false
		u.PasswordAt = now
		if err := putUser(tx, u, false); err != nil {
			return err
		}
		if err := s.db.deleteSessionsOf(tx, name, ""); err != nil {
			return err
		}
		return within.run(tx)
	})
}

// UseOneTime is a login with a one-time password: if name's one-time password
// is still unused and its key is oneTimeKey, it is marked used (the account
// must change its password) and the session id is stored, flagged the same,
// replacing the session replacing (if any), all in one transaction, so two
// logins racing with the same password cannot both succeed. ErrNotFound when
// the password is not (or no longer) good for a login.
func (s Users) UseOneTime(name, oneTimeKey, id string, sess Session, replacing string) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		u, err := getUser(tx, name)
		if err != nil {
			return err
		}
		if u.OneTimeHash == "" || u.MustChangePassword || u.OneTimeHash != oneTimeKey {
			return fmt.Errorf("one-time password of %q: %w", name, ErrNotFound)
		}
		u.MustChangePassword = true
		if err := putUser(tx, u, false); err != nil {
			return err
		}
		sess.MustChangePassword = true
		return putSession(s.db, tx, id, sess, replacing)
	})
}

// List returns every user, sorted by name.
func (s Users) List() ([]User, error) {
	var out []User
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("user %q: %w", k, err)
			}
			out = append(out, u)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Username < out[j].Username })
	return out, err
}
