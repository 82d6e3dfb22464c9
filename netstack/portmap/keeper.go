package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// The states of Status.State.
const (
	StateOff     = "off"     // no uplink gateway, or the Keeper is not running
	StateTrying  = "trying"  // discovering or mapping
	StateMapped  = "mapped"  // the router forwards the port
	StateFailing = "failing" // no router answered, or every protocol refused
)

// Status is what the Keeper last achieved, for GET /api/network and logs.
type Status struct {
	State    string
	Mapping  *Mapping   // the current mapping; nil unless mapped
	External netip.Addr // the router's public address, also when mapping failed but the router reported it
	// CGNAT is true when External is in 100.64.0.0/10: the router is
	// itself behind the provider's NAT and the cell cannot be reached
	// from outside without a relay, mapping or not.
	CGNAT     bool
	Reason    string // plain words for a person when not mapped, or CGNAT
	LastError string
	Renewed   time.Time // the last successful map or renewal
}

// KeeperOptions configure a Keeper.
type KeeperOptions struct {
	Port uint16 // the UDP port to map, the same inside and outside; required
	// Lifetime asked of the router; default 2 h, NAT-PMP's recommended
	// lease (RFC 6886 §3.3). The Keeper renews at half what the router
	// grants.
	Lifetime time.Duration
	// Retry is the wait after a failure before trying again; it doubles
	// up to 32 times Retry. Default 30 s.
	Retry time.Duration
	Now   func() time.Time // default time.Now
	Log   *slog.Logger     // default slog.Default()
	// Discover finds the router's clients; nil is this package's
	// Discover. Tests inject fakes.
	Discover func(ctx context.Context, gateway, local netip.Addr) ([]Client, error)
	// DiscoverTimeout bounds one discovery; default 3 s.
	DiscoverTimeout time.Duration
}

// Keeper keeps one UDP port mapped on the uplink's router. Its methods are
// safe for concurrent use; Run does the work.
type Keeper struct {
	o KeeperOptions

	mu      sync.Mutex
	gateway netip.Addr
	local   netip.Addr
	status  Status
	changed chan struct{} // closed and replaced at every status change

	wake chan struct{} // Set or Renew happened; buffered 1
}

