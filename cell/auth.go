package cell

import (
	"encoding/base64"
	"errors"
	"time"

	"github.com/pic-cell/cell/storage"
)

// SessionLifetime is how long a login lasts; there is no sliding renewal, so a stolen
// cookie dies on its own.
const SessionLifetime = 12 * time.Hour

// UserInfo is what the API shows of an account: never a hash.
type UserInfo struct {
	Username          string    `json:"username"`
	Role              string    `json:"role"`
	CreatedAt         time.Time `json:"created_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
}

func infoOf(u storage.User) UserInfo {
	return UserInfo{Username: u.Username, Role: u.Role, CreatedAt: u.CreatedAt, PasswordChangedAt: u.PasswordAt}
}

// Login checks a password and starts a session. oldID, the session the client had
// (if any), is ended in the same transaction: the id always changes at login. The
// 11th failure for a user or a source address inside 15 minutes, and every attempt
// after it in the window, is refused with ErrTooMany without hashing.
func (c *Cell) Login(username, password, sourceIP, oldID string) (id string, sess storage.Session, err error) {
	now := c.now()
	if c.throttle.Blocked(now, "user:"+username, "ip:"+sourceIP) {
		return "", sess, Errorf(ErrTooMany, "too_many_attempts", "too many failed logins; wait 15 minutes and try again")
	}
	if len(password) > MaxPasswordLen || len(username) > 256 {
		c.throttle.Fail(now, "user:"+username, "ip:"+sourceIP)
		return "", sess, Errorf(ErrUnauthorized, "bad_credentials", "wrong username or password")
	}
	u, uerr := c.db.Users().Get(username)
	if uerr != nil && !errors.Is(uerr, storage.ErrNotFound) {
		return "", sess, uerr
	}
	ok, err := c.hasher.Verify(u.PasswordHash, password)
	if err != nil {
		return "", sess, err
	}
	if !ok || uerr != nil {
		c.throttle.Fail(now, "user:"+username, "ip:"+sourceIP)
		return "", sess, Errorf(ErrUnauthorized, "bad_credentials", "wrong username or password")
	}
	c.throttle.Reset("user:" + username)
	id = base64.RawURLEncoding.EncodeToString(c.randomBytes(32))
	sess = storage.Session{
		Username:  u.Username,
		Role:      u.Role,
		CSRFToken: base64.RawURLEncoding.EncodeToString(c.randomBytes(32)),
		CreatedAt: now,
		ExpiresAt: now.Add(SessionLifetime),
	}
	if err := c.db.Sessions().Create(id, sess, oldID); err != nil {
		return "", storage.Session{}, err
	}
	sess.Key = storage.SessionKey(id)
	return id, sess, nil
}

// Session returns the live session for a cookie value.
func (c *Cell) Session(id string) (storage.Session, error) {
	if id == "" || len(id) > 128 {
		return storage.Session{}, Errorf(ErrUnauthorized, "not_logged_in", "log in first")
	}
	s, err := c.db.Sessions().Get(id, c.now())
	if errors.Is(err, storage.ErrNotFound) {
		return s, Errorf(ErrUnauthorized, "not_logged_in", "log in first (the session has ended)")
	}
	return s, err
}

// Logout ends a session.
func (c *Cell) Logout(id string) error { return c.db.Sessions().Delete(id) }

// ChangePassword changes the user's own password after checking the current one, and
// ends every other session of theirs.
func (c *Cell) ChangePassword(s storage.Session, current, next string) error {
	if err := checkPassword("new_password", next); err != nil {
		return err
	}
	u, err := c.db.Users().Get(s.Username)
	if err != nil {
		return err
	}
	ok, err := c.hasher.Verify(u.PasswordHash, current)
	if err != nil {
		return err
	}
	if !ok {
		return Errorf(ErrForbidden, "bad_credentials", "the current password is wrong")
	}
	hash, err := c.hasher.Hash(next)
	if err != nil {
		return err
	}
	return c.db.Users().SetPassword(s.Username, hash, c.now(), s.Key)
}

// ResetPassword sets another user's password (an admin's act) and ends all of that
// user's sessions.
func (c *Cell) ResetPassword(username, next string) error {
	if err := checkPassword("new_password", next); err != nil {
		return err
	}
	if _, err := c.db.Users().Get(username); err != nil {
		return Errorf(ErrNotFound, "user_not_found", "no user named %q", username)
	}
	hash, err := c.hasher.Hash(next)
	if err != nil {
		return err
	}
	return c.db.Users().SetPassword(username, hash, c.now(), "")
}

// Users lists the accounts without any secret.
func (c *Cell) Users() ([]UserInfo, error) {
	us, err := c.db.Users().List()
	out := make([]UserInfo, 0, len(us))
	for _, u := range us {
		out = append(out, infoOf(u))
	}
	return out, err
}

// HashPassword hashes a new password under the login cap (for parts that create
// accounts, such as peers).
func (c *Cell) HashPassword(pw string) (string, error) { return c.hasher.Hash(pw) }

// PruneSessions deletes expired sessions.
func (c *Cell) PruneSessions() (int, error) { return c.db.Sessions().PruneExpired(c.now()) }
