// Package cell is the one place where the cell's capabilities are carried out: the
// setup wizard, accounts and sessions, the config, status and health, and the audit
// log. HTTP handlers call it through small interfaces and never touch storage, the
// kernel or the audit log themselves. A capability that spans several parts stores
// first and applies from what was stored, so a failure part-way leaves nothing
// half-applied.
package cell

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/storage"
)

// Version is the running firmware's version, set at link time
// (-ldflags "-X github.com/pic-cell/cell/cell.Version=...").
var Version = "dev"

// Options are what the daemon hands the cell at start.
type Options struct {
	DB   *storage.DB
	Logs *logs.Book
	// Now and Rand are injectable for tests; nil means the real clock and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
	// HashMemoryKiB lowers argon2id's memory in tests only; zero means the production
	// 19 MiB, and anything below it is refused outside tests by the daemon's flags.
	HashMemoryKiB uint32
}

// Cell is the running cell.
type Cell struct {
	db     *storage.DB
	logs   *logs.Book
	log    *slog.Logger
	audlog *slog.Logger
	now    func() time.Time
	rand   io.Reader

	hasher   *hasher
	throttle *throttle
	signer   ed25519.PrivateKey

	partsMu sync.RWMutex
	parts   map[string]func(context.Context) storage.PartStatus

	cfgMu sync.Mutex // serialises read-modify-write of the config document

	net netState // the WireGuard device, firewall and links (network.go)

	vaultMu      sync.Mutex // guards vaultChecked, vaultStatus
	vaultChecked time.Time
	vaultStatus  storage.PartStatus

	started time.Time
}

// New opens the cell over an open database.
func New(o Options) (*Cell, error) {
	if o.DB == nil || o.Logs == nil {
		return nil, errors.New("cell: DB and Logs are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	c := &Cell{
		db:       o.DB,
		logs:     o.Logs,
		log:      o.Logs.Logger("cell"),
		audlog:   o.Logs.Logger("audit"),
		now:      o.Now,
		rand:     o.Rand,
		hasher:   newHasher(o.HashMemoryKiB, o.Rand),
		throttle: newThrottle(10, 15*time.Minute),
		parts:    map[string]func(context.Context) storage.PartStatus{},
		started:  o.Now(),
	}
	key, err := c.loadSigner()
	if err != nil {
		return nil, err
	}
	c.signer = key
	// A checkpoint from the start on: a log without one is reported as unverifiable.
	if _, err := c.Checkpoint(); err != nil {
		return nil, fmt.Errorf("cell: audit checkpoint: %w", err)
	}
	c.RegisterPart("api", func(context.Context) storage.PartStatus { return storage.PartStatus{State: StateOK} })
	c.RegisterPart("storage", c.checkStorage)
	c.RegisterPart("audit", c.checkAudit)
	c.RegisterPart("vault", c.checkVault)
	return c, nil
}

// DB is the cell's database, for the parts that add stores of their own.
func (c *Cell) DB() *storage.DB { return c.db }

// Logs is the cell's log book.
func (c *Cell) Logs() *logs.Book { return c.logs }

// Now is the cell's clock.
func (c *Cell) Now() time.Time { return c.now() }

// Started is when the cell started.
func (c *Cell) Started() time.Time { return c.started }

// auditKeyName is the vault entry of the audit checkpoint key.
const auditKeyName = "audit/checkpoint-key"

// loadSigner returns the audit checkpoint key from the vault, creating it once.
func (c *Cell) loadSigner() (ed25519.PrivateKey, error) {
	const name = auditKeyName
	seed, err := c.db.Vault.Get(name)
	if errors.Is(err, storage.ErrNotFound) {
		seed = make([]byte, ed25519.SeedSize)
		if _, err := io.ReadFull(c.rand, seed); err != nil {
			return nil, fmt.Errorf("cell: audit key: %w", err)
		}
		if err := c.db.Vault.Put(name, seed); err != nil {
			return nil, fmt.Errorf("cell: audit key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("cell: audit key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("cell: audit key in the vault is damaged")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func (c *Cell) randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.rand, b); err != nil {
		panic("cell: the random source failed: " + err.Error())
	}
	return b
}
