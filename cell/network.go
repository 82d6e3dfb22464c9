package cell

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// Network is the kernel side the cell drives for its peers. The daemon builds
// it from its flags: in TUN mode all of it, in netstack mode only Open.
type Network struct {
	// Mode is "tun" or "netstack", for the status.
	Mode string
	// Open creates the WireGuard device once the cell knows its tunnel
	// addresses (after setup); it is called again if they change.
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
}

// netState is the cell's running network. mu serialises every peer change
// (store then apply) and every reconcile, so the kernel always moves from one
// stored state to the next.
type netState struct {
	mu      sync.Mutex
	n       *Network
	dev     wireguard.Device
	addrs   []netip.Addr // the device's addresses (netstack mode bakes them in)
	applied []byte       // the config the kernel was last built from, JSON
	wan     string
	lan     []netip.Prefix
	fwBuilt bool
	lastErr error
}

const cellKeyName = "wireguard/private-key"

// StartNetwork attaches the kernel side and builds it from the database. A
// cell that is not set up yet has nothing to build; RunNetwork builds it once
// setup is done.
func (c *Cell) StartNetwork(n Network) error {
	if n.Interface == "" {
		n.Interface = "wg0"
	}
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	c.net.n = &n
	c.RegisterPart("wireguard", c.checkWireGuard)
	if n.Firewall != nil {
		c.RegisterPart("firewall", c.checkFirewall)
	}
	return c.reconcileLocked(true)
}

// RunNetwork rebuilds the kernel state whenever the stored config changes
// (setup completing, a new port or subnet), checking every interval, until
// ctx ends. StopNetwork, after the API has drained, closes the device.
func (c *Cell) RunNetwork(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.net.mu.Lock()
			if c.net.n != nil {
				if err := c.reconcileLocked(false); err != nil {
					c.netLog().Error("reconcile", "err", err)
				}
			}
			c.net.mu.Unlock()
		}
	}
}

// StopNetwork closes the device and the netlink connections; the firewall
// table stays in the kernel (a restarting cell keeps filtering).
func (c *Cell) StopNetwork() {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.net.n == nil {
		return
	}
	if c.net.dev != nil {
		c.net.dev.Close()
		c.net.dev = nil
	}
	if c.net.n.Firewall != nil {
		c.net.n.Firewall.Close()
	}
	if c.net.n.Links != nil {
		c.net.n.Links.Close()
	}
	c.net.n = nil
}

// ReconcileNetwork rebuilds all kernel state from the database now.
func (c *Cell) ReconcileNetwork() error {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.net.n == nil {
		return nil
	}
	return c.reconcileLocked(true)
}

// cellKey returns the cell's WireGuard private key, creating it once.
func (c *Cell) cellKey() (wireguard.Key, error) {
	raw, err := c.db.Vault.Get(cellKeyName)
	if errors.Is(err, storage.ErrNotFound) {
		k := newKey(c.randomBytes(32))
		if err := c.db.Vault.Put(cellKeyName, k[:]); err != nil {
			return k, err
		}
		return k, nil
	}
	if err != nil {
		return wireguard.Key{}, err
	}
	if len(raw) != 32 {
		return wireguard.Key{}, errors.New("cell: the WireGuard key in the vault is damaged")
	}
	return wireguard.Key(raw), nil
}

// newKey clamps 32 random bytes into a Curve25519 private key.
func newKey(b []byte) wireguard.Key {
	var k wireguard.Key
	copy(k[:], b)
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k
}

// subnets are the cell's tunnel networks and its own addresses in them.
type subnets struct {
	v4, v6         netip.Prefix
	cell4, cell6   netip.Addr
	port           int
	domain, wanCfg string
}

func subnetsOf(cfg Config) (subnets, error) {
	var s subnets
	var err error
	if s.v4, err = netip.ParsePrefix(cfg.Network.SubnetV4); err != nil {
		return s, err
	}
	s.cell4 = s.v4.Masked().Addr().Next()
	if cfg.Network.SubnetV6 != "" {
		if s.v6, err = netip.ParsePrefix(cfg.Network.SubnetV6); err != nil {
			return s, err
		}
		s.cell6 = s.v6.Masked().Addr().Next()
	}
	s.port, s.domain, s.wanCfg = cfg.Network.WGPort, cfg.Cell.Domain, cfg.Network.WANInterface
	return s, nil
}

