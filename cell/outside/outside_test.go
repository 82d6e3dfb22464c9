package outside

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/settings"
	"github.com/pic-cell/cell/netstack/ddns"
	"github.com/pic-cell/cell/netstack/portmap"
	"github.com/pic-cell/cell/netstack/probe"
	"github.com/pic-cell/cell/netstack/uplink"
	"github.com/pic-cell/cell/storage"
)

// The unit tests run the capability over a real database and settings, with
// every kernel and daemon part a fake: the uplink, its events, the home
// router's port mapper, the public address discovery, the DNS provider, the
// resolver, the prober and the echo service. Nothing touches the network.

const (
	testSecret = "c2VjcmV0LXRzaWcta2V5LW9mLTMyLWJ5dGVzLWxvbmc=" // 32 bytes, base64
	waitLong   = 5 * time.Second                                // bound on every wait for the loop
)

var (
	homeGW   = netip.MustParseAddr("192.168.77.1")
	homeCell = netip.MustParseAddr("192.168.77.10")
	pubA     = netip.MustParseAddr("198.18.7.7")
	pubB     = netip.MustParseAddr("198.18.7.8")
)

// fakeMapper is the home router's port mapper: it records what it is told
// and reports the status the test sets.
type fakeMapper struct {
	port    uint16
	stopped chan struct{} // closed when Run's context ends

	mu      sync.Mutex
	sets    [][2]netip.Addr
	renews  int
	status  portmap.Status
	running bool
}

func (m *fakeMapper) Set(gateway, local netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sets = append(m.sets, [2]netip.Addr{gateway, local})
}

func (m *fakeMapper) Renew() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.renews++
}

func (m *fakeMapper) Status() portmap.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

func (m *fakeMapper) setStatus(s portmap.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status = s
}

func (m *fakeMapper) Run(ctx context.Context) {
	m.mu.Lock()
	m.running = true
	m.mu.Unlock()
	<-ctx.Done()
	close(m.stopped)
}

func (m *fakeMapper) lastSet() ([2]netip.Addr, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sets) == 0 {
		return [2]netip.Addr{}, 0
	}
	return m.sets[len(m.sets)-1], len(m.sets)
}

// fakeUpdater is the DNS provider: every Update is sent on updates and
// answered with err.
type fakeUpdater struct {
	updates chan []netip.Addr
	mu      sync.Mutex
	err     error
}

func (u *fakeUpdater) Update(_ context.Context, addrs []netip.Addr) error {
	u.mu.Lock()
	err := u.err
	u.mu.Unlock()
	u.updates <- slices.Clone(addrs)
	return err
}

type madeUpdater struct {
	d            DDNS
	secret, name string
}

// world is the cell's surroundings as the fakes present them.
type world struct {
	t      *testing.T
	db     *storage.DB
	set    *settings.Settings
	x      *Outside
	events chan struct{}
	logs   *syncBuffer

	mu        sync.Mutex
	up        uplink.State
	upErr     error
	ifaces    []string // ReadUplink's arguments
	public    uplink.Public
	realDisc  bool // use uplink.Discover (with the mapper as the router)
	discOpts  []uplink.DiscoverOptions
	mappers   []*fakeMapper
	mapStatus portmap.Status // a new mapper's
	made      []madeUpdater
	updater   *fakeUpdater
	outdated  []string
	names     map[string][]netip.Addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newWorld opens a database holding a set-up cell (home.example.org, wg_port
// 51820) and builds the capability with fakes; change o before run.
func newWorld(t *testing.T, change func(o *Options)) *world {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := config.NewRegistry()
	reg.Register(ReachSection())
	reg.Register(DDNSSection())
	doc := map[string]any{
		"cell":    map[string]any{"name": "home", "domain": "home.example.org"},
		"network": map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24", "subnet_v6": "fd12:3456:789a:1::/64", "wan_interface": "auto"},
	}
	if _, err := db.Settings().PutConfigAudited(doc, storage.Entry{Actor: "test", Action: "setup.complete", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, db: db, set: settings.New(db, reg, time.Now), events: make(chan struct{}, 1), logs: &syncBuffer{},
		up:        uplink.State{Interface: "eth0", Gateway: homeGW, Addrs: []netip.Prefix{netip.PrefixFrom(homeCell, 24)}},
		public:    uplink.Public{Addrs: []netip.Addr{pubA}, Source: uplink.SourceRouter},
		updater:   &fakeUpdater{updates: make(chan []netip.Addr, 16)},
		mapStatus: portmap.Status{State: portmap.StateTrying},
		names:     map[string][]netip.Addr{"home.example.org": {pubA}},
	}
	o := Options{
		DB: db, Settings: w.set, UserAgent: "pic-cell/test",
		Log: slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ReadUplink: func(iface string) (uplink.State, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.ifaces = append(w.ifaces, iface)
			return w.up, w.upErr
		},
		WatchUplink: func(ctx context.Context) <-chan struct{} { return w.events },
		NewPortMapper: func(port uint16) PortMapper {
			w.mu.Lock()
			defer w.mu.Unlock()
			m := &fakeMapper{port: port, stopped: make(chan struct{}), status: w.mapStatus}
			w.mappers = append(w.mappers, m)
			return m
		},
		Discover: func(ctx context.Context, st uplink.State, o uplink.DiscoverOptions) uplink.Public {
			w.mu.Lock()
			w.discOpts = append(w.discOpts, o)
			real, pub := w.realDisc, w.public
			w.mu.Unlock()
			if real {
				return uplink.Discover(ctx, st, o)
			}
			return pub
		},
		NewUpdater: func(d DDNS, secret, name string) (ddns.Updater, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.made = append(w.made, madeUpdater{d, secret, name})
			return w.updater, nil
		},
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if a, ok := w.names[host]; ok {
				return a, nil
			}
			return nil, fmt.Errorf("lookup %s: no such host", host)
		},
		OutdatedConfigs: func() ([]string, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.outdated, nil
		},
		Interfaces: func() ([]net.Interface, error) {
			return []net.Interface{{Index: 2, MTU: 1500, Name: "eth0", Flags: net.FlagUp}}, nil
		},
	}
	if change != nil {
		change(&o)
	}
	w.x = New(o)
	return w
}

// run starts the loop and waits for its first pass; the loop ends with the test.
func (w *world) run() {
	w.t.Helper()
	passed := w.x.Passed()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.x.Run(ctx); close(done) }()
	w.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLong):
			w.t.Error("Run did not return after its context ended")
		}
	})
	w.waitPass(passed, "the first pass")
}

