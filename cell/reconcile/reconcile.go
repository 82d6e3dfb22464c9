// Package reconcile is the cell's one reconcile loop: the only caller of the
// kernel parts (the WireGuard device, the tunnel link, the firewall).
//
// Capabilities never touch the kernel. They store their change; the database
// announces every commit that matters (storage.DB.OnCommit: no polling), and
// the loop wakes, reads one snapshot in one read transaction, builds the whole
// desired state with plan.Build (pure) and applies it through the parts, whose
// Set is idempotent. A change to one peer takes the constant-cost path
// (PutPeer/RemovePeer on the device and the firewall sets), which the tests
// prove equal to a full rebuild. A capability that must answer only once the
// kernel has its change calls Sync, which waits for the loop to pass every
// commit made before the call.
//
// The loop goes on past a failing part and keeps every error; it publishes
// each part's last result atomically (Live), so health checks never wait on
// an apply. A part that fails at start leaves the cell running, degraded, and
// the health says why.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/lowprio"
	"github.com/pic-cell/cell/cell/plan"
	"github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/userspace"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// Network is the kernel side the loop drives. The daemon builds it from its
// flags: in tun mode all of it, in netstack mode only Open.
type Network struct {
	// Mode is "tun" or "netstack", for the status.
	Mode string
	// Open creates the WireGuard device once the cell knows its tunnel
	// addresses (after setup); it is called again if they change in netstack mode.
	Open func(addrs []netip.Addr) (wireguard.Device, error)
	// Firewall and Links are optional: without them (netstack mode) the
	// cell touches no kernel state but the device.
	Firewall firewall.Firewall
	Links    links.Links
	// Interface is the tunnel interface's name, "wg0".
	Interface string
	// WAN is the uplink: the -wan flag, else the config's wan_interface,
	// else the default route's (DefaultWAN).
	WAN        string
	DefaultWAN func() (string, error)
	// LAN are the networks that count as the LAN for the peers' lan policy;
	// when empty, LANOf finds them on the WAN interface.
	LAN   []netip.Prefix
	LANOf func(wan string) ([]netip.Prefix, error)
	// LocalTCP and LocalUDP are the cell's own services that the tunnel may
	// reach (the API port, DNS).
	LocalTCP, LocalUDP []uint16
	// DNS is the cell's DNS server; optional. The loop gives it the zone
	// built from the database and keeps it in step with every change.
	DNS dns.Resolver
	// Upstreams returns the uplink's resolvers (DNS falls back to them when
	// the config names none); optional.
	Upstreams func() []string
	// Listen opens the cell's own services on its tunnel addresses once the
	// device has them (and again when they change, after closing what the
	// last call returned): the DNS server's sockets, and in netstack mode the
	// API inside the device's stack. Optional.
	Listen func(dev wireguard.Device, addrs []netip.Addr) (io.Closer, error)
	// Front is the cell's front (Caddy, netstack/front, behind this
	// interface so that no Caddy type reaches cell/); optional. The loop
	// gives it the cell's names and addresses from every full rebuild, and
	// before setup the host's alone (the wizard is reached through it).
	Front Front
	// FrontNames are names the host adds to the front's ("localhost" on a
	// development host); HostAddrs returns the addresses the front answers
	// on besides the tunnel's (the uplink wan's); both optional.
	FrontNames []string
	HostAddrs  func(wan string) []netip.Addr
	// Services runs the service containers; optional (its zero value: none).
	Services Services
	// WatchUplink fires when an address, a route or a link changes
	// (rtnetlink: uplink.Watch); optional. The loop then looks at the
	// uplink again and rebuilds when what it builds from changed (the WAN
	// interface the NAT goes out of, the LAN networks, the front's
	// addresses): a new DHCP lease or default route is taken up at once.
	WatchUplink func(ctx context.Context) <-chan struct{}
}

// Front is the front as the loop drives it: Set is idempotent.
type Front interface {
	Set(plan.Front) error
}

