package ntp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/settings"
	"github.com/pic-cell/cell/netstack/clock"
	"github.com/pic-cell/cell/storage"
)

// The unit tests run the capability over a real database and settings with
// a fake clock, a fake SNTP query and a fake adjtimex: nothing leaves the
// machine and the host's clock is never read for the answers.

const waitLong = 5 * time.Second

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// times is the fake surroundings: the clock, the servers' answers, the
// kernel's word.
type times struct {
	mu      sync.Mutex
	now     time.Time
	answers map[string]clock.Sample // server → its answer; absent: no answer
	kernel  clock.Kernel
	kerr    error
	asked   chan string
}

func (f *times) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *times) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *times) Query(ctx context.Context, server string) (clock.Sample, error) {
	f.asked <- server
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.answers[server]
	if !ok {
		return clock.Sample{}, fmt.Errorf("time server %s: no answer in time", server)
	}
	return s, nil
}

func (f *times) Kernel() (clock.Kernel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kernel, f.kerr
}

// asks waits for the monitor to ask server.
func (f *times) asks(t *testing.T, server string) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case s := <-f.asked:
			if s == server {
				return
			}
		case <-deadline:
			t.Fatalf("the monitor did not ask %s within %s", server, waitLong)
		}
	}
}

// unsynced is the kernel after gokrazy's settimeofday: STA_UNSYNC set.
var unsynced = clock.Kernel{Synchronised: false, Status: 0x40, MaxError: 16 * time.Second, EstError: 16 * time.Second}

type fixture struct {
	db  *storage.DB
	set *settings.Settings
	f   *times
	n   *NTP
}

// newFixture is a set-up cell whose ntp.servers are servers (nil: the
// defaults).
func newFixture(t *testing.T, servers []string) *fixture {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := config.NewRegistry()
	reg.Register(ConfigSection())
	doc := map[string]any{
		"cell":    map[string]any{"name": "home", "domain": "home.example.org"},
		"network": map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24", "subnet_v6": "fd12:3456:789a:1::/64", "wan_interface": "auto"},
	}
	if servers != nil {
		doc["ntp"] = map[string]any{"servers": servers}
	}
	if _, err := db.Settings().PutConfigAudited(doc, storage.Entry{Actor: "test", Action: "setup.complete", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	f := &times{now: t0, answers: map[string]clock.Sample{}, kernel: unsynced, asked: make(chan string, 64)}
	x := &fixture{db: db, set: settings.New(db, reg, time.Now), f: f}
	x.n = New(Options{Settings: x.set, DB: db, Now: f.Now, Query: f.Query, Kernel: f.Kernel, Interval: time.Hour})
	return x
}

func (x *fixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.n.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLong):
			t.Error("Run did not return after its context ended")
		}
	})
}

// waitView polls Status until ok accepts it.
func (x *fixture) waitView(t *testing.T, what string, ok func(View) bool) View {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		v := x.n.Status()
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the status is %+v", what, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSynchronisedFromSample(t *testing.T) {
	x := newFixture(t, []string{"198.18.0.123", "198.18.0.124:1123"})
	x.f.answers["198.18.0.123"] = clock.Sample{Address: netip.MustParseAddr("198.18.0.123"), Offset: 20 * time.Millisecond,
		RTT: 8 * time.Millisecond, Stratum: 2}
	// Before the first check: the kernel's word, and a plain note.
	if v := x.n.Status(); v.Synchronised || !strings.Contains(v.Error, "not been checked") || !slices.Equal(v.Servers, []string{"198.18.0.123", "198.18.0.124:1123"}) {
		t.Errorf("before Run: %+v", v)
	}
	x.run(t)
	x.f.asks(t, "198.18.0.123")
	v := x.waitView(t, "a good sample", func(v View) bool { return v.LastSync != nil })
	if !v.Synchronised || v.OffsetMS != 20 || v.RTTMS != 8 || v.Stratum != 2 || v.Server != "198.18.0.123" || v.Address != "198.18.0.123" || v.Error != "" {
		t.Errorf("after a good sample: %+v", v)
	}
	if !v.LastSync.Equal(t0) || !v.Time.Equal(t0) || !v.Serving {
		t.Errorf("last sync %v, time %v, serving %v; want the clock's %v and serving", v.LastSync, v.Time, v.Serving, t0)
	}
	// The kernel's own state is shown beside it, as it is.
	if v.Kernel != (KernelView{Synchronised: false, Status: 0x40, MaxErrorMS: 16000, EstErrorMS: 16000}) {
		t.Errorf("kernel view = %+v", v.Kernel)
	}
	if p := x.n.Check(context.Background()); p.State != storage.StateOK || p.Reason != "" {
		t.Errorf("the ntp part = %+v, want ok", p)
	}
	// The SNTP server answers from the same state.
	if st := x.n.State(); !st.Synchronised || st.Stratum != 2 || st.Address != "198.18.0.123" {
		t.Errorf("state for the SNTP server = %+v", st)
	}

	// The sample grows old (no round for over twice the interval): the
	// kernel's word stands in again, and it says unsynchronised.
	x.f.advance(2*time.Hour + time.Second)
	if v := x.n.Status(); v.Synchronised || v.LastSync == nil {
		t.Errorf("with a stale sample and an unsynchronised kernel: %+v", v)
	}
}

