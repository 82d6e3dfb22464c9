package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// kernel is Bridge over rtnetlink, in the network namespace New was called
// in. Its methods are safe for concurrent use.
type kernel struct {
	log *slog.Logger

	mu      sync.Mutex // guards everything below
	host    netns.NsHandle
	hostErr error // from capturing the namespace at New
	h       *netlink.Handle
	closed  bool
	name    string             // the bridge the last Set made; "" for none
	members map[string]*member // by ID, as the last Set left them
	scanned map[string]bool    // namespace directories made shared and swept of strays
}

// member is a member as applied, with a netlink handle inside its
// namespace kept open so that a Set with no change costs no new sockets.
type member struct {
	Member
	id nsID
	ns netns.NsHandle
	h  *netlink.Handle
}

func (m *member) close() {
	if m.h != nil {
		m.h.Close()
	}
	m.ns.Close()
}

// New returns the kernel Bridge, acting in the network namespace of the
// calling thread (the process's, unless the caller entered another).
func New(log *slog.Logger) Bridge {
	if log == nil {
		log = slog.Default()
	}
	k := &kernel{log: log.With("component", "bridge"), members: map[string]*member{}, scanned: map[string]bool{}}
	k.host, k.hostErr = netns.Get()
	return k
}

// Close implements Bridge.
func (k *kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	for _, m := range k.members {
		m.close()
	}
	k.members = nil
	if k.h != nil {
		k.h.Close()
	}
	if k.hostErr == nil {
		k.host.Close()
	}
	return nil
}

// Set implements Bridge.
func (k *kernel) Set(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	if k.hostErr != nil {
		return fmt.Errorf("bridge: current network namespace: %w", k.hostErr)
	}
	if k.h == nil {
		h, err := netlink.NewHandleAt(k.host, unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("bridge: netlink: %w", err)
		}
		k.h = h
	}

	want := make(map[string]Member, len(cfg.Members))
	for _, m := range cfg.Members {
		want[m.ID] = m
	}
	// Members gone, or whose namespace moved, lose their namespace file.
	// Their veths go below with the other strays on the bridge.
	for id, m := range k.members {
		if w, ok := want[id]; ok && w.NetNS == m.NetNS && cfg.Name == k.name {
			continue
		}
		if err := k.dropMember(m); err != nil {
			return err
		}
	}
	if k.name != "" && k.name != cfg.Name {
		if err := k.deleteBridge(k.name); err != nil {
			return err
		}
	}
	k.name = ""
	if cfg.Name == "" {
		return nil
	}

	br, err := k.ensureBridge(cfg)
	if err != nil {
		return err
	}
	k.name = cfg.Name
	links, err := k.h.LinkList()
	if err != nil {
		return fmt.Errorf("bridge: list links: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	hosts := map[string]bool{}
	for _, m := range cfg.Members {
		hosts[HostVeth(m.ID)] = true
	}
	for _, l := range links {
		a := l.Attrs()
		byName[a.Name] = l
		if a.MasterIndex == br.Attrs().Index && l.Type() == "veth" && strings.HasPrefix(a.Name, hostPrefix) && !hosts[a.Name] {
			k.log.Info("removing stray veth", "veth", a.Name)
			if err := k.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("bridge: delete %s: %w", a.Name, err)
			}
		}
	}
	if err := k.sweep(cfg); err != nil {
		return err
	}
	for _, m := range cfg.Members {
		if err := k.ensureMember(br, byName[HostVeth(m.ID)], m, cfg.Gateway); err != nil {
			return err
		}
	}
	return nil
}

// dropMember removes a member's veth and namespace file and forgets it.
func (k *kernel) dropMember(m *member) error {
	name := HostVeth(m.ID)
	if l, err := k.h.LinkByName(name); err == nil {
		if err := k.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("bridge: member %q: delete %s: %w", m.ID, name, err)
		}
	}
	m.close()
	delete(k.members, m.ID)
	if err := removeNetNS(m.NetNS); err != nil {
		return fmt.Errorf("member %q: %w", m.ID, err)
	}
	k.log.Info("member removed", "service", m.ID)
	return nil
}