// Loop is the reconcile loop.
type Loop struct {
	db   *storage.DB
	n    Network
	log  *slog.Logger
	rand io.Reader

	mu      sync.Mutex // guards the pending work and the progress below
	full    bool
	peers   map[string]bool
	want    uint64        // commits noted
	done    uint64        // commits applied (or failed)
	doneErr error         // the result of the apply that reached done
	doneCh  chan struct{} // closed and replaced at every apply
	kick    chan struct{}

	// Owned by the loop goroutine (Run), never touched elsewhere.
	dev      wireguard.Device
	addrs    []netip.Addr
	fwBuilt  bool
	applied  map[string]plan.Peer // the peers the kernel has, by name
	usBase   *userspace.Policy    // the last full userspace policy (netstack mode)
	dnsBuilt bool
	listened []netip.Addr // the addresses Listen last served
	listener io.Closer
	wanWatch atomic.Bool // a watcher looks for the uplink (retryWAN)
	// uplinkKey is what the last full build took from the uplink (WAN, LAN,
	// the front's addresses), for the rtnetlink watcher to compare with.
	uplinkKey atomic.Pointer[string]
	closed    atomic.Bool // Close ran: the watcher stops

	live atomic.Pointer[plan.Live]
	// devPub is the open device, for the stats reads (UAPI gets, which do
	// not change the device).
	devPub atomic.Pointer[deviceBox]
}

type deviceBox struct{ wireguard.Device }

// New returns a loop over n that hears of every commit of db. rand makes the
// cell's WireGuard key the first time.
func New(db *storage.DB, n Network, log *slog.Logger, rand io.Reader) *Loop {
	if n.Interface == "" {
		n.Interface = "wg0"
	}
	l := &Loop{db: db, n: n, log: log, rand: rand, peers: map[string]bool{}, kick: make(chan struct{}, 1),
		doneCh: make(chan struct{}), applied: map[string]plan.Peer{}}
	l.live.Store(&plan.Live{Mode: n.Mode, Interface: n.Interface, Firewall: n.Firewall != nil,
		WireGuard:     storage.PartStatus{State: storage.StateNotConfigured, Reason: "waiting for setup"},
		FirewallState: storage.PartStatus{State: storage.StateNotConfigured, Reason: "not built yet"},
		DNS:           storage.PartStatus{State: storage.StateNotConfigured, Reason: "waiting for setup"},
		Front:         storage.PartStatus{State: storage.StateNotConfigured, Reason: "not built yet"}})
	db.OnCommit(l.note)
	l.noteFull()
	return l
}

// note is the database's commit callback: it records what changed and wakes the loop.
func (l *Loop) note(c storage.Change) {
	if c.Kind == storage.ChangeCert {
		// Nothing the loop builds depends on the certificates the CA issued
		// (the front is given the root, which never changes): a certificate
		// the front obtains while the loop loads its config must not set off
		// a full rebuild of every peer.
		return
	}
	l.mu.Lock()
	if c.Kind == storage.ChangePeer {
		l.peers[c.Key] = true
	} else {
		l.full = true
	}
	l.want++
	l.mu.Unlock()
	l.wake()
}

// noteFull asks for a full rebuild (at start, or by an operator's reconcile).
func (l *Loop) noteFull() {
	l.mu.Lock()
	l.full = true
	l.want++
	l.mu.Unlock()
	l.wake()
}

func (l *Loop) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Rebuild asks for a full rebuild and waits for it.
func (l *Loop) Rebuild(ctx context.Context) error {
	l.noteFull()
	return l.Sync(ctx)
}

// Sync waits until the loop has applied every commit noted before the call and
// returns the error of the apply that covered them (nil when it succeeded).
func (l *Loop) Sync(ctx context.Context) error {
	l.mu.Lock()
	target := l.want
	for l.done < target {
		ch := l.doneCh
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("the kernel has not applied the change yet: %w", ctx.Err())
		}
		l.mu.Lock()
	}
	err := l.doneErr
	l.mu.Unlock()
	return err
}