// reconcileLocked builds the device, the links and the firewall from the
// database. With force it applies even when the config did not change (at
// start, when the kernel may hold anything). It goes on past a failing part
// and returns every error. c.net.mu must be held.
func (c *Cell) reconcileLocked(force bool) error {
	n := c.net.n
	cfg, err := c.Config()
	if errors.Is(err, ErrSetupNeeded) {
		return nil
	}
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(cfg)
	if !force && c.net.dev != nil && slices.Equal(raw, c.net.applied) {
		return nil
	}
	sn, peers, fwds, err := c.stored(cfg)
	if err != nil {
		return err
	}
	key, err := c.cellKey()
	if err != nil {
		return err
	}
	var errs []error
	addrs := []netip.Addr{sn.cell4}
	if sn.cell6.IsValid() {
		addrs = append(addrs, sn.cell6)
	}
	if c.net.dev != nil && !slices.Equal(addrs, c.net.addrs) && n.Links == nil {
		c.net.dev.Close() // netstack: the addresses are part of the device
		c.net.dev = nil
	}
	if c.net.dev == nil {
		dev, err := n.Open(addrs)
		if err != nil {
			c.net.lastErr = err
			return fmt.Errorf("wireguard device: %w", err)
		}
		c.net.dev, c.net.addrs = dev, addrs
	}
	wcfg := wireguard.Config{PrivateKey: key, ListenPort: sn.port}
	for _, p := range peers {
		if !p.Enabled {
			continue
		}
		wp, err := c.wgPeer(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		wcfg.Peers = append(wcfg.Peers, wp)
	}
	if err := c.net.dev.Set(wcfg); err != nil {
		errs = append(errs, err)
	}
	if n.Links != nil {
		lc := links.Config{Interface: n.Interface, MTU: 1420, Forwarding: true,
			Addresses: []netip.Prefix{netip.PrefixFrom(sn.cell4, sn.v4.Bits())}}
		if sn.cell6.IsValid() {
			lc.Addresses = append(lc.Addresses, netip.PrefixFrom(sn.cell6, sn.v6.Bits()))
		}
		if err := n.Links.Set(lc); err != nil {
			errs = append(errs, err)
		}
	}
	c.net.wan = c.wanLocked(sn)
	c.net.lan = n.LAN
	if len(n.LAN) == 0 && n.LANOf != nil && c.net.wan != "" {
		if c.net.lan, err = n.LANOf(c.net.wan); err != nil {
			c.netLog().Warn("no LAN networks: the lan policy has nothing to act on", "wan", c.net.wan, "err", err)
		}
	}
	if n.Firewall != nil {
		rs := c.rulesetLocked(sn, peers, fwds)
		if err := n.Firewall.Set(rs); err != nil {
			errs = append(errs, err)
		} else {
			c.net.fwBuilt = true
		}
	}
	err = errors.Join(errs...)
	c.net.lastErr = err
	if err == nil {
		c.net.applied = raw
		c.netLog().Info("network built from the database", "peers", len(peers), "forwards", len(fwds), "wan", c.net.wan)
	}
	return err
}

func (c *Cell) wanLocked(sn subnets) string {
	n := c.net.n
	switch {
	case n.WAN != "":
		return n.WAN
	case sn.wanCfg != "" && sn.wanCfg != "auto":
		return sn.wanCfg
	case n.DefaultWAN != nil:
		w, err := n.DefaultWAN()
		if err != nil {
			c.netLog().Warn("no WAN interface: peers reach no internet", "err", err)
		}
		return w
	}
	return ""
}

func (c *Cell) wgPeer(p storage.Peer) (wireguard.Peer, error) {
	pub, err := parseKey(p.PublicKey)
	if err != nil {
		return wireguard.Peer{}, fmt.Errorf("peer %q: public key: %w", p.Name, err)
	}
	psk, err := c.db.Vault.Get(storage.PeerSecret(p.Name, storage.SecretPresharedKey))
	if err != nil {
		return wireguard.Peer{}, fmt.Errorf("peer %q: %w", p.Name, err)
	}
	wp := wireguard.Peer{PublicKey: pub, PresharedKey: wireguard.Key(psk),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.IPv4, 32)}}
	if p.IPv6.IsValid() {
		wp.AllowedIPs = append(wp.AllowedIPs, netip.PrefixFrom(p.IPv6, 128))
	}
	return wp, nil
}

func fwPeer(p storage.Peer) firewall.Peer {
	return firewall.Peer{Addr4: p.IPv4, Addr6: p.IPv6, Enabled: p.Enabled,
		Internet: p.Policy.Internet == storage.Allow, LAN: p.Policy.LAN == storage.Allow, Peers: p.Policy.Peers == storage.Allow}
}

