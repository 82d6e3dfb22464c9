package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/pic-cell/cell/storage"
)

// Window is how long the refusals of anonymous requests are counted before their
// entries are written: one entry per (source, actor, action, target, result) and
// window, with the count in its details.
const Window = time.Minute

// MaxRefusalKeys bounds the distinct keys counted in one window. Past it, a new
// key is folded into one per (action, target type, result) with source and actor
// "various" (at most FoldedKeys of those), and past that into a single key that is
// "various" throughout; the count is never lost, only its breakdown.
const (
	MaxRefusalKeys = 64
	FoldedKeys     = 32
	various        = "various"
)

// Anonymous is the actor of a request without a session.
const Anonymous = "anonymous"

type refusalKey struct{ source, actor, action, targetType, targetID, result string }

type refusalCount struct {
	n           uint64
	first, last time.Time
}

// refusals is the open window's counts.
type refusals struct {
	mu     sync.Mutex
	start  time.Time // the window's start (now truncated to Window)
	counts map[refusalKey]*refusalCount
	order  []refusalKey // first seen first, so the entries come out in that order
	timer  *time.Timer
	// writing serialises writing windows, so entries keep the order of windows.
	writing sync.Mutex
}

// window is a closed window taken out for writing.
type window struct {
	counts map[refusalKey]*refusalCount
	order  []refusalKey
}

// Refused counts a refusal of an anonymous request (no session): an admin does
// not need 400,000 identical entries to see a flood, and the database must not
// grow with it. The entry's source, actor, action, target and result make its key;
// its other details are dropped. The window's entries are written when it closes
// (a timer, or the first refusal of a later window), at every Checkpoint (the
// health loop, shutdown) and before a query or an export reads the log. A crash
// loses at most the counts of the open window.
//
// The actor of a refused login (and the target when it names a user) is what the
// client typed: unless it names an existing account it is replaced by
// UnknownUser's short keyed hash, so a password typed into the user name field is
// never stored.
func (l *Log) Refused(e storage.Entry) error {
	now := l.now()
	if e.Actor == "" {
		e.Actor = Anonymous
	}
	// The key holds the text as the client sent it, bounded, in memory only: the
	// unknown user names are hashed, and all of it cleaned, when the window's
	// entries are written (once per key, not once per refusal).
	k := refusalKey{bound(e.SourceIP), bound(e.Actor), bound(e.Action), bound(e.TargetType), bound(e.TargetID), bound(e.Result)}
	r := &l.refusals
	r.mu.Lock()
	var closed *window
	start := now.Truncate(Window)
	if r.counts != nil && !start.Equal(r.start) {
		closed = r.takeLocked()
	}
	if r.counts == nil {
		r.start = start
		r.counts = map[refusalKey]*refusalCount{}
		r.timer = time.AfterFunc(start.Add(Window).Sub(now)+10*time.Millisecond, l.closeWindow)
	}
	if _, ok := r.counts[k]; !ok && len(r.counts) >= MaxRefusalKeys {
		k = refusalKey{various, various, k.action, k.targetType, "", k.result}
		if _, ok := r.counts[k]; !ok && len(r.counts) >= MaxRefusalKeys+FoldedKeys {
			k = refusalKey{various, various, various, various, "", various}
		}
	}
	c := r.counts[k]
	if c == nil {
		c = &refusalCount{first: now}
		r.counts[k] = c
		r.order = append(r.order, k)
	}
	c.n++
	c.last = now
	if closed != nil {
		// Written before this call returns and under the writing lock taken
		// before the counts lock is let go, so windows are written in order.
		r.writing.Lock()
		r.mu.Unlock()
		defer r.writing.Unlock()
		return l.writeWindow(closed)
	}
	r.mu.Unlock()
	return nil
}

// takeLocked takes the open window's counts out; r.mu is held.
func (r *refusals) takeLocked() *window {
	if r.counts == nil {
		return nil
	}
	w := &window{counts: r.counts, order: r.order}
	r.counts, r.order = nil, nil
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	return w
}

