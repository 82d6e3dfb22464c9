package ddns

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Status is what the Keeper has done and will do, for the API and the
// admin page.
type Status struct {
	// State is "ok" (the provider has the addresses), "pending" (an update
	// is due, or no address is known yet), "failing" (transient failures,
	// retried at NextTry), "refused" (the provider refused the credentials
	// or the name: waits for a person and Refresh) or "off" (no updater).
	State      string
	Addrs      []netip.Addr // what the provider was last told successfully
	LastUpdate time.Time    // the last success (zero: never)
	LastError  string       // the last failure in plain words (never a secret); "" after a success
	Failures   int          // consecutive failures
	NextTry    time.Time    // when the Keeper will try next (zero: only on a change or Refresh)
}

// KeeperOptions tune a Keeper; zero values take the defaults.
type KeeperOptions struct {
	// Interval is how often the addresses are sent again although they did
	// not change (default 24 h).
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the wait after a transient failure,
	// which doubles (with jitter) from one to the other (defaults 30 s and
	// 30 min).
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log gets one line per attempt that failed (Warn) or changed the
	// record (Info); nil logs nothing.
	Log *slog.Logger
}

// Keeper runs an Updater: on a change of the addresses, at an interval,
// and with back-off after failures. Its methods are safe to call from any
// goroutine; Run does the updates.
type Keeper struct {
	u    Updater
	o    KeeperOptions
	wake chan struct{}

	mu         sync.Mutex
	wanted     []netip.Addr // the addresses the cell has now (Set)
	told       []netip.Addr // what the provider was last told successfully
	refused    bool         // the last failure was ErrAuth or ErrRefused
	failures   int
	lastErr    string
	lastUpdate time.Time
	next       time.Time     // the next attempt; zero: none planned
	refreshes  int           // Refresh calls so far: one during an attempt is not lost
	updated    chan struct{} // closed at the next success
}

// attemptTimeout bounds one Update whatever the Updater's own timeouts.
const attemptTimeout = 2 * time.Minute

// NewKeeper makes a Keeper of u; a nil u makes one whose State is "off"
// and which never updates (dynamic DNS not configured).
func NewKeeper(u Updater, o KeeperOptions) *Keeper {
	if o.Interval <= 0 {
		o.Interval = 24 * time.Hour
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 30 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Minute
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{u: u, o: o, wake: make(chan struct{}, 1), updated: make(chan struct{})}
}

// Set gives the public addresses the cell has now (at most one IPv4 and
// one IPv6); an update runs soon if they differ from what the provider was
// last told. An empty Set changes nothing: the record keeps the last
// addresses while none is known. After a refusal it only records them for
// the next Refresh.
func (k *Keeper) Set(addrs []netip.Addr) {
	n := normalize(addrs)
	if len(n) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if slices.Equal(n, k.wanted) {
		return
	}
	k.wanted = n
	if k.u == nil || k.refused || slices.Equal(n, k.told) {
		return
	}
	k.next = k.o.Now()
	k.poke()
}

// Refresh asks for an update now, even of unchanged addresses; it also
// ends a refusal (a person has acted on the provider's side).
func (k *Keeper) Refresh() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.u == nil {
		return
	}
	k.refused = false
	k.refreshes++
	k.next = k.o.Now()
	k.poke()
}

// Updated is a channel closed at the next successful update after the
// call: take it before Set or Refresh to wait for their effect.
func (k *Keeper) Updated() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.updated
}

// Status is the Keeper's state now.
func (k *Keeper) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := Status{
		Addrs:      slices.Clone(k.told),
		LastUpdate: k.lastUpdate,
		LastError:  k.lastErr,
		Failures:   k.failures,
		NextTry:    k.next,
	}
	switch {
	case k.u == nil:
		s.State = "off"
	case k.refused:
		s.State = "refused"
	case k.failures > 0:
		s.State = "failing"
	case len(k.told) == 0 || (len(k.wanted) > 0 && !slices.Equal(k.wanted, k.told)):
		s.State = "pending"
	default:
		s.State = "ok"
	}
	return s
}

// Run does the updates until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	if k.u == nil {
		<-ctx.Done()
		return
	}
	for {
		k.mu.Lock()
		next := k.next
		k.mu.Unlock()
		var timer *time.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			d := next.Sub(k.o.Now())
			if d <= 0 {
				k.attempt(ctx)
				if ctx.Err() != nil {
					return
				}
				continue
			}
			timer = time.NewTimer(d)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-k.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// attempt sends the wanted addresses once and plans the next attempt.
func (k *Keeper) attempt(ctx context.Context) {
	k.mu.Lock()
	addrs := slices.Clone(k.wanted)
	refreshes := k.refreshes
	k.next = time.Time{}
	if len(addrs) == 0 || k.refused {
		k.mu.Unlock()
		return
	}
	k.mu.Unlock()

	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	err := k.u.Update(actx, addrs)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: an interrupted attempt says nothing about the provider
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.o.Now()
	if err == nil {
		changed := !slices.Equal(addrs, k.told)
		k.told, k.failures, k.lastErr, k.lastUpdate = addrs, 0, "", now
		k.next = now.Add(k.o.Interval)
		close(k.updated)
		k.updated = make(chan struct{})
		if changed {
			k.o.Log.Info("dynamic DNS updated", "addresses", addrs)
		}
	} else {
		k.failures++
		k.lastErr = err.Error()
		if errors.Is(err, ErrAuth) || errors.Is(err, ErrRefused) {
			k.o.Log.Warn("dynamic DNS update refused; not trying again until the settings are fixed and refreshed", "error", k.lastErr)
			if k.refreshes == refreshes {
				k.refused = true
				return
			}
		} else {
			k.next = now.Add(k.backoff())
			k.o.Log.Warn("dynamic DNS update failed", "error", k.lastErr, "failures", k.failures, "retry_in", k.next.Sub(now).Round(time.Millisecond).String())
		}
	}
	if k.refreshes != refreshes || (!slices.Equal(k.wanted, addrs) && !slices.Equal(k.wanted, k.told)) {
		k.next = now // Refresh was called, or the addresses changed, while this attempt ran
	}
}

// backoff is the wait after the k.failures-th consecutive transient
// failure: MinBackoff doubled per failure up to MaxBackoff, of which a
// random half is taken off.
func (k *Keeper) backoff() time.Duration {
	d := k.o.MinBackoff
	for i := 1; i < k.failures && d < k.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, k.o.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// poke wakes Run without blocking.
func (k *Keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}
