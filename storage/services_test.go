package storage

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestServicesStore(t *testing.T) {
	db := openTest(t)
	var mu sync.Mutex
	var changes []Change
	db.OnCommit(func(c Change) { mu.Lock(); changes = append(changes, c); mu.Unlock() })
	s := db.Services()
	svc := InstalledService{ID: "files", Version: "1.0.0", Entry: []byte(`{"id":"files"}`),
		Addr: netip.MustParseAddr("10.77.250.2"), InstalledAt: time.Unix(100, 0).UTC()}
	if err := db.Update(func(tx *Tx) error { return s.PutTx(tx, svc) }); err != nil {
		t.Fatal(err)
	}
	acct := ServiceAccount{Service: "files", Username: "alice", Peer: "alice", CreatedAt: time.Unix(200, 0).UTC()}
	if err := db.Update(func(tx *Tx) error { return s.PutAccountTx(tx, acct) }); err != nil {
		t.Fatal(err)
	}
	err := db.Update(func(tx *Tx) error { return s.PutAccountTx(tx, acct) })
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second account alice: got %v, want ErrExists", err)
	}
	err = db.Update(func(tx *Tx) error {
		return s.PutAccountTx(tx, ServiceAccount{Service: "mail", Username: "alice"})
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("account of a service not installed: got %v, want ErrNotFound", err)
	}
	err = db.View(func(tx *Tx) error {
		got, err := s.GetTx(tx, "files")
		if err != nil {
			return err
		}
		if got.Addr != svc.Addr || got.Version != "1.0.0" || string(got.Entry) != `{"id":"files"}` {
			t.Errorf("got %+v, want %+v", got, svc)
		}
		accts, err := s.AccountsTx(tx, "files")
		if err != nil {
			return err
		}
		if len(accts) != 1 || accts[0] != acct {
			t.Errorf("accounts: got %+v, want [%+v]", accts, acct)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Deleting the service takes its accounts with it.
	if err := db.Update(func(tx *Tx) error { return s.DeleteTx(tx, "files") }); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		if _, err := s.AccountTx(tx, "files", "alice"); !errors.Is(err, ErrNotFound) {
			t.Errorf("account after the service was removed: got %v, want ErrNotFound", err)
		}
		list, err := s.ListTx(tx)
		if len(list) != 0 {
			t.Errorf("services after remove: %+v", list)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return s.DeleteTx(tx, "files") }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing twice: got %v, want ErrNotFound", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 3 {
		t.Fatalf("changes announced: got %v, want 3 (install, account, remove)", changes)
	}
	for _, c := range changes {
		if c.Kind != ChangeService || c.Key != "files" {
			t.Errorf("change %+v, want service files", c)
		}
	}
}
