package storage

import bolt "go.etcd.io/bbolt"

// BoltOf is the database's bbolt handle, for the external benchmarks only: their
// anchor (a bare append) must batch exactly as the audit log does, and DB has no
// public Batch because no store outside this package needs one.
func BoltOf(db *DB) *bolt.DB { return db.bolt }
