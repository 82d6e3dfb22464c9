// Package bridge owns the services bridge: the Linux bridge the cell keeps
// for its service containers ("pic-svc0"), one network namespace per
// container (a bind-mounted nsfs file, as `ip netns add` makes), and the
// veth pair joining each namespace to the bridge.
//
// The host end of every veth is an isolated bridge port
// (IFLA_BRPORT_ISOLATED), so services never reach each other at L2: only
// the bridge itself, which holds the cell's gateway address, talks to
// them. The firewall (netstack/firewall) decides what they may reach at L3.
//
// Bridge is the small interface the cell sees; New returns the kernel one
// (rtnetlink through github.com/vishvananda/netlink, mount and unshare
// through x/sys/unix, no `ip` processes); Fake is the test double.
package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
)

// Config is the whole desired state of the services network.
type Config struct {
	Name    string       // the bridge, "pic-svc0"; empty with no members: nothing at all
	Gateway netip.Prefix // the cell's address on it with the subnet, 10.77.250.1/24
	Members []Member     // sorted by ID
}

// Member is one service container's place on the bridge.
type Member struct {
	ID    string     // service id, ^[a-z][a-z0-9-]{0,30}$
	Addr  netip.Addr // its address in Gateway's subnet
	NetNS string     // the path of its network namespace (a bind-mounted nsfs file), /run/pic/netns/files
}

// Bridge sets up the services network.
type Bridge interface {
	// Set makes the kernel match cfg: the bridge up with the gateway
	// address, and for each member a network namespace at NetNS with eth0
	// (the far end of a veth whose near end is an isolated port of the
	// bridge) holding Addr, lo up and a default route via the gateway.
	// Members no longer listed lose their veth and namespace file.
	// Set(Config{}) removes everything the bridge made, the bridge too
	// (what this Bridge applied: a new Bridge knows of nothing before its
	// first Set).
	// What is already right is left alone: a container keeps its
	// connections across a Set that does not concern it.
	Set(cfg Config) error
	// Close releases netlink sockets and namespace handles; the kernel
	// state stays (containers keep running while the cell restarts).
	Close() error
}

// Errors, wrapped with the details.
var (
	ErrInvalid = errors.New("bridge: invalid config")
	ErrClosed  = errors.New("bridge: closed")
)

// PeerName is the name of the member's end of its veth, inside its
// namespace.
const PeerName = "eth0"

var idRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// HostVeth is the name of the host end of member id's veth: "pv" and 8 hex
// digits of a hash of the id, stable across restarts and within IFNAMSIZ.
func HostVeth(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hostPrefix + hex.EncodeToString(sum[:4])
}

// hostPrefix marks the host veths this package made: a "pv" link enslaved
// to the bridge that no member names is removed.
const hostPrefix = "pv"

// Validate reports why cfg cannot be applied, wrapping ErrInvalid.
func (cfg Config) Validate() error {
	if cfg.Name == "" {
		if len(cfg.Members) > 0 || cfg.Gateway.IsValid() {
			return fmt.Errorf("%w: members or a gateway without a bridge name", ErrInvalid)
		}
		return nil
	}
	if len(cfg.Name) > 15 {
		return fmt.Errorf("%w: bridge name %q longer than 15 bytes", ErrInvalid, cfg.Name)
	}
	if !cfg.Gateway.IsValid() || cfg.Gateway.Addr() != cfg.Gateway.Addr().Unmap() {
		return fmt.Errorf("%w: gateway %v", ErrInvalid, cfg.Gateway)
	}
	subnet := cfg.Gateway.Masked()
	bits := cfg.Gateway.Addr().BitLen()
	if cfg.Gateway.Bits() >= bits-1 {
		return fmt.Errorf("%w: gateway subnet %v has no room for members", ErrInvalid, subnet)
	}
	if gw := cfg.Gateway.Addr(); gw == subnet.Addr() || (gw.Is4() && gw == lastAddr(subnet)) {
		return fmt.Errorf("%w: gateway %v is not a host of %v", ErrInvalid, cfg.Gateway, subnet)
	}
	addrs, paths, hosts := map[netip.Addr]bool{cfg.Gateway.Addr(): true}, map[string]bool{}, map[string]bool{}
	for i, m := range cfg.Members {
		if !idRE.MatchString(m.ID) {
			return fmt.Errorf("%w: member id %q", ErrInvalid, m.ID)
		}
		if i > 0 && cfg.Members[i-1].ID >= m.ID {
			return fmt.Errorf("%w: members not sorted by id (or %q twice)", ErrInvalid, m.ID)
		}
		if !subnet.Contains(m.Addr) || m.Addr == subnet.Addr() || (m.Addr.Is4() && m.Addr == lastAddr(subnet)) {
			return fmt.Errorf("%w: member %q address %v not a host of %v", ErrInvalid, m.ID, m.Addr, subnet)
		}
		if addrs[m.Addr] {
			return fmt.Errorf("%w: member %q address %v used twice", ErrInvalid, m.ID, m.Addr)
		}
		if !filepath.IsAbs(m.NetNS) || filepath.Clean(m.NetNS) != m.NetNS || filepath.Dir(m.NetNS) == "/" {
			return fmt.Errorf("%w: member %q netns path %q must be clean, absolute and below a directory", ErrInvalid, m.ID, m.NetNS)
		}
		if paths[m.NetNS] {
			return fmt.Errorf("%w: member %q netns path %q used twice", ErrInvalid, m.ID, m.NetNS)
		}
		h := HostVeth(m.ID)
		if hosts[h] {
			return fmt.Errorf("%w: member %q veth name %s collides", ErrInvalid, m.ID, h)
		}
		addrs[m.Addr], paths[m.NetNS], hosts[h] = true, true, true
	}
	return nil
}

// lastAddr is the broadcast address of an IPv4 subnet.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}