func (w *world) waitPass(passed <-chan struct{}, what string) {
	w.t.Helper()
	select {
	case <-passed:
	case <-time.After(waitLong):
		w.t.Fatalf("%s did not happen within %s", what, waitLong)
	}
}

// fire is an rtnetlink event on the uplink; it returns after the pass it caused.
func (w *world) fire() {
	w.t.Helper()
	passed := w.x.Passed()
	w.events <- struct{}{}
	w.waitPass(passed, "a pass after an uplink event")
}

// patch changes the config as an admin would, and waits for the pass the
// commit causes.
func (w *world) patch(p string) {
	w.t.Helper()
	passed := w.x.Passed()
	_, changed, err := w.set.PatchConfig([]byte(p), storage.Entry{Actor: "admin", Action: "config.update", Result: "ok"})
	if err != nil {
		w.t.Fatalf("patch %s: %v", p, err)
	}
	if len(changed) > 0 {
		w.waitPass(passed, "a pass after the config changed")
	}
}

// eventually calls f until it returns nil, for at most waitLong: a pass
// may have been under way when the test changed something, and the one that
// sees the change follows it.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) mapper(i int) *fakeMapper {
	w.t.Helper()
	var m *fakeMapper
	eventually(w.t, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.mappers) <= i {
			return fmt.Errorf("%d port mappers made, want at least %d", len(w.mappers), i+1)
		}
		m = w.mappers[i]
		return nil
	})
	return m
}

func (w *world) mapperCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mappers)
}

func (w *world) setUplink(st uplink.State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.up = st
}

func (w *world) setPublic(p uplink.Public) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.public = p
}

// nextUpdate is the next address list the DNS provider is sent.
func (w *world) nextUpdate() []netip.Addr {
	w.t.Helper()
	select {
	case a := <-w.updater.updates:
		return a
	case <-time.After(waitLong):
		w.t.Fatalf("the DNS provider was sent nothing within %s", waitLong)
		return nil
	}
}

// noUpdate checks that the DNS provider is sent nothing for a while.
func (w *world) noUpdate(d time.Duration) {
	w.t.Helper()
	select {
	case a := <-w.updater.updates:
		w.t.Errorf("the DNS provider was sent %v", a)
	case <-time.After(d):
	}
}

func (w *world) putRFC2136() DDNSView {
	w.t.Helper()
	body := fmt.Sprintf(`{"provider":"rfc2136","server":"198.18.0.53","zone":"example.org","key_name":"cell-key","interval_minutes":60,"secret":%q}`, testSecret)
	v, err := w.x.PutDDNS([]byte(body), storage.Entry{Actor: "admin", Action: "network.ddns_update", Result: "ok"})
	if err != nil {
		w.t.Fatalf("PutDDNS: %v", err)
	}
	return v
}