// Run applies changes until ctx ends. Close, after Run has returned, tears the
// parts down.
func (l *Loop) Run(ctx context.Context) {
	if l.n.WatchUplink != nil {
		events := l.n.WatchUplink(ctx)
		go func() {
			for range events {
				l.uplinkChanged()
			}
		}()
	}
	if sup := l.n.Services.Supervisor; sup != nil {
		done := make(chan struct{})
		go func() { defer close(done); sup.Run(ctx) }()
		defer func() { <-done }()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		}
		l.mu.Lock()
		full, peers, target := l.full, l.peers, l.want
		l.full, l.peers = false, map[string]bool{}
		l.mu.Unlock()
		if target == l.doneSnapshot() {
			continue
		}
		var err error
		if full || l.dev == nil {
			// A full rebuild of 10,000 peers takes a core for a few hundred
			// milliseconds: at a lower priority, /health and the API answer
			// with the CPU it leaves over.
			lowprio.Run(func() { err = l.applyAll() })
		} else {
			err = l.applyPeers(peers)
		}
		if err != nil {
			l.log.Error("reconcile", "err", err)
		}
		l.mu.Lock()
		l.done, l.doneErr = target, err
		close(l.doneCh)
		l.doneCh = make(chan struct{})
		l.mu.Unlock()
	}
}

func (l *Loop) doneSnapshot() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// Close closes the device and the netlink connections; the firewall table stays
// in the kernel (a restarting cell keeps filtering). Call it after Run returned.
func (l *Loop) Close() {
	l.closed.Store(true)
	if l.listener != nil {
		l.listener.Close()
		l.listener = nil
	}
	if l.dev != nil {
		l.dev.Close()
		l.dev = nil
		l.devPub.Store(nil)
	}
	if l.n.Firewall != nil {
		l.n.Firewall.Close()
	}
	if l.n.Links != nil {
		l.n.Links.Close()
	}
	// The service containers run on (a restarted cell adopts them), and so
	// do their namespaces and the bridge.
	if l.n.Services.Bridge != nil {
		l.n.Services.Bridge.Close()
	}
}

// Live is the running network's state, read atomically.
func (l *Loop) Live() plan.Live { return *l.live.Load() }

func (l *Loop) publish(fn func(*plan.Live)) {
	v := *l.live.Load()
	fn(&v)
	l.live.Store(&v)
}

// Stats reports the device's peers by public key (empty before the device is open).
func (l *Loop) Stats() map[string]wireguard.PeerStats {
	out := map[string]wireguard.PeerStats{}
	b := l.devPub.Load()
	if b == nil {
		return out
	}
	st, err := b.Stats()
	if err != nil {
		return out
	}
	for _, s := range st {
		out[s.PublicKey.String()] = s
	}
	return out
}

// WaitEcho waits for the reachability test's datagram with nonce at the
// WireGuard port (see netstack/echo): the device takes it out of its receive
// path. It fails at once when no device is open.
func (l *Loop) WaitEcho(ctx context.Context, nonce [16]byte) (netip.AddrPort, error) {
	b := l.devPub.Load()
	if b == nil {
		return netip.AddrPort{}, errors.New("the WireGuard device is not running")
	}
	w, ok := b.Device.(interface {
		WaitEcho(ctx context.Context, nonce [16]byte) (netip.AddrPort, error)
	})
	if !ok {
		return netip.AddrPort{}, errors.New("this WireGuard device cannot hear the reachability test")
	}
	return w.WaitEcho(ctx, nonce)
}

// CellKey returns the cell's WireGuard private key, creating it once.
func CellKey(db *storage.DB, rand io.Reader) (wireguard.Key, error) {
	raw, err := db.Vault.GetOrCreate(plan.CellKeyName, func() []byte {
		b := make([]byte, 32)
		if _, err := io.ReadFull(rand, b); err != nil {
			panic("reconcile: the random source failed: " + err.Error())
		}
		k := plan.PrivateKey(b)
		return k[:]
	})
	if err != nil {
		return wireguard.Key{}, err
	}
	if len(raw) != 32 {
		return wireguard.Key{}, errors.New("the WireGuard key in the vault is damaged")
	}
	return wireguard.Key(raw), nil
}

