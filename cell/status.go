package cell

import (
	"context"
	"sort"
	"time"

	"github.com/pic-cell/cell/storage"
)

// Part states.
const (
	StateOK            = "ok"
	StateDegraded      = "degraded"
	StateDown          = "down"
	StateNotConfigured = "not_configured"
)

// KnownParts are every part of the product; those not registered by a running
// component are reported as not_configured.
var KnownParts = []string{
	"api", "storage", "audit", "vault", "wireguard", "firewall", "dns", "ntp", "ddns",
	"containers", "caddy", "connectivity", "cells", "updates",
}

// RegisterPart adds (or replaces) the health check of a part. Checks must be cheap:
// GET /api/status runs them all.
func (c *Cell) RegisterPart(name string, check func(context.Context) storage.PartStatus) {
	c.partsMu.Lock()
	defer c.partsMu.Unlock()
	c.parts[name] = check
}

// Status is GET /api/status.
type Status struct {
	State   string                        `json:"state"`
	Version string                        `json:"version"`
	Uptime  int64                         `json:"uptime_seconds"`
	Parts   map[string]storage.PartStatus `json:"parts"`
}

// Status runs every part's check now.
func (c *Cell) Status(ctx context.Context) Status {
	st := Status{Version: Version, Uptime: int64(c.now().Sub(c.started) / time.Second), Parts: c.checkParts(ctx)}
	st.State = overall(st.Parts)
	return st
}

func (c *Cell) checkParts(ctx context.Context) map[string]storage.PartStatus {
	c.partsMu.RLock()
	checks := make(map[string]func(context.Context) storage.PartStatus, len(c.parts))
	for k, v := range c.parts {
		checks[k] = v
	}
	c.partsMu.RUnlock()
	out := make(map[string]storage.PartStatus, len(KnownParts))
	for _, name := range KnownParts {
		out[name] = storage.PartStatus{State: StateNotConfigured, Reason: "not built into this firmware yet"}
	}
	for name, check := range checks {
		out[name] = check(ctx)
	}
	return out
}

// overall is the worst state among the configured parts.
func overall(parts map[string]storage.PartStatus) string {
	rank := map[string]int{StateOK: 0, StateDegraded: 1, StateDown: 2}
	worst := StateOK
	for _, p := range parts {
		if r, ok := rank[p.State]; ok && r > rank[worst] {
			worst = p.State
		}
	}
	return worst
}

func (c *Cell) checkStorage(context.Context) storage.PartStatus {
	if err := c.db.Ping(); err != nil {
		return storage.PartStatus{State: StateDown, Reason: err.Error()}
	}
	return storage.PartStatus{State: StateOK}
}

func (c *Cell) checkAudit(context.Context) storage.PartStatus {
	_, _, err := c.db.Audit().Head()
	if err != nil {
		return storage.PartStatus{State: StateDown, Reason: err.Error()}
	}
	return storage.PartStatus{State: StateOK}
}

// checkVault proves the vault decrypts (the audit key), at most every 30 seconds:
// a decryption is an X25519 operation, too dear for every GET /api/status.
func (c *Cell) checkVault(context.Context) storage.PartStatus {
	c.vaultMu.Lock()
	defer c.vaultMu.Unlock()
	if now := c.now(); now.Sub(c.vaultChecked) > 30*time.Second || c.vaultChecked.IsZero() {
		c.vaultChecked = now
		c.vaultStatus = storage.PartStatus{State: StateOK}
		if _, err := c.db.Vault.Get(auditKeyName); err != nil {
			c.vaultStatus = storage.PartStatus{State: StateDown, Reason: "the vault cannot decrypt its secrets: " + err.Error()}
		}
	}
	return c.vaultStatus
}

// CheckHealth runs every check, stores the result in the history (bounded by the
// config's health.keep) and signs an audit checkpoint when the log grew.
func (c *Cell) CheckHealth(ctx context.Context) (storage.HealthRecord, error) {
	rec := storage.HealthRecord{Time: c.now().UTC(), Parts: c.checkParts(ctx)}
	keep := defaultHealth().Keep
	if cfg, err := c.Config(); err == nil {
		keep = cfg.Health.Keep
	}
	if err := c.db.Health().Append(rec, keep); err != nil {
		return rec, err
	}
	if _, err := c.Checkpoint(); err != nil {
		c.audlog.Error("checkpoint", "err", err)
	}
	return rec, nil
}

// HealthHistory returns up to limit records, newest first.
func (c *Cell) HealthHistory(limit int) ([]storage.HealthRecord, error) {
	return c.db.Health().Recent(limit)
}

// RunHealth checks health now and then at the configured interval until ctx ends;
// it also prunes expired sessions.
func (c *Cell) RunHealth(ctx context.Context) {
	for {
		if _, err := c.CheckHealth(ctx); err != nil {
			c.log.Error("health check", "err", err)
		}
		if n, err := c.PruneSessions(); err != nil {
			c.log.Error("prune sessions", "err", err)
		} else if n > 0 {
			c.log.Debug("pruned expired sessions", "count", n)
		}
		interval := time.Duration(defaultHealth().IntervalSeconds) * time.Second
		if cfg, err := c.Config(); err == nil {
			interval = time.Duration(cfg.Health.IntervalSeconds) * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
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
