package storage

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The installed services and their accounts (migration 6):
//
//	services/
//	    <id>                -> InstalledService (JSON): what the admin installed, as the
//	                           catalog described it then, and its address on the bridge
//	service_accounts/
//	    <id>/               (a bucket per installed service)
//	        <username>      -> ServiceAccount (JSON; the password is in the vault)
//
// Both are intent: the reconcile loop makes containerd, the bridge, the
// firewall, the front and the DNS match them. A service's secrets (its admin
// token, its accounts' passwords) are vault entries under service/<id>/.
var (
	bucketServices        = []byte("services")
	bucketServiceAccounts = []byte("service_accounts")
)

func migrateServices(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketServices, bucketServiceAccounts} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// InstalledService is one service the admin installed from the catalog.
type InstalledService struct {
	ID      string          `json:"id"`
	Version string          `json:"version"`
	Entry   json.RawMessage `json:"entry"` // the catalog entry it was installed from (images/catalog.Entry)
	Addr    netip.Addr      `json:"addr"`  // its address on the services bridge
	// Restart is bumped by every restart the admin asks for; the loop
	// restarts the container when it changes.
	Restart uint64 `json:"restart"`
	// Stopped: the admin stopped it; its container is down until started.
	Stopped     bool      `json:"stopped,omitempty"`
	InstalledAt time.Time `json:"installed_at"`
}

// ServiceAccount is the account of a peer (or one the admin made) in a service.
type ServiceAccount struct {
	Service   string    `json:"service"`
	Username  string    `json:"username"`
	Peer      string    `json:"peer,omitempty"` // the peer it was made for; "" for one the admin added
	CreatedAt time.Time `json:"created_at"`
}

// Services is the typed store of the installed services and their accounts.
// Its functions work inside the caller's transaction (DB.View, DB.Update), so
// that an install stores the service, its accounts, their vault entries and
// the audit entry together.
type Services struct{ db *DB }

// Services returns the store.
func (db *DB) Services() Services { return Services{db} }

// ListTx returns every installed service, by id.
func (s Services) ListTx(tx *Tx) ([]InstalledService, error) {
	out := []InstalledService{}
	err := tx.Bucket(bucketServices).ForEach(func(k, v []byte) error {
		var svc InstalledService
		if err := json.Unmarshal(v, &svc); err != nil {
			return fmt.Errorf("service %q: %w", k, err)
		}
		out = append(out, svc)
		return nil
	})
	return out, err
}

// GetTx returns the installed service id (ErrNotFound when it is not installed).
func (s Services) GetTx(tx *Tx, id string) (InstalledService, error) {
	var svc InstalledService
	raw := tx.Bucket(bucketServices).Get([]byte(id))
	if raw == nil {
		return svc, fmt.Errorf("service %q: %w", id, ErrNotFound)
	}
	return svc, json.Unmarshal(raw, &svc)
}

// PutTx stores svc (installing it, or updating its record) and gives it an
// accounts bucket.
func (s Services) PutTx(tx *Tx, svc InstalledService) error {
	raw, err := json.Marshal(svc)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketServices).Put([]byte(svc.ID), raw); err != nil {
		return err
	}
	if _, err := tx.Bucket(bucketServiceAccounts).CreateBucketIfNotExists([]byte(svc.ID)); err != nil {
		return err
	}
	s.db.changed(tx, Change{Kind: ChangeService, Key: svc.ID})
	return nil
}

// DeleteTx removes the service id and every account of it (ErrNotFound when
// it is not installed). The caller removes their vault entries.
func (s Services) DeleteTx(tx *Tx, id string) error {
	b := tx.Bucket(bucketServices)
	if b.Get([]byte(id)) == nil {
		return fmt.Errorf("service %q: %w", id, ErrNotFound)
	}
	if err := b.Delete([]byte(id)); err != nil {
		return err
	}
	acc := tx.Bucket(bucketServiceAccounts)
	if acc.Bucket([]byte(id)) != nil {
		if err := acc.DeleteBucket([]byte(id)); err != nil {
			return err
		}
	}
	s.db.changed(tx, Change{Kind: ChangeService, Key: id})
	return nil
}

// AccountsTx returns the accounts of service id, by username.
func (s Services) AccountsTx(tx *Tx, id string) ([]ServiceAccount, error) {
	out := []ServiceAccount{}
	b := tx.Bucket(bucketServiceAccounts).Bucket([]byte(id))
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		var a ServiceAccount
		if err := json.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("account %q of service %q: %w", k, id, err)
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// AccountTx returns one account (ErrNotFound when absent).
func (s Services) AccountTx(tx *Tx, id, username string) (ServiceAccount, error) {
	var a ServiceAccount
	b := tx.Bucket(bucketServiceAccounts).Bucket([]byte(id))
	if b == nil {
		return a, fmt.Errorf("service %q: %w", id, ErrNotFound)
	}
	raw := b.Get([]byte(username))
	if raw == nil {
		return a, fmt.Errorf("account %q of service %q: %w", username, id, ErrNotFound)
	}
	return a, json.Unmarshal(raw, &a)
}

// PutAccountTx stores a (ErrExists when the service has that username;
// ErrNotFound when the service is not installed).
func (s Services) PutAccountTx(tx *Tx, a ServiceAccount) error {
	b := tx.Bucket(bucketServiceAccounts).Bucket([]byte(a.Service))
	if b == nil {
		return fmt.Errorf("service %q: %w", a.Service, ErrNotFound)
	}
	if b.Get([]byte(a.Username)) != nil {
		return fmt.Errorf("account %q of service %q: %w", a.Username, a.Service, ErrExists)
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(a.Username), raw); err != nil {
		return err
	}
	s.db.changed(tx, Change{Kind: ChangeService, Key: a.Service})
	return nil
}

// DeleteAccountTx removes one account (ErrNotFound when absent).
func (s Services) DeleteAccountTx(tx *Tx, id, username string) error {
	b := tx.Bucket(bucketServiceAccounts).Bucket([]byte(id))
	if b == nil || b.Get([]byte(username)) == nil {
		return fmt.Errorf("account %q of service %q: %w", username, id, ErrNotFound)
	}
	if err := b.Delete([]byte(username)); err != nil {
		return err
	}
	s.db.changed(tx, Change{Kind: ChangeService, Key: id})
	return nil
}
