package storage

import (
	"errors"
	"testing"
	"time"
)

func TestCertsCreateRevokeAndWithin(t *testing.T) {
	db := openTest(t)
	var heard []Change
	db.OnCommit(func(c Change) { heard = append(heard, c) })
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	root := Cert{Serial: "1a", Kind: CertRoot, CommonName: "CA", NotBefore: t0, NotAfter: t0.AddDate(10, 0, 0), DER: []byte{1}}
	if err := db.Certs().Create(root, nil); err != nil {
		t.Fatal(err)
	}
	leaf := Cert{Serial: "2b", Kind: CertIssued, CommonName: "nas", SANs: []string{"nas"}, NotBefore: t0.Add(time.Hour), NotAfter: t0.AddDate(1, 0, 0), DER: []byte{2}}
	if err := db.Certs().Create(leaf, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Certs().Create(leaf, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("same serial again = %v, want ErrExists", err)
	}
	refused := Cert{Serial: "3c", Kind: CertIssued, DER: []byte{3}}
	if err := db.Certs().Create(refused, func(*Tx) error { return ErrConflict }); !errors.Is(err, ErrConflict) {
		t.Fatalf("within's error = %v, want it returned", err)
	}
	if _, err := db.Certs().Get("3c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused cert was stored: %v", err)
	}
	list, err := db.Certs().List()
	if err != nil || len(list) != 2 || list[0].Serial != "1a" || list[1].Serial != "2b" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	var r Cert
	var found bool
	db.View(func(tx *Tx) error { r, found, err = db.Certs().RootTx(tx); return err })
	if !found || r.Serial != "1a" {
		t.Fatalf("root = %+v %v %v", r, found, err)
	}
	if _, err := db.Certs().Revoke("1a", t0, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("revoking the root = %v, want ErrConflict", err)
	}
	got, err := db.Certs().Revoke("2b", t0.Add(2*time.Hour), nil)
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("revoke = %+v, %v", got, err)
	}
	if _, err := db.Certs().Revoke("2b", t0, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("second revoke = %v, want ErrConflict", err)
	}
	if _, err := db.Certs().Revoke("ff", t0, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown serial = %v, want ErrNotFound", err)
	}
	if stored, _ := db.Certs().Get("2b"); stored.RevokedAt == nil || string(stored.DER) != "\x02" {
		t.Errorf("stored = %+v", stored)
	}
	want := []Change{{ChangeCert, "1a"}, {ChangeCert, "2b"}, {ChangeCert, "2b"}}
	if len(heard) != len(want) {
		t.Fatalf("commits heard = %+v, want %+v", heard, want)
	}
	for i := range want {
		if heard[i] != want[i] {
			t.Errorf("commit %d = %+v, want %+v (none for what rolled back)", i, heard[i], want[i])
		}
	}
}

func TestTrustKeys(t *testing.T) {
	db := openTest(t)
	k := TrustKey{Name: "laptop", PublicKey: "AAAA", Purpose: "update", CreatedAt: time.Now().UTC()}
	if err := db.TrustKeys().Create(k, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.TrustKeys().Create(k, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("same name = %v, want ErrExists", err)
	}
	if err := db.TrustKeys().Create(TrustKey{Name: "other"}, func(*Tx) error { return ErrConflict }); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	list, err := db.TrustKeys().List()
	if err != nil || len(list) != 1 || list[0].Purpose != "update" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if got, err := db.TrustKeys().Get("laptop"); err != nil || got.PublicKey != "AAAA" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if _, err := db.TrustKeys().Delete("laptop", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TrustKeys().Delete("laptop", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
}
