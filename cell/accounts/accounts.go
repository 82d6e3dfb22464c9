// Package accounts owns the cell's users and their sessions: login with a
// throttle that costs an attacker more than the cell, argon2id hashing on a
// low-priority thread under a concurrency cap, password change and reset, and
// the listing of accounts without any secret. Other capabilities that create
// accounts (setup's admin, a peer's login) hash through the same Hasher.
package accounts

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/storage"
)

// Auditor writes a change's audit entry in the transaction that stores it.
type Auditor interface {
	Within(e storage.Entry) storage.Within
}

// Accounts is the capability.
type Accounts struct {
	db       *storage.DB
	hasher   *Hasher
	throttle *throttle
	success  *successLimit
	refused  *tarpit
	audit    Auditor
	now      func() time.Time
	rand     io.Reader
}

// New returns the accounts capability.
func New(db *storage.DB, h *Hasher, audit Auditor, now func() time.Time, rand io.Reader) *Accounts {
	return &Accounts{db: db, hasher: h, throttle: newThrottle(failLimit, failWindow), success: newSuccessLimit(), refused: newTarpit(time.Sleep), audit: audit, now: now, rand: rand}
}

func (c *Accounts) randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.rand, b); err != nil {
		panic("accounts: the random source failed: " + err.Error())
	}
	return b
}

// SessionLifetime is how long a login lasts; there is no sliding renewal, so a stolen
// cookie dies on its own.
const SessionLifetime = 12 * time.Hour