// snapshot reads everything the kernel state is built from in one read
// transaction, and the host facts (WAN, LAN) from the machine.
func (l *Loop) snapshot() (plan.Snapshot, []serviceIntent, error) {
	var s plan.Snapshot
	var intents []serviceIntent
	key, err := CellKey(l.db, l.rand)
	if err != nil {
		return s, nil, err
	}
	s.CellKey = key
	var netSec config.Network
	err = l.db.View(func(tx *storage.Tx) error {
		doc, found, err := config.LoadTx(l.db, tx)
		if err != nil || !found {
			return err
		}
		s.SetUp = true
		netSec = doc.Network()
		s.Domain = doc.Cell().Domain
		if err := doc.Decode("dns", &s.DNS); err != nil {
			return err
		}
		if err := doc.Decode("tls", &s.TLS); err != nil {
			return err
		}
		if s.Records, err = l.db.DNSRecords().ListTx(tx); err != nil {
			return err
		}
		if s.Subnets, err = netSec.Subnets(); err != nil {
			return err
		}
		stored, err := l.db.Peers().ListTx(tx)
		if err != nil {
			return err
		}
		for _, p := range stored {
			pp, err := peerOf(l.db, tx, p)
			if err != nil {
				return err
			}
			s.Peers = append(s.Peers, pp)
		}
		if s.Forwards, err = l.db.Forwards().ListTx(tx); err != nil {
			return err
		}
		intents, s.ServicesSubnet, err = l.readServices(tx, doc)
		return err
	})
	if err != nil {
		return s, nil, err
	}
	if !s.SetUp {
		if l.n.Front != nil { // the front serves the wizard
			s.Host = plan.Host{Front: true, FrontNames: l.n.FrontNames, WAN: l.wan("")}
			if l.n.HostAddrs != nil {
				s.Host.HostAddrs = l.n.HostAddrs(s.Host.WAN)
			}
		}
		return s, nil, nil
	}
	s.Host = plan.Host{Interface: l.n.Interface, LocalTCP: l.n.LocalTCP, LocalUDP: l.n.LocalUDP,
		Links: l.n.Links != nil, Firewall: l.n.Firewall != nil, DNS: l.n.DNS != nil,
		Front: l.n.Front != nil, FrontNames: l.n.FrontNames}
	if l.n.DNS != nil && l.n.Upstreams != nil {
		s.Host.Upstreams = l.n.Upstreams()
	}
	s.Host.Userspace = l.n.Mode == "netstack"
	s.Host.WAN = l.wan(netSec.WANInterface)
	if l.n.Front != nil && l.n.HostAddrs != nil {
		s.Host.HostAddrs = l.n.HostAddrs(s.Host.WAN)
	}
	s.Host.LAN = l.n.LAN
	if len(l.n.LAN) == 0 && l.n.LANOf != nil && s.Host.WAN != "" {
		if s.Host.LAN, err = l.n.LANOf(s.Host.WAN); err != nil {
			l.log.Warn("no LAN networks: the lan policy has nothing to act on", "wan", s.Host.WAN, "err", err)
		}
	}
	s.Services = planServices(intents)
	if l.n.Services.Bridge != nil {
		s.Host.Services = plan.ServicesHost{Bridge: true, NetNSDir: l.netnsDir()}
	}
	return s, intents, nil
}

// netnsDir is where the services' network namespaces are bind-mounted.
func (l *Loop) netnsDir() string { return filepath.Join(l.n.Services.DataDir, "run", "netns") }

func peerOf(db *storage.DB, tx *storage.Tx, p storage.Peer) (plan.Peer, error) {
	pub, err := plan.ParseKey(p.PublicKey)
	if err != nil {
		return plan.Peer{}, fmt.Errorf("peer %q: public key: %w", p.Name, err)
	}
	psk, err := db.Vault.GetTx(tx, storage.PeerSecret(p.Name, storage.SecretPresharedKey))
	if err != nil {
		return plan.Peer{}, fmt.Errorf("peer %q: %w", p.Name, err)
	}
	return plan.Peer{Name: p.Name, PublicKey: pub, PSK: wireguard.Key(psk), Addr4: p.IPv4, Addr6: p.IPv6,
		Enabled: p.Enabled, Policy: p.Policy}, nil
}