func (c *Cell) rulesetLocked(sn subnets, peers []storage.Peer, fwds []storage.Forward) firewall.Ruleset {
	n := c.net.n
	rs := firewall.Ruleset{WGInterface: n.Interface, WGPort: uint16(sn.port), WAN: c.net.wan,
		Tunnel4: sn.v4.Masked(), Tunnel6: sn.v6.Masked(), LAN: c.net.lan, LocalTCP: n.LocalTCP, LocalUDP: n.LocalUDP}
	byName := map[string]storage.Peer{}
	for _, p := range peers {
		rs.Peers = append(rs.Peers, fwPeer(p))
		byName[p.Name] = p
	}
	for _, f := range fwds {
		if p, ok := byName[f.Peer]; ok {
			rs.Forwards = append(rs.Forwards, firewall.Forward{Proto: f.Proto, Port: f.Port, To: p.IPv4, ToPort: f.ToPort})
		}
	}
	return rs
}

// applyPeerLocked brings one stored peer's kernel state in line: the
// constant-cost path after a change to that peer. A peer that is gone from
// the store (deleted) is removed. c.net.mu must be held.
func (c *Cell) applyPeerLocked(p storage.Peer, exists bool) error {
	n := c.net.n
	if n == nil || c.net.dev == nil {
		return nil // no network attached, or not built yet: RunNetwork will
	}
	var errs []error
	pub, err := parseKey(p.PublicKey)
	if err != nil {
		return err
	}
	if exists && p.Enabled {
		wp, err := c.wgPeer(p)
		if err == nil {
			err = c.net.dev.PutPeer(wp)
		}
		errs = append(errs, err)
	} else {
		errs = append(errs, c.net.dev.RemovePeer(pub))
	}
	if n.Firewall != nil && c.net.fwBuilt {
		if exists {
			errs = append(errs, n.Firewall.PutPeer(fwPeer(p)))
		} else {
			errs = append(errs, n.Firewall.RemovePeer(p.IPv4))
		}
	}
	return errors.Join(errs...)
}

// applyFirewallLocked rebuilds the firewall from the store (forwards are
// part of its structure). c.net.mu must be held.
func (c *Cell) applyFirewallLocked() error {
	n := c.net.n
	if n == nil || n.Firewall == nil || c.net.dev == nil {
		return nil
	}
	cfg, err := c.Config()
	if err != nil {
		return err
	}
	sn, peers, fwds, err := c.stored(cfg)
	if err != nil {
		return err
	}
	return n.Firewall.Set(c.rulesetLocked(sn, peers, fwds))
}

// stored reads what the kernel state is built from: the subnets of cfg,
// every peer and every forward.
func (c *Cell) stored(cfg Config) (subnets, []storage.Peer, []storage.Forward, error) {
	sn, err := subnetsOf(cfg)
	if err != nil {
		return sn, nil, nil, err
	}
	peers, err := c.db.Peers().List()
	if err != nil {
		return sn, nil, nil, err
	}
	fwds, err := c.db.Forwards().List()
	return sn, peers, fwds, err
}

func parseKey(s string) (wireguard.Key, error) {
	var k wireguard.Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, errors.New("not a base64 WireGuard key")
	}
	copy(k[:], b)
	return k, nil
}

func (c *Cell) checkWireGuard(context.Context) storage.PartStatus {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	switch {
	case c.net.n == nil:
		return storage.PartStatus{State: StateNotConfigured, Reason: "no network attached"}
	case c.net.dev == nil && c.net.lastErr != nil:
		return storage.PartStatus{State: StateDown, Reason: c.net.lastErr.Error()}
	case c.net.dev == nil:
		return storage.PartStatus{State: StateNotConfigured, Reason: "waiting for setup"}
	case c.net.lastErr != nil:
		return storage.PartStatus{State: StateDegraded, Reason: c.net.lastErr.Error()}
	}
	return storage.PartStatus{State: StateOK}
}

func (c *Cell) checkFirewall(context.Context) storage.PartStatus {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if !c.net.fwBuilt {
		return storage.PartStatus{State: StateNotConfigured, Reason: "not built yet"}
	}
	if c.net.wan == "" {
		return storage.PartStatus{State: StateDegraded, Reason: "no WAN interface: peers reach no internet"}
	}
	return storage.PartStatus{State: StateOK}
}

func (c *Cell) netLog() *slog.Logger { return c.logs.Logger("network") }
