package bridge

import (
	"slices"
	"sync"
)

// Fake is an in-memory Bridge for unit tests: it validates and keeps the
// last config.
type Fake struct {
	mu      sync.Mutex
	cfg     Config
	closed  bool
	Applies int   // Set calls that changed something
	Err     error // returned by Set when non-nil
}

var _ Bridge = (*Fake)(nil)

// Set implements Bridge.
func (f *Fake) Set(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if f.Err != nil {
		return f.Err
	}
	if cfg.Name != f.cfg.Name || cfg.Gateway != f.cfg.Gateway || !slices.Equal(cfg.Members, f.cfg.Members) {
		f.Applies++
	}
	f.cfg = cfg
	f.cfg.Members = slices.Clone(cfg.Members)
	return nil
}

// Config returns the last config Set was given.
func (f *Fake) Config() Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cfg
	c.Members = slices.Clone(c.Members)
	return c
}

// Close implements Bridge.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}