// uplinkFacts is what a build takes from the uplink, as one comparable string.
func (l *Loop) uplinkFacts(cfgWAN string) string {
	wan := l.wan(cfgWAN)
	h := plan.Host{WAN: wan, LAN: l.n.LAN}
	if l.n.HostAddrs != nil && l.n.Front != nil {
		h.HostAddrs = l.n.HostAddrs(wan)
	}
	if len(l.n.LAN) == 0 && l.n.LANOf != nil && wan != "" {
		h.LAN, _ = l.n.LANOf(wan)
	}
	return uplinkKey(h)
}

// uplinkKey is the part of a build's host facts that come from the uplink.
func uplinkKey(h plan.Host) string { return fmt.Sprint(h.WAN, " front ", h.HostAddrs, " lan ", h.LAN) }

// uplinkChanged is the rtnetlink watcher's: a full rebuild when the uplink
// the last build used is not the uplink now.
func (l *Loop) uplinkChanged() {
	last := l.uplinkKey.Load()
	if last == nil || l.closed.Load() {
		return // nothing built yet: the first build reads the uplink anyway
	}
	cfgWAN := "auto"
	if doc, found, err := config.Load(l.db); err == nil && found {
		cfgWAN = doc.Network().WANInterface
	}
	if now := l.uplinkFacts(cfgWAN); now != *last {
		l.log.Info("the uplink changed: rebuilding", "was", *last, "now", now)
		l.noteFull()
	}
}

func (l *Loop) wan(cfg string) string {
	switch {
	case l.n.WAN != "":
		return l.n.WAN
	case cfg != "" && cfg != "auto":
		return cfg
	case l.n.DefaultWAN != nil:
		w, err := l.n.DefaultWAN()
		if err != nil {
			l.log.Warn("no WAN interface: peers reach no internet", "err", err)
		}
		return w
	}
	return ""
}