func (w *world) status() Status {
	w.t.Helper()
	st, err := w.x.Status(context.Background())
	if err != nil {
		w.t.Fatalf("Status: %v", err)
	}
	return st
}

func TestRunReadsUplinkAndSetsMapper(t *testing.T) {
	w := newWorld(t, nil)
	w.run()
	m := w.mapper(0)
	if m.port != 51820 {
		t.Errorf("the mapper maps port %d, want wg_port 51820", m.port)
	}
	if got, n := m.lastSet(); n != 1 || got != [2]netip.Addr{homeGW, homeCell} {
		t.Errorf("after the first pass the mapper was Set %d times, last %v; want once with %s and %s", n, got, homeGW, homeCell)
	}
	w.mu.Lock()
	if len(w.ifaces) == 0 || w.ifaces[0] != "" {
		t.Errorf("ReadUplink was asked for %q, want \"\" (the default route's, wan_interface auto)", w.ifaces)
	}
	w.mu.Unlock()
	st := w.status()
	if st.Uplink.Interface != "eth0" || st.Uplink.Gateway != homeGW.String() || st.Uplink.Kind != uplink.KindPrivate ||
		!slices.Equal(st.Uplink.Addrs, []string{"192.168.77.10/24"}) {
		t.Errorf("uplink view = %+v", st.Uplink)
	}
	if st.PublicAddress.Source != uplink.SourceRouter || !slices.Equal(st.PublicAddress.Addrs, []string{pubA.String()}) || st.PublicAddress.CheckedAt == nil {
		t.Errorf("public address view = %+v", st.PublicAddress)
	}
	if st.PortMapping.State != portmap.StateTrying || !st.PortMapping.Enabled {
		t.Errorf("port mapping view = %+v, want enabled and the mapper's state", st.PortMapping)
	}

	// The DHCP server hands out another address and gateway: rtnetlink
	// tells the loop, which reads the uplink again and tells the mapper.
	newGW, newCell := netip.MustParseAddr("192.168.77.254"), netip.MustParseAddr("192.168.77.11")
	w.setUplink(uplink.State{Interface: "eth0", Gateway: newGW, Addrs: []netip.Prefix{
		netip.MustParsePrefix("2001:db8::11/64"), netip.PrefixFrom(newCell, 24)}})
	w.x.mu.Lock()
	before := w.x.passes
	w.x.mu.Unlock()
	w.fire()
	if got, n := m.lastSet(); n != 2 || got != [2]netip.Addr{newGW, newCell} {
		t.Errorf("after the event the mapper was Set %d times, last %v; want twice, then %s and the IPv4 address %s", n, got, newGW, newCell)
	}
	w.x.mu.Lock()
	after := w.x.passes
	w.x.mu.Unlock()
	if after <= before {
		t.Errorf("passes %d → %d after an uplink event", before, after)
	}
	if w.mapperCount() != 1 {
		t.Errorf("%d mappers made; an uplink change must keep the one mapper", w.mapperCount())
	}
	// The mapper's router address is asked for public discovery.
	w.mu.Lock()
	if len(w.discOpts) < 2 || w.discOpts[len(w.discOpts)-1].Router == nil {
		t.Error("Discover was not given the mapper's router address")
	}
	w.mu.Unlock()
}

func TestUplinkInterfaceFromFlagAndConfig(t *testing.T) {
	w := newWorld(t, nil)
	w.run()
	w.patch(`{"network":{"wan_interface":"wan1"}}`)
	w.mu.Lock()
	last := w.ifaces[len(w.ifaces)-1]
	w.mu.Unlock()
	if last != "wan1" {
		t.Errorf("ReadUplink(%q) after wan_interface wan1", last)
	}

	// The daemon's -wan wins over the config.
	w2 := newWorld(t, func(o *Options) { o.WAN = "eth9" })
	w2.run()
	w2.mu.Lock()
	defer w2.mu.Unlock()
	if w2.ifaces[0] != "eth9" {
		t.Errorf("ReadUplink(%q) with -wan eth9", w2.ifaces[0])
	}
}

func TestUplinkError(t *testing.T) {
	w := newWorld(t, nil)
	w.mu.Lock()
	w.up, w.upErr = uplink.State{}, uplink.ErrNoUplink
	w.mu.Unlock()
	w.run()
	st := w.status()
	if st.Uplink.Error != uplink.ErrNoUplink.Error() {
		t.Errorf("uplink error = %q, want %q", st.Uplink.Error, uplink.ErrNoUplink)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.discOpts) != 0 {
		t.Error("Discover was asked without an uplink")
	}
}

