package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"filippo.io/age"
	bolt "go.etcd.io/bbolt"
)

// Vault keeps secrets (private keys, connection secrets, signing keys) encrypted with
// the cell's age identity. The identity is a file beside the database, mode 0600, so a
// copy of cell.db alone reveals no secret.
type Vault struct {
	db        *DB
	identity  *age.X25519Identity
	recipient *age.X25519Recipient

	// opened remembers what GetTx decrypted, by name and the SHA-256 of the
	// sealed bytes: a full rebuild of 10,000 peers reads 10,000 preshared keys,
	// and decrypting each (an X25519 operation and 150 KB of garbage) made a
	// rebuild 1.5 GB of garbage, whose collection held up /health. A secret
	// rewritten under the same name has other sealed bytes, so it is opened
	// anew; Get (the health check, exports) always decrypts.
	openedMu sync.Mutex
	opened   map[string]openedSecret
}

type openedSecret struct {
	sealed [32]byte
	secret []byte
}

// maxOpened bounds the cache of opened secrets (two per peer, and a few more).
const maxOpened = 1 << 16

func openVault(path string, db *DB) (*Vault, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, fmt.Errorf("vault: generate identity: %w", err)
		}
		if err := writeFileSync(path, []byte(id.String()+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("vault: write identity: %w", err)
		}
		raw = []byte(id.String())
	} else if err != nil {
		return nil, fmt.Errorf("vault: read identity: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("vault: identity file %s is damaged: %w", path, err)
	}
	return &Vault{db: db, identity: id, recipient: id.Recipient()}, nil
}

// writeFileSync writes a new file and fsyncs it before returning, so that an identity
// that encrypted data is never lost to a power cut.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// PublicKey is the age recipient string of the cell (safe to show).
func (v *Vault) PublicKey() string { return v.recipient.String() }

func (v *Vault) seal(secret []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, v.recipient)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(secret); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (v *Vault) open(sealed []byte) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(sealed), v.identity)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// Put stores secret under name, replacing what was there.
func (v *Vault) Put(name string, secret []byte) error {
	sealed, err := v.seal(secret)
	if err != nil {
		return fmt.Errorf("vault: seal %q: %w", name, err)
	}
	return v.db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVault).Put([]byte(name), sealed)
	})
}

// PutTx stores secret under name inside a caller's transaction, so a secret and the
// record that refers to it are written together.
func (v *Vault) PutTx(tx *bolt.Tx, name string, secret []byte) error {
	sealed, err := v.seal(secret)
	if err != nil {
		return fmt.Errorf("vault: seal %q: %w", name, err)
	}
	return tx.Bucket(bucketVault).Put([]byte(name), sealed)
}

// Get returns the secret stored under name.
func (v *Vault) Get(name string) ([]byte, error) {
	var sealed []byte
	err := v.db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVault).Get([]byte(name))
		if b == nil {
			return fmt.Errorf("vault: secret %q: %w", name, ErrNotFound)
		}
		sealed = append([]byte(nil), b...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	secret, err := v.open(sealed)
	if err != nil {
		return nil, fmt.Errorf("vault: open %q: %w", name, err)
	}
	return secret, nil
}

// GetTx returns the secret stored under name, read inside tx (a snapshot's).
func (v *Vault) GetTx(tx *Tx, name string) ([]byte, error) {
	b := tx.Bucket(bucketVault).Get([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("vault: secret %q: %w", name, ErrNotFound)
	}
	sum := sha256.Sum256(b)
	v.openedMu.Lock()
	if o, ok := v.opened[name]; ok && o.sealed == sum {
		v.openedMu.Unlock()
		return bytes.Clone(o.secret), nil
	}
	v.openedMu.Unlock()
	secret, err := v.open(b)
	if err != nil {
		return nil, fmt.Errorf("vault: open %q: %w", name, err)
	}
	v.openedMu.Lock()
	if v.opened == nil || len(v.opened) >= maxOpened {
		v.opened = map[string]openedSecret{}
	}
	v.opened[name] = openedSecret{sealed: sum, secret: bytes.Clone(secret)}
	v.openedMu.Unlock()
	return secret, nil
}

// GetOrCreate returns the secret under name, storing make()'s value first when
// there is none, in one transaction (two callers cannot store two different ones).
func (v *Vault) GetOrCreate(name string, make func() []byte) ([]byte, error) {
	if s, err := v.Get(name); err == nil || !errors.Is(err, ErrNotFound) {
		return s, err
	}
	var out []byte
	err := v.db.bolt.Update(func(tx *bolt.Tx) error {
		s, err := v.GetTx(tx, name)
		if err == nil {
			out = s
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		out = make()
		return v.PutTx(tx, name, out)
	})
	return out, err
}

// Delete removes the secret under name; deleting a missing secret is not an error.
func (v *Vault) Delete(name string) error {
	return v.db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVault).Delete([]byte(name))
	})
}

// DeleteTx removes the secret under name inside a caller's transaction.
func (v *Vault) DeleteTx(tx *bolt.Tx, name string) error {
	return tx.Bucket(bucketVault).Delete([]byte(name))
}
