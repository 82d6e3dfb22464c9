// Package wireguard owns the cell's WireGuard device (wg0): a userspace
// wireguard-go device on a TUN interface (the appliance) or on gVisor's
// netstack (unprivileged development), configured declaratively through UAPI.
//
// Device is the small interface the rest of the cell sees; Fake is its
// in-memory double for unit tests. In netstack mode the device also has a
// Userspace (package userspace): the forwarding policy and the listeners
// that tun mode leaves to the kernel. All configuration goes through one typed
// place (uapi.go) that writes the UAPI text wireguard-go understands; nothing
// here runs the wg tool.
package wireguard

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pic-cell/cell/netstack/userspace"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Key is a Curve25519 key (private, public or preshared).
type Key = wgtypes.Key

// Config is the whole desired state of the device. Set makes the device match
// it exactly: peers not listed are removed.
type Config struct {
	PrivateKey Key // required
	ListenPort int // required, 1..65535; 0 lets the kernel choose (clients)
	Peers      []Peer
}

// Peer is one WireGuard peer of the device.
type Peer struct {
	PublicKey           Key            // required
	PresharedKey        Key            // optional; the zero key means none
	AllowedIPs          []netip.Prefix // required for traffic to flow
	Endpoint            netip.AddrPort // optional; clients set the cell's
	PersistentKeepalive int            // optional; seconds, 0 is off
}

// PeerStats is the live state of one peer as the device reports it.
type PeerStats struct {
	PublicKey     Key
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero when the peer never completed a handshake
	RxBytes       uint64
	TxBytes       uint64
}

// Device is a WireGuard device the cell configures.
type Device interface {
	// Set makes the device's key, port and peer list equal cfg. Calling it
	// again with the same cfg changes nothing (sessions survive).
	Set(cfg Config) error
	// PutPeer adds or replaces one peer without touching the others: the
	// constant-cost path for a single change.
	PutPeer(p Peer) error
	// RemovePeer removes one peer; removing an absent peer is not an error.
	RemovePeer(pub Key) error
	// Stats reports every configured peer.
	Stats() ([]PeerStats, error)
	// Close tears the device down; calling it again does nothing.
	Close() error
}

// Userspace is what the netstack mode adds to a Device: the cell's own
// services and its forwarding policy live in gVisor's stack, not in the
// kernel (see package userspace for what it forwards and what it cannot).
// WG.Userspace returns it in netstack mode; userspace.Fake is its double.
type Userspace interface {
	// SetPolicy replaces the forwarding policy: which peer may reach the
	// internet, the LAN and other peers. Sources not in it get nothing,
	// not even the cell. Until the first call, peers reach the cell's own
	// addresses only.
	SetPolicy(p userspace.Policy) error
	// ListenTCP and ListenUDP open a listener on one of the cell's own
	// tunnel addresses, inside the stack: the API and the DNS server serve
	// peers there. They close with the device.
	ListenTCP(ap netip.AddrPort) (net.Listener, error)
	ListenUDP(ap netip.AddrPort) (net.PacketConn, error)
}

var (
	_ Userspace = (*userspace.Stack)(nil)
	_ Userspace = (*userspace.Fake)(nil)
)

// ErrClosed is returned by a closed device.
var ErrClosed = errors.New("wireguard: device closed")

func (c Config) validate() error {
	if c.PrivateKey == (Key{}) {
		return errors.New("wireguard: config without private key")
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return errors.New("wireguard: listen port out of range")
	}
	seen := make(map[Key]bool, len(c.Peers))
	for _, p := range c.Peers {
		if err := p.validate(); err != nil {
			return err
		}
		if seen[p.PublicKey] {
			return errors.New("wireguard: duplicate peer public key " + p.PublicKey.String())
		}
		seen[p.PublicKey] = true
	}
	return nil
}

func (p Peer) validate() error {
	if p.PublicKey == (Key{}) {
		return errors.New("wireguard: peer without public key")
	}
	for _, a := range p.AllowedIPs {
		if !a.IsValid() {
			return errors.New("wireguard: invalid allowed IP")
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
		return errors.New("wireguard: keepalive out of range")
	}
	return nil
}

// equal reports whether two peers configure the device identically.
func (p Peer) equal(q Peer) bool {
	if p.PublicKey != q.PublicKey || p.PresharedKey != q.PresharedKey ||
		p.PersistentKeepalive != q.PersistentKeepalive || p.Endpoint != q.Endpoint {
		return false
	}
	a := slices.Clone(p.AllowedIPs)
	b := slices.Clone(q.AllowedIPs)
	sortPrefixes(a)
	sortPrefixes(b)
	return slices.Equal(a, b)
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}