// applyAll builds every part from the database. It goes on past a failing
// part and returns every error.
func (l *Loop) applyAll() error {
	s, intents, err := l.snapshot()
	if err != nil {
		l.publish(func(v *plan.Live) { v.WireGuard = down(err) })
		return err
	}
	if !s.SetUp {
		if d := plan.Build(s); d.Front != nil {
			l.applyFront(*d.Front)
			l.retryWAN(s.Host.WAN) // the front answers on the uplink's address
		}
		return nil
	}
	d := plan.Build(s)
	if l.dev != nil && !slices.Equal(d.Addresses, l.addrs) && l.n.Links == nil {
		if l.listener != nil { // served from the device's stack
			l.listener.Close()
			l.listener, l.listened = nil, nil
		}
		l.usBase = nil
		l.dev.Close() // netstack: the addresses are part of the device
		l.dev = nil
		l.devPub.Store(nil)
	}
	if l.dev == nil {
		dev, err := l.n.Open(d.Addresses)
		if err != nil {
			err = fmt.Errorf("wireguard device: %w", err)
			l.publish(func(v *plan.Live) { v.WireGuard = down(err); v.Running = false })
			return err
		}
		l.dev, l.addrs = dev, d.Addresses
		l.devPub.Store(&deviceBox{dev})
	}
	var errs []error
	if err := l.dev.Set(d.WireGuard); err != nil {
		errs = append(errs, err)
	}
	// The firewall first: when it cannot be built, the link comes up with
	// forwarding not turned on, so the peers reach the cell itself and nothing their
	// policy might deny (fail closed).
	fwState := storage.PartStatus{State: storage.StateNotConfigured, Reason: "not built yet"}
	fwOK := true
	if d.Firewall != nil {
		if err := l.n.Firewall.Set(*d.Firewall); err != nil {
			errs = append(errs, err)
			fwState, fwOK = down(fmt.Errorf("%w: forwarding is not turned on until it is", err)), false
		} else {
			l.fwBuilt = true
			fwState = storage.PartStatus{State: storage.StateOK}
			if s.Host.WAN == "" {
				fwState = storage.PartStatus{State: storage.StateDegraded, Reason: "no WAN interface: peers reach no internet"}
			}
		}
	}
	if d.Links != nil {
		lc := *d.Links
		lc.Forwarding = lc.Forwarding && fwOK
		if err := l.n.Links.Set(lc); err != nil {
			errs = append(errs, err)
		}
	}
	if d.Userspace != nil {
		if us := userspaceOf(l.dev); us != nil {
			if err := us.SetPolicy(*d.Userspace); err != nil {
				errs = append(errs, err)
			} else {
				base := *d.Userspace
				l.usBase = &base
			}
		}
	}
	if err := l.listen(d.Addresses); err != nil {
		errs = append(errs, err)
	}
	dnsState := storage.PartStatus{State: storage.StateNotConfigured, Reason: "no DNS server in this cell"}
	if d.DNS != nil {
		if err := l.n.DNS.Set(*d.DNS); err != nil {
			errs = append(errs, err)
			dnsState = down(err)
		} else {
			l.dnsBuilt = true
			dnsState = storage.PartStatus{State: storage.StateOK}
			if len(d.DNS.Upstreams) == 0 {
				dnsState = storage.PartStatus{State: storage.StateDegraded, Reason: "no upstream resolver: only the cell's own names answer"}
			}
		}
	}
	// A services bridge that cannot be built is the services part's own
	// failure (its health says why); the tunnel is not degraded by it.
	l.applyServices(d, intents)
	if d.Front != nil {
		l.applyFront(*d.Front)
	}
	l.applied = map[string]plan.Peer{}
	for _, p := range s.Peers {
		l.applied[p.Name] = p
	}
	err = errors.Join(errs...)
	wg := storage.PartStatus{State: storage.StateOK}
	if err != nil {
		wg = storage.PartStatus{State: storage.StateDegraded, Reason: err.Error()}
	}
	key := uplinkKey(s.Host)
	l.uplinkKey.Store(&key)
	l.publish(func(v *plan.Live) {
		v.Running, v.WAN, v.LAN, v.WireGuard, v.DNS = true, s.Host.WAN, s.Host.LAN, wg, dnsState
		v.Addresses = d.Addresses
		if d.Firewall != nil {
			v.FirewallState = fwState
		}
	})
	if err == nil {
		l.log.Info("network built from the database", "peers", len(s.Peers), "forwards", len(s.Forwards), "wan", s.Host.WAN)
	}
	l.retryWAN(s.Host.WAN)
	return err
}

// retryWAN looks for the uplink again, with a growing wait (5 s up to a
// minute), while there is none: after a power cut the cell may start before
// DHCP has given the default route, and the peers must not wait for a config
// change to reach the internet. Looking is one netlink query; only finding
// one sets off a rebuild, so a cell without an uplink does not rebuild every
// peer every minute.
func (l *Loop) retryWAN(wan string) {
	if wan != "" || l.n.WAN != "" || l.n.DefaultWAN == nil || !l.wanWatch.CompareAndSwap(false, true) {
		return
	}
	var look func(wait time.Duration)
	look = func(wait time.Duration) {
		time.AfterFunc(wait, func() {
			if l.closed.Load() {
				return
			}
			if w, err := l.n.DefaultWAN(); err == nil && w != "" {
				l.wanWatch.Store(false)
				l.noteFull()
				return
			}
			look(min(2*wait, time.Minute))
		})
	}
	look(wanFirstWait)
}

// wanFirstWait is the first wait of retryWAN (tests shorten it).
var wanFirstWait = 5 * time.Second

