// Package peers owns the members' devices on the tunnel: peers (their
// addresses, keys, login, config text and QR code), their routing policy and
// the port forwards to them, and the WireGuard status.
//
// Every change is stored in one transaction with its audit entry and the
// effects other capabilities registered as hooks (a peer added gets its
// accounts, a peer deleted loses them); the commit wakes the reconcile loop,
// and the change answers once the loop has applied it (Network.Sync), so a
// peer created is a peer the tunnel takes.
package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/skip2/go-qrcode"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/cell/plan"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// Network is the running network as peers sees it: the reconcile loop.
type Network interface {
	// Sync waits until the kernel has every change committed before the call.
	Sync(ctx context.Context) error
	// Live is the running network's state, read without waiting.
	Live() plan.Live
	// Stats are the device's peers by public key.
	Stats() map[string]wireguard.PeerStats
}

// Hasher issues a peer's one-time password and what is stored of it (the
// accounts capability's).
type Hasher interface {
	OneTime() (password, key string)
}

// Auditor writes a change's audit entry in the transaction that stores it.
type Auditor interface {
	Within(e storage.Entry) storage.Within
}

// Hook runs inside the transaction that adds or deletes a peer; an error rolls
// the change back. The root registers the hooks of other capabilities.
type Hook func(tx *storage.Tx, p storage.Peer) error

// Peers is the capability.
type Peers struct {
	db     *storage.DB
	hasher Hasher
	audit  Auditor
	net    Network
	now    func() time.Time
	rand   io.Reader

	mu        sync.Mutex // serialises peer creation: the public key check and the store
	onCreate  []Hook
	onDelete  []Hook
	cellKeyFn func() (wireguard.Key, error)
	ownTCP    []int // OwnTCPPorts
	history   *history
}

// Options are what the root hands the capability.
type Options struct {
	DB      *storage.DB
	Hasher  Hasher
	Audit   Auditor
	Network Network
	Now     func() time.Time
	Rand    io.Reader
	// CellKey returns the cell's WireGuard private key (created once).
	CellKey func() (wireguard.Key, error)
	// OwnTCPPorts are the TCP ports the cell listens on itself (the API's,
	// the front's), which no forward may take; nil: 80, 443 and 3000.
	OwnTCPPorts []int
	// HistoryInterval is how often the traffic history samples the counters
	// (history.go); zero: HistoryInterval.
	HistoryInterval time.Duration
}

// New returns the capability.
func New(o Options) *Peers {
	if o.HistoryInterval <= 0 {
		o.HistoryInterval = HistoryInterval
	}
	return &Peers{db: o.DB, hasher: o.Hasher, audit: o.Audit, net: o.Network, now: o.Now, rand: o.Rand, cellKeyFn: o.CellKey, ownTCP: o.OwnTCPPorts,
		history: newHistory(o.HistoryInterval, HistoryKeep)}
}

// OnCreate registers a hook run in the transaction that adds a peer.
func (c *Peers) OnCreate(h Hook) { c.onCreate = append(c.onCreate, h) }

// OnDelete registers a hook run in the transaction that deletes a peer.
func (c *Peers) OnDelete(h Hook) { c.onDelete = append(c.onDelete, h) }

func (c *Peers) randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.rand, b); err != nil {
		panic("peers: the random source failed: " + err.Error())
	}
	return b
}

func (c *Peers) cellKey() (wireguard.Key, error) { return c.cellKeyFn() }

// within is the storing transaction's tail: the hooks, then the audit entry.
func (c *Peers) within(hooks []Hook, p *storage.Peer, audit storage.Entry) storage.Within {
	aw := c.audit.Within(audit)
	return func(tx *storage.Tx) error {
		for _, h := range hooks {
			if err := h(tx, *p); err != nil {
				return err
			}
		}
		return aw(tx)
	}
}

// applied waits for the kernel to take the stored change; a failure there is a
// 503 that says the change is stored.
func (c *Peers) applied(ctx context.Context, what string) error {
	if err := c.net.Sync(ctx); err != nil {
		return fault.Errorf(fault.ErrUnavailable, "apply_failed", "%s is stored but the tunnel did not take it: %v", what, err)
	}
	return nil
}

// subnets reads the tunnel's networks.
func (c *Peers) subnets() (config.Subnets, config.Doc, error) {
	d, found, err := config.Load(c.db)
	if err != nil {
		return config.Subnets{}, nil, err
	}
	if !found {
		return config.Subnets{}, nil, config.ErrSetupNeeded()
	}
	sn, err := d.Network().Subnets()
	return sn, d, err
}

