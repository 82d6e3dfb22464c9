package ddns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeUpdater records the calls and answers with fail's error (nil: success).
type fakeUpdater struct {
	mu    sync.Mutex
	calls []call
	fail  error
}

type call struct {
	at    time.Time
	addrs []netip.Addr
}

func (f *fakeUpdater) Update(ctx context.Context, addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{time.Now(), slices.Clone(addrs)})
	return f.fail
}

func (f *fakeUpdater) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeUpdater) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

var (
	addrA = netip.MustParseAddr("198.51.100.7")
	addrB = netip.MustParseAddr("198.51.100.8")
	addr6 = netip.MustParseAddr("2001:db8::7")
)

// skew is the injected clock's distance from the real one: the Status
// times must come from the injected clock.
const skew = 1000 * time.Hour

func clock() time.Time { return time.Now().Add(skew) }

func runKeeper(t *testing.T, u Updater, o KeeperOptions) *Keeper {
	if o.Now == nil {
		o.Now = clock
	}
	k := NewKeeper(u, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of its context's end")
		}
	})
	return k
}

func wait(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5 s", what)
	}
}

func TestKeeperUpdatesOnChangeOnly(t *testing.T) {
	f := &fakeUpdater{}
	k := runKeeper(t, f, KeeperOptions{Interval: time.Hour, MinBackoff: 10 * time.Millisecond})
	if s := k.Status(); s.State != "pending" || !s.LastUpdate.IsZero() || len(s.Addrs) != 0 {
		t.Fatalf("before any address: %+v", s)
	}
	before := clock()
	up := k.Updated()
	k.Set([]netip.Addr{addr6, addrA})
	wait(t, up, "update after the first Set")
	s := k.Status()
	if s.State != "ok" || !slices.Equal(s.Addrs, []netip.Addr{addrA, addr6}) || s.Failures != 0 || s.LastError != "" {
		t.Fatalf("after the first update: %+v", s)
	}
	if s.LastUpdate.Before(before) || s.LastUpdate.After(clock()) {
		t.Errorf("LastUpdate %v is not from the injected clock (now %v)", s.LastUpdate, clock())
	}
	if got := s.NextTry.Sub(s.LastUpdate); got != time.Hour {
		t.Errorf("NextTry is %v after LastUpdate, want the interval (1h)", got)
	}

	// The same addresses, in another order or mapped: no update.
	k.Set([]netip.Addr{addrA, addr6})
	k.Set([]netip.Addr{netip.AddrFrom16(addrA.As16()), addr6})
	k.Set(nil) // nothing known: nothing changes
	time.Sleep(200 * time.Millisecond)
	if n := len(f.snapshot()); n != 1 {
		t.Fatalf("%d updates for unchanged addresses, want 1 in all", n)
	}
	if s := k.Status(); s.State != "ok" || !slices.Equal(s.Addrs, []netip.Addr{addrA, addr6}) {
		t.Fatalf("an empty Set changed the status: %+v", s)
	}

	up = k.Updated()
	k.Set([]netip.Addr{addrB})
	wait(t, up, "update after a change")
	calls := f.snapshot()
	if len(calls) != 2 || !slices.Equal(calls[1].addrs, []netip.Addr{addrB}) {
		t.Fatalf("calls %v, want a second one with %v", calls, addrB)
	}
	if s := k.Status(); s.State != "ok" || !slices.Equal(s.Addrs, []netip.Addr{addrB}) {
		t.Fatalf("after the change: %+v", s)
	}

	// Refresh sends the unchanged addresses again.
	up = k.Updated()
	k.Refresh()
	wait(t, up, "update after Refresh")
	if n := len(f.snapshot()); n != 3 {
		t.Fatalf("%d calls after Refresh, want 3", n)
	}
}

func TestKeeperResendsAtInterval(t *testing.T) {
	f := &fakeUpdater{}
	k := runKeeper(t, f, KeeperOptions{Interval: 100 * time.Millisecond})
	k.Set([]netip.Addr{addrA})
	time.Sleep(550 * time.Millisecond)
	n := len(f.snapshot())
	// One at once, then one per 100 ms: 6, give or take a loaded machine.
	if n < 3 || n > 7 {
		t.Fatalf("%d updates in 550 ms at a 100 ms interval, want about 6", n)
	}
	for _, c := range f.snapshot() {
		if !slices.Equal(c.addrs, []netip.Addr{addrA}) {
			t.Fatalf("re-sent %v, want %v", c.addrs, addrA)
		}
	}
}

