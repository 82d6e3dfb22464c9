package dns

import (
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory Resolver for the cell's unit tests: it validates
// what it is given as the server does (records, upstreams, prefixes) and
// keeps it.
type Fake struct {
	mu      sync.Mutex
	cfg     Config
	Applies int   // Set, PutRecord and RemoveRecord calls that changed something
	Err     error // returned by Set when non-nil
}

var _ Resolver = (*Fake)(nil)

// Set implements Resolver.
func (f *Fake) Set(cfg Config) error {
	domain, err := canonicalDomain(cfg.Zone.Domain)
	if err != nil {
		return err
	}
	for _, r := range cfg.Zone.Records {
		if domain == "" {
			return invalid("domain", "", "records need the zone's domain")
		}
		if _, err := compile(domain, r); err != nil {
			return err
		}
	}
	for _, u := range cfg.Upstreams {
		if err := ValidateUpstream(u); err != nil {
			return err
		}
	}
	for _, p := range cfg.Allowed {
		if !p.IsValid() {
			return invalid("allowed", p.String(), "is not a prefix")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	cfg.Zone.Records = slices.Clone(cfg.Zone.Records)
	if !equalConfig(f.cfg, cfg) {
		f.Applies++
	}
	f.cfg = cfg
	return nil
}

func equalConfig(a, b Config) bool {
	return a.Zone.Domain == b.Zone.Domain && a.Zone.Serial == b.Zone.Serial &&
		slices.Equal(a.Zone.Records, b.Zone.Records) && slices.Equal(a.Upstreams, b.Upstreams) &&
		slices.Equal(a.Allowed, b.Allowed) && a.RatePerSecond == b.RatePerSecond &&
		a.Burst == b.Burst && a.CacheSize == b.CacheSize
}

// PutRecord implements Resolver.
func (f *Fake) PutRecord(r Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ValidateRecord(f.cfg.Zone.Domain, r); err != nil {
		return err
	}
	if !slices.ContainsFunc(f.cfg.Zone.Records, func(x Record) bool { return sameRecord(x, r) }) {
		f.cfg.Zone.Records = append(f.cfg.Zone.Records, r)
		f.Applies++
	}
	return nil
}

// RemoveRecord implements Resolver.
func (f *Fake) RemoveRecord(r Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.cfg.Zone.Records)
	f.cfg.Zone.Records = slices.DeleteFunc(f.cfg.Zone.Records, func(x Record) bool { return sameRecord(x, r) })
	if len(f.cfg.Zone.Records) != n {
		f.Applies++
	}
	return nil
}

func sameRecord(a, b Record) bool {
	return a.Name == b.Name && strings.EqualFold(a.Type, b.Type) && a.Value == b.Value && a.TTL == b.TTL
}

// Config returns the last config Set was given, with the records PutRecord
// and RemoveRecord changed since.
func (f *Fake) Config() Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cfg
	c.Zone.Records = slices.Clone(c.Zone.Records)
	return c
}

// Stats implements Resolver: the zone's size, nothing served.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{Domain: strings.TrimSuffix(strings.ToLower(f.cfg.Zone.Domain), "."), Serial: f.cfg.Zone.Serial, Records: len(f.cfg.Zone.Records)}
}
