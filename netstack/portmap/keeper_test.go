package portmap

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	gw     = netip.MustParseAddr("192.168.77.1")
	cellIP = netip.MustParseAddr("192.168.77.2")
	public = netip.MustParseAddr("198.18.4.2")
)

// fakeRouter hands the Keeper clients and records discoveries.
type fakeRouter struct {
	mu       sync.Mutex
	clients  []Client
	err      error
	searches []string // "gateway local"
}

func (r *fakeRouter) discover(ctx context.Context, gateway, local netip.Addr) ([]Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.searches = append(r.searches, gateway.String()+" "+local.String())
	return r.clients, r.err
}

func (r *fakeRouter) Searches() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.searches...)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start runs a Keeper on the fake router; the returned stop ends Run and
// waits for it.
func start(t *testing.T, r *fakeRouter, o KeeperOptions) (*Keeper, func()) {
	t.Helper()
	o.Port = 51820
	o.Discover = r.discover
	o.Log = quiet()
	if o.Retry == 0 {
		o.Retry = 50 * time.Millisecond
	}
	k := NewKeeper(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return 5 s after its context ended")
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return k, stop
}

// waitStatus waits up to 5 s for a status that ok accepts.
func waitStatus(t *testing.T, k *Keeper, what string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		ch := k.Changed()
		if s := k.Status(); ok(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no status %s within 5 s; last: %+v", what, k.Status())
		}
	}
}

func mapped(s Status) bool { return s.State == StateMapped }

func TestKeeperMapsAndUnmapsAtTheEnd(t *testing.T) {
	f := NewFake(NATPMP, public)
	k, stop := start(t, &fakeRouter{clients: []Client{f}}, KeeperOptions{})
	if s := k.Status(); s.State != StateOff {
		t.Errorf("before Set: %+v, want off", s)
	}
	k.Set(gw, cellIP)
	s := waitStatus(t, k, "mapped", mapped)
	want := Mapping{Protocol: NATPMP, Internal: netip.MustParseAddrPort("192.168.77.2:51820"), External: netip.MustParseAddrPort("198.18.4.2:51820"), Lifetime: 2 * time.Hour}
	if s.Mapping == nil || s.Mapping.Protocol != want.Protocol || s.Mapping.Internal != want.Internal || s.Mapping.External != want.External || s.Mapping.Lifetime != want.Lifetime {
		t.Errorf("mapping %+v, want %+v", s.Mapping, want)
	}
	if s.External != public || s.CGNAT || s.Renewed.IsZero() || s.Reason != "" {
		t.Errorf("status %+v: want external %s, no CGNAT, renewed set, no reason", s, public)
	}
	if c := f.Calls(); len(c) != 1 || c[0] != "map 192.168.77.2:51820 51820 2h0m0s" {
		t.Errorf("calls %q, want one map of the default 2 h", c)
	}
	stop()
	if a := f.Active(); len(a) != 0 {
		t.Errorf("after Run: active mappings %+v, want none", a)
	}
	if u := f.Unmaps(); len(u) != 1 || u[0].External != want.External {
		t.Errorf("unmaps %+v, want the one mapping", u)
	}
	if s := k.Status(); s.State != StateOff || s.Mapping != nil {
		t.Errorf("after Run: %+v, want off with no mapping", s)
	}
}

func TestKeeperRenewsAtHalfTheLifetime(t *testing.T) {
	f := NewFake(PCP, public)
	f.Grant = 300 * time.Millisecond // the router grants less than asked
	k, _ := start(t, &fakeRouter{clients: []Client{f}}, KeeperOptions{Lifetime: time.Hour})
	k.Set(gw, cellIP)
	first := waitStatus(t, k, "mapped", mapped)
	t0 := time.Now()
	waitStatus(t, k, "renewed twice", func(s Status) bool { return len(f.Maps()) >= 3 })
	el := time.Since(t0)
	// Two renewals at half of 300 ms: about 300 ms, well before the
	// first lease ran out twice over.
	if el < 200*time.Millisecond || el > 2*time.Second {
		t.Errorf("two renewals took %v, want about 300 ms (half the granted lifetime each)", el)
	}
	if s := k.Status(); !s.Renewed.After(first.Renewed) {
		t.Errorf("Renewed %v did not advance from %v", s.Renewed, first.Renewed)
	}
	for _, m := range f.Maps() {
		if m.Lifetime != 300*time.Millisecond {
			t.Errorf("renewal %+v: want the granted 300 ms", m)
		}
	}
}

func TestKeeperRenewNow(t *testing.T) {
	f := NewFake(UPnP, public)
	k, _ := start(t, &fakeRouter{clients: []Client{f}}, KeeperOptions{})
	k.Set(gw, cellIP)
	waitStatus(t, k, "mapped", mapped)
	k.Renew()
	waitStatus(t, k, "renewed", func(Status) bool { return len(f.Maps()) == 2 })
	if len(f.Unmaps()) != 0 {
		t.Errorf("Renew deleted a mapping: %+v", f.Unmaps())
	}
}

