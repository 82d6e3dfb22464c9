// Package cell is the composition root: it builds every capability of the cell
// over one database, wires the effects that cross capabilities (hooks run in
// the storing transaction), and runs the background work (the reconcile loop,
// the health loop) from Start until Close. It has no business methods: the
// capabilities are its fields, and the daemon hands them to the HTTP API.
//
// The capabilities, each in its own package with a doc that says what it
// owns: accounts (users, sessions, hashing, login throttle), audit (the
// tamper-evident log), setup (the first-run wizard), settings (the config
// document), peers (peers, policy, forwards, WireGuard status), dns (the zone's
// records), vault (the CA, its certificates, the trust keys), services (the
// store, installed services, their accounts, the containers) and health (the
// parts registry). The reconcile loop (cell/reconcile) is the only caller of
// the kernel parts; plan, config, fault and names are leaves they all share.
// Capabilities never import each other; layers_test.go at the module root
// holds that.
package cell

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/accounts"
	"github.com/pic-cell/cell/cell/audit"
	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/dns"
	"github.com/pic-cell/cell/cell/health"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/ntp"
	"github.com/pic-cell/cell/cell/outside"
	"github.com/pic-cell/cell/cell/peers"
	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/cell/services"
	"github.com/pic-cell/cell/cell/settings"
	"github.com/pic-cell/cell/cell/setup"
	"github.com/pic-cell/cell/cell/tlsconf"
	"github.com/pic-cell/cell/cell/vault"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// Version is the running firmware's version, set at link time
// (-ldflags "-X github.com/pic-cell/cell/cell.Version=...").
var Version = "dev"

// Options are what the daemon hands the cell.
type Options struct {
	DB   *storage.DB // required
	Logs *logs.Book  // required
	// Network is the kernel side; the zero value (no Open) runs the cell
	// without a tunnel (the wireguard part then says not_configured).
	Network reconcile.Network
	// Now and Rand are injectable for tests; nil means the real clock and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
	// HashMemoryKiB lowers argon2id's memory in tests only; zero means the production
	// 19 MiB, and anything below it is refused outside tests by the daemon's flags.
	HashMemoryKiB uint32
	// OwnTCPPorts are the TCP ports the daemon listens on (the API's, the
	// front's): no port forward may take one. nil: 80, 443 and 3000.
	OwnTCPPorts []int
	// Runtime is containerd, for the services; nil when the daemon has none
	// (the services routes then answer 503). The containers themselves are
	// run by the loop's supervisor (Network.Services).
	Runtime runtime.Runtime
	// DataDir is the data directory (the services' volumes live under it).
	DataDir string
	// Catalog overrides the embedded service catalog (tests); nil: embedded.
	Catalog func() (index, sig []byte)
	// Outside are the daemon's parts of how the outside reaches the cell
	// (the uplink, the port mapper, the diagnostics, the echo test); the root
	// fills in the database, the settings and the peers' part. Its zero value
	// runs none of them.
	Outside outside.Options
	// NTP are the time capability's overrides (tests: its query, adjtimex,
	// interval); the root fills in the settings. TimeChecks runs its checks
	// against the configured servers (the daemon's -time-check); without it
	// the clock's state is the kernel's word alone and nothing is asked.
	NTP        ntp.Options
	TimeChecks bool
}

// Cell is the running cell: its capabilities, and the loops Start runs.
type Cell struct {
	DB       *storage.DB
	Logs     *logs.Book
	Config   *config.Registry
	Audit    *audit.Log
	Accounts *accounts.Accounts
	Setup    *setup.Wizard
	Settings *settings.Settings
	Peers    *peers.Peers
	DNS      *dns.DNS
	Vault    *vault.Vault // the CA and the trust keys, made before setup
	Services *services.Services
	Outside  *outside.Outside // the endpoint, public address, DDNS, port mapping, diagnostics
	NTP      *ntp.NTP         // the clock's state and what the SNTP server answers
	Health   *health.Health
	Network  *reconcile.Loop // nil when Options.Network has no Open

	log        *slog.Logger
	timeChecks bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	once       sync.Once
}