func TestPublicAddressToDDNS(t *testing.T) {
	w := newWorld(t, nil)
	w.run()
	if v := w.x.DDNSStatus(); v.State != "off" || v.SecretSet {
		t.Errorf("before any provider: %+v", v)
	}
	w.putRFC2136()
	if got := w.nextUpdate(); !slices.Equal(got, []netip.Addr{pubA}) {
		t.Errorf("the provider was sent %v, want the public address %s", got, pubA)
	}
	w.mu.Lock()
	made := slices.Clone(w.made)
	w.mu.Unlock()
	if len(made) != 1 || made[0].secret != testSecret || made[0].name != "home.example.org" ||
		made[0].d.Provider != ProviderRFC2136 || made[0].d.Zone != "example.org" {
		t.Errorf("updaters made: %+v, want one for home.example.org with the stored secret", made)
	}
	waitDDNS(t, w, "ok", pubA)

	// The home gets another address: a second update, with it.
	w.setPublic(uplink.Public{Addrs: []netip.Addr{pubB}, Source: uplink.SourceRouter})
	w.fire()
	if got := w.nextUpdate(); !slices.Equal(got, []netip.Addr{pubB}) {
		t.Errorf("after the change the provider was sent %v, want %s", got, pubB)
	}
	waitDDNS(t, w, "ok", pubB)
	if p := w.x.CheckDDNS(context.Background()); p.State != storage.StateOK {
		t.Errorf("the ddns part = %+v, want ok", p)
	}

	// An unchanged address is not sent again by a pass, only by a refresh.
	w.fire()
	w.noUpdate(200 * time.Millisecond)
	if _, err := w.x.RefreshDDNS(); err != nil {
		t.Fatal(err)
	}
	if got := w.nextUpdate(); !slices.Equal(got, []netip.Addr{pubB}) {
		t.Errorf("refresh sent %v, want %s again", got, pubB)
	}
	// A refresh also asks the router again.
	m := w.mapper(0)
	m.mu.Lock()
	renews := m.renews
	m.mu.Unlock()
	if renews != 1 {
		t.Errorf("refresh renewed the port mapping %d times, want once", renews)
	}
}

// waitDDNS waits for the status to report state with addr.
func waitDDNS(t *testing.T, w *world, state string, addr netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		st := w.status()
		if st.DDNS.State == state && slices.Equal(st.DDNS.Addrs, []string{addr.String()}) {
			if st.DDNS.Name != "home.example.org" || !st.DDNS.SecretSet || st.DDNS.LastUpdate == nil {
				t.Errorf("ddns view = %+v", st.DDNS)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ddns view = %+v, want state %s with %s", st.DDNS, state, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCGNATNotSentToProvider(t *testing.T) {
	w := newWorld(t, nil)
	// The router's own public address is the provider's shared one; the
	// real Discover asks the mapper for it.
	cgnat := netip.MustParseAddr("100.64.3.4")
	w.mu.Lock()
	w.realDisc = true
	w.mapStatus = portmap.Status{State: portmap.StateMapped, External: cgnat, CGNAT: true,
		Reason: "the home router's public address is a carrier-grade NAT address: a relay is needed"}
	w.mu.Unlock()
	w.putRFC2136() // before Run: the first pass makes the keeper
	w.run()
	w.noUpdate(300 * time.Millisecond)
	st := w.status()
	if !st.PublicAddress.CGNAT || !strings.Contains(st.PublicAddress.Error, "relay") {
		t.Errorf("public address view = %+v, want CGNAT said plainly", st.PublicAddress)
	}
	relay := false
	for _, s := range st.Warnings {
		relay = relay || strings.Contains(s, "relay")
	}
	if !relay {
		t.Errorf("warnings %q: none says a relay is needed", st.Warnings)
	}
	if st.DDNS.State == "ok" || len(st.DDNS.Addrs) != 0 {
		t.Errorf("ddns view = %+v: the CGNAT address reached the provider", st.DDNS)
	}

	// The router gets a real public address: that one is sent.
	w.mapper(0).setStatus(portmap.Status{State: portmap.StateMapped, External: pubA})
	w.fire()
	if got := w.nextUpdate(); !slices.Equal(got, []netip.Addr{pubA}) {
		t.Errorf("the provider was sent %v, want the router's %s", got, pubA)
	}
	if st := w.status(); st.PublicAddress.Source != uplink.SourceRouter || st.PublicAddress.CGNAT {
		t.Errorf("public address view = %+v, want the router's", st.PublicAddress)
	}
}

func TestPortMappingFollowsConfig(t *testing.T) {
	w := newWorld(t, nil)
	w.run()
	first := w.mapper(0)
	w.patch(`{"outside":{"port_mapping":false}}`)
	select {
	case <-first.stopped:
	case <-time.After(waitLong):
		t.Fatal("turning port_mapping off did not stop the mapper")
	}
	st := w.status()
	if st.PortMapping.Enabled || st.PortMapping.State != portmap.StateOff {
		t.Errorf("port mapping view with the setting off = %+v", st.PortMapping)
	}
	if w.mapperCount() != 1 {
		t.Errorf("%d mappers made with the setting off", w.mapperCount())
	}

	// On again with another port: a new mapper for it.
	w.patch(`{"outside":{"port_mapping":true},"network":{"wg_port":51821}}`)
	second := w.mapper(1)
	if second.port != 51821 {
		t.Errorf("the new mapper maps %d, want 51821", second.port)
	}
	eventually(t, func() error {
		if got, n := second.lastSet(); n == 0 || got != [2]netip.Addr{homeGW, homeCell} {
			return fmt.Errorf("the new mapper was not told the uplink: %v (%d)", got, n)
		}
		return nil
	})

	// Only the port changes: the old mapper ends, a new one maps the new port.
	w.patch(`{"network":{"wg_port":51822}}`)
	select {
	case <-second.stopped:
	case <-time.After(waitLong):
		t.Fatal("changing wg_port did not stop the old mapper")
	}
	if third := w.mapper(2); third.port != 51822 {
		t.Errorf("the mapper after the change maps %d, want 51822", third.port)
	}
	// An unrelated change keeps the mapper.
	w.patch(`{"outside":{"check_minutes":30}}`)
	if n := w.mapperCount(); n != 3 {
		t.Errorf("%d mappers after an unrelated change, want 3", n)
	}
}

func TestMapperStopsWithRun(t *testing.T) {
	w := newWorld(t, nil)
	passed := w.x.Passed()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.x.Run(ctx); close(done) }()
	w.waitPass(passed, "the first pass")
	m := w.mapper(0)
	cancel()
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("Run did not return")
	}
	select {
	case <-m.stopped:
	default:
		t.Error("Run returned before the mapper's Run ended (the mapping must be removed first)")
	}
}

