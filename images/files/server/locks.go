package server

import (
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/webdav"
)

// lockTable is the service's one WebDAV lock system. Every account names its
// home "/", so the table keeps home paths under "/homes/<username>" and the
// shared folder's as "/shared/...": a lock one account takes on a shared
// file holds against every account, and a lock in a home concerns only its
// owner. Lock tokens of the underlying table are small counters, so the
// table also remembers which account made each lock: another account cannot
// refresh or release it by guessing.
type lockTable struct {
	ls webdav.LockSystem

	mu    sync.Mutex
	owner map[string]lockOwner // token →
}

type lockOwner struct {
	user   string
	expiry time.Time // zero: no timeout
}

// maxOwners is when expired tokens (never unlocked) are pruned.
const maxOwners = 1000

func newLockTable() *lockTable {
	return &lockTable{ls: webdav.NewMemLS(), owner: map[string]lockOwner{}}
}

// forUser is the lock system of one account's requests.
func (t *lockTable) forUser(user string) webdav.LockSystem {
	return &accountLocks{t: t, user: user}
}

// forget releases every lock of user (a deleted account's locks must not
// bind an account later made under the same name).
func (t *lockTable) forget(user string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for tok, o := range t.owner {
		if o.user == user {
			t.ls.Unlock(now, tok)
			delete(t.owner, tok)
		}
	}
}

type accountLocks struct {
	t    *lockTable
	user string
}

func (a *accountLocks) homePrefix() string { return "/homes/" + a.user }

// name maps a WebDAV path of the account to the table's name.
func (a *accountLocks) name(n string) string {
	if n == "" {
		return ""
	}
	clean := path.Clean("/" + n)
	if clean == "/"+sharedName || strings.HasPrefix(clean, "/"+sharedName+"/") {
		return clean
	}
	return path.Join(a.homePrefix(), clean)
}

// back maps a table name to the account's WebDAV path.
func (a *accountLocks) back(n string) string {
	if rest, ok := strings.CutPrefix(n, a.homePrefix()); ok && (rest == "" || rest[0] == '/') {
		if rest == "" {
			return "/"
		}
		return rest
	}
	return n
}

func (a *accountLocks) Confirm(now time.Time, name0, name1 string, conditions ...webdav.Condition) (func(), error) {
	return a.t.ls.Confirm(now, a.name(name0), a.name(name1), conditions...)
}

func (a *accountLocks) Create(now time.Time, details webdav.LockDetails) (string, error) {
	details.Root = a.name(details.Root)
	tok, err := a.t.ls.Create(now, details)
	if err != nil {
		return "", err
	}
	o := lockOwner{user: a.user}
	if details.Duration >= 0 {
		o.expiry = now.Add(details.Duration)
	}
	a.t.mu.Lock()
	defer a.t.mu.Unlock()
	if len(a.t.owner) >= maxOwners {
		for k, v := range a.t.owner {
			if !v.expiry.IsZero() && now.After(v.expiry) {
				delete(a.t.owner, k)
			}
		}
	}
	a.t.owner[tok] = o
	return tok, nil
}

func (a *accountLocks) owns(tok string) bool {
	a.t.mu.Lock()
	defer a.t.mu.Unlock()
	return a.t.owner[tok].user == a.user
}

func (a *accountLocks) Refresh(now time.Time, token string, duration time.Duration) (webdav.LockDetails, error) {
	if !a.owns(token) {
		return webdav.LockDetails{}, webdav.ErrNoSuchLock
	}
	ld, err := a.t.ls.Refresh(now, token, duration)
	if err != nil {
		return ld, err
	}
	a.t.mu.Lock()
	o := a.t.owner[token]
	o.expiry = time.Time{}
	if duration >= 0 {
		o.expiry = now.Add(duration)
	}
	a.t.owner[token] = o
	a.t.mu.Unlock()
	ld.Root = a.back(ld.Root)
	return ld, nil
}

func (a *accountLocks) Unlock(now time.Time, token string) error {
	if !a.owns(token) {
		return webdav.ErrNoSuchLock
	}
	err := a.t.ls.Unlock(now, token)
	if err == nil || err == webdav.ErrNoSuchLock {
		a.t.mu.Lock()
		delete(a.t.owner, token)
		a.t.mu.Unlock()
	}
	return err
}