func TestKeeperBacksOff(t *testing.T) {
	f := &fakeUpdater{fail: errors.New("no answer from the DNS server within 5s")}
	var logs bytes.Buffer
	k := runKeeper(t, f, KeeperOptions{MinBackoff: 20 * time.Millisecond, MaxBackoff: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	k.Set([]netip.Addr{addrA})
	time.Sleep(1200 * time.Millisecond)
	calls := f.snapshot()
	// Without back-off there would be hundreds; with it: 0, 10-20, 30-60,
	// 70-140, 150-300, 310-620, 630-1260 ms.
	if len(calls) < 4 || len(calls) > 8 {
		t.Fatalf("%d attempts in 1.2 s with a 20 ms back-off doubling, want 4 to 8", len(calls))
	}
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		gaps = append(gaps, calls[i].at.Sub(calls[i-1].at))
	}
	if gaps[len(gaps)-1] < 2*gaps[0] || gaps[0] < 10*time.Millisecond {
		t.Errorf("the waits between attempts do not grow: %v", gaps)
	}
	s := k.Status()
	if s.State != "failing" || s.Failures != len(f.snapshot()) || s.LastError != "no answer from the DNS server within 5s" {
		t.Errorf("status while failing: %+v (attempts %d)", s, len(f.snapshot()))
	}
	if !s.NextTry.After(clock().Add(-10 * time.Millisecond)) {
		t.Errorf("NextTry %v is not ahead (now %v)", s.NextTry, clock())
	}
	if len(s.Addrs) != 0 || !s.LastUpdate.IsZero() {
		t.Errorf("a failed update reported as told: %+v", s)
	}
	if got := strings.Count(logs.String(), "level=WARN"); got != len(f.snapshot()) {
		t.Errorf("%d warnings for %d failed attempts, want one each:\n%s", got, len(f.snapshot()), logs.String())
	}

	// It recovers, and a success clears the failure.
	up := k.Updated()
	f.setFail(nil)
	k.Set([]netip.Addr{addrB}) // a new address is sent at once, back-off or not
	wait(t, up, "update after recovery")
	if s := k.Status(); s.State != "ok" || s.Failures != 0 || s.LastError != "" || !slices.Equal(s.Addrs, []netip.Addr{addrB}) {
		t.Errorf("status after recovery: %+v", s)
	}
}

func TestBackoffBounds(t *testing.T) {
	k := NewKeeper(&fakeUpdater{}, KeeperOptions{MinBackoff: time.Second, MaxBackoff: time.Minute})
	for i := 1; i <= 40; i++ {
		k.failures = i
		full := min(time.Second<<min(i-1, 20), time.Minute)
		for range 20 {
			d := k.backoff()
			if d < full/2 || d > full {
				t.Fatalf("after %d failures waits %v, want %v to %v", i, d, full/2, full)
			}
		}
	}
}

func TestKeeperStopsAfterRefusal(t *testing.T) {
	for _, kind := range []error{ErrAuth, ErrRefused} {
		t.Run(kind.Error(), func(t *testing.T) {
			f := &fakeUpdater{fail: &providerError{kind: kind, msg: "the provider said no"}}
			var logs bytes.Buffer
			k := runKeeper(t, f, KeeperOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond,
				Log: slog.New(slog.NewTextHandler(&logs, nil))})
			k.Set([]netip.Addr{addrA})
			time.Sleep(300 * time.Millisecond)
			k.Set([]netip.Addr{addrB}) // a new address is not a person acting
			time.Sleep(200 * time.Millisecond)
			if n := len(f.snapshot()); n != 1 {
				t.Fatalf("%d attempts after a refusal, want 1", n)
			}
			s := k.Status()
			if s.State != "refused" || !s.NextTry.IsZero() || s.Failures != 1 || s.LastError != "the provider said no" {
				t.Fatalf("status after a refusal: %+v", s)
			}
			if got := strings.Count(logs.String(), "level=WARN"); got != 1 {
				t.Errorf("%d warnings, want 1:\n%s", got, logs.String())
			}

			up := k.Updated()
			f.setFail(nil)
			k.Refresh()
			wait(t, up, "update after Refresh")
			calls := f.snapshot()
			if len(calls) != 2 || !slices.Equal(calls[1].addrs, []netip.Addr{addrB}) {
				t.Fatalf("after Refresh: calls %v, want a second one with the newest address %v", calls, addrB)
			}
			if s := k.Status(); s.State != "ok" {
				t.Fatalf("after a successful Refresh: %+v", s)
			}
		})
	}
}

func TestKeeperOff(t *testing.T) {
	k := runKeeper(t, nil, KeeperOptions{})
	k.Set([]netip.Addr{addrA})
	k.Refresh()
	if s := k.Status(); s.State != "off" || len(s.Addrs) != 0 || !s.NextTry.IsZero() {
		t.Fatalf("a keeper without an updater: %+v", s)
	}
}

// TestKeeperNeverShowsSecret: a provider that echoes the password in its
// answers does not get it into the status or the log.
func TestKeeperNeverShowsSecret(t *testing.T) {
	const password = "s3cr3t-Pa55word"
	var mu sync.Mutex
	answers := []string{"911 " + password, "dnserr " + password, "weird " + password, "badauth " + password}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		a := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		fmt.Fprintln(w, a)
	}))
	defer srv.Close()
	d := goodDynDNS2()
	d.URL, d.Client = srv.URL+"/nic/update", srv.Client()
	var logs bytes.Buffer
	var lmu sync.Mutex
	k := runKeeper(t, &d, KeeperOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(lockedWriter{&lmu, &logs}, nil))})
	k.Set([]netip.Addr{addrA})
	deadline := time.Now().Add(5 * time.Second)
	var seen []string
	for k.Status().State != "refused" {
		if time.Now().After(deadline) {
			t.Fatalf("not refused within 5 s: %+v", k.Status())
		}
		if e := k.Status().LastError; e != "" && (len(seen) == 0 || seen[len(seen)-1] != e) {
			seen = append(seen, e)
		}
		time.Sleep(time.Millisecond)
	}
	s := k.Status()
	seen = append(seen, s.LastError)
	for _, text := range append(seen, fmt.Sprintf("%+v", s)) {
		if strings.Contains(text, password) {
			t.Errorf("the status shows the password: %s", text)
		}
	}
	lmu.Lock()
	defer lmu.Unlock()
	if strings.Contains(logs.String(), password) {
		t.Errorf("the log shows the password:\n%s", logs.String())
	}
	if strings.Count(logs.String(), "level=WARN") != 4 {
		t.Errorf("want 4 warnings (911, dnserr, an unknown answer, badauth):\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