// closeWindow runs when the open window's time is up: its entries are written.
// With a clock that has not reached the window's end (a test's), it waits again.
func (l *Log) closeWindow() {
	r := &l.refusals
	r.mu.Lock()
	if r.counts == nil {
		r.mu.Unlock()
		return
	}
	if l.now().Before(r.start.Add(Window)) {
		r.timer = time.AfterFunc(Window, l.closeWindow)
		r.mu.Unlock()
		return
	}
	w := r.takeLocked()
	r.writing.Lock()
	r.mu.Unlock()
	defer r.writing.Unlock()
	if err := l.writeWindow(w); err != nil {
		l.log.Error("writing the counted refusals failed", "err", err)
	}
}

// Flush writes the counts of the open window now (its later refusals start a new
// count). Checkpoint, Query and Export call it.
func (l *Log) Flush() error {
	r := &l.refusals
	r.mu.Lock()
	w := r.takeLocked()
	r.writing.Lock()
	r.mu.Unlock()
	defer r.writing.Unlock()
	return l.writeWindow(w)
}

// writeWindow appends one entry per key of w, in one transaction.
func (l *Log) writeWindow(w *window) error {
	if w == nil || len(w.order) == 0 {
		return nil
	}
	ts := l.now().UTC().Format(storage.TimeFormat)
	// The entries are made (names looked up) before the write transaction opens:
	// a read inside it could wait on the writer's remap.
	entries := make([]storage.Entry, 0, len(w.order))
	for _, k := range w.order {
		c := w.counts[k]
		e := l.hideUnknownUsers(storage.Entry{
			Time: ts, Actor: k.actor, SourceIP: k.source, Action: k.action, TargetType: k.targetType,
			TargetID: k.targetID, Result: k.result,
			Details: map[string]string{
				"count": strconv.FormatUint(c.n, 10),
				"first": c.first.UTC().Format(storage.TimeFormat),
				"last":  c.last.UTC().Format(storage.TimeFormat),
			},
		})
		if k.source == various || k.actor == various {
			e.Details["folded"] = "more distinct sources, users or targets than " + strconv.Itoa(MaxRefusalKeys) + " in one window"
		}
		entries = append(entries, e)
	}
	err := l.db.Update(func(tx *storage.Tx) error {
		for _, e := range entries {
			if _, err := l.db.Audit().AppendTx(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	l.log.Debug("counted refusals written", "entries", len(w.order))
	return nil
}

// Count is how many refusals an entry stands for: its "count" detail (an entry of
// counted refusals), else 1.
func Count(e storage.Entry) uint64 {
	if n, err := strconv.ParseUint(e.Details["count"], 10, 64); err == nil {
		return n
	}
	return 1
}

// UnknownUser is what the log says for a user name that names no account: "unknown
// user" and a short hash of it, keyed with a secret of this cell (derived from the
// checkpoint key), so attempts with the same text can be told apart from others
// without the text being stored or guessable from the log alone.
func (l *Log) UnknownUser(name string) string {
	m := hmac.New(sha256.New, l.nameKey)
	m.Write([]byte(name))
	return "unknown user " + hex.EncodeToString(m.Sum(nil)[:4])
}

// maxKeyText bounds each field of a refusal's key in memory (Append cuts the
// stored text to storage.MaxTextLen after cleaning it).
const maxKeyText = 256

func bound(s string) string {
	if len(s) > maxKeyText {
		return s[:maxKeyText]
	}
	return s
}

// hideUnknownUsers replaces the actor, and a target that is a user, by
// UnknownUser when they name no account.
func (l *Log) hideUnknownUsers(e storage.Entry) storage.Entry {
	if e.Actor != "" && e.Actor != Anonymous && e.Actor != various && !l.userExists(e.Actor) {
		e.Actor = l.UnknownUser(e.Actor)
	}
	if e.TargetType == "user" && e.TargetID != "" && e.TargetID != various && !l.userExists(e.TargetID) {
		e.TargetID = l.UnknownUser(e.TargetID)
	}
	return e
}

func (l *Log) userExists(name string) bool {
	_, err := l.db.Users().Get(name)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		l.log.Warn("user lookup failed; the name is logged as unknown", "err", err)
	}
	return err == nil
}