// PeerView is a peer as the API shows it: no secret, live counters.
type PeerView struct {
	Name          string     `json:"name"`
	Description   string     `json:"description"`
	IPv4          netip.Addr `json:"ipv4"`
	IPv6          netip.Addr `json:"ipv6"`
	PublicKey     string     `json:"public_key"`
	KeySource     string     `json:"key_source"` // "cell" (generated, in the vault) or "user"
	Route         string     `json:"route"`
	Enabled       bool       `json:"enabled"`
	Policy        Policy     `json:"policy"`
	CreatedAt     time.Time  `json:"created_at"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       uint64     `json:"rx_bytes"`
	TxBytes       uint64     `json:"tx_bytes"`
	// ConfigOutdated: the config this peer was last given names an endpoint
	// that is no longer the cell's (network.endpoint, the domain or the port
	// changed); send it again (its QR or file).
	ConfigOutdated bool `json:"config_outdated"`
}

// NewPeer is the body of POST /api/peers.
type NewPeer struct {
	Name        string `json:"name"`        // required: a DNS label
	Description string `json:"description"` // optional
	PublicKey   string `json:"public_key"`  // optional: the user's own key; the cell makes a pair otherwise
	Route       string `json:"route"`       // optional: full (default) or split
	Enabled     *bool  `json:"enabled"`     // optional: default true
}

// PeerChange is the body of PUT /api/peers/<name>; absent fields stay.
type PeerChange struct {
	Enabled     *bool   `json:"enabled"`
	Route       *string `json:"route"`
	Description *string `json:"description"`
}

// CreatedPeer is the answer to POST /api/peers: the peer and the one-time
// password of its own login, shown this once.
type CreatedPeer struct {
	Peer            PeerView `json:"peer"`
	Username        string   `json:"username"`
	OneTimePassword string   `json:"one_time_password"`
}

func checkDescription(s string) error {
	if len(s) > 256 || !utf8.ValidString(s) {
		return fault.Invalid("invalid_description", "description must be at most 256 bytes of UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fault.Invalid("invalid_description", "description must not contain control characters")
		}
	}
	return nil
}

func checkRoute(s string) error {
	if s != storage.RouteFull && s != storage.RouteSplit {
		return fault.Invalid("invalid_route", "route must be \"full\" (all traffic) or \"split\" (the cell's networks only), not %s", names.Quote(s))
	}
	return nil
}

func (c *Peers) peerName(name string) error {
	if !names.ValidLabel(name) {
		return fault.Errorf(fault.ErrNotFound, "peer_not_found", "no peer named %s", names.Quote(name))
	}
	return nil
}

// CreatePeer adds a peer: its addresses, keys, login and kernel state.
func (c *Peers) CreatePeer(ctx context.Context, in NewPeer, audit storage.Entry) (CreatedPeer, error) {
	var out CreatedPeer
	if err := names.CheckLabel("name", in.Name); err != nil {
		return out, err
	}
	if err := checkDescription(in.Description); err != nil {
		return out, err
	}
	if in.Route == "" {
		in.Route = storage.RouteFull
	}
	if err := checkRoute(in.Route); err != nil {
		return out, err
	}
	secrets := map[string][]byte{}
	p := storage.Peer{Name: in.Name, Description: in.Description, Route: in.Route, Enabled: true,
		Policy:    storage.PeerPolicy{Internet: storage.Allow, LAN: storage.Allow, Peers: storage.Deny},
		CreatedAt: c.now().UTC()}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	if in.PublicKey != "" {
		k, err := plan.ParseKey(in.PublicKey)
		if err != nil || k == (wireguard.Key{}) {
			return out, fault.Invalid("invalid_public_key", "public_key must be a WireGuard public key: 44 characters of base64")
		}
		p.PublicKey = k.String()
	} else {
		priv := plan.PrivateKey(c.randomBytes(32))
		p.PublicKey, p.KeyGenerated = priv.PublicKey().String(), true
		secrets[storage.PeerSecret(in.Name, storage.SecretPrivateKey)] = priv[:]
	}
	psk := c.randomBytes(32)
	secrets[storage.PeerSecret(in.Name, storage.SecretPresharedKey)] = psk
	// The one-time password: 128 random bits, stored as its SHA-256 (no slow
	// hash: nothing about it is guessable); the first login with it must set
	// the peer's own password (cell/accounts).
	password, key := c.hasher.OneTime()
	login := storage.User{Username: in.Name, Role: storage.RolePeer, OneTimeHash: key, CreatedAt: p.CreatedAt, PasswordAt: p.CreatedAt}

	c.mu.Lock()
	defer c.mu.Unlock()
	if !p.KeyGenerated { // a generated key is new; a brought one may not be
		if err := c.publicKeyFree(p.PublicKey); err != nil {
			return out, err
		}
	}
	var sn config.Subnets
	subnets := func(tx *storage.Tx) (netip.Prefix, netip.Prefix, error) {
		d, found, err := config.LoadTx(c.db, tx)
		if err == nil && !found {
			err = config.ErrSetupNeeded()
		}
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, err
		}
		sn, err = d.Network().Subnets()
		p.ConfigEndpoint = d.Endpoint().String() // the config made now names it
		return sn.V4, sn.V6, err
	}
	audit.TargetType, audit.TargetID, audit.Result = "peer", in.Name, "ok"
	audit.Details = map[string]string{"key_source": "user", "route": p.Route}
	if p.KeyGenerated {
		audit.Details["key_source"] = "cell"
	}
	wp := &p
	err := c.db.Peers().CreateIn(wp, subnets, secrets, login, func(tx *storage.Tx) error {
		audit.Details["ipv4"] = wp.IPv4.String()
		return c.within(c.onCreate, wp, audit)(tx)
	})
	switch {
	case errors.Is(err, storage.ErrSubnetFull):
		return out, fault.Errorf(fault.ErrConflict, "subnet_full", "every address of %s is in use: delete a peer or choose a larger subnet_v4", sn.V4)
	case errors.Is(err, storage.ErrExists):
		return out, fault.Errorf(fault.ErrConflict, "name_taken", "the name %q is taken (by a peer or an account)", in.Name)
	case err != nil:
		return out, err
	}
	if err := c.applied(ctx, "the peer"); err != nil {
		return out, err
	}
	return CreatedPeer{Peer: c.viewOf(p, nil, p.ConfigEndpoint), Username: in.Name, OneTimePassword: password}, nil
}

// publicKeyFree refuses a public key another peer (or the cell) has. It
// runs under c.mu so that two creates cannot both take one key.
func (c *Peers) publicKeyFree(pub string) error {
	if k, err := c.cellKey(); err == nil && k.PublicKey().String() == pub {
		return fault.Errorf(fault.ErrConflict, "public_key_taken", "that public key is the cell's own")
	}
	peers, err := c.db.Peers().List()
	if err != nil {
		return err
	}
	for _, q := range peers {
		if q.PublicKey == pub {
			return fault.Errorf(fault.ErrConflict, "public_key_taken", "peer %q already uses that public key", q.Name)
		}
	}
	return nil
}

// UpdatePeer changes enabled, route or description.
func (c *Peers) UpdatePeer(ctx context.Context, name string, ch PeerChange, audit storage.Entry) (PeerView, error) {
	if err := c.peerName(name); err != nil {
		return PeerView{}, err
	}
	if ch.Route != nil {
		if err := checkRoute(*ch.Route); err != nil {
			return PeerView{}, err
		}
	}
	if ch.Description != nil {
		if err := checkDescription(*ch.Description); err != nil {
			return PeerView{}, err
		}
	}
	if ch.Enabled == nil && ch.Route == nil && ch.Description == nil {
		return PeerView{}, fault.Invalid("empty_change", "give at least one of enabled, route, description")
	}
	var changed []string
	if ch.Enabled != nil {
		changed = append(changed, "enabled")
	}
	if ch.Route != nil {
		changed = append(changed, "route")
	}
	if ch.Description != nil {
		changed = append(changed, "description")
	}
	audit.TargetType, audit.TargetID, audit.Result = "peer", name, "ok"
	audit.Details = map[string]string{"changed": strings.Join(changed, ",")}
	p, err := c.db.Peers().Update(name, func(p *storage.Peer) error {
		if ch.Enabled != nil {
			p.Enabled = *ch.Enabled
		}
		if ch.Route != nil {
			p.Route = *ch.Route
		}
		if ch.Description != nil {
			p.Description = *ch.Description
		}
		return nil
	}, c.audit.Within(audit))
	if err != nil {
		return PeerView{}, peerErr(name, err)
	}
	if err := c.applied(ctx, "the change"); err != nil {
		return PeerView{}, err
	}
	return c.viewOf(p, nil, c.endpoint()), nil
}

// DeletePeer removes a peer and everything of it: the device's peer, its
// firewall elements and forwards, its vault secrets, its login and sessions.
func (c *Peers) DeletePeer(ctx context.Context, name string, audit storage.Entry) error {
	if err := c.peerName(name); err != nil {
		return err
	}
	audit.TargetType, audit.TargetID, audit.Result = "peer", name, "ok"
	var gone storage.Peer
	_, _, err := c.db.Peers().Delete(name, func(tx *storage.Tx) error {
		p, err := c.db.Peers().GetTx(tx, name)
		if err == nil {
			gone = p
		}
		return c.within(c.onDelete, &gone, audit)(tx)
	})
	if err != nil {
		return peerErr(name, err)
	}
	return c.applied(ctx, "the deletion")
}

func peerErr(name string, err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return fault.Errorf(fault.ErrNotFound, "peer_not_found", "no peer named %s", names.Quote(name))
	}
	return err
}

// Peer returns one peer with its live counters.
func (c *Peers) Peer(name string) (PeerView, error) {
	if err := c.peerName(name); err != nil {
		return PeerView{}, err
	}
	p, err := c.db.Peers().Get(name)
	if err != nil {
		return PeerView{}, peerErr(name, err)
	}
	return c.viewOf(p, c.stats(), c.endpoint()), nil
}

// ListPeers returns every peer with its live counters.
func (c *Peers) ListPeers() ([]PeerView, error) {
	ps, err := c.db.Peers().List()
	if err != nil {
		return nil, err
	}
	st, ep := c.stats(), c.endpoint()
	out := make([]PeerView, 0, len(ps))
	for _, p := range ps {
		out = append(out, c.viewOf(p, st, ep))
	}
	return out, nil
}

func (c *Peers) stats() map[string]wireguard.PeerStats { return c.net.Stats() }

// endpoint is the cell's endpoint now ("" before setup).
func (c *Peers) endpoint() string {
	d, found, err := config.Load(c.db)
	if err != nil || !found {
		return ""
	}
	return d.Endpoint().String()
}

// OutdatedConfigs names the peers whose last config names another endpoint
// than the cell's now: the ones whose configs must be sent again.
func (c *Peers) OutdatedConfigs() ([]string, error) {
	ps, err := c.db.Peers().List()
	if err != nil {
		return nil, err
	}
	ep := c.endpoint()
	out := []string{}
	for _, p := range ps {
		if ep != "" && p.ConfigEndpoint != ep {
			out = append(out, p.Name)
		}
	}
	return out, nil
}

// AdoptEndpoints gives the peers made before the cell kept track of the
// endpoint their configs name the cell's endpoint now: the one they were
// given (an upgrade does not change the config).
func (c *Peers) AdoptEndpoints() error {
	ep := c.endpoint()
	if ep == "" {
		return nil
	}
	ps, err := c.db.Peers().List()
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.ConfigEndpoint == "" {
			if err := c.db.Peers().SetConfigEndpoint(p.Name, ep); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Peers) viewOf(p storage.Peer, st map[string]wireguard.PeerStats, endpoint string) PeerView {
	v := PeerView{Name: p.Name, Description: p.Description, IPv4: p.IPv4, IPv6: p.IPv6, PublicKey: p.PublicKey,
		KeySource: "user", Route: p.Route, Enabled: p.Enabled, Policy: policyOf(p.Policy), CreatedAt: p.CreatedAt,
		ConfigOutdated: endpoint != "" && p.ConfigEndpoint != endpoint}
	if p.KeyGenerated {
		v.KeySource = "cell"
	}
	if s, ok := st[p.PublicKey]; ok {
		if !s.LastHandshake.IsZero() {
			t := s.LastHandshake.UTC()
			v.LastHandshake = &t
		}
		v.RxBytes, v.TxBytes = s.RxBytes, s.TxBytes
	}
	return v
}

// PeerConfig is the peer's wg-quick file: what the WireGuard apps import.
func (c *Peers) PeerConfig(name string) (string, error) {
	if err := c.peerName(name); err != nil {
		return "", err
	}
	p, err := c.db.Peers().Get(name)
	if err != nil {
		return "", peerErr(name, err)
	}
	sn, doc, err := c.subnets()
	if err != nil {
		return "", err
	}
	key, err := c.cellKey()
	if err != nil {
		return "", err
	}
	psk, err := c.db.Vault.Get(storage.PeerSecret(name, storage.SecretPresharedKey))
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	b.WriteString("[Interface]\n")
	if p.KeyGenerated {
		priv, err := c.db.Vault.Get(storage.PeerSecret(name, storage.SecretPrivateKey))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "PrivateKey = %s\n", wireguard.Key(priv))
	} else {
		fmt.Fprintf(&b, "# PrivateKey: add the line \"PrivateKey = ...\" with the private key of %s,\n# which never left your device.\n", p.PublicKey)
	}
	addrs := []string{netip.PrefixFrom(p.IPv4, 32).String()}
	dns := []string{sn.Cell4.String()}
	if p.IPv6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(p.IPv6, 128).String())
		dns = append(dns, sn.Cell6.String())
	}
	fmt.Fprintf(&b, "Address = %s\n", strings.Join(addrs, ", "))
	fmt.Fprintf(&b, "DNS = %s\n", strings.Join(dns, ", "))
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", key.PublicKey())
	fmt.Fprintf(&b, "PresharedKey = %s\n", wireguard.Key(psk))
	ep := doc.Endpoint().String()
	fmt.Fprintf(&b, "Endpoint = %s\n", ep)
	allowed := []string{"0.0.0.0/0", "::/0"}
	if p.Route == storage.RouteSplit {
		allowed = []string{sn.V4.String()}
		if sn.V6.IsValid() {
			allowed = append(allowed, sn.V6.String())
		}
		for _, l := range c.net.Live().LAN {
			allowed = append(allowed, l.Masked().String())
		}
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
	b.WriteString("PersistentKeepalive = 25\n")
	// This is the config the peer now has: it names ep.
	if err := c.db.Peers().SetConfigEndpoint(name, ep); err != nil {
		return "", err
	}
	return b.String(), nil
}

// PeerQR is the peer's config as a QR code: "png" (the default) or "svg".
func (c *Peers) PeerQR(name, format string) (body []byte, contentType string, err error) {
	if format == "" {
		format = "png"
	}
	if format != "png" && format != "svg" {
		return nil, "", fault.Invalid("invalid_format", "format must be png or svg, not %s", names.Quote(format))
	}
	text, err := c.PeerConfig(name)
	if err != nil {
		return nil, "", err
	}
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return nil, "", err
	}
	if format == "png" {
		png, err := q.PNG(512)
		return png, "image/png", err
	}
	return qrSVG(q.Bitmap()), "image/svg+xml", nil
}

// qrSVG draws a QR bitmap (which includes its quiet zone) as SVG squares.
func qrSVG(bm [][]bool) []byte {
	n := len(bm)
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" shape-rendering="crispEdges">`, n, n, n*8, n*8)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y, row := range bm {
		for x, on := range row {
			if on {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	b.WriteByte('\n')
	return b.Bytes()
}

// WireGuardStatus is GET /api/wireguard/status.
type WireGuardStatus struct {
	Running   bool              `json:"running"`
	Mode      string            `json:"mode"`
	Interface string            `json:"interface"`
	Port      int               `json:"port"`
	PublicKey string            `json:"public_key"`
	Peers     []WireGuardPeerSt `json:"peers"`
}

// WireGuardPeerSt is one peer's live state.
type WireGuardPeerSt struct {
	Name          string     `json:"name"`
	PublicKey     string     `json:"public_key"`
	Endpoint      string     `json:"endpoint,omitempty"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       uint64     `json:"rx_bytes"`
	TxBytes       uint64     `json:"tx_bytes"`
}

// WireGuardStatus reports the device and every peer on it.
func (c *Peers) WireGuardStatus() (WireGuardStatus, error) {
	st := WireGuardStatus{Peers: []WireGuardPeerSt{}}
	live := c.net.Live()
	st.Mode, st.Interface, st.Running = live.Mode, live.Interface, live.Running
	if d, found, err := config.Load(c.db); err == nil && found {
		st.Port = d.Network().WGPort
	}
	key, err := c.cellKey()
	if err != nil {
		return st, err
	}
	st.PublicKey = key.PublicKey().String()
	peers, err := c.db.Peers().List()
	if err != nil {
		return st, err
	}
	stats := c.stats()
	for _, p := range peers {
		ps := WireGuardPeerSt{Name: p.Name, PublicKey: p.PublicKey}
		if s, ok := stats[p.PublicKey]; ok {
			if s.Endpoint.IsValid() {
				ps.Endpoint = s.Endpoint.String()
			}
			if !s.LastHandshake.IsZero() {
				t := s.LastHandshake.UTC()
				ps.LastHandshake = &t
			}
			ps.RxBytes, ps.TxBytes = s.RxBytes, s.TxBytes
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}