func TestEndpointWarnings(t *testing.T) {
	w := newWorld(t, nil)
	w.names["lan.example.org"] = []netip.Addr{homeCell}
	w.names["elsewhere.example.org"] = []netip.Addr{netip.MustParseAddr("198.18.9.9")}
	w.names["mapped.example.org"] = []netip.Addr{netip.MustParseAddr("::ffff:198.18.7.7")}
	w.run()
	for _, c := range []struct {
		endpoint string
		want     string // "" for no warning
	}{
		{"", ""}, // the domain, which resolves to the public address
		{"nowhere.example.org", "nowhere.example.org does not resolve"},
		{"lan.example.org", "is a private address (192.168.77.10)"},
		{"elsewhere.example.org:4500", "points at 198.18.9.9, but the home's public address is 198.18.7.7"},
		{"10.1.2.3", "10.1.2.3 is a private address"},
		{"198.18.7.7", ""},
		{"mapped.example.org", ""},
		{"100.64.0.9", "cgnat address"},
	} {
		ep := `null`
		if c.endpoint != "" {
			ep = fmt.Sprintf("%q", c.endpoint)
		}
		w.patch(`{"network":{"endpoint":` + ep + `}}`)
		st := w.status()
		if c.want == "" {
			if len(st.Endpoint.Warnings) != 0 || len(st.Warnings) != 0 {
				t.Errorf("endpoint %q: warnings %q, want none", c.endpoint, st.Endpoint.Warnings)
			}
		} else if len(st.Endpoint.Warnings) == 0 || !strings.Contains(strings.Join(st.Endpoint.Warnings, "\n"), c.want) {
			t.Errorf("endpoint %q: warnings %q, want one saying %q", c.endpoint, st.Endpoint.Warnings, c.want)
		} else if !slices.Contains(st.Warnings, st.Endpoint.Warnings[0]) {
			t.Errorf("endpoint %q: the overall warnings %q lack the endpoint's", c.endpoint, st.Warnings)
		}
		wantSource := "setting"
		if c.endpoint == "" {
			wantSource = "domain"
		}
		if st.Endpoint.Source != wantSource {
			t.Errorf("endpoint %q: source %q, want %q", c.endpoint, st.Endpoint.Source, wantSource)
		}
	}
	st := w.status()
	if st.Endpoint.Endpoint != "100.64.0.9:51820" || st.Endpoint.Port != 51820 {
		t.Errorf("endpoint view = %+v", st.Endpoint)
	}
}