func TestOffsetTooLarge(t *testing.T) {
	x := newFixture(t, []string{"198.18.0.123"})
	x.f.answers["198.18.0.123"] = clock.Sample{Address: netip.MustParseAddr("198.18.0.123"), Offset: -3 * time.Second, Stratum: 2}
	x.f.kernel = clock.Kernel{Synchronised: true} // a measurement beats a claim
	x.run(t)
	x.f.asks(t, "198.18.0.123")
	v := x.waitView(t, "a sample", func(v View) bool { return v.LastSync != nil })
	if v.Synchronised || v.OffsetMS != -3000 {
		t.Errorf("a clock 3 s off: %+v", v)
	}
	p := x.n.Check(context.Background())
	if p.State != storage.StateDegraded || p.Reason != "the clock is not synchronised" {
		t.Errorf("the ntp part = %+v, want degraded, plainly", p)
	}
}

func TestNoServerAnswers(t *testing.T) {
	x := newFixture(t, []string{"0.pool.example", "1.pool.example"})
	x.run(t)
	x.f.asks(t, "1.pool.example") // both asked in turn
	v := x.waitView(t, "a failed round", func(v View) bool { return v.Error != "" && !strings.Contains(v.Error, "not been checked") })
	if v.Synchronised || v.LastSync != nil {
		t.Errorf("no answer, kernel unsynchronised: %+v", v)
	}
	p := x.n.Check(context.Background())
	want := "the clock is not synchronised: no time server answered: time server 0.pool.example: no answer in time; time server 1.pool.example: no answer in time"
	if p.State != storage.StateDegraded || p.Reason != want {
		t.Errorf("the ntp part = %+v, want degraded with %q", p, want)
	}
	// Another daemon keeps the clock (the kernel says so): that counts.
	x.f.mu.Lock()
	x.f.kernel = clock.Kernel{Synchronised: true, MaxError: 3 * time.Millisecond}
	x.f.mu.Unlock()
	if v := x.n.Status(); !v.Synchronised || v.Kernel.MaxErrorMS != 3 {
		t.Errorf("no answer, kernel synchronised: %+v", v)
	}
	if p := x.n.Check(context.Background()); p.State != storage.StateOK {
		t.Errorf("the ntp part with the kernel synchronised = %+v", p)
	}
	// adjtimex fails: not synchronised, and why.
	x.f.mu.Lock()
	x.f.kerr = errors.New("adjtimex: operation not permitted")
	x.f.mu.Unlock()
	if v := x.n.Status(); v.Synchronised {
		t.Errorf("kernel unreadable: %+v", v)
	}
}

func TestServersFollowConfig(t *testing.T) {
	x := newFixture(t, nil)
	// The defaults are gokrazy's pool.
	if v := x.n.Status(); !slices.Equal(v.Servers, clock.DefaultServers) {
		t.Errorf("default servers = %v", v.Servers)
	}
	x.run(t)
	defaults := slices.Clone(clock.DefaultServers)
	x.f.asks(t, defaults[0])
	x.f.mu.Lock()
	x.f.answers["198.18.0.124:1123"] = clock.Sample{Address: netip.MustParseAddr("198.18.0.124"), Offset: time.Millisecond, Stratum: 1}
	x.f.mu.Unlock()
	if _, _, err := x.set.PatchConfig([]byte(`{"ntp":{"servers":["198.18.0.124:1123"]}}`), storage.Entry{Actor: "admin", Action: "config.update"}); err != nil {
		t.Fatal(err)
	}
	x.f.asks(t, "198.18.0.124:1123")
	v := x.waitView(t, "the new server's sample", func(v View) bool { return v.Server == "198.18.0.124:1123" })
	if !v.Synchronised || !slices.Equal(v.Servers, []string{"198.18.0.124:1123"}) || v.Stratum != 1 {
		t.Errorf("after the change: %+v", v)
	}
	// Reading the configured servers left the defaults alone.
	if !slices.Equal(clock.DefaultServers, defaults) {
		t.Errorf("the configured servers overwrote the defaults: %v", clock.DefaultServers)
	}
	// Another change that leaves the servers alone makes no new monitor
	// (which would ask at once).
	if _, _, err := x.set.PatchConfig([]byte(`{"cell":{"domain":"other.example.org"}}`), storage.Entry{Actor: "admin", Action: "config.update"}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-x.f.asked:
		t.Errorf("an unrelated change made the monitor ask %s", s)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestSectionValidation(t *testing.T) {
	x := newFixture(t, nil)
	for _, patch := range []string{
		`{"ntp":{"servers":[]}}`,
		`{"ntp":{"servers":["a","b","c","d","e","f","g","h","i"]}}`,
		`{"ntp":{"servers":["pool.ntp.org; reboot"]}}`,
		`{"ntp":{"servers":["198.18.0.1:99999"]}}`,
		`{"ntp":{"servers":["$(id)"]}}`,
	} {
		_, _, err := x.set.PatchConfig([]byte(patch), storage.Entry{Actor: "admin", Action: "config.update"})
		if !errors.Is(err, fault.ErrInvalid) {
			t.Errorf("%s: %v, want invalid (400)", patch, err)
		}
	}
	if v := x.n.Status(); !slices.Equal(v.Servers, clock.DefaultServers) {
		t.Errorf("refused changes changed the servers: %v", v.Servers)
	}
}
