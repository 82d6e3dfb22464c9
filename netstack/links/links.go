// Package links owns the kernel state around the cell's tunnel interface:
// its addresses, MTU and up state, IP forwarding, and finding the WAN
// interface from the default route. It speaks rtnetlink
// (github.com/vishvananda/netlink); Fake is its test double.
package links

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config is the desired state of one interface.
type Config struct {
	Interface string         // required; "wg0"
	Addresses []netip.Prefix // required; the cell's tunnel addresses, 10.77.0.1/24 and fd..::1/64
	MTU       int            // optional; left alone when 0
	// Forwarding turns on IPv4 and IPv6 forwarding for the namespace, which
	// the cell needs to route peers anywhere but to itself.
	Forwarding bool
}

// Links configures interfaces.
type Links interface {
	// Set makes the interface's addresses exactly cfg.Addresses (adding
	// and removing as needed), sets the MTU, brings it up and, if asked,
	// turns forwarding on. Calling it again changes nothing.
	Set(cfg Config) error
	Close() error
}

// Options say where to act.
type Options struct {
	// NetNS is a network namespace file descriptor for the netlink socket;
	// 0 is the caller's. Forwarding is written through ProcSys, which is
	// the caller's namespace's.
	NetNS   int
	ProcSys string       // optional; "/proc/sys", redirected by tests
	Logger  *slog.Logger // optional
}

// Netlink is Links over rtnetlink.
type Netlink struct {
	log     *slog.Logger
	procSys string

	mu     sync.Mutex // guards h and closed
	h      *netlink.Handle
	closed bool
}

var _ Links = (*Netlink)(nil)

// ErrClosed is returned by a closed Links.
var ErrClosed = errors.New("links: closed")

// New opens a netlink handle.
func New(opts Options) (*Netlink, error) {
	if opts.ProcSys == "" {
		opts.ProcSys = "/proc/sys"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var h *netlink.Handle
	var err error
	if opts.NetNS != 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(opts.NetNS))
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("links: netlink: %w", err)
	}
	return &Netlink{log: opts.Logger.With("component", "links"), procSys: opts.ProcSys, h: h}, nil
}

// Set implements Links.
func (l *Netlink) Set(cfg Config) error {
	if cfg.Interface == "" {
		return errors.New("links: interface required")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	link, err := l.h.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("links: %s: %w", cfg.Interface, err)
	}
	if cfg.MTU != 0 && link.Attrs().MTU != cfg.MTU {
		if err := l.h.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("links: %s mtu: %w", cfg.Interface, err)
		}
	}
	have, err := l.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("links: %s addresses: %w", cfg.Interface, err)
	}
	var errs []error
	var haveP []netip.Prefix
	for _, a := range have {
		p, ok := prefixOf(a.IPNet)
		if !ok || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue // the kernel's own link-local address stays
		}
		haveP = append(haveP, p)
		if !slices.Contains(cfg.Addresses, p) {
			if err := l.h.AddrDel(link, &a); err != nil {
				errs = append(errs, fmt.Errorf("links: %s del %v: %w", cfg.Interface, p, err))
			}
		}
	}
	for _, p := range cfg.Addresses {
		if slices.Contains(haveP, p) {
			continue
		}
		// NODAD: the tunnel has no neighbours to collide with, and a
		// tentative address would refuse to be used for a second or two.
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := l.h.AddrAdd(link, a); err != nil {
			errs = append(errs, fmt.Errorf("links: %s add %v: %w", cfg.Interface, p, err))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := l.h.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("links: %s up: %w", cfg.Interface, err))
		}
	}
	if cfg.Forwarding {
		for _, f := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := writeSysctl(filepath.Join(l.procSys, f), "1"); err != nil {
				errs = append(errs, fmt.Errorf("links: forwarding: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func writeSysctl(path, v string) error {
	cur, err := os.ReadFile(path)
	if err == nil && string(cur) == v+"\n" {
		return nil
	}
	return os.WriteFile(path, []byte(v+"\n"), 0o644)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// DefaultRouteInterface names the interface of the IPv4 default route: the
// WAN when the operator did not name one.
func (l *Netlink) DefaultRouteInterface() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", ErrClosed
	}
	routes, err := l.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("links: routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			link, err := l.h.LinkByIndex(r.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("links: default route interface: %w", err)
			}
			return link.Attrs().Name, nil
		}
	}
	return "", errors.New("links: no IPv4 default route")
}

// Close implements Links.
func (l *Netlink) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		l.h.Close()
	}
	return nil
}

// LANPrefixes lists the private networks (RFC 1918, ULA) the interface is
// on: the home LAN behind the cell's uplink, for the peers' lan policy.
func (l *Netlink) LANPrefixes(iface string) ([]netip.Prefix, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	link, err := l.h.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("links: %s: %w", iface, err)
	}
	addrs, err := l.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("links: %s addresses: %w", iface, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p.Addr().IsPrivate() && !slices.Contains(out, p.Masked()) {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}
