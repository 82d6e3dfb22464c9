package storage

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A migration moves the schema from version N-1 to N (N is its place in migrations,
// counting from 1). Migrations only ever get appended, and a released one never
// changes: a cell at any older version must reach the same file. Each has a check of
// what it makes on an empty file in TestMigrationsEach (storage_test.go); one that
// changes existing records also gets an upgrade test through the harness in
// migrations_test.go (a file at the version before it, holding records in that
// version's shape, opened by the current code).
type migration struct {
	name  string
	apply func(tx *bolt.Tx) error
}

// migrations is the ordered list of every schema change the cell has ever made.
var migrations = []migration{
	{"create the base buckets", migrateBaseBuckets},
	{"nest the audit log's entries and checkpoints", migrateAuditNesting},
	{"create the peers, peer address index and port forward buckets", migratePeers},
	{"create the bucket of the DNS zone's custom records", migrateDNSRecords},
	{"create the buckets of the CA's certificates and the trust keys", migrateCerts},
	{"create the buckets of the installed services and their accounts", migrateServices},
}

func migrateBaseBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketSettings, bucketUsers, bucketSessions, bucketAudit, bucketHealth, bucketVault} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

func migrateAuditNesting(tx *bolt.Tx) error {
	a := tx.Bucket(bucketAudit)
	for _, name := range [][]byte{bucketEntries, bucketCheckpts} {
		if _, err := a.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

func readSchemaVersion(tx *bolt.Tx) uint64 {
	m := tx.Bucket(bucketMeta)
	if m == nil {
		return 0
	}
	return readU64(m.Get(keySchemaVersion))
}

// migrate applies the migrations after the stored version, each in its own
// transaction that also records the new version, so a crash leaves the file at a
// whole version. A database newer than this binary is refused rather than guessed at.
func (db *DB) migrate(list []migration) error {
	for {
		done := false
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			m, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			v := readSchemaVersion(tx)
			if v > uint64(len(list)) {
				return fmt.Errorf("storage: database schema %d is newer than this build knows (%d)", v, len(list))
			}
			if v == uint64(len(list)) {
				done = true
				return nil
			}
			mig := list[v]
			if err := mig.apply(tx); err != nil {
				return fmt.Errorf("storage: migration %d (%s): %w", v+1, mig.name, err)
			}
			return m.Put(keySchemaVersion, u64(v+1))
		})
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}