func TestKeeperSetRediscoversAndMovesTheMapping(t *testing.T) {
	f := NewFake(NATPMP, public)
	r := &fakeRouter{clients: []Client{f}}
	k, _ := start(t, r, KeeperOptions{})
	k.Set(gw, cellIP)
	waitStatus(t, k, "mapped", mapped)
	k.Set(gw, cellIP) // unchanged: nothing happens
	newIP := netip.MustParseAddr("192.168.77.9")
	k.Set(gw, newIP)
	s := waitStatus(t, k, "mapped to the new address", func(s Status) bool {
		return mapped(s) && s.Mapping.Internal.Addr() == newIP
	})
	// The protocol that worked is tried again first, with no discovery.
	if got := r.Searches(); len(got) != 1 {
		t.Errorf("discoveries %q, want only the first", got)
	}
	if c := f.Calls(); !slices.Contains(c, "rebind 192.168.77.1 192.168.77.9") {
		t.Errorf("calls %q: want the client re-made for the new address", c)
	}
	if u := f.Unmaps(); len(u) != 1 || u[0].Internal.Addr() != cellIP {
		t.Errorf("unmaps %+v, want the old address's mapping deleted", u)
	}
	if s.Mapping.External != netip.MustParseAddrPort("198.18.4.2:51820") {
		t.Errorf("mapping %+v", s.Mapping)
	}

	// When that client fails on the new uplink, the Keeper discovers at
	// once and maps through what answers there.
	g := NewFake(UPnP, public)
	r.mu.Lock()
	r.clients = []Client{g}
	r.mu.Unlock()
	f.SetMapErr(errors.New("natpmp: no answer from the router"))
	third := netip.MustParseAddr("192.168.77.10")
	k.Set(gw, third)
	s = waitStatus(t, k, "mapped by upnp", func(s Status) bool {
		return mapped(s) && s.Mapping.Protocol == UPnP && s.Mapping.Internal.Addr() == third
	})
	if got := r.Searches(); len(got) != 2 || got[1] != "192.168.77.1 192.168.77.10" {
		t.Errorf("discoveries %q, want a second one from the third address", got)
	}

	// No gateway: nothing to map, and the mapping goes (in the
	// background: the old router may be gone).
	k.Set(netip.Addr{}, third)
	s = waitStatus(t, k, "off", func(s Status) bool { return s.State == StateOff })
	if s.Reason == "" {
		t.Errorf("without a gateway: %+v, want a reason", s)
	}
	for deadline := time.Now().Add(2 * time.Second); len(g.Active()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("mapping %+v not deleted 2 s after the gateway went", g.Active())
		}
	}
}

func TestKeeperFallsBackToTheNextProtocol(t *testing.T) {
	bad, good := NewFake(PCP, public), NewFake(UPnP, public)
	bad.SetMapErr(errors.New("pcp: the router refused: not authorized (code 2)"))
	k, _ := start(t, &fakeRouter{clients: []Client{bad, good}}, KeeperOptions{})
	k.Set(gw, cellIP)
	s := waitStatus(t, k, "mapped", mapped)
	if s.Mapping.Protocol != UPnP || !strings.Contains(s.LastError, "not authorized") {
		t.Errorf("status %+v: want mapped by upnp, pcp's refusal in LastError", s)
	}
	// A renewal goes to the protocol that holds the mapping first.
	k.Renew()
	waitStatus(t, k, "renewed", func(Status) bool { return len(good.Maps()) == 2 })
	if n := len(bad.Calls()); n != 1 {
		t.Errorf("pcp asked %d times, want once (renewals go to upnp, which holds the mapping)", n)
	}
}

func TestKeeperFailing(t *testing.T) {
	t.Run("nothing answers", func(t *testing.T) {
		r := &fakeRouter{err: errors.New("the router at 192.168.77.1 answers none of PCP, NAT-PMP and UPnP")}
		k, _ := start(t, r, KeeperOptions{})
		k.Set(gw, cellIP)
		s := waitStatus(t, k, "failing", func(s Status) bool { return s.State == StateFailing })
		if !strings.Contains(s.Reason, "forward UDP port 51820 to 192.168.77.2 by hand") || s.LastError == "" || s.Mapping != nil {
			t.Errorf("status %+v: want a plain reason naming the port and address, and the error", s)
		}
		// It tries again, later (Retry 50 ms, doubling).
		waitStatus(t, k, "a retry", func(Status) bool { return len(r.Searches()) >= 3 })
	})
	t.Run("every protocol refuses", func(t *testing.T) {
		a, b := NewFake(PCP, public), NewFake(NATPMP, public)
		a.SetMapErr(errors.New("pcp: no"))
		b.SetMapErr(errors.New("natpmp: no"))
		k, _ := start(t, &fakeRouter{clients: []Client{a, b}}, KeeperOptions{})
		k.Set(gw, cellIP)
		s := waitStatus(t, k, "failing", func(s Status) bool { return s.State == StateFailing })
		if s.External != public || !strings.Contains(s.Reason, "refused") || !strings.Contains(s.LastError, "pcp: no") || !strings.Contains(s.LastError, "natpmp: no") {
			t.Errorf("status %+v: want the public address, a reason and both errors", s)
		}
		// The router changes its mind: mapped on the next try.
		b.SetMapErr(nil)
		waitStatus(t, k, "mapped", mapped)
	})
}

func TestKeeperCGNAT(t *testing.T) {
	f := NewFake(UPnP, netip.MustParseAddr("100.64.0.2"))
	k, _ := start(t, &fakeRouter{clients: []Client{f}}, KeeperOptions{})
	k.Set(gw, cellIP)
	s := waitStatus(t, k, "mapped", mapped)
	if !s.CGNAT || !strings.Contains(s.Reason, "cannot be reached from outside without a relay") {
		t.Errorf("status %+v: want CGNAT and a plain reason", s)
	}
}

func TestKeeperDoubleNAT(t *testing.T) {
	f := NewFake(NATPMP, netip.MustParseAddr("192.168.1.20"))
	k, _ := start(t, &fakeRouter{clients: []Client{f}}, KeeperOptions{})
	k.Set(gw, cellIP)
	s := waitStatus(t, k, "mapped", mapped)
	if s.CGNAT || !strings.Contains(s.Reason, "double NAT") || !strings.Contains(s.Reason, "51820") {
		t.Errorf("status %+v: want a reason about the second router, no CGNAT", s)
	}
}
