package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The vault's certificate authority and trust keys (migration 5):
//
//	certs/
//	    <serial, lowercase hex>  -> Cert (JSON: the DER certificate, never a private key)
//	trust_keys/
//	    <name>                   -> TrustKey (JSON: a public key and its purpose)
//
// The CA's private key is a vault secret (CAKeyName), written in the same
// transaction as the root's Cert.
var (
	bucketCerts     = []byte("certs")
	bucketTrustKeys = []byte("trust_keys")
)

// CAKeyName is the vault secret holding the CA root's private key (PKCS#8 DER).
const CAKeyName = "ca/private-key"

func migrateCerts(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketCerts, bucketTrustKeys} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Kinds of stored certificate (Cert.Kind).
const (
	CertRoot   = "root"   // the CA's own self-signed certificate
	CertIssued = "issued" // issued through the API; its key was handed out once
	CertFront  = "front"  // issued to the front (the TLS server) for the cell's names
)

// Cert is a certificate the cell's CA made. Its private key is never stored
// here: the root's is in the vault, an issued one's was handed out once, the
// front's stays with the front.
type Cert struct {
	Serial     string     `json:"serial"` // lowercase hex, no leading zeros
	Kind       string     `json:"kind"`   // CertRoot, CertIssued or CertFront
	CommonName string     `json:"common_name"`
	SANs       []string   `json:"sans"` // DNS names and IP addresses
	NotBefore  time.Time  `json:"not_before"`
	NotAfter   time.Time  `json:"not_after"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	DER        []byte     `json:"der"`
}

// Certs is the typed store of the CA's certificates.
type Certs struct{ db *DB }

// Certs returns the store.
func (db *DB) Certs() Certs { return Certs{db} }

// CreateTx stores c inside tx (ErrExists when its serial is taken) and
// announces a ChangeCert once tx commits.
func (s Certs) CreateTx(tx *Tx, c Cert) error {
	if c.Serial == "" {
		return errors.New("cert: empty serial")
	}
	b := tx.Bucket(bucketCerts)
	if b.Get([]byte(c.Serial)) != nil {
		return fmt.Errorf("cert %s: %w", c.Serial, ErrExists)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(c.Serial), raw); err != nil {
		return err
	}
	s.db.changed(tx, Change{Kind: ChangeCert, Key: c.Serial})
	return nil
}

// Create stores c; within (the caller's audit entry) runs in the same transaction.
func (s Certs) Create(c Cert, within Within) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		if err := s.CreateTx(tx, c); err != nil {
			return err
		}
		return within.run(tx)
	})
}

// GetTx returns the certificate with serial inside tx.
func (s Certs) GetTx(tx *Tx, serial string) (Cert, error) {
	var c Cert
	raw := tx.Bucket(bucketCerts).Get([]byte(serial))
	if raw == nil {
		return c, fmt.Errorf("cert %s: %w", serial, ErrNotFound)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("cert %s: %w", serial, err)
	}
	return c, nil
}

// Get returns the certificate with serial.
func (s Certs) Get(serial string) (c Cert, err error) {
	err = s.db.bolt.View(func(tx *bolt.Tx) error {
		c, err = s.GetTx(tx, serial)
		return err
	})
	return c, err
}

// ListTx returns every certificate inside tx, oldest first (then by serial).
func (s Certs) ListTx(tx *Tx) ([]Cert, error) {
	out := []Cert{}
	err := tx.Bucket(bucketCerts).ForEach(func(k, v []byte) error {
		var c Cert
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("cert %s: %w", k, err)
		}
		out = append(out, c)
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return out[i].Serial < out[j].Serial
	})
	return out, err
}

// List returns every certificate, oldest first.
func (s Certs) List() (out []Cert, err error) {
	err = s.db.bolt.View(func(tx *bolt.Tx) error {
		out, err = s.ListTx(tx)
		return err
	})
	return out, err
}

// RootTx returns the CA's root certificate inside tx; found is false when the
// CA has not been made yet.
func (s Certs) RootTx(tx *Tx) (c Cert, found bool, err error) {
	certs, err := s.ListTx(tx)
	if err != nil {
		return c, false, err
	}
	for _, c := range certs {
		if c.Kind == CertRoot && c.RevokedAt == nil {
			return c, true, nil
		}
	}
	return c, false, nil
}

// Revoke marks the certificate with serial revoked at at and returns it;
// within runs in the same transaction. ErrNotFound for an unknown serial,
// ErrConflict when it is already revoked or is the root.
func (s Certs) Revoke(serial string, at time.Time, within Within) (Cert, error) {
	var c Cert
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		if c, err = s.GetTx(tx, serial); err != nil {
			return err
		}
		if c.Kind == CertRoot {
			return fmt.Errorf("cert %s is the CA's root: %w", serial, ErrConflict)
		}
		if c.RevokedAt != nil {
			return fmt.Errorf("cert %s was revoked already: %w", serial, ErrConflict)
		}
		at := at.UTC()
		c.RevokedAt = &at
		raw, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketCerts).Put([]byte(serial), raw); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeCert, Key: serial})
		return within.run(tx)
	})
	return c, err
}

// TrustKey is a public key the cell trusts for a purpose (such as the key
// that signs firmware updates, made by cellctl keygen).
type TrustKey struct {
	Name      string    `json:"name"`
	PublicKey string    `json:"public_key"` // standard base64 of the raw ed25519 key
	Purpose   string    `json:"purpose"`
	CreatedAt time.Time `json:"created_at"`
}

// TrustKeys is the typed store of the trusted public keys.
type TrustKeys struct{ db *DB }

// TrustKeys returns the store.
func (db *DB) TrustKeys() TrustKeys { return TrustKeys{db} }

// ListTx returns every trust key inside tx, by name.
func (s TrustKeys) ListTx(tx *Tx) ([]TrustKey, error) {
	out := []TrustKey{}
	err := tx.Bucket(bucketTrustKeys).ForEach(func(k, v []byte) error {
		var t TrustKey
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("trust key %q: %w", k, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// List returns every trust key, by name.
func (s TrustKeys) List() (out []TrustKey, err error) {
	err = s.db.bolt.View(func(tx *bolt.Tx) error {
		out, err = s.ListTx(tx)
		return err
	})
	return out, err
}

// Get returns the named trust key.
func (s TrustKeys) Get(name string) (TrustKey, error) {
	var t TrustKey
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketTrustKeys).Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("trust key %q: %w", name, ErrNotFound)
		}
		return json.Unmarshal(raw, &t)
	})
	return t, err
}

// Create stores t (ErrExists when its name is taken); within (the caller's
// checks against the other keys, its audit entry) runs in the same transaction.
func (s TrustKeys) Create(t TrustKey, within Within) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTrustKeys)
		if b.Get([]byte(t.Name)) != nil {
			return fmt.Errorf("trust key %q: %w", t.Name, ErrExists)
		}
		raw, err := json.Marshal(t)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(t.Name), raw); err != nil {
			return err
		}
		return within.run(tx)
	})
}

// Delete removes the named trust key and returns it.
func (s TrustKeys) Delete(name string, within Within) (TrustKey, error) {
	var t TrustKey
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTrustKeys)
		raw := b.Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("trust key %q: %w", name, ErrNotFound)
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		return within.run(tx)
	})
	return t, err
}