// New builds the cell over an open database. Nothing runs until Start.
func New(o Options) (*Cell, error) {
	if o.DB == nil || o.Logs == nil {
		return nil, errors.New("cell: DB and Logs are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	c := &Cell{DB: o.DB, Logs: o.Logs, log: o.Logs.Logger("cell"), Config: config.NewRegistry()}
	c.Config.Register(health.Section())
	c.Config.Register(dns.Section())
	c.Config.Register(audit.Section())
	c.Config.Register(tlsconf.Section())
	c.Config.Register(services.ConfigSection())
	c.Config.Register(outside.ReachSection())
	c.Config.Register(outside.DDNSSection())
	c.Config.Register(ntp.ConfigSection())
	var err error
	if c.Audit, err = audit.Open(o.DB, o.Logs.Logger("audit"), o.Now, o.Rand); err != nil {
		return nil, err
	}
	hasher := accounts.NewHasher(o.HashMemoryKiB, o.Rand)
	c.Accounts = accounts.New(o.DB, hasher, c.Audit, o.Now, o.Rand)
	c.Settings = settings.New(o.DB, c.Config, o.Now)
	// The CA exists from the first start: a new device fetches its root before setup.
	if c.Vault, err = vault.Open(vault.Options{DB: o.DB, Audit: c.Audit, Log: o.Logs.Logger("vault"), Now: o.Now, Rand: o.Rand}); err != nil {
		return nil, err
	}
	c.Health = health.New(o.DB, o.Now, Version, audit.KeyName)
	c.Health.Register("audit", c.Audit.Check)
	c.Health.Register("disk", o.DB.CheckDisk) // the data partition's free space (storage/space.go)

	var net network = offline{}
	var settle func(context.Context) error
	if o.Network.Open != nil {
		c.Network = reconcile.New(o.DB, o.Network, o.Logs.Logger("network"), o.Rand)
		net, settle = c.Network, c.Network.Sync
		c.Health.Register("wireguard", c.Network.CheckWireGuard)
		if o.Network.Firewall != nil {
			c.Health.Register("firewall", c.Network.CheckFirewall)
		}
		if o.Network.DNS != nil {
			c.Health.Register("dns", c.Network.CheckDNS)
		}
		if o.Network.Front != nil {
			c.Health.Register("caddy", c.Network.CheckFront)
		}
	}
	c.DNS = dns.New(o.DB, net, c.Audit, o.Now)
	c.Setup = setup.New(o.DB, hasher, c.Audit, c.Config, o.Now, settle)
	c.Setup.ShowCA(vault.Fingerprint(c.Vault.RootDER()))
	c.Peers = peers.New(peers.Options{DB: o.DB, Hasher: hasher, Audit: c.Audit, Network: net, Now: o.Now, Rand: o.Rand,
		CellKey: func() (wireguard.Key, error) { return reconcile.CellKey(o.DB, o.Rand) }, OwnTCPPorts: o.OwnTCPPorts})
	so := services.Options{DB: o.DB, Audit: c.Audit, Runtime: o.Runtime, DataDir: o.DataDir, Catalog: o.Catalog, Now: o.Now, Rand: o.Rand}
	if c.Network != nil {
		so.Loop = c.Network
		c.Health.Register("services", c.Network.CheckServices)
	}
	if c.Services, err = services.New(so); err != nil {
		return nil, err
	}
	oo := o.Outside
	oo.DB, oo.Settings, oo.Now, oo.OutdatedConfigs = o.DB, c.Settings, o.Now, c.Peers.OutdatedConfigs
	if oo.Log == nil {
		oo.Log = o.Logs.Logger("network")
	}
	if oo.UserAgent == "" {
		oo.UserAgent = "pic-cell/" + Version
	}
	if c.Network != nil && oo.Echo.Ask != nil && oo.Echo.Wait == nil {
		oo.Echo.Wait = c.Network.WaitEcho
	}
	c.Outside = outside.New(oo)
	c.Health.Register("ddns", c.Outside.CheckDDNS)
	no := o.NTP
	no.Settings, no.DB = c.Settings, o.DB
	if no.Log == nil {
		no.Log = o.Logs.Logger("ntp")
	}
	c.NTP = ntp.New(no)
	c.timeChecks = o.TimeChecks
	c.Health.Register("ntp", c.NTP.Check)
	if err := c.Peers.AdoptEndpoints(); err != nil {
		return nil, err
	}
	// Effects across capabilities, in the storing transaction.
	c.Peers.OnCreate(c.DNS.PeerNameFree)
	c.Peers.OnCreate(c.Services.PeerCreated)
	c.Peers.OnDelete(c.Services.PeerDeleted)
	return c, nil
}

// Start runs the reconcile loop (which builds the network from the database at
// once) and the health loop until Close. A part that fails to come up leaves the
// cell running, degraded: the health says why.
func (c *Cell) Start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	if c.Network != nil {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); c.Network.Run(ctx) }()
	}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.Outside.Run(ctx) }()
	if c.timeChecks {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); c.NTP.Run(ctx) }()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.Peers.RunTrafficHistory(ctx, func(err error) { c.log.Error("traffic sample", "err", err) })
	}()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.Health.Run(ctx, func(err error) { c.log.Error("health check", "err", err) },
			func() {
				if _, err := c.Audit.Checkpoint(); err != nil {
					c.log.Error("audit checkpoint", "err", err)
				}
			},
			func() {
				if n, err := c.Accounts.PruneSessions(); err != nil {
					c.log.Error("prune sessions", "err", err)
				} else if n > 0 {
					c.log.Debug("pruned expired sessions", "count", n)
				}
			})
	}()
}

// Settle waits until the network has applied everything committed so far (at
// start: the first build from the database).
func (c *Cell) Settle(ctx context.Context) error {
	if c.Network == nil {
		return nil
	}
	return c.Network.Sync(ctx)
}

// Close stops the loops, waits for them, closes the device (the firewall table
// stays: a restarting cell keeps filtering) and signs a last audit checkpoint.
// The caller closes the database after. Calling it again does nothing.
func (c *Cell) Close() {
	c.once.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		if c.Network != nil {
			c.Network.Close()
		}
		if _, err := c.Audit.Checkpoint(); err != nil {
			c.log.Error("final audit checkpoint", "err", err)
		}
	})
}
