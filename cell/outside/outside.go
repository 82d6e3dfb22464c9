// Package outside is how the outside reaches the cell: the endpoint the
// peers' configs dial, the home's public address, the dynamic DNS name that
// follows it, the port the home router forwards, and the diagnostics that tell
// an admin why a phone on mobile data cannot connect.
//
// # What runs
//
// Run keeps one loop. It wakes when the uplink changes (rtnetlink events, not
// polling: a new address or default route is seen at once), when the config
// commits, when an admin asks for a refresh, and every outside.check_minutes
// (the router's side can change unseen). Each pass:
//
//  1. reads the uplink (the default route's interface, or wan_interface): its
//     gateway, its addresses;
//  2. tells the port mapper the gateway and the cell's address on it: the
//     mapper (netstack/portmap) asks the router for UDP wg_port through PCP,
//     NAT-PMP or UPnP IGD, whichever answers, renews at half the lease and
//     removes the mapping when the cell stops;
//  3. finds the public address: the uplink's own when it is public; else the
//     router's external address (from the mapper); else the configured "what
//     is my address" URL (netstack/uplink.Discover);
//  4. hands a public address to the dynamic DNS keeper (netstack/ddns), which
//     updates the provider when it changed and at ddns.interval_minutes, backs
//     off on failure, and stops after a refusal (bad key, abuse) until an
//     admin acts.
//
// A router address in 100.64.0.0/10 (carrier-grade NAT) is said plainly: no
// mapping on the home router can make the cell reachable from outside then;
// it needs a relay (a cell link or an exit with a port forward).
//
// # The endpoint check
//
// GET /api/network warns when the endpoint (network.endpoint, else the
// domain) is a name that does not resolve, resolves elsewhere than the public
// address, or is a private address: each a reason why a QR code handed out
// cannot connect from outside. Changing the endpoint (or the port, or the
// domain it defaults to) leaves the configs already handed out naming the old
// one: the peers capability keeps which endpoint each peer's config names, and
// the status lists the peers whose configs must be sent again.
//
// # Diagnostics
//
// POST /api/network/test runs one probe in Go (netstack/probe: ICMP echo, a
// DNS query, an HTTP GET, a TCP or UDP probe) with a short deadline, refusing
// link-local, multicast, loopback and the cell's own API, a few at once. Its
// "reachability" kind asks an outside echo service (outside.echo_url) to send a
// WireGuard-shaped UDP datagram to the endpoint and reports whether the
// WireGuard port heard it: the one test that tells a person the port forward
// works. The echo protocol is netstack/echo's.
//
// Secrets (the TSIG key, the provider's password) are in the vault, written
// with the section in one transaction, never echoed (the API says only whether
// one is set) and never logged.
package outside

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/netstack/ddns"
	"github.com/pic-cell/cell/netstack/portmap"
	"github.com/pic-cell/cell/netstack/uplink"
	"github.com/pic-cell/cell/storage"
)

// Settings is the config document, as the settings capability keeps it.
type Settings interface {
	Config() (config.Doc, error)
	PatchConfigWithin(patch []byte, audit storage.Entry, within storage.Within) (config.Doc, []string, error)
}

// PortMapper keeps one port mapped on the home router (portmap.Keeper).
type PortMapper interface {
	Set(gateway, local netip.Addr)
	Renew()
	Status() portmap.Status
	Run(ctx context.Context)
}

// Options are what the root hands the capability. The kernel and daemon
// parts are functions so that tests can give fakes; nil ones are off.
type Options struct {
	DB       *storage.DB
	Settings Settings
	Log      *slog.Logger
	Now      func() time.Time
	// UserAgent names the cell to DNS providers ("pic-cell/<version>").
	UserAgent string

	// ReadUplink reads the uplink (iface "" = the default route's):
	// uplink.Read. nil: no uplink is known.
	ReadUplink func(iface string) (uplink.State, error)
	// WatchUplink fires when an address or route changes: uplink.Watch.
	WatchUplink func(ctx context.Context) <-chan struct{}
	// WAN is the uplink interface the daemon was told (-wan), "" to follow
	// the config and the default route.
	WAN string
	// NewPortMapper makes the port mapper for a port; nil: no port mapping.
	NewPortMapper func(port uint16) PortMapper
	// Discover finds the public address (uplink.Discover).
	Discover func(ctx context.Context, st uplink.State, o uplink.DiscoverOptions) uplink.Public
	// NewUpdater may replace the provider's updater (tests); nil: the real one.
	NewUpdater func(d DDNS, secret, name string) (ddns.Updater, error)
	// Resolve looks a name up for the endpoint check; nil: the system resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// OutdatedConfigs names the peers whose configs name another endpoint
	// (the peers capability's).
	OutdatedConfigs func() ([]string, error)
	// Interfaces lists the cell's interfaces for the status; nil: net.Interfaces.
	Interfaces func() ([]net.Interface, error)
	// Tester runs diagnostics; nil: POST /api/network/test answers 503.
	Tester Tester
	// Echo is the reachability test's; zero: the test answers 503.
	Echo Echo
}