// NewKeeper returns a Keeper; nothing happens before Set and Run.
func NewKeeper(o KeeperOptions) *Keeper {
	if o.Lifetime <= 0 {
		o.Lifetime = 2 * time.Hour
	}
	if o.Retry <= 0 {
		o.Retry = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("component", "portmap", "port", o.Port)
	if o.Discover == nil {
		o.Discover = Discover
	}
	if o.DiscoverTimeout <= 0 {
		o.DiscoverTimeout = 3 * time.Second
	}
	return &Keeper{
		o:       o,
		status:  Status{State: StateOff, Reason: "no uplink gateway known yet"},
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}
}

// Set tells the Keeper the uplink's default gateway and the cell's address
// on it. A change re-discovers the router and maps again (deleting the old
// mapping if the old router still answers); an invalid gateway means there
// is nothing to map.
func (k *Keeper) Set(gateway, local netip.Addr) {
	gateway, local = gateway.Unmap(), local.Unmap()
	k.mu.Lock()
	same := gateway == k.gateway && local == k.local
	k.gateway, k.local = gateway, local
	k.mu.Unlock()
	if !same {
		k.poke()
	}
}

// Renew maps again now rather than at half the lifetime.
func (k *Keeper) Renew() { k.poke() }

func (k *Keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// Status returns the current status; Mapping is a copy.
func (k *Keeper) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.status
	if s.Mapping != nil {
		m := *s.Mapping
		s.Mapping = &m
	}
	return s
}

// Changed returns a channel closed at the next change of Status (a new
// channel each time): tests and the API's watchers wait on it.
func (k *Keeper) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

func (k *Keeper) setStatus(s Status) {
	switch {
	case s.External.IsValid() && CGNAT(s.External):
		s.CGNAT = true
		s.Reason = fmt.Sprintf("the router's own public address %s is in 100.64.0.0/10: the internet provider puts the home behind its own NAT (CGNAT), so the cell cannot be reached from outside without a relay, with or without this mapping", s.External)
	case s.External.IsValid() && s.External.IsPrivate():
		s.Reason = fmt.Sprintf("the router's own public address %s is a private address: another router stands between it and the internet (double NAT), and UDP port %d must be forwarded on that one too", s.External, k.o.Port)
	}
	k.mu.Lock()
	k.status = s
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

func (k *Keeper) uplink() (gateway, local netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gateway, k.local
}

// Run keeps the port mapped until ctx ends, then deletes the mapping with
// a deadline of its own (3 s) and returns.
func (k *Keeper) Run(ctx context.Context) {
	var (
		clients  []Client
		cGateway netip.Addr // the uplink clients were discovered for
		cLocal   netip.Addr
		current  *Mapping
		via      Client
		retry    = k.o.Retry
		next     time.Time // when to map again
		renewed  time.Time
	)
	var background sync.WaitGroup // deletions on a previous uplink
	unmap := func(why string, wait bool) {
		if current == nil {
			return
		}
		m, c := *current, via
		current, via = nil, nil
		del := func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			defer cancel()
			if err := c.Unmap(uctx, m); err != nil {
				k.o.Log.Warn("port mapping not deleted", "mapping", m.String(), "why", why, "err", err)
			} else {
				k.o.Log.Info("port mapping deleted", "mapping", m.String(), "why", why)
			}
		}
		if wait {
			del()
			return
		}
		background.Add(1)
		go func() { defer background.Done(); del() }()
	}
	defer func() {
		unmap("shutting down", true)
		background.Wait()
		k.setStatus(Status{State: StateOff, Reason: "port mapping stopped"})
	}()
	for {
		// This pass sees every Set and Renew made so far.
		select {
		case <-k.wake:
		default:
		}
		gateway, local := k.uplink()
		if gateway != cGateway || local != cLocal {
			// The old mapping goes first when the router is the same
			// (the new one wants the same external port); an old router
			// may be gone, and nothing waits for it.
			old := via
			unmap("the uplink changed", gateway == cGateway)
			clients, cGateway, cLocal = nil, gateway, local
			if r, ok := old.(rebinder); ok && gateway.IsValid() {
				// Try the protocol that worked first, without the
				// whole discovery (SSDP alone waits over a second).
				clients = []Client{r.rebind(gateway, local)}
			}
			retry = k.o.Retry
		}
		switch {
		case !gateway.IsValid():
			k.setStatus(Status{State: StateOff, Reason: "no default gateway on the uplink: nothing to ask"})
			next = time.Time{}
		default:
			if current == nil {
				// A renewal keeps showing the mapping it renews.
				k.setStatus(Status{State: StateTrying, External: k.Status().External, Renewed: renewed})
			}
			var st Status
			st, clients, current, via = k.attempt(ctx, gateway, local, clients, current, via)
			if ctx.Err() != nil {
				return
			}
			if current != nil {
				renewed = k.o.Now()
				st.Renewed = renewed
				half := current.Lifetime / 2
				if half <= 0 {
					half = k.o.Lifetime / 2 // "forever" leases are asserted again
				}
				next = k.o.Now().Add(half)
				retry = k.o.Retry
			} else {
				st.Renewed = renewed
				next = k.o.Now().Add(retry)
				retry = min(retry*2, 32*k.o.Retry)
			}
			k.setStatus(st)
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(max(next.Sub(k.o.Now()), 0))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-k.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// attempt discovers (when clients is nil) and maps through the first client
// that succeeds, the one that holds the current mapping first.
func (k *Keeper) attempt(ctx context.Context, gateway, local netip.Addr, clients []Client, current *Mapping, via Client) (Status, []Client, *Mapping, Client) {
	var errs []error
	var lastClients []Client
	for pass := 0; pass < 2; pass++ {
		fresh := clients == nil
		st, cs, m, c, pe := k.try(ctx, gateway, local, clients, current, via)
		if m != nil || st.State != "" || ctx.Err() != nil {
			return st, cs, m, c
		}
		errs = append(errs, pe...)
		lastClients = cs
		if fresh {
			break
		}
		// A list not from a discovery (the protocol that worked on the
		// previous uplink) failed: discover now rather than at the
		// next retry.
		clients, current, via = nil, nil, nil
	}
	// Every client refused. Ask any of them for the public address, for
	// the status (and for the CGNAT check).
	st := Status{
		State:     StateFailing,
		Reason:    fmt.Sprintf("the router at %s refused to forward UDP port %d: allow it in the router's UPnP/NAT-PMP settings, or forward it to %s by hand", gateway, k.o.Port, local),
		LastError: errors.Join(errs...).Error(),
	}
	for _, c := range lastClients {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		a, err := c.ExternalAddr(actx)
		cancel()
		if err == nil {
			st.External = a
			break
		}
	}
	// Discover again next time: the router may have changed its mind.
	return st, nil, nil, nil
}

// try discovers (when clients is nil) and maps through the first client
// that succeeds, the one that holds the current mapping first. It returns
// a status when it is final (mapped, or no protocol answered); otherwise
// the errors of every refusal.
func (k *Keeper) try(ctx context.Context, gateway, local netip.Addr, clients []Client, current *Mapping, via Client) (Status, []Client, *Mapping, Client, []error) {
	if clients == nil {
		dctx, cancel := context.WithTimeout(ctx, k.o.DiscoverTimeout)
		cs, err := k.o.Discover(dctx, gateway, local)
		cancel()
		if err != nil || len(cs) == 0 {
			if err == nil {
				err = errors.New("no protocol answered")
			}
			k.o.Log.Warn("no port mapping protocol on the router", "gateway", gateway, "err", err)
			return Status{
				State:     StateFailing,
				Reason:    fmt.Sprintf("the router at %s answers none of UPnP, NAT-PMP and PCP: turn UPnP or NAT-PMP on in the router, or forward UDP port %d to %s by hand", gateway, k.o.Port, local),
				LastError: err.Error(),
			}, nil, nil, nil, nil
		}
		clients = cs
		names := make([]Protocol, len(cs))
		for i, c := range cs {
			names[i] = c.Protocol()
		}
		k.o.Log.Info("router answers", "gateway", gateway, "protocols", names)
	}
	order := clients
	if via != nil {
		order = append([]Client{via}, without(clients, via)...)
	}
	internal := netip.AddrPortFrom(local, k.o.Port)
	var errs []error
	for _, c := range order {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := c.Map(mctx, internal, k.o.Port, k.o.Lifetime)
		cancel()
		if err != nil && ctx.Err() != nil {
			return Status{}, clients, current, via, nil
		}
		if err != nil {
			errs = append(errs, err)
			k.o.Log.Warn("port mapping refused", "protocol", c.Protocol(), "err", err)
			continue
		}
		if via != nil && c != via && current != nil {
			// Moved to another protocol: the old one's mapping goes.
			uctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			via.Unmap(uctx, *current)
			cancel()
		}
		if current == nil || *current != m {
			k.o.Log.Info("port mapped", "mapping", m.String())
		}
		st := Status{State: StateMapped, Mapping: &m, External: m.External.Addr()}
		if len(errs) > 0 {
			st.LastError = errors.Join(errs...).Error()
		}
		return st, clients, &m, c, nil
	}
	return Status{}, clients, nil, nil, errs
}

func without(cs []Client, c Client) []Client {
	var out []Client
	for _, x := range cs {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}