// applyPeers brings the named peers' kernel state in line with the store: the
// constant-cost path. A peer gone from the store is removed.
func (l *Loop) applyPeers(names map[string]bool) error {
	type change struct {
		name   string
		p      plan.Peer
		exists bool
	}
	var changes []change
	err := l.db.View(func(tx *storage.Tx) error {
		for name := range names {
			sp, err := l.db.Peers().GetTx(tx, name)
			if errors.Is(err, storage.ErrNotFound) {
				changes = append(changes, change{name: name})
				continue
			}
			if err != nil {
				return err
			}
			p, err := peerOf(l.db, tx, sp)
			if err != nil {
				return err
			}
			changes = append(changes, change{name: name, p: p, exists: true})
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range changes {
		old, had := l.applied[c.name]
		if !c.exists && !had {
			continue
		}
		if c.exists && c.p.Enabled {
			errs = append(errs, l.dev.PutPeer(plan.WGPeer(c.p)))
		} else {
			pub := c.p.PublicKey
			if !c.exists {
				pub = old.PublicKey
			}
			errs = append(errs, l.dev.RemovePeer(pub))
		}
		if l.n.Firewall != nil && l.fwBuilt {
			if c.exists {
				errs = append(errs, l.n.Firewall.PutPeer(plan.FirewallPeer(c.p)))
			} else {
				errs = append(errs, l.n.Firewall.RemovePeer(old.Addr4))
			}
		}
		if l.n.DNS != nil && l.dnsBuilt {
			// Names and addresses never change after a peer is made: only
			// a new or a deleted peer changes the zone.
			switch {
			case c.exists && !had:
				for _, r := range plan.PeerRecords(c.p) {
					errs = append(errs, l.n.DNS.PutRecord(r))
				}
			case !c.exists:
				for _, r := range plan.PeerRecords(old) {
					errs = append(errs, l.n.DNS.RemoveRecord(r))
				}
			}
		}
		if c.exists {
			l.applied[c.name] = c.p
		} else {
			delete(l.applied, c.name)
		}
	}
	if l.usBase != nil {
		if us := userspaceOf(l.dev); us != nil {
			ps := make([]plan.Peer, 0, len(l.applied))
			for _, p := range l.applied {
				ps = append(ps, p)
			}
			errs = append(errs, us.SetPolicy(plan.UserspacePolicy(*l.usBase, ps)))
		}
	}
	return errors.Join(errs...)
}

// userspaceOf is the device's userspace stack in netstack mode, else nil.
func userspaceOf(dev wireguard.Device) wireguard.Userspace {
	if u, ok := dev.(interface{ Userspace() wireguard.Userspace }); ok {
		return u.Userspace()
	}
	return nil
}

// listen (re)opens the cell's own services on its tunnel addresses when they
// changed.
func (l *Loop) listen(addrs []netip.Addr) error {
	if l.n.Listen == nil || slices.Equal(addrs, l.listened) {
		return nil
	}
	if l.listener != nil {
		l.listener.Close()
		l.listener, l.listened = nil, nil
	}
	c, err := l.n.Listen(l.dev, addrs)
	if err != nil {
		return fmt.Errorf("serving on the tunnel addresses: %w", err)
	}
	l.listener, l.listened = c, addrs
	return nil
}

// applyFront gives the front the cell's names and addresses. Its failure is
// its own part's (caddy), never the network's: a cell whose front cannot
// start keeps its tunnel, and the API on loopback.
func (l *Loop) applyFront(f plan.Front) {
	st := storage.PartStatus{State: storage.StateOK}
	if err := l.n.Front.Set(f); err != nil {
		l.log.Error("front", "err", err)
		st = down(err)
	}
	l.publish(func(v *plan.Live) { v.Front = st })
}

// CheckFront is the caddy part's health, from the last apply.
func (l *Loop) CheckFront(context.Context) storage.PartStatus { return l.Live().Front }

// CheckDNS is the dns part's health, from the last apply.
func (l *Loop) CheckDNS(context.Context) storage.PartStatus { return l.Live().DNS }

// DNSStats are the DNS server's counters (zero without one).
func (l *Loop) DNSStats() dns.Stats {
	if l.n.DNS == nil {
		return dns.Stats{}
	}
	return l.n.DNS.Stats()
}

func down(err error) storage.PartStatus {
	return storage.PartStatus{State: storage.StateDown, Reason: err.Error()}
}

// CheckWireGuard is the wireguard part's health, from the last apply.
func (l *Loop) CheckWireGuard(context.Context) storage.PartStatus { return l.Live().WireGuard }

// CheckFirewall is the firewall part's health, from the last apply.
func (l *Loop) CheckFirewall(context.Context) storage.PartStatus { return l.Live().FirewallState }
