package ddns_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pic-cell/cell/netstack/ddns"
	"github.com/pic-cell/cell/netstack/nstest"
)

// world is a DNS provider's primary (BIND9 at 198.18.0.53, in the
// "internet") and the cell (198.18.0.2), joined by a veth pair.
type world struct {
	dns, cell *nstest.NS
	bind      *nstest.BIND
}

func newWorld(t testing.TB) *world {
	nstest.RequireRoot(t)
	w := &world{dns: nstest.NewNS(t, "dns"), cell: nstest.NewNS(t, "cell")}
	nstest.Veth(t, w.dns, "inet0", "198.18.0.53/24", w.cell, "wan0", "198.18.0.2/24")
	w.bind = nstest.StartBIND(t, w.dns, netip.MustParseAddr("198.18.0.53"), "cell.test.")
	return w
}

func (w *world) updater() *ddns.RFC2136 {
	return &ddns.RFC2136{
		Server: w.bind.Addr.String(), Zone: w.bind.Zone, Name: "home.cell.test",
		KeyName: w.bind.KeyName, Algorithm: w.bind.Algorithm, Secret: w.bind.Secret,
		Timeout: 3 * time.Second,
	}
}

// update runs u.Update from the cell's namespace.
func (w *world) update(u ddns.Updater, addrs ...string) error {
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	return w.cell.Run(func() error { return u.Update(context.Background(), as) })
}

func (w *world) records(t *testing.T) (a, aaaa []string) {
	t.Helper()
	return w.bind.Lookup(t, w.cell, "home.cell.test", dns.TypeA), w.bind.Lookup(t, w.cell, "home.cell.test", dns.TypeAAAA)
}

