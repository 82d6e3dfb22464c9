package storage

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTest opens a database in a temporary directory and checks its consistency when
// the test ends.
func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("consistency after test: %v", err)
		}
		db.Close()
	})
	return db
}

func TestMigrationsEach(t *testing.T) {
	// Apply the migrations one by one over an empty file and check what each made.
	checks := []func(tx *bolt.Tx) error{
		func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketSettings, bucketUsers, bucketSessions, bucketAudit, bucketHealth, bucketVault} {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("bucket %s missing", b)
				}
			}
			return nil
		},
		func(tx *bolt.Tx) error {
			a := tx.Bucket(bucketAudit)
			if a.Bucket(bucketEntries) == nil || a.Bucket(bucketCheckpts) == nil {
				return errors.New("audit sub-buckets missing")
			}
			return nil
		},
		func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketPeers, bucketPeerAddrs, bucketForwards} {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("bucket %s missing", b)
				}
			}
			return nil
		},
		func(tx *bolt.Tx) error {
			if tx.Bucket(bucketDNSRecords) == nil {
				return fmt.Errorf("bucket %s missing", bucketDNSRecords)
			}
			return nil
		},
		func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketCerts, bucketTrustKeys} {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("bucket %s missing", b)
				}
			}
			return nil
		},
		func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketServices, bucketServiceAccounts} {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("bucket %s missing", b)
				}
			}
			return nil
		},
	}
	if len(checks) != len(migrations) {
		t.Fatalf("%d migrations but %d checks: every migration needs a test", len(migrations), len(checks))
	}
	b, err := bolt.Open(filepath.Join(t.TempDir(), "m.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	db := &DB{bolt: b}
	for i := range migrations {
		if err := db.migrate(migrations[:i+1]); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
		if err := b.View(checks[i]); err != nil {
			t.Fatalf("after migration %d (%s): %v", i+1, migrations[i].name, err)
		}
		if v, _ := db.SchemaVersion(); v != uint64(i+1) {
			t.Fatalf("schema version = %d, want %d", v, i+1)
		}
	}
	// Applying again is a no-op; a newer file than the build is refused.
	if err := db.migrate(migrations); err != nil {
		t.Fatal(err)
	}
	if err := db.migrate(migrations[:1]); err == nil {
		t.Fatal("a database newer than the build was accepted")
	}
}

func TestVaultEncryptsAndIdentityIsPrivate(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("canary-vault-secret-7f3a")
	if err := db.Vault.Put("k", secret); err != nil {
		t.Fatal(err)
	}
	got, err := db.Vault.Get("k")
	if err != nil || string(got) != string(secret) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if _, err := db.Vault.Get("missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing secret: err = %v, want ErrNotFound", err)
	}
	db.Close()
	raw, _ := os.ReadFile(filepath.Join(dir, "cell.db"))
	if strings.Contains(string(raw), string(secret)) {
		t.Fatal("the secret is in the database file in clear text")
	}
	st, err := os.Stat(filepath.Join(dir, "identity.age"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	// Reopened with the same identity, the secret is still readable.
	db, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, err := db.Vault.Get("k"); err != nil || string(got) != string(secret) {
		t.Fatalf("after reopen: %q, %v", got, err)
	}
}

func TestSessionsRotationAndPasswordChange(t *testing.T) {
	db := openTest(t)
	now := time.Now()
	if err := db.Users().Create(User{Username: "alice", Role: RoleAdmin, PasswordHash: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Users().Create(User{Username: "alice"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	s := Session{Username: "alice", Role: RoleAdmin, ExpiresAt: now.Add(time.Hour)}
	for _, id := range []string{"a", "b", "c"} {
		if err := db.Sessions().Create(id, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Sessions().Create("d", s, "c"); err != nil { // rotation: c ends
		t.Fatal(err)
	}
	if _, err := db.Sessions().Get("c", now); !errors.Is(err, ErrNotFound) {
		t.Fatal("the replaced session still works")
	}
	if err := db.Users().SetPassword("alice", "y", now, SessionKey("a"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Sessions().Get("a", now); err != nil {
		t.Fatal("the kept session ended")
	}
	for _, id := range []string{"b", "d"} {
		if _, err := db.Sessions().Get(id, now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("session %s survived a password change", id)
		}
	}
	if _, err := db.Sessions().Get("a", now.Add(2*time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Fatal("an expired session works")
	}
	if n, err := db.Sessions().PruneExpired(now.Add(2 * time.Hour)); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
}

func TestHealthRetention(t *testing.T) {
	db := openTest(t)
	base := time.Now()
	for i := 0; i < 25; i++ {
		if err := db.Health().Append(HealthRecord{Time: base.Add(time.Duration(i) * time.Second)}, 10); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := db.Health().Recent(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 10 {
		t.Fatalf("kept %d records, want 10", len(recs))
	}
	if !recs[0].Time.Equal(base.Add(24 * time.Second)) {
		t.Fatalf("newest = %v, want the last appended", recs[0].Time)
	}
}

func TestSetupCompleteIsFinal(t *testing.T) {
	db := openTest(t)
	if err := db.Settings().PutSetupStep("admin", map[string]string{"u": "a"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Settings().CompleteSetup(map[string]string{"x": "y"}, User{Username: "admin", Role: RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Settings().CompleteSetup(map[string]string{}, User{Username: "admin2"}, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("second complete: %v", err)
	}
	if err := db.Settings().PutSetupStep("admin", 1, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("step after complete: %v", err)
	}
	var v any
	if found, _ := db.Settings().SetupStep("admin", &v); found {
		t.Fatal("step data kept after completion")
	}
}

// --- the audit log ---

func signer(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func checkpoint(t testing.TB, a Audit, priv ed25519.PrivateKey) Checkpoint {
	n, head, err := a.Head()
	if err != nil {
		t.Fatal(err)
	}
	cp := Checkpoint{Size: n, Head: head, Time: "t", PublicKey: hex.EncodeToString(priv.Public().(ed25519.PublicKey))}
	cp.Signature = hex.EncodeToString(ed25519.Sign(priv, cp.SignedMessage()))
	if err := a.PutCheckpoint(cp); err != nil {
		t.Fatal(err)
	}
	return cp
}

func fillAudit(t testing.TB, db *DB, n int) {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for i := 0; i < n; i++ {
			_, err := appendEntry(tx, Entry{
				Time: time.Unix(int64(i), 0).UTC().Format(TimeFormat), Actor: "admin", SourceIP: "127.0.0.1",
				Action: "config.update", TargetType: "config", TargetID: fmt.Sprint(i), Result: "ok",
				Details: map[string]string{"changed": "cell.name", "cell.name": fmt.Sprintf("n%d", i)},
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuditAppendQueryVerify(t *testing.T) {
	db := openTest(t)
	a := db.Audit()
	e, err := a.Append(Entry{Actor: "x", Action: "a"})
	if err != nil || e.Seq != 1 || e.Prev != strings.Repeat("0", 64) {
		t.Fatalf("first entry = %+v, %v", e, err)
	}
	fillAudit(t, db, 30)
	got, total, err := a.Query(Filter{Action: "config.update", Limit: 5, Offset: 2})
	if err != nil || total != 30 || len(got) != 5 || got[0].TargetID != "27" {
		t.Fatalf("query: %d entries of %d, first %+v, %v", len(got), total, got, err)
	}
	got, total, _ = a.Query(Filter{Since: time.Unix(10, 0), Until: time.Unix(12, 0)})
	if total != 3 {
		t.Fatalf("time window matched %d, want 3", total)
	}
	pub, priv := signer(t)
	checkpoint(t, a, priv)
	v, err := a.Verify(pub)
	if err != nil || !v.OK || v.Entries != 31 {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	other, _ := signer(t)
	if v, _ := a.Verify(other); v.OK {
		t.Fatal("a checkpoint signed by another key verified")
	}
}

// fields of the canonical encoding and a way to tamper with each in a stored record.
var tamperFields = []string{"seq", "time", "actor", "source_ip", "action", "target_type", "target_id", "result", "details"}

// tamperRecord flips one bit inside the value of field in a stored record (header
// included), returning false when the field is not found.
func tamperRecord(rec []byte, field string) ([]byte, bool) {
	out := append([]byte(nil), rec...)
	i := strings.Index(string(out[recordHeader:]), `"`+field+`":`)
	if i < 0 {
		return nil, false
	}
	pos := recordHeader + i + len(field) + 3 // the first byte of the value
	if out[pos] == '"' || out[pos] == '{' {
		pos++
	}
	out[pos] ^= 0x01
	return out, true
}

func verifyRecords(keys [][]byte, recs [][]byte, cp *Checkpoint, pub ed25519.PublicKey) Verification {
	v := NewVerifier(cp)
	for i := range recs {
		v.AddRecord(keys[i], recs[i])
	}
	return v.Result(pub)
}

func TestAuditTamperSweep(t *testing.T) {
	const n = 1000
	db := openTest(t)
	fillAudit(t, db, n)
	pub, priv := signer(t)
	cp := checkpoint(t, db.Audit(), priv)
	raw, err := db.Audit().Records()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([][]byte, n)
	recs := make([][]byte, n)
	for i, r := range raw {
		keys[i], recs[i] = r[:8], r[8:]
	}
	if v := verifyRecords(keys, recs, &cp, pub); !v.OK || v.Entries != n {
		t.Fatalf("untouched log: %+v", v)
	}
	want := func(t *testing.T, what string, v Verification, seq uint64) {
		t.Helper()
		if v.OK || v.FirstBadSeq == nil || *v.FirstBadSeq != seq {
			got := "none"
			if v.FirstBadSeq != nil {
				got = fmt.Sprint(*v.FirstBadSeq)
			}
			t.Fatalf("%s: ok=%v first_bad_seq=%s, want %d (%s)", what, v.OK, got, seq, v.Reason)
		}
	}
	// A bit flipped in each field of each entry, and in its prev and hash.
	for i := 0; i < n; i++ {
		for _, f := range tamperFields {
			bad, ok := tamperRecord(recs[i], f)
			if !ok {
				t.Fatalf("field %s not found in entry %d", f, i+1)
			}
			mod := append(append([][]byte(nil), recs[:i]...), bad)
			mod = append(mod, recs[i+1:]...)
			want(t, fmt.Sprintf("entry %d field %s", i+1, f), verifyRecords(keys, mod, &cp, pub), uint64(i+1))
		}
		for _, off := range []int{5, 40} { // prev, hash
			bad := append([]byte(nil), recs[i]...)
			bad[off] ^= 0x80
			mod := append(append([][]byte(nil), recs[:i]...), bad)
			mod = append(mod, recs[i+1:]...)
			want(t, fmt.Sprintf("entry %d header byte %d", i+1, off), verifyRecords(keys, mod, &cp, pub), uint64(i+1))
		}
	}
	drop := func(i int) ([][]byte, [][]byte) {
		k := append(append([][]byte(nil), keys[:i]...), keys[i+1:]...)
		r := append(append([][]byte(nil), recs[:i]...), recs[i+1:]...)
		return k, r
	}
	for _, i := range []int{0, 1, 499, 998} {
		k, r := drop(i)
		want(t, fmt.Sprintf("delete entry %d", i+1), verifyRecords(k, r, &cp, pub), uint64(i+1))
	}
	// Reorder: swap two neighbours (keys move with their values, as in a stolen file
	// rewritten with other keys too).
	for _, i := range []int{0, 500} {
		r := append([][]byte(nil), recs...)
		r[i], r[i+1] = r[i+1], r[i]
		want(t, fmt.Sprintf("swap %d,%d", i+1, i+2), verifyRecords(keys, r, &cp, pub), uint64(i+1))
		k := append([][]byte(nil), keys...)
		k[i], k[i+1] = k[i+1], k[i]
		want(t, fmt.Sprintf("swap keys too %d,%d", i+1, i+2), verifyRecords(k, r, &cp, pub), uint64(i+1))
	}
	// Duplicate an entry.
	for _, i := range []int{0, 700} {
		k := append(append(append([][]byte(nil), keys[:i+1]...), keys[i]), keys[i+1:]...)
		r := append(append(append([][]byte(nil), recs[:i+1]...), recs[i]), recs[i+1:]...)
		want(t, fmt.Sprintf("duplicate %d", i+1), verifyRecords(k, r, &cp, pub), uint64(i+2))
	}
	// Dropping the newest entries is caught against the signed checkpoint.
	for _, keep := range []int{999, 900, 1} {
		want(t, fmt.Sprintf("truncate to %d", keep), verifyRecords(keys[:keep], recs[:keep], &cp, pub), uint64(keep+1))
	}
	// A forged checkpoint (size raised) does not verify with the trusted key.
	forged := cp
	forged.Size = n + 5
	if v := verifyRecords(keys, recs, &forged, pub); v.OK {
		t.Fatal("a forged checkpoint was accepted")
	}
}

func TestAuditVerifyCatchesTamperInTheFile(t *testing.T) {
	db := openTest(t)
	fillAudit(t, db, 50)
	pub, priv := signer(t)
	checkpoint(t, db.Audit(), priv)
	// Rewrite entry 17 in the database itself.
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := entriesBucket(tx)
		bad, _ := tamperRecord(b.Get(u64(17)), "actor")
		return b.Put(u64(17), bad)
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := db.Audit().Verify(pub)
	if err != nil || v.OK || *v.FirstBadSeq != 17 {
		t.Fatalf("verify = %+v, %v", v, err)
	}
	// Drop the newest 5 entries: caught against the checkpoint.
	db2 := openTest(t)
	fillAudit(t, db2, 20)
	checkpoint(t, db2.Audit(), priv)
	db2.bolt.Update(func(tx *bolt.Tx) error {
		for s := uint64(16); s <= 20; s++ {
			entriesBucket(tx).Delete(u64(s))
		}
		return nil
	})
	v, _ = db2.Audit().Verify(pub)
	if v.OK || *v.FirstBadSeq != 16 {
		t.Fatalf("truncated log: %+v", v)
	}
}

func TestAuditExportEntriesVerifyOffline(t *testing.T) {
	db := openTest(t)
	fillAudit(t, db, 40)
	db.Audit().Append(Entry{Actor: "$(reboot)", TargetID: "a\x00b\n<c>&", Details: map[string]string{"k": strings.Repeat("ü", 1000)}})
	pub, priv := signer(t)
	cp := checkpoint(t, db.Audit(), priv)
	var entries []Entry
	db.Audit().Each(func(e Entry) error { entries = append(entries, e); return nil })
	v := NewVerifier(&cp)
	for _, e := range entries {
		v.AddEntry(e)
	}
	if r := v.Result(pub); !r.OK || r.Entries != 41 {
		t.Fatalf("export verify: %+v", r)
	}
	entries[20].Result = "denied"
	v = NewVerifier(&cp)
	for _, e := range entries {
		v.AddEntry(e)
	}
	if r := v.Result(pub); r.OK || *r.FirstBadSeq != 21 {
		t.Fatalf("tampered export: %+v", r)
	}
}