func TestResendConfigs(t *testing.T) {
	w := newWorld(t, nil)
	st := w.status() // before the loop ran: no public address, no warning about the endpoint's match
	if st.ResendConfigs == nil || len(st.ResendConfigs) != 0 {
		t.Errorf("resend list with none outdated = %#v, want []", st.ResendConfigs)
	}
	w.mu.Lock()
	w.outdated = []string{"alice", "bob"}
	w.mu.Unlock()
	st = w.status()
	if !slices.Equal(st.ResendConfigs, []string{"alice", "bob"}) {
		t.Errorf("resend list = %v, want [alice bob]", st.ResendConfigs)
	}
	found := false
	for _, s := range st.Warnings {
		found = found || strings.Contains(s, "2 device(s)")
	}
	if !found {
		t.Errorf("warnings %q do not say two devices must be sent their configs again", st.Warnings)
	}
	// A failing peers list leaves the list empty rather than failing the status.
	w2 := newWorld(t, func(o *Options) {
		o.OutdatedConfigs = func() ([]string, error) { return nil, errors.New("database closed") }
	})
	if st := w2.status(); st.ResendConfigs == nil || len(st.ResendConfigs) != 0 {
		t.Errorf("resend list when the peers cannot be read = %#v", st.ResendConfigs)
	}
}

func TestStatusBeforeSetup(t *testing.T) {
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := config.NewRegistry()
	reg.Register(ReachSection())
	reg.Register(DDNSSection())
	x := New(Options{DB: db, Settings: settings.New(db, reg, time.Now)})
	if _, err := x.Status(context.Background()); !errors.Is(err, fault.ErrSetupNeeded) {
		t.Errorf("Status before setup: %v, want setup needed", err)
	}
	// The loop runs (and passes) before setup without a config.
	passed := x.Passed()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	select {
	case <-passed:
	case <-time.After(waitLong):
		t.Error("no pass before setup")
	}
	cancel()
	<-done
}

// fakeEcho is the outside echo service and the WireGuard port: Ask records
// the request and, when deliver is set, the port hears the nonce.
type fakeEcho struct {
	mu      sync.Mutex
	deliver bool
	askErr  error
	asked   []string // url + " " + target
	heard   chan [16]byte
	from    netip.AddrPort
}

func newFakeEcho(deliver bool) *fakeEcho {
	return &fakeEcho{deliver: deliver, heard: make(chan [16]byte, 4), from: netip.MustParseAddrPort("198.18.0.7:40000")}
}

func (e *fakeEcho) echo() Echo {
	return Echo{
		Ask: func(ctx context.Context, url, target string, nonce [16]byte) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.asked = append(e.asked, url+" "+target)
			if e.askErr != nil {
				return e.askErr
			}
			if e.deliver {
				e.heard <- nonce
			}
			return nil
		},
		Wait: func(ctx context.Context, nonce [16]byte) (netip.AddrPort, error) {
			for {
				select {
				case n := <-e.heard:
					if n == nonce {
						return e.from, nil
					}
				case <-ctx.Done():
					return netip.AddrPort{}, ctx.Err()
				}
			}
		},
	}
}

