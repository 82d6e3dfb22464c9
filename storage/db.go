package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sentinel errors; every error the stores return about missing or clashing records
// wraps one of these.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
)

var (
	bucketMeta     = []byte("meta")
	bucketSettings = []byte("settings")
	bucketUsers    = []byte("users")
	bucketSessions = []byte("sessions")
	bucketAudit    = []byte("audit")
	bucketEntries  = []byte("entries")
	bucketCheckpts = []byte("checkpoints")
	bucketHealth   = []byte("health")
	bucketVault    = []byte("vault")

	keySchemaVersion = []byte("schema_version")
)

// DB is the cell's database. It is safe for concurrent use.
type DB struct {
	bolt  *bolt.DB
	path  string
	Vault *Vault

	// The session cache spares every API request a read transaction and a JSON
	// decode. Any deletion of sessions bumps sessGen before its transaction and again
	// once it has committed; a cached session is used only while its generation is
	// current, so an ended session is never served from the cache.
	sessCache sync.Map // hex key -> cachedSession
	sessGen   atomic.Uint64

	watch watchers // tx.go
}

// Open opens (creating if needed) DIR/cell.db and the vault identity beside it, and
// applies every pending migration before returning.
func Open(dir string) (*DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	path := filepath.Join(dir, "cell.db")
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	// A lone audit append waits at most this long for others to share its fsync.
	b.MaxBatchDelay = 2 * time.Millisecond
	db := &DB{bolt: b, path: path}
	if err := db.migrate(migrations); err != nil {
		b.Close()
		return nil, err
	}
	v, err := openVault(filepath.Join(dir, "identity.age"), db)
	if err != nil {
		b.Close()
		return nil, err
	}
	db.Vault = v
	return db, nil
}

// Close closes the database file. It is safe to call more than once.
func (db *DB) Close() error {
	if db == nil || db.bolt == nil {
		return nil
	}
	err := db.bolt.Close()
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return nil
	}
	return err
}

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// Check walks every page of the file and reports the first inconsistency bbolt finds.
func (db *DB) Check() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("storage: consistency: %w", err)
		}
		return nil
	})
}

// SchemaVersion is the number of the last migration applied.
func (db *DB) SchemaVersion() (uint64, error) {
	var v uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v = readSchemaVersion(tx)
		return nil
	})
	return v, err
}

// Ping proves the database answers a read transaction.
func (db *DB) Ping() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("storage: meta bucket missing")
		}
		return nil
	})
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func readU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
