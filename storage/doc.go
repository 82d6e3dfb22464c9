// Package storage owns the cell's persistent state: one bbolt file (DATA/cell.db),
// typed stores per bucket, ordered schema migrations, the hash-chained audit log and
// the vault (secrets encrypted with the cell's age identity, which lives beside the
// database in DATA/identity.age, mode 0600).
//
// Every write is a bbolt read-write transaction committed with fsync (NoSync is never
// set), so a value is durable once the call that wrote it returns. Callers that change
// several buckets at once do so in one Update closure.
//
// The bucket tree (a bucket per line, keys below it):
//
//	meta
//	  schema_version       -> uint64, big-endian: the last migration applied
//	settings
//	  config               -> JSON Config (cell, network, health, logs)
//	  setup/complete       -> "1" once setup has been completed; never cleared
//	  setup/step/<name>    -> JSON of a submitted wizard step (no clear-text secret)
//	users
//	  <username>           -> JSON User (role, argon2id PHC hash, timestamps)
//	sessions
//	  <sha256(session id)> -> JSON Session (user, role, CSRF token, expiry)
//	audit
//	  entries
//	    <seq, uint64 BE>   -> canonical JSON of an Entry with prev and hash
//	  checkpoints
//	    <size, uint64 BE>  -> JSON Checkpoint (size, head, time, ed25519 signature)
//	health
//	  <unix nanos, BE>     -> JSON HealthRecord; the oldest are pruned past a bound
//	vault
//	  <name>               -> age-encrypted secret bytes
//	peers
//	  <name>               -> JSON Peer (addresses, public key, route, policy; no secret)
//	peer_addrs
//	  <IPv4, 4 bytes>      -> peer name (the address index, in address order)
//	forwards
//	  <proto>/<port, BE16> -> JSON Forward (WAN port to a peer's port)
//
// Session identifiers are stored only as their SHA-256, so a copy of the database does
// not hand out live sessions. Errors wrap the package's sentinels (ErrNotFound,
// ErrExists, ErrConflict) with context, so callers test them with errors.Is.
package storage