// deleteBridge removes the bridge name and the veths enslaved to it.
func (k *kernel) deleteBridge(name string) error {
	br, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("bridge: %s: %w", name, err)
	}
	links, err := k.h.LinkList()
	if err != nil {
		return fmt.Errorf("bridge: list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, hostPrefix) {
			if err := k.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("bridge: delete %s: %w", l.Attrs().Name, err)
			}
		}
	}
	if err := k.h.LinkDel(br); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("bridge: delete %s: %w", name, err)
	}
	k.log.Info("bridge removed", "bridge", name)
	return nil
}

// ensureBridge makes the bridge exist, be up and hold exactly the gateway
// address of its family.
func (k *kernel) ensureBridge(cfg Config) (netlink.Link, error) {
	br, err := k.h.LinkByName(cfg.Name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		if err := k.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: cfg.Name}}); err != nil {
			return nil, fmt.Errorf("bridge: create %s: %w", cfg.Name, err)
		}
		if br, err = k.h.LinkByName(cfg.Name); err != nil {
			return nil, fmt.Errorf("bridge: %s: %w", cfg.Name, err)
		}
		k.log.Info("bridge created", "bridge", cfg.Name)
	case err != nil:
		return nil, fmt.Errorf("bridge: %s: %w", cfg.Name, err)
	case br.Type() != "bridge":
		return nil, fmt.Errorf("bridge: %s exists and is a %s: %w", cfg.Name, br.Type(), ErrInvalid)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("bridge: up %s: %w", cfg.Name, err)
		}
	}
	if err := exactAddr(k.h, br, cfg.Gateway); err != nil {
		return nil, fmt.Errorf("bridge: %s: %w", cfg.Name, err)
	}
	return br, nil
}

// exactAddr makes p the only address of its family on l (IPv6 link-local
// addresses aside, which the kernel manages).
func exactAddr(h *netlink.Handle, l netlink.Link, p netip.Prefix) error {
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(l, fam)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		ap, ok := prefixOf(a.IPNet)
		if ok && ap == p {
			have = true
			continue
		}
		if ok && ap.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove address %v: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add address %v: %w", p, err)
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// sweep makes each members' directory a shared mount point and, the first
// time this Bridge sees it, removes the namespace files in it that no
// member names: members removed while the cell was down. The directories
// are the cell's alone.
func (k *kernel) sweep(cfg Config) error {
	paths := map[string]bool{}
	for _, m := range cfg.Members {
		paths[m.NetNS] = true
	}
	for _, m := range cfg.Members {
		dir := filepath.Dir(m.NetNS)
		if k.scanned[dir] {
			continue
		}
		if err := shareDir(dir); err != nil {
			return err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if paths[p] || !e.Type().IsRegular() {
				continue
			}
			if _, ok, _ := statNetNS(p); ok {
				k.log.Info("removing stray namespace", "netns", p)
				if err := removeNetNS(p); err != nil {
					return err
				}
			}
		}
		k.scanned[dir] = true
	}
	return nil
}

// ensureMember makes m's namespace, veth, address and route right, reusing
// whatever already is. host is the host veth from the link dump, nil if
// there was none.
func (k *kernel) ensureMember(br, host netlink.Link, m Member, gw netip.Prefix) error {
	cur, err := k.openMember(m)
	if err != nil {
		return fmt.Errorf("member %q: %w", m.ID, err)
	}
	var peer netlink.Link
	var lo netlink.Link
	inner, err := cur.h.LinkList()
	if err != nil {
		return fmt.Errorf("bridge: member %q: list links: %w", m.ID, err)
	}
	for _, l := range inner {
		switch l.Attrs().Name {
		case PeerName:
			peer = l
		case "lo":
			lo = l
		}
	}
	name := HostVeth(m.ID)
	fresh := false
	// A pair is right when each end names the other: otherwise the host
	// end's peer vanished into another namespace (the file was mounted
	// anew) or eth0 belongs to some other pair.
	paired := host != nil && peer != nil && host.Type() == "veth" && peer.Type() == "veth" &&
		host.Attrs().ParentIndex == peer.Attrs().Index && peer.Attrs().ParentIndex == host.Attrs().Index
	if !paired {
		if host != nil {
			if err := k.h.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("bridge: member %q: delete %s: %w", m.ID, name, err)
			}
		}
		if peer != nil {
			if err := cur.h.LinkDel(peer); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("bridge: member %q: delete %s in its netns: %w", m.ID, PeerName, err)
			}
		}
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index},
			PeerName:      PeerName,
			PeerNamespace: netlink.NsFd(cur.ns),
		}
		if err := k.h.LinkAdd(v); err != nil {
			return fmt.Errorf("bridge: member %q: create veth %s: %w", m.ID, name, err)
		}
		if host, err = k.h.LinkByName(name); err != nil {
			return fmt.Errorf("bridge: member %q: %s: %w", m.ID, name, err)
		}
		if peer, err = cur.h.LinkByName(PeerName); err != nil {
			return fmt.Errorf("bridge: member %q: %s in its netns: %w", m.ID, PeerName, err)
		}
		fresh = true
		k.log.Info("veth created", "service", m.ID, "veth", name)
	}

	// The host end: a port of the bridge, isolated, up.
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := k.h.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
			return fmt.Errorf("bridge: member %q: attach %s: %w", m.ID, name, err)
		}
		fresh = true
	}
	isolated := false
	if !fresh {
		pi, err := k.h.LinkGetProtinfo(host)
		if err != nil {
			return fmt.Errorf("bridge: member %q: port of %s: %w", m.ID, name, err)
		}
		isolated = pi.Isolated
	}
	if !isolated {
		if err := k.h.LinkSetIsolated(host, true); err != nil {
			return fmt.Errorf("bridge: member %q: isolate %s: %w", m.ID, name, err)
		}
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(host); err != nil {
			return fmt.Errorf("bridge: member %q: up %s: %w", m.ID, name, err)
		}
	}

	// The namespace: lo and eth0 up, the address, the default route.
	for _, l := range []netlink.Link{lo, peer} {
		if l != nil && l.Attrs().Flags&net.FlagUp == 0 {
			if err := cur.h.LinkSetUp(l); err != nil {
				return fmt.Errorf("bridge: member %q: up %s: %w", m.ID, l.Attrs().Name, err)
			}
		}
	}
	if err := exactAddr(cur.h, peer, netip.PrefixFrom(m.Addr, gw.Bits())); err != nil {
		return fmt.Errorf("bridge: member %q: %w", m.ID, err)
	}
	if err := defaultRoute(cur.h, peer, gw.Addr()); err != nil {
		return fmt.Errorf("bridge: member %q: %w", m.ID, err)
	}
	return nil
}

