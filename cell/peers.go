package cell

import (
	"bytes"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/skip2/go-qrcode"

	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// Peers: a member's device on the tunnel. Every change stores first (one
// transaction: the peer, its vault secrets, its login) and then applies that
// one peer to the kernel from what was stored, under c.net.mu.

// PeerView is a peer as the API shows it: no secret, live counters.
type PeerView struct {
	Name          string             `json:"name"`
	Description   string             `json:"description"`
	IPv4          netip.Addr         `json:"ipv4"`
	IPv6          netip.Addr         `json:"ipv6"`
	PublicKey     string             `json:"public_key"`
	KeySource     string             `json:"key_source"` // "cell" (generated, in the vault) or "user"
	Route         string             `json:"route"`
	Enabled       bool               `json:"enabled"`
	Policy        storage.PeerPolicy `json:"policy"`
	CreatedAt     time.Time          `json:"created_at"`
	LastHandshake *time.Time         `json:"last_handshake"`
	RxBytes       uint64             `json:"rx_bytes"`
	TxBytes       uint64             `json:"tx_bytes"`
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
		return Invalid("invalid_description", "description must be at most 256 bytes of UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return Invalid("invalid_description", "description must not contain control characters")
		}
	}
	return nil
}

func checkRoute(s string) error {
	if s != storage.RouteFull && s != storage.RouteSplit {
		return Invalid("invalid_route", "route must be \"full\" (all traffic) or \"split\" (the cell's networks only), not %s", quoteShort(s))
	}
	return nil
}

func (c *Cell) peerName(name string) error {
	if !ValidLabel(name) {
		return Errorf(ErrNotFound, "peer_not_found", "no peer named %s", quoteShort(name))
	}
	return nil
}

// CreatePeer adds a peer: its addresses, keys, login and kernel state.
func (c *Cell) CreatePeer(in NewPeer) (CreatedPeer, error) {
	var out CreatedPeer
	if err := checkLabel("name", in.Name); err != nil {
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
	cfg, err := c.Config()
	if err != nil {
		return out, err
	}
	sn, err := subnetsOf(cfg)
	if err != nil {
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
		k, err := parseKey(in.PublicKey)
		if err != nil || k == (wireguard.Key{}) {
			return out, Invalid("invalid_public_key", "public_key must be a WireGuard public key: 44 characters of base64")
		}
		p.PublicKey = k.String()
	} else {
		priv := newKey(c.randomBytes(32))
		p.PublicKey, p.KeyGenerated = priv.PublicKey().String(), true
		secrets[storage.PeerSecret(in.Name, storage.SecretPrivateKey)] = priv[:]
	}
	psk := c.randomBytes(32)
	secrets[storage.PeerSecret(in.Name, storage.SecretPresharedKey)] = psk
	// The one-time password: 128 random bits, hashed like every password.
	password := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(c.randomBytes(16)))
	hash, err := c.hasher.Hash(password)
	if err != nil {
		return out, err
	}
	login := storage.User{Username: in.Name, Role: storage.RolePeer, PasswordHash: hash, CreatedAt: p.CreatedAt, PasswordAt: p.CreatedAt}

	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if !p.KeyGenerated { // a generated key is new; a brought one may not be
		if err := c.publicKeyFree(p.PublicKey); err != nil {
			return out, err
		}
	}
	err = c.db.Peers().Create(&p, sn.v4.Masked(), sn.v6.Masked(), secrets, login)
	switch {
	case errors.Is(err, storage.ErrSubnetFull):
		return out, Errorf(ErrConflict, "subnet_full", "every address of %s is in use: delete a peer or choose a larger subnet_v4", sn.v4)
	case errors.Is(err, storage.ErrExists):
		return out, Errorf(ErrConflict, "name_taken", "the name %q is taken (by a peer or an account)", in.Name)
	case err != nil:
		return out, err
	}
	if err := c.applyPeerLocked(p, true); err != nil {
		c.netLog().Error("apply new peer", "peer", p.Name, "err", err)
		return out, Errorf(ErrUnavailable, "apply_failed", "the peer is stored but the tunnel did not take it: %v", err)
	}
	c.netLog().Info("peer added", "peer", p.Name, "ipv4", p.IPv4)
	return CreatedPeer{Peer: c.viewOf(p, nil), Username: in.Name, OneTimePassword: password}, nil
}

// publicKeyFree refuses a public key another peer (or the cell) has. It
// runs under c.net.mu so that two creates cannot both take one key.
func (c *Cell) publicKeyFree(pub string) error {
	if k, err := c.cellKey(); err == nil && k.PublicKey().String() == pub {
		return Errorf(ErrConflict, "public_key_taken", "that public key is the cell's own")
	}
	peers, err := c.db.Peers().List()
	if err != nil {
		return err
	}
	for _, q := range peers {
		if q.PublicKey == pub {
			return Errorf(ErrConflict, "public_key_taken", "peer %q already uses that public key", q.Name)
		}
	}
	return nil
}

// UpdatePeer changes enabled, route or description.
func (c *Cell) UpdatePeer(name string, ch PeerChange) (PeerView, error) {
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
		return PeerView{}, Invalid("empty_change", "give at least one of enabled, route, description")
	}
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
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
	})
	if err != nil {
		return PeerView{}, peerErr(name, err)
	}
	if err := c.applyPeerLocked(p, true); err != nil {
		return PeerView{}, Errorf(ErrUnavailable, "apply_failed", "the change is stored but the tunnel did not take it: %v", err)
	}
	return c.viewOf(p, nil), nil
}

