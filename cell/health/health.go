// Package health owns the cell's parts registry and its health history: each
// part (api, storage, audit, vault, wireguard, firewall, and every capability
// added later) registers a cheap check; GET /api/status and /health run them,
// and the health loop stores a record of them at the configured interval.
//
// Checks never wait on an apply: the kernel parts publish their last result
// atomically (cell/reconcile) and the checks here read it, so /health answers
// at once while a 10,000-peer rebuild runs. A part that is not registered is
// reported as not_configured, so the status names every part of the product.
package health

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// Check reports one part's state. It must return within a few milliseconds.
type Check func(context.Context) storage.PartStatus

// Config is the "health" section of the config document.
type Config struct {
	IntervalSeconds int `json:"interval_seconds"` // 5–86400, default 60
	Keep            int `json:"keep"`             // records kept, 10–100000, default 1440
}

// Default is the section's default.
func Default() Config { return Config{IntervalSeconds: 60, Keep: 1440} }

// Validate checks the section.
func (h Config) Validate() error {
	if h.IntervalSeconds < 5 || h.IntervalSeconds > 86400 {
		return fault.Invalid("invalid_health_interval", "health.interval_seconds must be from 5 to 86400 (got %d)", h.IntervalSeconds)
	}
	if h.Keep < 10 || h.Keep > 100000 {
		return fault.Invalid("invalid_health_keep", "health.keep must be from 10 to 100000 (got %d)", h.Keep)
	}
	return nil
}

// Section is the health section for the config registry.
func Section() config.Section {
	return config.Section{Name: "health", New: func() any { c := Default(); return &c },
		Validate: func(v any) error { return v.(*Config).Validate() }}
}

// Status is GET /api/status.
type Status struct {
	State   string          `json:"state"`
	Version string          `json:"version"`
	Uptime  int64           `json:"uptime_seconds"`
	Parts   map[string]Part `json:"parts"`
}

// Part is one part's state as the API shows it (its own type, so that the
// stored record's shape never changes an answer by accident).
type Part struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Record is one run of the health checker, as GET /api/health/history shows it.
type Record struct {
	Time  time.Time       `json:"time"`
	Parts map[string]Part `json:"parts"`
}

func partsOf(in map[string]storage.PartStatus) map[string]Part {
	out := make(map[string]Part, len(in))
	for k, v := range in {
		out[k] = Part{State: v.State, Reason: v.Reason}
	}
	return out
}

// Health is the capability.
type Health struct {
	db      *storage.DB
	now     func() time.Time
	version string
	started time.Time
	// known are every part of the product; those no component registered are
	// not_configured. Capabilities add theirs with Register, so this list only
	// names what the product has not built yet.
	known []string

	mu    sync.RWMutex
	parts map[string]Check

	vaultMu      sync.Mutex // guards vaultChecked, vaultStatus
	vaultChecked time.Time
	vaultStatus  storage.PartStatus
}

// Planned are the parts the product will have that this firmware may not run
// yet; they show as not_configured until a capability registers them.
var Planned = []string{"dns", "ntp", "ddns", "services", "caddy", "connectivity", "cells", "updates"}

// New returns the registry with the storage and vault checks.
func New(db *storage.DB, now func() time.Time, version string, vaultProbe string) *Health {
	h := &Health{db: db, now: now, version: version, started: now(), parts: map[string]Check{}, known: Planned}
	h.Register("api", func(context.Context) storage.PartStatus { return storage.PartStatus{State: storage.StateOK} })
	h.Register("storage", h.checkStorage)
	h.Register("vault", func(ctx context.Context) storage.PartStatus { return h.checkVault(vaultProbe) })
	return h
}

// Register adds (or replaces) the check of a part.
func (h *Health) Register(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.parts[name] = check
}

// Started is when the cell started.
func (h *Health) Started() time.Time { return h.started }

// Status runs every part's check now.
func (h *Health) Status(ctx context.Context) Status {
	parts := h.checkParts(ctx)
	st := Status{Version: h.version, Uptime: int64(h.now().Sub(h.started) / time.Second), Parts: partsOf(parts), State: Overall(parts)}
	return st
}

func (h *Health) checkParts(ctx context.Context) map[string]storage.PartStatus {
	h.mu.RLock()
	checks := make(map[string]Check, len(h.parts))
	for k, v := range h.parts {
		checks[k] = v
	}
	h.mu.RUnlock()
	out := make(map[string]storage.PartStatus, len(checks)+len(h.known))
	for _, name := range h.known {
		out[name] = storage.PartStatus{State: storage.StateNotConfigured, Reason: "not built into this firmware yet"}
	}
	for name, check := range checks {
		out[name] = check(ctx)
	}
	return out
}

// Overall is the worst state among the configured parts.
func Overall(parts map[string]storage.PartStatus) string {
	rank := map[string]int{storage.StateOK: 0, storage.StateDegraded: 1, storage.StateDown: 2}
	worst := storage.StateOK
	for _, p := range parts {
		if r, ok := rank[p.State]; ok && r > rank[worst] {
			worst = p.State
		}
	}
	return worst
}

func (h *Health) checkStorage(context.Context) storage.PartStatus {
	if err := h.db.Ping(); err != nil {
		return storage.PartStatus{State: storage.StateDown, Reason: err.Error()}
	}
	return storage.PartStatus{State: storage.StateOK}
}

// checkVault proves the vault decrypts (the probe secret), at most every 30
// seconds: a decryption is an X25519 operation, too dear for every GET /api/status.
func (h *Health) checkVault(probe string) storage.PartStatus {
	h.vaultMu.Lock()
	defer h.vaultMu.Unlock()
	if now := h.now(); now.Sub(h.vaultChecked) > 30*time.Second || h.vaultChecked.IsZero() {
		h.vaultChecked = now
		h.vaultStatus = storage.PartStatus{State: storage.StateOK}
		if _, err := h.db.Vault.Get(probe); err != nil {
			h.vaultStatus = storage.PartStatus{State: storage.StateDown, Reason: "the vault cannot decrypt its secrets: " + err.Error()}
		}
	}
	return h.vaultStatus
}

func (h *Health) config() Config {
	c := Default()
	if d, found, err := config.Load(h.db); err == nil && found {
		d.Decode("health", &c)
	}
	return c
}

// CheckHealth runs every check and stores the result in the history (bounded by
// the config's health.keep).
func (h *Health) CheckHealth(ctx context.Context) (storage.HealthRecord, error) {
	rec := storage.HealthRecord{Time: h.now().UTC(), Parts: h.checkParts(ctx)}
	return rec, h.db.Health().Append(rec, h.config().Keep)
}

// History returns up to limit records, newest first.
func (h *Health) History(limit int) ([]Record, error) {
	recs, err := h.db.Health().Recent(limit)
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, Record{Time: r.Time, Parts: partsOf(r.Parts)})
	}
	return out, err
}

// Run checks health now and then at the configured interval until ctx ends;
// after each check it runs every also (the audit checkpoint, pruning sessions),
// whose errors they log themselves.
func (h *Health) Run(ctx context.Context, onErr func(error), also ...func()) {
	for {
		if _, err := h.CheckHealth(ctx); err != nil {
			onErr(err)
		}
		for _, fn := range also {
			fn()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(h.config().IntervalSeconds) * time.Second):
		}
	}
}

// PartNames lists the parts in a stable order (for tests and the CLI).
func PartNames(parts map[string]storage.PartStatus) []string {
	names := make([]string, 0, len(parts))
	for n := range parts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