// Outside is the capability.
type Outside struct {
	o   Options
	log *slog.Logger

	kick    chan struct{}
	refresh chan struct{}

	mu           sync.Mutex // guards what the loop publishes
	up           uplink.State
	upErr        string
	public       uplink.Public
	checkedAt    time.Time
	mapper       PortMapper
	mapPort      uint16
	keeper       *ddns.Keeper
	ddnsCfg      DDNS
	ddnsName     string
	ddnsErr      string // why the keeper could not be made (no secret, ...)
	keeperSecret string
	passes       uint64
	passCh       chan struct{} // closed and replaced after every pass
}

// New returns the capability; Run starts its loop.
func New(o Options) *Outside {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Resolve == nil {
		o.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if o.Interfaces == nil {
		o.Interfaces = net.Interfaces
	}
	if o.Discover == nil {
		o.Discover = uplink.Discover
	}
	x := &Outside{o: o, log: o.Log, kick: make(chan struct{}, 1), refresh: make(chan struct{}, 1), passCh: make(chan struct{})}
	if o.DB != nil {
		o.DB.OnCommit(func(c storage.Change) {
			if c.Kind == storage.ChangeConfig {
				x.wake()
			}
		})
	}
	return x
}

func (x *Outside) wake() {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// Passed returns a channel closed after the loop's next pass: tests and
// benchmarks wait on it instead of sleeping.
func (x *Outside) Passed() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.passCh
}

// Run keeps the outside view up to date until ctx ends; then the port
// mapping is removed (the mapper's Run returns once it is).
func (x *Outside) Run(ctx context.Context) {
	var events <-chan struct{}
	if x.o.WatchUplink != nil {
		events = x.o.WatchUplink(ctx)
	}
	var parts sync.WaitGroup
	var stopMapper, stopKeeper context.CancelFunc
	defer func() {
		for _, stop := range []context.CancelFunc{stopMapper, stopKeeper} {
			if stop != nil {
				stop()
			}
		}
		parts.Wait()
	}()
	start := func(run func(context.Context)) context.CancelFunc {
		pctx, cancel := context.WithCancel(ctx)
		parts.Add(1)
		go func() { defer parts.Done(); run(pctx) }()
		return cancel
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		doc, err := x.config()
		var reach Reach
		if err == nil {
			doc.Decode("outside", &reach)
			// The port mapper follows the setting and wg_port.
			port := uint16(doc.Network().WGPort)
			x.mu.Lock()
			cur, curPort := x.mapper, x.mapPort
			x.mu.Unlock()
			want := reach.PortMapping && x.o.NewPortMapper != nil
			if cur != nil && (!want || curPort != port) {
				stopMapper()
				x.mu.Lock()
				x.mapper, stopMapper = nil, nil
				x.mu.Unlock()
				cur = nil
			}
			if want && cur == nil {
				m := x.o.NewPortMapper(port)
				stopMapper = start(m.Run)
				x.mu.Lock()
				x.mapper, x.mapPort = m, port
				x.mu.Unlock()
			}
			// The DDNS keeper follows its section and its secret.
			if k, changed := x.keeperFor(doc); changed {
				if stopKeeper != nil {
					stopKeeper()
					stopKeeper = nil
				}
				if k != nil {
					stopKeeper = start(k.Run)
				}
			}
		}
		x.pass(ctx, doc, reach)
		if reach.CheckMinutes < 1 {
			reach.CheckMinutes = 10
		}
		timer.Reset(time.Duration(reach.CheckMinutes) * time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-x.kick:
		case <-x.refresh:
		case <-timer.C:
		}
	}
}

// config is the document, or an error before setup.
func (x *Outside) config() (config.Doc, error) {
	if x.o.Settings == nil {
		return nil, errors.New("no settings")
	}
	return x.o.Settings.Config()
}

// keeperFor makes a new DDNS keeper when the section or the secret changed
// (changed true; k nil when DDNS is off or cannot run).
func (x *Outside) keeperFor(doc config.Doc) (k *ddns.Keeper, changed bool) {
	var d DDNS
	doc.Decode("ddns", &d)
	secret, _ := x.secret()
	name := d.name(doc.Endpoint().Host)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.keeper != nil && d == x.ddnsCfg && name == x.ddnsName && secret == x.keeperSecret {
		return nil, false
	}
	if x.keeper == nil && x.ddnsErr == "" && d.Provider == ProviderOff && x.ddnsCfg.Provider == ProviderOff {
		return nil, false
	}
	x.keeper, x.ddnsCfg, x.ddnsName, x.keeperSecret, x.ddnsErr = nil, d, name, secret, ""
	if d.Provider == ProviderOff || d.Provider == "" {
		x.ddnsCfg.Provider = ProviderOff
		return nil, true
	}
	if secret == "" {
		x.ddnsErr = "no secret is stored for the provider: set it with PUT /api/network/ddns"
		return nil, true
	}
	newUpdater := x.o.NewUpdater
	if newUpdater == nil {
		newUpdater = func(d DDNS, secret, name string) (ddns.Updater, error) { return d.updater(secret, name, x.o.UserAgent) }
	}
	u, err := newUpdater(d, secret, name)
	if err != nil {
		x.ddnsErr = err.Error()
		return nil, true
	}
	x.keeper = ddns.NewKeeper(u, ddns.KeeperOptions{Interval: d.interval(), Now: x.o.Now, Log: x.log.With("part", "ddns")})
	if len(x.public.Addrs) > 0 && !x.public.CGNAT {
		x.keeper.Set(x.public.Addrs)
	}
	return x.keeper, true
}

// secret is the provider's secret from the vault ("" when none).
func (x *Outside) secret() (string, error) {
	if x.o.DB == nil {
		return "", nil
	}
	b, err := x.o.DB.Vault.Get(SecretName)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	return string(b), err
}

// pass reads the uplink, tells the mapper, finds the public address and
// hands it to the DDNS keeper.
func (x *Outside) pass(ctx context.Context, doc config.Doc, reach Reach) {
	defer func() {
		x.mu.Lock()
		x.passes++
		close(x.passCh)
		x.passCh = make(chan struct{})
		x.mu.Unlock()
	}()
	if doc == nil || x.o.ReadUplink == nil {
		return
	}
	iface := x.o.WAN
	if iface == "" {
		if w := doc.Network().WANInterface; w != "auto" {
			iface = w
		}
	}
	st, err := x.o.ReadUplink(iface)
	x.mu.Lock()
	x.up, x.upErr = st, ""
	if err != nil {
		x.upErr = err.Error()
	}
	m := x.mapper
	x.mu.Unlock()
	if m != nil {
		local := netip.Addr{}
		for _, p := range st.Addrs {
			if p.Addr().Is4() {
				local = p.Addr()
				break
			}
		}
		m.Set(st.Gateway, local)
	}
	if err != nil {
		return
	}
	opts := uplink.DiscoverOptions{URL: reach.PublicAddressURL}
	if m != nil {
		opts.Router = func(ctx context.Context) (netip.Addr, error) { return routerAddr(ctx, m) }
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	pub := x.o.Discover(dctx, st, opts)
	cancel()
	x.mu.Lock()
	x.public, x.checkedAt = pub, x.o.Now()
	k := x.keeper
	x.mu.Unlock()
	if k != nil && len(pub.Addrs) > 0 && !pub.CGNAT {
		k.Set(pub.Addrs)
	}
}

// routerAddr waits briefly for the mapper to learn the router's external
// address (it asks the router as soon as it is Set).
func routerAddr(ctx context.Context, m PortMapper) (netip.Addr, error) {
	for {
		st := m.Status()
		if st.External.IsValid() {
			return st.External, nil
		}
		if st.State == portmap.StateFailing {
			return netip.Addr{}, errors.New(st.Reason)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, errors.New("the home router did not say its address in time")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Refresh looks at the uplink and the public address again now, and forces a
// DDNS update (also after a refusal: a person acted).
func (x *Outside) Refresh() {
	x.mu.Lock()
	k, m := x.keeper, x.mapper
	x.mu.Unlock()
	if k != nil {
		k.Refresh()
	}
	if m != nil {
		m.Renew()
	}
	select {
	case x.refresh <- struct{}{}:
	default:
	}
}

// nonce is 16 random bytes.
func nonce() [16]byte {
	var n [16]byte
	rand.Read(n[:])
	return n
}

// fmtAddrs writes addresses as strings.
func fmtAddrs(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}
