// Package storage owns the cell's persistent state: one bbolt file (DATA/cell.db),
// typed stores per bucket, ordered schema migrations, the hash-chained audit log and
// the vault (secrets encrypted with the cell's age identity, which lives beside the
// database in DATA/identity.age, mode 0600).
//
// Every write is a bbolt read-write transaction committed with fsync (NoSync is never
// set), so a value is durable once the call that wrote it returns.
//
// Transactions across stores (tx.go): a store's write method takes a Within, which
// runs inside the store's own transaction after its change, so the caller's audit
// entry and the effects other capabilities hooked in commit with the change or not at
// all. DB.View reads every bucket in one consistent snapshot and DB.Update writes
// several stores together through their *Tx functions (ListTx, GetTx, AppendTx, ...).
// A commit that changes what the kernel state is built from (the config, a peer, a
// forward, a DNS record, a certificate of the CA) is announced once it is durable to
// every DB.OnCommit callback as a Change, so the reconcile loop never polls.
//
// Migrations (migrations.go) only ever get appended; migration N moves the file from
// schema version N-1 to N in one transaction that records the new version. Each has a
// check in TestMigrationsEach; one that changes data also has an upgrade test from a
// file at the version before it (oldDatabase and upgrade in migrations_test.go).
//
// The bucket tree (a bucket per line, keys below it; the migration that made it):
//
//	meta                                (Open, before any migration)
//	  schema_version       -> uint64, big-endian: the last migration applied
//	settings                            (1)
//	  config               -> JSON config document, one object per section (cell, network, health, ...)
//	  setup/complete       -> "1" once setup has been completed; never cleared
//	  setup/step/<name>    -> JSON of a submitted wizard step (no clear-text secret); removed at completion
//	users                               (1)
//	  <username>           -> JSON User (role, argon2id PHC hash, timestamps)
//	sessions                            (1)
//	  <hex sha256(id)>     -> JSON Session (user, role, CSRF token, expiry)
//	audit                               (1)
//	  entries                           (2)
//	    <seq, uint64 BE>   -> prev hash (32 bytes) | hash (32 bytes) | canonical JSON Entry
//	  checkpoints                       (2)
//	    <size, uint64 BE>  -> JSON Checkpoint (size, head, time, ed25519 signature)
//	  base                 -> JSON Checkpoint of kind "base": where a pruned log starts (the
//	                          first kept entry's seq-1 and prev hash), signed; absent until
//	                          the first prune (auditprune.go), so no migration
//	health                              (1)
//	  <unix nanos, BE>     -> JSON HealthRecord; the oldest are pruned past a bound
//	vault                               (1)
//	  <name>               -> age-encrypted secret bytes (wireguard/private-key,
//	                          audit/checkpoint-key, ca/private-key, peer/<name>/private-key,
//	                          peer/<name>/preshared-key,
//	                          service/<id>/admin-token, service/<id>/account/<username>)
//	peers                               (3)
//	  <name>               -> JSON Peer (addresses, public key, route, policy; no secret)
//	peer_addrs                          (3)
//	  <IPv4, 4 bytes>      -> peer name (the address index, in address order)
//	forwards                            (3)
//	  <proto>/<port, BE16> -> JSON Forward (WAN port to a peer's port)
//	dns_records                         (4)
//	  <id, uint64 BE>      -> JSON DNSRecord (a custom record of the cell's zone)
//	certs                               (5)
//	  <serial, hex>        -> JSON Cert (the CA's root and what it issued: names, validity,
//	                          revocation, DER; never a private key)
//	trust_keys                          (5)
//	  <name>               -> JSON TrustKey (an ed25519 public key the cell trusts, its purpose)
//	services                            (6)
//	  <id>                 -> JSON InstalledService (the catalog entry installed, its bridge address)
//	service_accounts                    (6)
//	  <id>/                (a bucket per installed service)
//	    <username>         -> JSON ServiceAccount (the peer it is for; the password is in the vault)
//
// Session identifiers are stored only as their SHA-256, so a copy of the database does
// not hand out live sessions. Errors wrap the package's sentinels (ErrNotFound,
// ErrExists, ErrConflict) with context, so callers test them with errors.Is.
package storage