func TestRFC2136AgainstBIND(t *testing.T) {
	w := newWorld(t)
	u := w.updater()
	if err := u.Validate(); err != nil {
		t.Fatalf("the test server's settings do not validate: %v", err)
	}

	if err := w.update(u, "198.51.100.7", "2001:db8::7"); err != nil {
		t.Fatalf("first update: %v", err)
	}
	if a, aaaa := w.records(t); !slices.Equal(a, []string{"198.51.100.7"}) || !slices.Equal(aaaa, []string{"2001:db8::7"}) {
		t.Fatalf("after the first update BIND has A %v AAAA %v", a, aaaa)
	}

	// A new IPv4 address replaces the record: one A, not two.
	if err := w.update(u, "198.51.100.8", "2001:db8::7"); err != nil {
		t.Fatalf("second update: %v", err)
	}
	if a, aaaa := w.records(t); !slices.Equal(a, []string{"198.51.100.8"}) || !slices.Equal(aaaa, []string{"2001:db8::7"}) {
		t.Fatalf("after a change of the IPv4 address BIND has A %v AAAA %v", a, aaaa)
	}

	// No IPv6 any more: the AAAA goes.
	if err := w.update(u, "198.51.100.8"); err != nil {
		t.Fatalf("update without IPv6: %v", err)
	}
	if a, aaaa := w.records(t); !slices.Equal(a, []string{"198.51.100.8"}) || len(aaaa) != 0 {
		t.Fatalf("after the IPv6 address went BIND has A %v AAAA %v", a, aaaa)
	}

	// The TTL is what was asked.
	u2 := *u
	u2.TTL = 300 * time.Second
	if err := w.update(&u2, "198.51.100.9"); err != nil {
		t.Fatalf("update with a TTL: %v", err)
	}
	var ttl uint32
	w.cell.Run(func() error {
		m := new(dns.Msg)
		m.SetQuestion("home.cell.test.", dns.TypeA)
		r, err := dns.Exchange(m, w.bind.Addr.String())
		if err == nil && len(r.Answer) == 1 {
			ttl = r.Answer[0].Header().Ttl
		}
		return err
	})
	if ttl != 300 {
		t.Errorf("the record's TTL is %d, want 300", ttl)
	}

	// Wrong credentials: ErrAuth, in plain words without the secret, and
	// the record stays.
	other := make([]byte, 32)
	rand.Read(other)
	wrongSecret := *u
	wrongSecret.Secret = base64.StdEncoding.EncodeToString(other)
	wrongName := *u
	wrongName.KeyName = "someone-else."
	wrongAlg := *u
	wrongAlg.Algorithm = "hmac-sha512"
	for name, bad := range map[string]*ddns.RFC2136{"wrong secret": &wrongSecret, "unknown key": &wrongName, "wrong algorithm": &wrongAlg} {
		err := w.update(bad, "198.51.100.66")
		if !errors.Is(err, ddns.ErrAuth) {
			t.Errorf("%s: got %v, want the credentials refused", name, err)
			continue
		}
		if strings.Contains(err.Error(), bad.Secret) || strings.Contains(err.Error(), u.Secret) {
			t.Errorf("%s: the error shows a secret: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if a, _ := w.records(t); !slices.Equal(a, []string{"198.51.100.9"}) {
		t.Fatalf("a refused update changed the record: A %v", a)
	}

	// A name outside the server's zones.
	outside := *u
	outside.Zone, outside.Name = "elsewhere.test.", "home.elsewhere.test"
	if err := w.update(&outside, "198.51.100.66"); !errors.Is(err, ddns.ErrRefused) || !strings.Contains(err.Error(), "elsewhere.test") {
		t.Errorf("an update of a zone the server does not serve: got %v, want a refusal naming the zone", err)
	}

	// Nobody listening: a transient error, soon.
	down := *u
	down.Server = "198.18.0.54"
	down.Timeout = time.Second
	start := time.Now()
	err := w.update(&down, "198.51.100.66")
	if err == nil || errors.Is(err, ddns.ErrAuth) || errors.Is(err, ddns.ErrRefused) {
		t.Errorf("a server that does not answer: got %v, want a transient error", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("a server that does not answer took %v, the timeout is 1 s", time.Since(start))
	}
}

// counting counts the Updates it passes on.
type counting struct {
	u ddns.Updater
	n atomic.Int32
}

func (c *counting) Update(ctx context.Context, addrs []netip.Addr) error {
	c.n.Add(1)
	return c.u.Update(ctx, addrs)
}

// runKeeper runs k in the cell's namespace until the test ends.
func (w *world) runKeeper(t *testing.T, k *ddns.Keeper) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.cell.Run(func() error { k.Run(ctx); return nil })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestKeeperAgainstBIND: the record follows a change of the cell's
// address, and a wrong key is reported and not retried in a loop.
func TestKeeperAgainstBIND(t *testing.T) {
	w := newWorld(t)
	k := ddns.NewKeeper(w.updater(), ddns.KeeperOptions{Interval: time.Hour, MinBackoff: 50 * time.Millisecond})
	w.runKeeper(t, k)
	for i, addr := range []string{"198.51.100.7", "198.51.100.8"} {
		up := k.Updated()
		start := time.Now()
		k.Set([]netip.Addr{netip.MustParseAddr(addr)})
		select {
		case <-up:
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d: no update within 10 s: %+v", i, k.Status())
		}
		if a, _ := w.records(t); !slices.Equal(a, []string{addr}) {
			t.Fatalf("change %d: the keeper says updated, BIND has A %v, want %s", i, a, addr)
		}
		t.Logf("change %d: from Set to the record at BIND in %v", i, time.Since(start).Round(time.Microsecond))
	}
	if s := k.Status(); s.State != "ok" || s.Failures != 0 {
		t.Fatalf("status: %+v", s)
	}

	bad := w.updater()
	other := make([]byte, 32)
	rand.Read(other)
	bad.Secret = base64.StdEncoding.EncodeToString(other)
	c := &counting{u: bad}
	kb := ddns.NewKeeper(c, ddns.KeeperOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	w.runKeeper(t, kb)
	kb.Set([]netip.Addr{netip.MustParseAddr("198.51.100.66")})
	time.Sleep(2 * time.Second)
	if n := c.n.Load(); n != 1 {
		t.Errorf("%d attempts in 2 s with a wrong key, want 1 (no retry until Refresh)", n)
	}
	s := kb.Status()
	if s.State != "refused" || s.LastError == "" || strings.Contains(s.LastError, bad.Secret) {
		t.Errorf("status with a wrong key: %+v", s)
	}
	if a, _ := w.records(t); !slices.Equal(a, []string{"198.51.100.8"}) {
		t.Errorf("the wrong key changed the record: A %v", a)
	}
}

// BenchmarkRFC2136Update: one signed update over TCP, against an unsigned
// SOA query over UDP to the same BIND in the same run.
func BenchmarkRFC2136Update(b *testing.B) {
	w := newWorld(b)
	u := w.updater()
	addrs := [][]netip.Addr{{netip.MustParseAddr("198.51.100.7")}, {netip.MustParseAddr("198.51.100.8")}}
	var soa, upd time.Duration
	b.ResetTimer()
	err := w.cell.Run(func() error {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion(w.bind.Zone, dns.TypeSOA)
		start := time.Now()
		for range b.N {
			if _, _, err := c.Exchange(m, w.bind.Addr.String()); err != nil {
				return err
			}
		}
		soa = time.Since(start)
		start = time.Now()
		for i := range b.N {
			if err := u.Update(context.Background(), addrs[i%2]); err != nil {
				return err
			}
		}
		upd = time.Since(start)
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(upd)/float64(soa), "x-soa-query")
	b.ReportMetric(float64(upd.Microseconds())/float64(b.N), "µs/update")
}