// UserInfo is what the API shows of an account: never a hash.
type UserInfo struct {
	Username          string    `json:"username"`
	Role              string    `json:"role"`
	CreatedAt         time.Time `json:"created_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
	// OneTimePassword: the account has only a one-time password so far
	// ("unused", or "used": logged in once, must choose a password); "" when
	// it has a password of its own.
	OneTimePassword string `json:"one_time_password_state,omitempty"`
}

func infoOf(u storage.User) UserInfo {
	i := UserInfo{Username: u.Username, Role: u.Role, CreatedAt: u.CreatedAt, PasswordChangedAt: u.PasswordAt}
	switch {
	case u.OneTimeHash != "" && u.MustChangePassword:
		i.OneTimePassword = "used"
	case u.OneTimeHash != "":
		i.OneTimePassword = "unused"
	}
	return i
}

// Login checks a password and starts a session. oldID, the session the client had
// (if any), is ended in the same transaction: the id always changes at login.
//
// Before any hashing, the attempt is counted under the account at the source and
// under the source alone (throttle.go): the 11th failure of either inside 15
// minutes, and every attempt while it is locked, is refused with ErrTooMany
// (too_many_attempts), as are logins for an account or from a source whose
// successful logins are used up (too_many_logins). Failures elsewhere never refuse
// an address that has not failed. The hash itself waits for its fair share of the
// hasher (fair.go). A source that keeps being refused gets its refusals late
// (tarpit).
func (c *Accounts) Login(username, password, sourceIP, oldID string) (id string, sess storage.Session, err error) {
	src := sourceGroup(sourceIP)
	id, sess, err = c.login(username, password, src, oldID)
	c.tarpit(src, err)
	return id, sess, err
}

func (c *Accounts) login(username, password, src, oldID string) (id string, sess storage.Session, err error) {
	now := c.now()
	res, err := c.reserve(now, username, src, "too many failed logins")
	if err != nil {
		return "", sess, err
	}
	if wait := c.success.allow(now, userBuckets, "user\x00"+username); wait > 0 {
		res.release(now)
		return "", sess, retryAfter(fault.Errorf(fault.ErrTooMany, "too_many_logins", "this account has logged in too often lately; try again in %s", waitText(wait)), wait)
	}
	if wait := c.success.allow(now, sourceBuckets, "src\x00"+src); wait > 0 {
		res.release(now)
		return "", sess, retryAfter(fault.Errorf(fault.ErrTooMany, "too_many_logins", "too many logins from this address lately; try again in %s", waitText(wait)), wait)
	}
	if len(password) > names.MaxPasswordLen || len(username) > maxUsernameLen {
		res.fail(now) // no one's: a failure, without hashing
		return "", sess, fault.Errorf(fault.ErrUnauthorized, "bad_credentials", "wrong username or password")
	}
	u, uerr := c.db.Users().Get(username)
	if uerr != nil && !errors.Is(uerr, storage.ErrNotFound) {
		res.release(now)
		return "", sess, uerr
	}
	// An unused one-time password is checked without the slow hash (it is 128
	// random bits); anything else, a used one included, goes to argon2id, which
	// refuses it like any wrong password.
	oneTime := uerr == nil && oneTimeMatches(u, password)
	ok := oneTime
	if !oneTime {
		ok, err = c.hasher.Verify(src, u.PasswordHash, password)
		if err != nil {
			res.release(now)
			return "", sess, err
		}
	}
	now = c.now()
	badCredentials := fault.Errorf(fault.ErrUnauthorized, "bad_credentials", "wrong username or password")
	if !ok || uerr != nil {
		res.fail(now)
		return "", sess, badCredentials
	}
	id = base64.RawURLEncoding.EncodeToString(c.randomBytes(32))
	sess = storage.Session{
		Username:  u.Username,
		Role:      u.Role,
		CSRFToken: base64.RawURLEncoding.EncodeToString(c.randomBytes(32)),
		CreatedAt: now,
		ExpiresAt: now.Add(SessionLifetime),
	}
	if oneTime {
		// Used up in the session's own transaction: of two logins racing with
		// it, one gets the session and the other a wrong password.
		err = c.db.Users().UseOneTime(u.Username, storage.OneTimeKey(password), id, sess, oldID)
		if errors.Is(err, storage.ErrNotFound) {
			res.fail(now)
			return "", storage.Session{}, badCredentials
		}
		sess.MustChangePassword = true
	} else {
		err = c.db.Sessions().Create(id, sess, oldID)
	}
	if err != nil {
		res.release(now)
		return "", storage.Session{}, err
	}
	res.succeed(now)
	c.success.take(now, userBuckets, "user\x00"+username)
	c.success.take(now, sourceBuckets, "src\x00"+src)
	sess.Key = storage.SessionKey(id)
	return id, sess, nil
}

// oneTimeMatches says whether password is u's one-time password and it is
// still good for a login (not used yet).
func oneTimeMatches(u storage.User, password string) bool {
	if u.OneTimeHash == "" || u.MustChangePassword {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(storage.OneTimeKey(password)), []byte(u.OneTimeHash)) == 1
}

// oneTimeProves says whether password is u's one-time password, used or not:
// what change-password accepts as the current password until a real one is set.
func oneTimeProves(u storage.User, password string) bool {
	return u.OneTimeHash != "" && subtle.ConstantTimeCompare([]byte(storage.OneTimeKey(password)), []byte(u.OneTimeHash)) == 1
}

// maxUsernameLen is more than any account's name can be: a longer one fails
// without a hash or a lookup.
const maxUsernameLen = 256

var (
	userBuckets   = bucketSpec{successLimitUser, successEveryUser}
	sourceBuckets = bucketSpec{successLimitSource, successEverySource}
)

// reserve counts an attempt at username's password from the source group src
// under both throttle keys, or refuses it with how long to wait. Every username
// too long to be anyone's counts as one.
func (c *Accounts) reserve(now time.Time, username, src, what string) (*reservation, error) {
	userKey := "user\x00" + username + "\x00" + src
	if len(username) > maxUsernameLen {
		userKey = "user\x00(too long)\x00" + src
	}
	res, wait, ok := c.throttle.reserve(now, userKey, "src\x00"+src)
	if !ok {
		return nil, retryAfter(fault.Errorf(fault.ErrTooMany, "too_many_attempts",
			"%s from this address; try again in %s, or from another device", what, waitText(wait)), wait)
	}
	return res, nil
}

// Session returns the live session for a cookie value.
func (c *Accounts) Session(id string) (storage.Session, error) {
	if id == "" || len(id) > 128 {
		return storage.Session{}, fault.Errorf(fault.ErrUnauthorized, "not_logged_in", "log in first")
	}
	s, err := c.db.Sessions().Get(id, c.now())
	if errors.Is(err, storage.ErrNotFound) {
		return s, fault.Errorf(fault.ErrUnauthorized, "not_logged_in", "log in first (the session has ended)")
	}
	return s, err
}

// Logout ends a session.
func (c *Accounts) Logout(id string) error { return c.db.Sessions().Delete(id) }

// ChangePassword changes the user's own password after checking the current one, and
// ends every other session of theirs; audit (the change's entry) is stored with it.
// A wrong current password counts like a failed login of the account from the
// entry's source address (audit.SourceIP), and the same limits refuse it.
func (c *Accounts) ChangePassword(s storage.Session, current, next string, audit storage.Entry) error {
	if err := names.CheckPassword("new_password", next); err != nil {
		return err
	}
	src := sourceGroup(audit.SourceIP)
	err := c.changePassword(s, current, next, src, audit)
	c.tarpit(src, err)
	return err
}

func (c *Accounts) changePassword(s storage.Session, current, next, src string, audit storage.Entry) error {
	now := c.now()
	res, err := c.reserve(now, s.Username, src, "too many wrong current passwords")
	if err != nil {
		return err
	}
	u, err := c.db.Users().Get(s.Username)
	if err != nil {
		res.release(now)
		return err
	}
	var ok, oneTime bool
	if len(current) <= names.MaxPasswordLen {
		oneTime = oneTimeProves(u, current)
		ok = oneTime
		if !oneTime {
			ok, err = c.hasher.Verify(src, u.PasswordHash, current)
			if err != nil {
				res.release(now)
				return err
			}
		}
	}
	now = c.now()
	if !ok {
		res.fail(now)
		return fault.Errorf(fault.ErrForbidden, "bad_credentials", "the current password is wrong")
	}
	res.succeed(now)
	hash, err := c.hasher.Hash(next)
	if err != nil {
		return err
	}
	audit.TargetType, audit.TargetID, audit.Result = "user", s.Username, "ok"
	if oneTime {
		audit.Details = withDetail(audit.Details, "replaced", "one_time_password")
	}
	return c.db.Users().SetPassword(s.Username, hash, c.now(), s.Key, c.audit.Within(audit))
}

// withDetail adds a non-secret detail to an audit entry's details, copying
// them so the caller's map is not changed.
func withDetail(d map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(d)+1)
	for dk, dv := range d {
		out[dk] = dv
	}
	out[k] = v
	return out
}

// ResetPassword sets another user's password (an admin's act) and ends all of that
// user's sessions. An admin's own password goes through ChangePassword, which asks
// for the current one: a stolen admin session must not be enough to lock the owner
// out.
func (c *Accounts) ResetPassword(by storage.Session, username, next string, audit storage.Entry) error {
	if username == by.Username {
		return fault.Errorf(fault.ErrForbidden, "own_password", "change your own password with the current one (POST /api/auth/change-password), not by a reset")
	}
	if err := names.CheckPassword("new_password", next); err != nil {
		return err
	}
	if _, err := c.db.Users().Get(username); err != nil {
		return fault.Errorf(fault.ErrNotFound, "user_not_found", "no user named %q", username)
	}
	hash, err := c.hasher.Hash(next)
	if err != nil {
		return err
	}
	audit.TargetType, audit.TargetID, audit.Result = "user", username, "ok"
	return c.db.Users().SetPassword(username, hash, c.now(), "", c.audit.Within(audit))
}

// ResetOneTime gives another user a new one-time password in place of their
// password (an admin's act), ends all their sessions, and returns it: the
// only time it is shown. Their first login with it must choose a password
// before anything else. Like ResetPassword, it is not for the admin's own.
func (c *Accounts) ResetOneTime(by storage.Session, username string, audit storage.Entry) (string, error) {
	if username == by.Username {
		return "", fault.Errorf(fault.ErrForbidden, "own_password", "change your own password with the current one (POST /api/auth/change-password), not by a reset")
	}
	if _, err := c.db.Users().Get(username); err != nil {
		return "", fault.Errorf(fault.ErrNotFound, "user_not_found", "no user named %q", username)
	}
	password, key := c.hasher.OneTime()
	audit.TargetType, audit.TargetID, audit.Result = "user", username, "ok"
	audit.Details = withDetail(audit.Details, "issued", "one_time_password")
	if err := c.db.Users().SetOneTime(username, key, c.now(), c.audit.Within(audit)); err != nil {
		return "", err
	}
	return password, nil
}

// Users lists the accounts without any secret.
func (c *Accounts) Users() ([]UserInfo, error) {
	us, err := c.db.Users().List()
	out := make([]UserInfo, 0, len(us))
	for _, u := range us {
		out = append(out, infoOf(u))
	}
	return out, err
}

// Hasher is the shared password hasher, for the capabilities that create accounts.
func (c *Accounts) Hasher() *Hasher { return c.hasher }

// PruneSessions deletes expired sessions.
func (c *Accounts) PruneSessions() (int, error) { return c.db.Sessions().PruneExpired(c.now()) }
