package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Fake is an in-memory Client for unit tests: it grants what is asked
// (or Grant, when set), reports External as the router's address, fails
// with MapErr when set, and records every call.
type Fake struct {
	Proto    Protocol
	External netip.Addr
	Grant    time.Duration // lifetime granted; 0 grants what is asked

	mu     sync.Mutex
	mapErr error
	calls  []string
	maps   []Mapping
	unmaps []Mapping
	active map[netip.AddrPort]Mapping
}

var _ Client = (*Fake)(nil)

// NewFake returns a fake router speaking p whose public address is external.
func NewFake(p Protocol, external netip.Addr) *Fake {
	return &Fake{Proto: p, External: external, active: map[netip.AddrPort]Mapping{}}
}

// SetMapErr makes Map fail with err (nil: succeed again).
func (f *Fake) SetMapErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mapErr = err
}

func (f *Fake) Protocol() Protocol { return f.Proto }

func (f *Fake) Map(ctx context.Context, internal netip.AddrPort, external uint16, lifetime time.Duration) (Mapping, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("map %s %d %s", internal, external, lifetime))
	if f.mapErr != nil {
		return Mapping{}, f.mapErr
	}
	if f.Grant > 0 {
		lifetime = f.Grant
	}
	m := Mapping{Protocol: f.Proto, Internal: internal, External: netip.AddrPortFrom(f.External, external), Lifetime: lifetime, Expires: time.Now().Add(lifetime)}
	f.maps = append(f.maps, m)
	if f.active == nil {
		f.active = map[netip.AddrPort]Mapping{}
	}
	f.active[m.External] = m
	return m, nil
}

func (f *Fake) Unmap(ctx context.Context, m Mapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("unmap %s", m.External))
	f.unmaps = append(f.unmaps, m)
	delete(f.active, m.External)
	return nil
}

func (f *Fake) ExternalAddr(ctx context.Context) (netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "external")
	return f.External, nil
}

// Calls returns the calls so far, in order ("map <internal> <port>
// <lifetime>", "unmap <external>", "external").
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Maps returns every mapping granted, renewals included.
func (f *Fake) Maps() []Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Mapping(nil), f.maps...)
}

// Unmaps returns every mapping deleted.
func (f *Fake) Unmaps() []Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Mapping(nil), f.unmaps...)
}

// Active returns the mappings granted and not deleted.
func (f *Fake) Active() []Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Mapping
	for _, m := range f.active {
		out = append(out, m)
	}
	return out
}

// rebind records "rebind <gateway> <local>" and keeps the same fake: it
// stands for a NAT-PMP or PCP client, which the Keeper re-creates for a
// new uplink without a discovery.
func (f *Fake) rebind(gateway, local netip.Addr) Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "rebind "+gateway.String()+" "+local.String())
	return f
}
