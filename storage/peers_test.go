package storage

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

var (
	testV4 = netip.MustParsePrefix("10.77.0.0/29") // .2 to .6 for peers
	testV6 = netip.MustParsePrefix("fd77:1:2:3::/64")
)

func newPeer(t *testing.T, db *DB, name string) Peer {
	t.Helper()
	p := Peer{Name: name, Route: RouteFull, Enabled: true, PublicKey: "pub-" + name}
	secrets := map[string][]byte{PeerSecret(name, SecretPresharedKey): []byte("psk-" + name)}
	if err := db.Peers().Create(&p, testV4, testV6, secrets, User{Username: name, Role: RolePeer, PasswordHash: "x"}, nil); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return p
}

func TestPeersAllocateReuseAndFull(t *testing.T) {
	db := openTest(t)
	var got []string
	for i := range 5 {
		p := newPeer(t, db, fmt.Sprintf("p%d", i))
		got = append(got, p.IPv4.String()+" "+p.IPv6.String())
	}
	want := []string{"10.77.0.2 fd77:1:2:3::2", "10.77.0.3 fd77:1:2:3::3", "10.77.0.4 fd77:1:2:3::4", "10.77.0.5 fd77:1:2:3::5", "10.77.0.6 fd77:1:2:3::6"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("addresses = %v, want %v", got, want)
	}
	p := Peer{Name: "late"}
	err := db.Peers().Create(&p, testV4, testV6, nil, User{Username: "late", Role: RolePeer}, nil)
	if !errors.Is(err, ErrSubnetFull) || !errors.Is(err, ErrConflict) {
		t.Errorf("create in a full subnet = %v, want ErrSubnetFull (a conflict)", err)
	}
	if _, err := db.Users().Get("late"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed create left a user behind: %v", err)
	}
	// Freed addresses are reused, lowest first.
	if _, _, err := db.Peers().Delete("p1", nil); err != nil {
		t.Fatal(err)
	}
	if p := newPeer(t, db, "again"); p.IPv4 != netip.MustParseAddr("10.77.0.3") {
		t.Errorf("reused address = %v, want 10.77.0.3", p.IPv4)
	}
}

