package storage

import (
	"encoding/json"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Tx is a bbolt transaction. Stores hand it to a Within so that the caller's
// own writes (its audit entry, the effects other capabilities registered as
// hooks) commit together with the store's change, or not at all.
type Tx = bolt.Tx

// Within runs inside a store's write transaction, after the store's change; an
// error rolls the whole transaction back. nil is allowed and does nothing.
type Within func(tx *Tx) error

func (w Within) run(tx *Tx) error {
	if w == nil {
		return nil
	}
	return w(tx)
}

// ChangeKind names what a commit changed that the kernel state is built from.
type ChangeKind string

const (
	ChangeConfig  ChangeKind = "config"  // the config document (setup completing too)
	ChangePeer    ChangeKind = "peer"    // one peer, Key is its name
	ChangeForward ChangeKind = "forward" // a port forward
	ChangeRecord  ChangeKind = "record"  // a record of the cell's own zone (DNS)
	ChangeCert    ChangeKind = "cert"    // a certificate of the vault's CA made or revoked, Key is its serial
	ChangeService ChangeKind = "service" // an installed service or its accounts, Key is its id
)

// Change is one committed change, as the reconcile loop hears of it.
type Change struct {
	Kind ChangeKind
	Key  string
}

// watchers are called after every commit that changed what the kernel state is
// built from. They run on the committing goroutine, so they must only note the
// change and return (the reconcile loop sets a flag and wakes itself).
type watchers struct {
	mu  sync.RWMutex
	fns []func(Change)
}

// OnCommit registers fn to hear of every committed Change. There is no polling
// anywhere: the database says when something committed.
func (db *DB) OnCommit(fn func(Change)) {
	db.watch.mu.Lock()
	defer db.watch.mu.Unlock()
	db.watch.fns = append(db.watch.fns, fn)
}

// changed arranges for c to be announced once tx commits.
func (db *DB) changed(tx *Tx, c Change) {
	tx.OnCommit(func() {
		db.watch.mu.RLock()
		defer db.watch.mu.RUnlock()
		for _, fn := range db.watch.fns {
			fn(c)
		}
	})
}

// View runs fn in one read transaction: a consistent snapshot of every bucket.
func (db *DB) View(fn func(tx *Tx) error) error { return db.bolt.View(fn) }

// Update runs fn in one write transaction, for a caller that stores several
// records of different stores together (the typed stores' *Tx functions).
func (db *DB) Update(fn func(tx *Tx) error) error { return db.bolt.Update(fn) }

// ConfigTx decodes the stored config into dst inside tx.
func (s Settings) ConfigTx(tx *Tx, dst any) (found bool, err error) {
	raw := tx.Bucket(bucketSettings).Get(keyConfig)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return true, fmt.Errorf("settings: config: %w", err)
	}
	return true, nil
}

// ListTx returns every peer, sorted by name, inside tx.
func (s Peers) ListTx(tx *Tx) ([]Peer, error) {
	out := []Peer{}
	err := tx.Bucket(bucketPeers).ForEach(func(k, v []byte) error {
		var p Peer
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("peer %q: %w", k, err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// GetTx returns the named peer inside tx.
func (s Peers) GetTx(tx *Tx, name string) (Peer, error) { return getPeer(tx, name) }

// ListTx returns every forward inside tx, by protocol and port (the key order).
func (s Forwards) ListTx(tx *Tx) ([]Forward, error) {
	out := []Forward{}
	err := tx.Bucket(bucketForwards).ForEach(func(k, v []byte) error {
		var f Forward
		if err := json.Unmarshal(v, &f); err != nil {
			return fmt.Errorf("forward %q: %w", k, err)
		}
		out = append(out, f)
		return nil
	})
	return out, err
}
