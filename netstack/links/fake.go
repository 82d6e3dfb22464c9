package links

import "sync"

// Fake records the last config per interface.
type Fake struct {
	mu      sync.Mutex
	Configs map[string]Config
	WAN     string // what DefaultRouteInterface answers
}

var _ Links = (*Fake)(nil)

// Set implements Links.
func (f *Fake) Set(cfg Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Configs == nil {
		f.Configs = map[string]Config{}
	}
	f.Configs[cfg.Interface] = cfg
	return nil
}

// DefaultRouteInterface answers f.WAN.
func (f *Fake) DefaultRouteInterface() (string, error) { return f.WAN, nil }

// Close implements Links.
func (f *Fake) Close() error { return nil }