// DeletePeer removes a peer and everything of it: the device's peer, its
// firewall elements and forwards, its vault secrets, its login and sessions.
func (c *Cell) DeletePeer(name string) error {
	if err := c.peerName(name); err != nil {
		return err
	}
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	p, fwds, err := c.db.Peers().Delete(name)
	if err != nil {
		return peerErr(name, err)
	}
	errs := []error{c.applyPeerLocked(p, false)}
	if len(fwds) > 0 {
		errs = append(errs, c.applyFirewallLocked())
	}
	if err := errors.Join(errs...); err != nil {
		return Errorf(ErrUnavailable, "apply_failed", "the peer is deleted but the kernel did not follow: %v", err)
	}
	c.netLog().Info("peer deleted", "peer", name)
	return nil
}

func peerErr(name string, err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return Errorf(ErrNotFound, "peer_not_found", "no peer named %s", quoteShort(name))
	}
	return err
}

// Peer returns one peer with its live counters.
func (c *Cell) Peer(name string) (PeerView, error) {
	if err := c.peerName(name); err != nil {
		return PeerView{}, err
	}
	p, err := c.db.Peers().Get(name)
	if err != nil {
		return PeerView{}, peerErr(name, err)
	}
	return c.viewOf(p, c.stats()), nil
}

// ListPeers returns every peer with its live counters.
func (c *Cell) ListPeers() ([]PeerView, error) {
	ps, err := c.db.Peers().List()
	if err != nil {
		return nil, err
	}
	st := c.stats()
	out := make([]PeerView, 0, len(ps))
	for _, p := range ps {
		out = append(out, c.viewOf(p, st))
	}
	return out, nil
}

func (c *Cell) stats() map[string]wireguard.PeerStats {
	c.net.mu.Lock()
	dev := c.net.dev
	c.net.mu.Unlock()
	out := map[string]wireguard.PeerStats{}
	if dev == nil {
		return out
	}
	st, err := dev.Stats()
	if err != nil {
		return out
	}
	for _, s := range st {
		out[s.PublicKey.String()] = s
	}
	return out
}

func (c *Cell) viewOf(p storage.Peer, st map[string]wireguard.PeerStats) PeerView {
	v := PeerView{Name: p.Name, Description: p.Description, IPv4: p.IPv4, IPv6: p.IPv6, PublicKey: p.PublicKey,
		KeySource: "user", Route: p.Route, Enabled: p.Enabled, Policy: p.Policy, CreatedAt: p.CreatedAt}
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
func (c *Cell) PeerConfig(name string) (string, error) {
	if err := c.peerName(name); err != nil {
		return "", err
	}
	p, err := c.db.Peers().Get(name)
	if err != nil {
		return "", peerErr(name, err)
	}
	cfg, err := c.Config()
	if err != nil {
		return "", err
	}
	sn, err := subnetsOf(cfg)
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
	dns := []string{sn.cell4.String()}
	if p.IPv6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(p.IPv6, 128).String())
		dns = append(dns, sn.cell6.String())
	}
	fmt.Fprintf(&b, "Address = %s\n", strings.Join(addrs, ", "))
	fmt.Fprintf(&b, "DNS = %s\n", strings.Join(dns, ", "))
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", key.PublicKey())
	fmt.Fprintf(&b, "PresharedKey = %s\n", wireguard.Key(psk))
	host := sn.domain
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	fmt.Fprintf(&b, "Endpoint = %s:%d\n", host, sn.port)
	allowed := []string{"0.0.0.0/0", "::/0"}
	if p.Route == storage.RouteSplit {
		allowed = []string{sn.v4.Masked().String()}
		if sn.v6.IsValid() {
			allowed = append(allowed, sn.v6.Masked().String())
		}
		c.net.mu.Lock()
		for _, l := range c.net.lan {
			allowed = append(allowed, l.Masked().String())
		}
		c.net.mu.Unlock()
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
	b.WriteString("PersistentKeepalive = 25\n")
	return b.String(), nil
}

// PeerQR is the peer's config as a QR code: "png" (the default) or "svg".
func (c *Cell) PeerQR(name, format string) (body []byte, contentType string, err error) {
	if format == "" {
		format = "png"
	}
	if format != "png" && format != "svg" {
		return nil, "", Invalid("invalid_format", "format must be png or svg, not %s", quoteShort(format))
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

// ServiceCredential is one service's connection info for a peer.
type ServiceCredential struct {
	Service  string `json:"service"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
}

// PeerServiceCredentials lists the peer's accounts in the installed
// services. No service is installed by this firmware yet, so the list is
// empty for every existing peer.
func (c *Cell) PeerServiceCredentials(name string) ([]ServiceCredential, error) {
	if err := c.peerName(name); err != nil {
		return nil, err
	}
	if _, err := c.db.Peers().Get(name); err != nil {
		return nil, peerErr(name, err)
	}
	return []ServiceCredential{}, nil
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
func (c *Cell) WireGuardStatus() (WireGuardStatus, error) {
	st := WireGuardStatus{Peers: []WireGuardPeerSt{}}
	c.net.mu.Lock()
	if c.net.n != nil {
		st.Mode, st.Interface, st.Running = c.net.n.Mode, c.net.n.Interface, c.net.dev != nil
	}
	c.net.mu.Unlock()
	if cfg, err := c.Config(); err == nil {
		st.Port = cfg.Network.WGPort
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
	live := c.stats()
	for _, p := range peers {
		ps := WireGuardPeerSt{Name: p.Name, PublicKey: p.PublicKey}
		if s, ok := live[p.PublicKey]; ok {
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