func TestPeersNameTaken(t *testing.T) {
	db := openTest(t)
	newPeer(t, db, "bob")
	p := Peer{Name: "bob"}
	if err := db.Peers().Create(&p, testV4, testV6, nil, User{Username: "bob", Role: RolePeer}, nil); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate peer = %v, want ErrExists", err)
	}
	if err := db.Users().Create(User{Username: "admin", Role: RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	p = Peer{Name: "admin"}
	if err := db.Peers().Create(&p, testV4, testV6, nil, User{Username: "admin", Role: RolePeer}, nil); !errors.Is(err, ErrExists) {
		t.Errorf("peer named like an admin = %v, want ErrExists", err)
	}
}

func TestPeerDeleteRemovesEverything(t *testing.T) {
	db := openTest(t)
	newPeer(t, db, "carol")
	newPeer(t, db, "dave")
	if err := db.Forwards().Create(Forward{Proto: "tcp", Port: 8080, Peer: "carol", ToPort: 80}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Forwards().Create(Forward{Proto: "udp", Port: 9000, Peer: "dave", ToPort: 9000}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Forwards().Create(Forward{Proto: "tcp", Port: 8080, Peer: "dave", ToPort: 81}, nil); !errors.Is(err, ErrExists) {
		t.Errorf("forward on a taken port = %v, want ErrExists", err)
	}
	if err := db.Forwards().Create(Forward{Proto: "tcp", Port: 1, Peer: "nobody", ToPort: 1}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("forward to a missing peer = %v, want ErrNotFound", err)
	}
	if err := db.Sessions().Create("sess-carol", Session{Username: "carol", Role: RolePeer}, ""); err != nil {
		t.Fatal(err)
	}
	p, fwds, err := db.Peers().Delete("carol", nil)
	if err != nil || p.Name != "carol" || len(fwds) != 1 {
		t.Fatalf("Delete = %+v, %v, %v", p, fwds, err)
	}
	if _, err := db.Peers().Get("carol"); !errors.Is(err, ErrNotFound) {
		t.Errorf("peer still there: %v", err)
	}
	if _, err := db.Users().Get("carol"); !errors.Is(err, ErrNotFound) {
		t.Errorf("login still there: %v", err)
	}
	if _, err := db.Vault.Get(PeerSecret("carol", SecretPresharedKey)); !errors.Is(err, ErrNotFound) {
		t.Errorf("vault secret still there: %v", err)
	}
	if s, err := db.Sessions().Get("sess-carol", p.CreatedAt); err == nil {
		t.Errorf("session still there: %+v", s)
	}
	fl, _ := db.Forwards().List()
	if len(fl) != 1 || fl[0].Peer != "dave" {
		t.Errorf("forwards after delete = %+v, want only dave's", fl)
	}
	if b, err := db.Vault.Get(PeerSecret("dave", SecretPresharedKey)); err != nil || string(b) != "psk-dave" {
		t.Errorf("dave's secret = %q, %v", b, err)
	}
	if _, _, err := db.Peers().Delete("carol", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete = %v, want ErrNotFound", err)
	}
}

func TestPeerUpdateKeepsIdentity(t *testing.T) {
	db := openTest(t)
	newPeer(t, db, "erin")
	p, err := db.Peers().Update("erin", func(p *Peer) error { p.Enabled = false; p.Description = "old phone"; return nil }, nil)
	if err != nil || p.Enabled || p.Description != "old phone" {
		t.Fatalf("Update = %+v, %v", p, err)
	}
	if _, err := db.Peers().Update("erin", func(p *Peer) error { p.IPv4 = netip.MustParseAddr("10.77.0.9"); return nil }, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("address change = %v, want ErrConflict", err)
	}
	if got, _ := db.Peers().Get("erin"); got.IPv4 != netip.MustParseAddr("10.77.0.2") || got.Enabled {
		t.Errorf("stored = %+v", got)
	}
}

func TestDNSRecordsCreateDeleteAndWithin(t *testing.T) {
	db := openTest(t)
	var heard []Change
	db.OnCommit(func(c Change) { heard = append(heard, c) })
	r := DNSRecord{Name: "www", Type: "A", Value: "10.77.0.9", TTL: 300}
	if err := db.DNSRecords().Create(&r, nil); err != nil || r.ID != 1 {
		t.Fatalf("create: id %d, %v", r.ID, err)
	}
	refused := DNSRecord{Name: "bad", Type: "A", Value: "10.77.0.8"}
	if err := db.DNSRecords().Create(&refused, func(*Tx) error { return ErrConflict }); !errors.Is(err, ErrConflict) {
		t.Fatalf("within's error = %v, want it returned", err)
	}
	rs, err := db.DNSRecords().List()
	if err != nil || len(rs) != 1 || rs[0].Name != "www" {
		t.Fatalf("records = %+v, %v; want www alone (the refused one rolled back)", rs, err)
	}
	if _, err := db.DNSRecords().Delete(1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DNSRecords().Delete(1, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
	want := []Change{{Kind: ChangeRecord, Key: "1"}, {Kind: ChangeRecord, Key: "1"}}
	if len(heard) != len(want) || heard[0] != want[0] || heard[1] != want[1] {
		t.Errorf("commits heard = %+v, want %+v (none for the rolled-back create)", heard, want)
	}
}

// GetTx opens a secret once and serves it again while its sealed bytes are the
// same; a secret written anew under the same name is opened anew.
func TestVaultGetTxCachesBySealedBytes(t *testing.T) {
	db := openTest(t)
	if err := db.Vault.Put("k", []byte("one")); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		var got []byte
		if err := db.View(func(tx *Tx) (err error) { got, err = db.Vault.GetTx(tx, "k"); return err }); err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	if got := read(); got != "one" {
		t.Fatalf("first read = %q", got)
	}
	first := db.Vault.opened["k"].sealed
	if got := read(); got != "one" || db.Vault.opened["k"].sealed != first {
		t.Fatalf("second read = %q", got)
	}
	if err := db.Vault.Put("k", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "two" {
		t.Fatalf("after a rewrite = %q, want the new secret", got)
	}
	// A caller changing what it got does not change the cache.
	var b []byte
	db.View(func(tx *Tx) (err error) { b, err = db.Vault.GetTx(tx, "k"); return err })
	b[0] = 'X'
	if got := read(); got != "two" {
		t.Fatalf("the cache was changed through a returned slice: %q", got)
	}
}
