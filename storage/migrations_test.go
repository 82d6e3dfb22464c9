package storage

import (
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Migrations that change data, not only buckets, are tested as an upgrade: the
// test leaves a data directory at schema version k with records in the shape that
// version wrote (oldDatabase), opens it as the current firmware does at boot,
// which applies the migrations after k (upgrade), and reads the new shape through
// the stores. TestMigrationsEach (storage_test.go) checks what each migration
// makes on an empty file; this harness checks what it does to a full one.

// oldDatabase makes a data directory at schema version k: cell.db with only
// migrations[:k] applied, and the vault identity beside it. old runs in one
// write transaction to store records as a firmware of version k did; its db
// has the vault, so old secrets can be sealed too. It returns the directory.
func oldDatabase(t *testing.T, k int, old func(db *DB, tx *bolt.Tx) error) string {
	t.Helper()
	if k < 1 || k > len(migrations) {
		t.Fatalf("no schema version %d (the migrations go up to %d)", k, len(migrations))
	}
	dir := t.TempDir()
	b, err := bolt.Open(filepath.Join(dir, "cell.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	db := &DB{bolt: b}
	if err := db.migrate(migrations[:k]); err != nil {
		t.Fatalf("migrations up to %d: %v", k, err)
	}
	if db.Vault, err = openVault(filepath.Join(dir, "identity.age"), db); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.SchemaVersion(); v != uint64(k) {
		t.Fatalf("the old file is at version %d, want %d", v, k)
	}
	if err := b.Update(func(tx *bolt.Tx) error { return old(db, tx) }); err != nil {
		t.Fatalf("writing the version %d records: %v", k, err)
	}
	return dir
}

// upgrade opens dir as the current firmware does, which applies every migration
// after the stored version, and checks the file's consistency when the test ends.
func upgrade(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("consistency after the upgrade: %v", err)
		}
		db.Close()
	})
	if v, _ := db.SchemaVersion(); v != uint64(len(migrations)) {
		t.Fatalf("upgraded to version %d, want %d", v, len(migrations))
	}
	return db
}

// TestUpgradeFromSchema2 upgrades a set-up cell from before migration 3 (no
// peers). No migration so far rewrites records, so what this holds is that the
// ones after version 2 keep every record a cell had (config, users, the vault
// with its identity, the audit chain's head) and that the peer stores migration 3
// added work over them: a peer cannot take the name of an old user.
func TestUpgradeFromSchema2(t *testing.T) {
	const cfg = `{"cell":{"domain":"cell.test","name":"home"},"network":{"subnet_v4":"10.77.0.0/24","subnet_v6":"fd77::/64","wan_interface":"auto","wg_port":51820}}`
	const admin = `{"username":"admin","role":"admin","password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA","created_at":"2024-05-01T10:00:00Z","password_changed_at":"2024-05-01T10:00:00Z"}`
	var head string
	dir := oldDatabase(t, 2, func(db *DB, tx *bolt.Tx) error {
		s := tx.Bucket(bucketSettings)
		if err := s.Put(keyConfig, []byte(cfg)); err != nil {
			return err
		}
		if err := s.Put(keySetupComplete, []byte("1")); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsers).Put([]byte("admin"), []byte(admin)); err != nil {
			return err
		}
		if err := db.Vault.PutTx(tx, "audit/checkpoint-key", []byte("old secret")); err != nil {
			return err
		}
		e, err := appendEntry(tx, Entry{Time: "2024-05-01T10:00:00.000000000Z", Actor: "admin", Action: "setup.complete", Result: "success"})
		head = e.Hash
		return err
	})
	db := upgrade(t, dir)

	var got json.RawMessage
	if found, err := db.Settings().Config(&got); err != nil || !found || string(got) != cfg {
		t.Fatalf("config after the upgrade = %s (found %v, %v), want %s", got, found, err, cfg)
	}
	if done, err := db.Settings().SetupComplete(); err != nil || !done {
		t.Fatalf("setup complete = %v, %v", done, err)
	}
	if u, err := db.Users().Get("admin"); err != nil || u.Role != RoleAdmin || u.PasswordHash != "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA" {
		t.Fatalf("admin after the upgrade = %+v, %v", u, err)
	}
	if secret, err := db.Vault.Get("audit/checkpoint-key"); err != nil || string(secret) != "old secret" {
		t.Fatalf("the old vault secret = %q, %v", secret, err)
	}
	if n, h, err := db.Audit().Head(); err != nil || n != 1 || h != head {
		t.Fatalf("audit head = %d %s, %v; want 1 %s", n, h, err, head)
	}

	v4, v6 := netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd77::/64")
	login := func(name string) User { return User{Username: name, Role: RolePeer, PasswordHash: "unused"} }
	taken := Peer{Name: "admin", PublicKey: "x", Enabled: true}
	if err := db.Peers().Create(&taken, v4, v6, nil, login("admin"), nil); !errors.Is(err, ErrExists) {
		t.Fatalf("a peer named after the old admin: %v, want ErrExists", err)
	}
	p := Peer{Name: "laptop", PublicKey: "x", Enabled: true}
	psk := PeerSecret("laptop", SecretPresharedKey)
	if err := db.Peers().Create(&p, v4, v6, map[string][]byte{psk: []byte("psk")}, login("laptop"), nil); err != nil {
		t.Fatal(err)
	}
	if p.IPv4 != netip.MustParseAddr("10.77.0.2") {
		t.Fatalf("the first peer got %v, want 10.77.0.2", p.IPv4)
	}
	if peers, err := db.Peers().List(); err != nil || len(peers) != 1 {
		t.Fatalf("peers = %+v, %v", peers, err)
	}
	if fwds, err := db.Forwards().List(); err != nil || len(fwds) != 0 {
		t.Fatalf("forwards = %+v, %v", fwds, err)
	}
}