func TestReachability(t *testing.T) {
	defer func(d time.Duration) { reachWait = d }(reachWait)
	reachWait = 300 * time.Millisecond
	e := newFakeEcho(true)
	w := newWorld(t, func(o *Options) { o.Echo = e.echo() })
	ctx := context.Background()

	// No echo service configured: 409.
	if _, err := w.x.Test(ctx, TestRequest{Kind: "reachability"}); !errors.Is(err, fault.ErrConflict) {
		t.Errorf("reachability without echo_url: %v, want a conflict (409)", err)
	}
	if _, _, err := w.set.PatchConfig([]byte(`{"outside":{"echo_url":"https://echo.example.net/ask"}}`), storage.Entry{Actor: "admin", Action: "config.update"}); err != nil {
		t.Fatal(err)
	}

	// Heard: ok, with where it came from.
	res, err := w.x.Test(ctx, TestRequest{Kind: "reachability"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Target != "home.example.org:51820" || res.Address != "198.18.0.7:40000" || !strings.Contains(res.Detail, "arrived") {
		t.Errorf("heard: %+v", res)
	}
	e.mu.Lock()
	if len(e.asked) != 1 || e.asked[0] != "https://echo.example.net/ask home.example.org:51820" {
		t.Errorf("the echo service was asked %q", e.asked)
	}
	e.deliver = false
	e.mu.Unlock()

	// Not heard: ok false, within the wait.
	start := time.Now()
	res, err = w.x.Test(ctx, TestRequest{Kind: "reachability", Target: "198.18.0.1:41820"})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.Target != "198.18.0.1:41820" || !strings.Contains(res.Detail, "did not arrive") {
		t.Errorf("not heard: %+v", res)
	}
	if took < reachWait || took > reachWait+2*time.Second {
		t.Errorf("the test that heard nothing took %s, want about %s", took, reachWait)
	}

	// The echo service cannot be asked: ok false, with its error.
	e.mu.Lock()
	e.askErr = errors.New("the echo service answered 502")
	e.mu.Unlock()
	res, err = w.x.Test(ctx, TestRequest{Kind: "reachability"})
	if err != nil || res.OK || !strings.Contains(res.Detail, "502") {
		t.Errorf("echo service down: %+v %v", res, err)
	}

	// Bad targets and extra fields: 400, the echo service not asked.
	e.mu.Lock()
	n := len(e.asked)
	e.mu.Unlock()
	for _, r := range []TestRequest{
		{Kind: "reachability", Target: "home.example.org"},
		{Kind: "reachability", Target: "$(reboot):51820"},
		{Kind: "reachability", Target: "a b:1"},
		{Kind: "reachability", Proto: "tcp"},
	} {
		if _, err := w.x.Test(ctx, r); !errors.Is(err, fault.ErrInvalid) {
			t.Errorf("%+v: %v, want invalid (400)", r, err)
		}
	}
	e.mu.Lock()
	if len(e.asked) != n {
		t.Errorf("the echo service was asked for a refused test: %q", e.asked[n:])
	}
	e.mu.Unlock()

	// Without the WireGuard device: 503.
	w2 := newWorld(t, nil)
	w2.set.PatchConfig([]byte(`{"outside":{"echo_url":"https://echo.example.net/ask"}}`), storage.Entry{Actor: "admin", Action: "config.update"})
	if _, err := w2.x.Test(ctx, TestRequest{Kind: "reachability"}); !errors.Is(err, fault.ErrUnavailable) {
		t.Errorf("reachability without the device: %v, want unavailable (503)", err)
	}
}

// fakeTester answers every probe with res or err.
type fakeTester struct {
	res  probe.Result
	err  error
	reqs []probe.Request
}

func (f *fakeTester) Run(_ context.Context, r probe.Request) (probe.Result, error) {
	f.reqs = append(f.reqs, r)
	return f.res, f.err
}

func TestDiagnostics(t *testing.T) {
	ft := &fakeTester{}
	w := newWorld(t, func(o *Options) { o.Tester = ft })
	ctx := context.Background()
	ft.res = probe.Result{Kind: "dns", Target: "example.org", OK: true, Address: "198.18.0.53:53", RTT: 1500 * time.Microsecond,
		Detail: "2 answers", Answers: []string{"198.18.0.1", "198.18.0.2"}}
	res, err := w.x.Test(ctx, TestRequest{Kind: "dns", Target: "example.org", Type: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.RTTMS != 1.5 || len(res.Answers) != 2 || res.Address != "198.18.0.53:53" || res.Kind != "dns" {
		t.Errorf("result = %+v", res)
	}
	if len(ft.reqs) != 1 || ft.reqs[0] != (probe.Request{Kind: "dns", Target: "example.org", Type: "A"}) {
		t.Errorf("the prober was asked %+v", ft.reqs)
	}
	for _, c := range []struct {
		err  error
		want error
		what string
	}{
		{fmt.Errorf("%w: 169.254.1.1 is link-local", probe.ErrInvalid), fault.ErrInvalid, "400"},
		{probe.ErrBusy, fault.ErrTooMany, "429"},
	} {
		ft.err = c.err
		_, err := w.x.Test(ctx, TestRequest{Kind: "ping", Target: "169.254.1.1"})
		if !errors.Is(err, c.want) {
			t.Errorf("the prober's %v became %v, want %s", c.err, err, c.what)
		}
		var fe *fault.Error
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.err.Error()) {
			t.Errorf("the error %v does not carry the prober's words %q", err, c.err)
		}
	}
	w2 := newWorld(t, nil)
	if _, err := w2.x.Test(ctx, TestRequest{Kind: "ping", Target: "198.18.0.1"}); !errors.Is(err, fault.ErrUnavailable) {
		t.Errorf("without a prober: %v, want unavailable (503)", err)
	}
}

func TestPutDDNS(t *testing.T) {
	w := newWorld(t, nil)
	audit := storage.Entry{Actor: "admin", Action: "network.ddns_update", Result: "ok"}
	// Refused input: 400, nothing stored.
	for _, body := range []string{
		`{"provider":"rfc2136","server":"198.18.0.53","zone":"example.org","key_name":"k"}`, // no secret
		`{"provider":"rfc2136","server":"198.18.0.53","zone":"example.org","key_name":"k","secret":"c2hvcnQ="}`,
		`{"provider":"rfc2136","server":"198.18.0.53","zone":"other.org","key_name":"k","secret":"` + testSecret + `"}`,
		`{"provider":"dyndns2","url":"http://dyn.example.net/nic/update","username":"u","secret":"pw-1234"}`,
		`{"provider":"dyndns2","url":"https://dyn.example.net/nic/update","username":"u","hostname":"a b","secret":"pw-1234"}`,
		`{"provider":"carrier-pigeon","secret":"pw-1234"}`,
		`{"provider":"off","interval_minutes":1}`,
		`{"provider":"off","extra":true}`,
		`not json`,
	} {
		_, err := w.x.PutDDNS([]byte(body), audit)
		if !errors.Is(err, fault.ErrInvalid) {
			t.Errorf("PutDDNS(%s) = %v, want invalid (400)", body, err)
		}
		if err != nil && (strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), "pw-1234")) {
			t.Errorf("PutDDNS(%s): the error repeats the secret: %v", body, err)
		}
	}
	if v := w.x.DDNSStatus(); v.Provider != ProviderOff || v.SecretSet {
		t.Errorf("after refused changes: %+v, want nothing stored", v)
	}
	// RefreshDDNS with no provider: 409.
	if _, err := w.x.RefreshDDNS(); !errors.Is(err, fault.ErrConflict) {
		t.Errorf("RefreshDDNS with no provider: %v, want a conflict (409)", err)
	}

	// Stored: the section and the secret, and the view says only that one is set.
	v := w.putRFC2136()
	if !v.SecretSet || v.Provider != ProviderRFC2136 || v.Name != "home.example.org" {
		t.Errorf("after PutDDNS: %+v", v)
	}
	// The secret is kept when the change leaves it out.
	v, err := w.x.PutDDNS([]byte(`{"provider":"rfc2136","server":"198.18.0.54","zone":"example.org","key_name":"cell-key","interval_minutes":60}`), audit)
	if err != nil || !v.SecretSet || v.Server != "198.18.0.54" {
		t.Errorf("a change without the secret: %+v %v", v, err)
	}
	if s, _ := w.x.secret(); s != testSecret {
		t.Error("a change without the secret lost the stored one")
	}
	// Off deletes it.
	if v, err := w.x.PutDDNS([]byte(`{"provider":"off"}`), audit); err != nil || v.SecretSet || v.State != "off" {
		t.Errorf("provider off: %+v %v", v, err)
	}
	if s, _ := w.x.secret(); s != "" {
		t.Error("provider off left the secret in the vault")
	}
	if p := w.x.CheckDDNS(context.Background()); p.State != storage.StateNotConfigured {
		t.Errorf("the ddns part with no provider = %+v", p)
	}
}

func TestDDNSFailureAndNoSecretAnywhere(t *testing.T) {
	w := newWorld(t, nil)
	w.updater.err = errors.New("connection refused by 198.18.0.53:53")
	w.run()
	w.putRFC2136()
	w.nextUpdate()
	var st Status
	deadline := time.Now().Add(waitLong)
	for st = w.status(); st.DDNS.State != "failing"; st = w.status() {
		if time.Now().After(deadline) {
			t.Fatalf("ddns view = %+v, want failing", st.DDNS)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(st.DDNS.LastError, "connection refused") || st.DDNS.Failures != 1 || st.DDNS.NextTry == nil {
		t.Errorf("ddns view after a failure = %+v", st.DDNS)
	}
	found := false
	for _, s := range st.Warnings {
		found = found || strings.HasPrefix(s, "dynamic DNS: ")
	}
	if !found {
		t.Errorf("warnings %q do not name the failing dynamic DNS", st.Warnings)
	}
	if p := w.x.CheckDDNS(context.Background()); p.State != storage.StateDegraded || !strings.Contains(p.Reason, "connection refused") {
		t.Errorf("the ddns part = %+v, want degraded with the reason", p)
	}
	if !strings.Contains(w.logs.String(), "connection refused") {
		t.Errorf("the failure was not logged: %s", w.logs.String())
	}

	// The secret appears nowhere: not in the status, the DDNS view, the
	// logs or the audit log.
	b, _ := json.Marshal(st)
	v, _ := json.Marshal(w.x.DDNSStatus())
	var audit strings.Builder
	n := 0
	if err := w.db.Audit().Each(func(e storage.Entry) error {
		n++
		eb, _ := json.Marshal(e)
		audit.Write(eb)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n < 2 || !strings.Contains(audit.String(), "ddns") {
		t.Errorf("the audit log has %d entries and none about ddns: the check below would see nothing", n)
	}
	raw, _ := base64.StdEncoding.DecodeString(testSecret)
	for what, text := range map[string]string{"status": string(b), "ddns view": string(v), "logs": w.logs.String(), "audit": audit.String()} {
		if strings.Contains(text, testSecret) || strings.Contains(text, string(raw)) {
			t.Errorf("the secret appears in the %s: %s", what, text)
		}
	}
}