// defaultRoute makes the default route of gw's family go via gw on l.
func defaultRoute(h *netlink.Handle, l netlink.Link, gw netip.Addr) error {
	fam := netlink.FAMILY_V4
	if gw.Is6() {
		fam = netlink.FAMILY_V6
	}
	routes, err := h.RouteList(l, fam)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		isDefault := r.Dst == nil
		if r.Dst != nil {
			ones, _ := r.Dst.Mask.Size()
			isDefault = ones == 0
		}
		if a, ok := netip.AddrFromSlice(r.Gw); isDefault && ok && a.Unmap() == gw && r.LinkIndex == l.Attrs().Index {
			return nil
		}
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice(), Family: fam}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %v: %w", gw, err)
	}
	return nil
}

// openMember returns the applied member for m, reusing its namespace and
// handle when the file still holds the same namespace, creating the
// namespace when the file is not one.
func (k *kernel) openMember(m Member) (*member, error) {
	id, ok, err := statNetNS(m.NetNS)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := createNetNS(m.NetNS); err != nil {
			return nil, err
		}
		if id, ok, err = statNetNS(m.NetNS); err != nil || !ok {
			return nil, fmt.Errorf("bridge: netns %s not mounted after creating it: %v", m.NetNS, err)
		}
		k.log.Info("netns created", "service", m.ID, "netns", m.NetNS)
	}
	if cur := k.members[m.ID]; cur != nil {
		if cur.NetNS == m.NetNS && cur.id == id {
			cur.Member = m
			return cur, nil
		}
		cur.close()
		delete(k.members, m.ID)
	}
	ns, err := netns.GetFromPath(m.NetNS)
	if err != nil {
		return nil, fmt.Errorf("bridge: open %s: %w", m.NetNS, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("bridge: netlink in %s: %w", m.NetNS, err)
	}
	cur := &member{Member: m, id: id, ns: ns, h: h}
	k.members[m.ID] = cur
	return cur, nil
}
