package firewall

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// elemChunk bounds the elements per netlink message: a message's element
// list is one netlink attribute, whose length field is 16 bits.
const elemChunk = 1024

// socketBuffer is the send and receive buffer the batch socket asks for, so
// that a rebuild with tens of thousands of elements fits in one batch.
const socketBuffer = 64 << 20

// Options say how to reach the kernel.
type Options struct {
	// NetNS is a network namespace file descriptor; 0 is the caller's.
	NetNS  int
	Logger *slog.Logger // optional
}

// NFT is the firewall in the kernel's nf_tables. Its methods are safe for
// concurrent use.
type NFT struct {
	log *slog.Logger

	mu      sync.Mutex // guards everything below
	conn    *nftables.Conn
	closed  bool
	applied *Ruleset // what the kernel has; nil when unknown
	peers   map[netip.Addr]Peer
}

var _ Firewall = (*NFT)(nil)

// New opens a lasting netlink connection to nf_tables. It changes nothing
// until Set.
func New(opts Options) (*NFT, error) { return newWith(opts) }

// newWith is New with more connection options after the usual ones: the
// tests pass nftables.WithTestDial to record the batches instead of sending
// them, which no caller outside this package has a use for.
func newWith(opts Options, extra ...nftables.ConnOption) (*NFT, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if opts.NetNS != 0 {
		copts = append(copts, nftables.WithNetNSFd(opts.NetNS))
	}
	c, err := nftables.New(append(copts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink: %w", err)
	}
	return &NFT{log: opts.Logger.With("component", "firewall"), conn: c}, nil
}

// bigBuffers raises the socket buffers past the usual sysctl caps (as root);
// a fake connection has no socket and keeps its defaults.
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if syscall.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuffer) != nil {
				syscall.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuffer)
			}
		}
	})
	return nil
}

// Set implements Firewall.
func (n *NFT) Set(rs Ruleset) error { return n.set(rs, false) }

// Rebuild replaces the table whatever the kernel has, even when Set would
// only send set elements.
func (n *NFT) Rebuild(rs Ruleset) error { return n.set(rs, true) }

func (n *NFT) set(rs Ruleset, rebuild bool) error {
	if err := rs.validate(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if !rebuild && n.applied != nil && sameStructure(*n.applied, rs) {
		return n.setPeersLocked(rs)
	}
	return n.rebuildLocked(rs)
}

// PutPeer adds or changes one peer's set elements: the constant-cost path
// for a single peer. It needs a table built by Set or Rebuild.
func (n *NFT) PutPeer(p Peer) error {
	if err := p.validate(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if n.applied == nil {
		return fmt.Errorf("firewall: PutPeer before the table was built")
	}
	old, had := n.peers[p.Addr4]
	if had && old == p {
		return nil
	}
	t := n.table()
	n.peerDeltaLocked(t, old, had, p, true)
	return n.flushLocked("put peer")
}

// RemovePeer removes the peer with IPv4 address a; an unknown peer is not
// an error.
func (n *NFT) RemovePeer(a netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	old, had := n.peers[a]
	if !had || n.applied == nil {
		return nil
	}
	n.peerDeltaLocked(n.table(), old, true, Peer{}, false)
	return n.flushLocked("remove peer")
}

// Close implements Firewall.
func (n *NFT) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	return n.conn.CloseLasting()
}

func (n *NFT) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

func setRef(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name}
}

// flushLocked sends the queued batch; on failure the kernel state is unknown
// (the batch was atomic, but our bookkeeping may be ahead), so the next Set
// rebuilds. n.mu must be held.
func (n *NFT) flushLocked(what string) error {
	if err := n.conn.Flush(); err != nil {
		n.applied, n.peers = nil, nil
		return fmt.Errorf("firewall: %s: %w", what, err)
	}
	return nil
}

// peerDeltaLocked queues the element changes that turn old (if had) into
// p (if want) and records the result. n.mu must be held.
func (n *NFT) peerDeltaLocked(t *nftables.Table, old Peer, had bool, p Peer, want bool) {
	in := func(q Peer, ok bool) map[string][]netip.Addr {
		m := map[string][]netip.Addr{}
		if !ok {
			return m
		}
		for _, s := range membership(q) {
			m[s+"4"] = append(m[s+"4"], q.Addr4)
			if q.Addr6.IsValid() {
				m[s+"6"] = append(m[s+"6"], q.Addr6)
			}
		}
		return m
	}
	before, after := in(old, had), in(p, want)
	for _, base := range peerSets {
		for _, fam := range []string{"4", "6"} {
			name := base + fam
			var del, add []nftables.SetElement
			for _, a := range before[name] {
				if !slices.Contains(after[name], a) {
					del = append(del, nftables.SetElement{Key: addrKey(a)})
				}
			}
			for _, a := range after[name] {
				if !slices.Contains(before[name], a) {
					add = append(add, nftables.SetElement{Key: addrKey(a)})
				}
			}
			if len(del) > 0 {
				// nft delete element inet pic <name> { <addr> }
				n.conn.SetDeleteElements(setRef(t, name), del)
			}
			if len(add) > 0 {
				// nft add element inet pic <name> { <addr> }
				n.conn.SetAddElements(setRef(t, name), add)
			}
		}
	}
	if n.peers == nil {
		n.peers = map[netip.Addr]Peer{}
	}
	if had {
		delete(n.peers, old.Addr4)
	}
	if want {
		n.peers[p.Addr4] = p
	}
	n.applied.Peers = nil // the peers map is the truth for peers
}

// setPeersLocked sends only the peers' element changes. n.mu must be held.
func (n *NFT) setPeersLocked(rs Ruleset) error {
	t := n.table()
	want := make(map[netip.Addr]Peer, len(rs.Peers))
	for _, p := range rs.Peers {
		want[p.Addr4] = p
	}
	changed := false
	for a, old := range n.peers {
		if _, ok := want[a]; !ok {
			n.peerDeltaLocked(t, old, true, Peer{}, false)
			changed = true
		}
	}
	for _, p := range rs.Peers {
		old, had := n.peers[p.Addr4]
		if had && old == p {
			continue
		}
		n.peerDeltaLocked(t, old, had, p, true)
		changed = true
	}
	if !changed {
		return nil
	}
	return n.flushLocked("update peers")
}

// rebuildLocked queues and sends the whole table in one batch. n.mu must be
// held.
func (n *NFT) rebuildLocked(rs Ruleset) error {
	build(n.conn, rs)
	if err := n.flushLocked("rebuild"); err != nil {
		return err
	}
	applied := rs
	applied.Peers = nil
	applied.Services = rs.Services.clone()
	n.applied = &applied
	n.peers = make(map[netip.Addr]Peer, len(rs.Peers))
	for _, p := range rs.Peers {
		n.peers[p.Addr4] = p
	}
	n.log.Info("table rebuilt", "peers", len(rs.Peers), "forwards", len(rs.Forwards))
	return nil
}

// build queues the whole table on c. The batch starts by creating and
// deleting the table, so that it works whether or not the table exists and
// the kernel applies old-table-gone and new-table-in-place atomically.
func build(c *nftables.Conn, rs Ruleset) {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	// nft add table inet pic; delete table inet pic; add table inet pic
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	// The per-peer sets, e.g.
	// nft add set inet pic internet4 '{ type ipv4_addr; }'
	// nft add element inet pic internet4 '{ 10.77.0.2, ... }'
	sets := map[string]*nftables.Set{}
	var id uint32
	members := make([][]string, len(rs.Peers))
	for i, p := range rs.Peers {
		members[i] = membership(p)
	}
	for _, base := range peerSets {
		for _, fam := range []string{"4", "6"} {
			id++
			s := &nftables.Set{Table: t, ID: id, Name: base + fam, KeyType: nftables.TypeIPAddr}
			if fam == "6" {
				s.KeyType = nftables.TypeIP6Addr
			}
			c.AddSet(s, nil)
			sets[s.Name] = s
			var elems []nftables.SetElement
			for i, p := range rs.Peers {
				if !slices.Contains(members[i], base) {
					continue
				}
				a := p.Addr4
				if fam == "6" {
					a = p.Addr6
				}
				if a.IsValid() {
					elems = append(elems, nftables.SetElement{Key: addrKey(a)})
				}
			}
			for len(elems) > 0 {
				k := min(len(elems), elemChunk)
				c.SetAddElements(s, elems[:k])
				elems = elems[k:]
			}
		}
	}

	// The services allowed out to the internet, e.g.
	// nft add set inet pic svc_egress4 '{ type ipv4_addr; }'
	var egress *nftables.Set
	if sv := rs.Services; sv != nil {
		id++
		egress = &nftables.Set{Table: t, ID: id, Name: setSvcEgress, KeyType: nftables.TypeIPAddr}
		var elems []nftables.SetElement
		for _, a := range sortedAddrs(sv.Egress) {
			elems = append(elems, nftables.SetElement{Key: addrKey(a)})
		}
		c.AddSet(egress, elems)
	}

	policyDrop := nftables.ChainPolicyDrop
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policyDrop})
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policyDrop})
	prerouting := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	postrouting := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})

	add := func(ch *nftables.Chain, exprs []expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	wg := rs.WGInterface
	fams := []bool{false}
	if rs.Tunnel6.IsValid() {
		fams = append(fams, true)
	}
	set := func(base string, v6 bool) *nftables.Set {
		if v6 {
			return sets[base+"6"]
		}
		return sets[base+"4"]
	}

	// input: the cell itself.
	// iifname "lo" accept
	add(input, append(iifname("lo"), accept()))
	for _, v6 := range fams {
		// iifname "wg0" ip saddr @disabled4 drop
		add(input, cat(iifname(wg), addrInSet(v6, false, set(setDisabled, v6)), one(drop())))
	}
	// ct state established,related accept
	add(input, append(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept()))
	// ct state invalid drop
	add(input, append(ctState(expr.CtStateBitINVALID), drop()))
	if sv := rs.Services; sv != nil {
		// A service talks to the cell only in connections the cell opened
		// (the front, admin calls): not the API, DNS or WireGuard.
		// iifname "pic-svc0" counter drop
		add(input, cat(iifname(sv.Bridge), one(&expr.Counter{}, drop())))
	}
	// meta l4proto icmp accept
	add(input, append(l4proto(unix.IPPROTO_ICMP), accept()))
	// meta l4proto ipv6-icmp accept
	add(input, append(l4proto(unix.IPPROTO_ICMPV6), accept()))
	// udp dport 51820 accept
	add(input, append(dport(unix.IPPROTO_UDP, rs.WGPort), accept()))
	// The uplink's address leases: DHCP answers are often broadcast, which
	// conntrack does not relate to the request.
	// udp dport 68 accept
	add(input, append(dport(unix.IPPROTO_UDP, 68), accept()))
	// udp dport 546 accept
	add(input, append(dport(unix.IPPROTO_UDP, 546), accept()))
	for _, p := range rs.LocalTCP {
		// iifname "wg0" tcp dport 3000 accept
		add(input, cat(iifname(wg), dport(unix.IPPROTO_TCP, p), one(accept())))
	}
	for _, p := range rs.LocalUDP {
		// iifname "wg0" udp dport 53 accept
		add(input, cat(iifname(wg), dport(unix.IPPROTO_UDP, p), one(accept())))
	}
	for _, p := range rs.WANTCP {
		// tcp dport 443 accept
		add(input, append(dport(unix.IPPROTO_TCP, p), accept()))
	}

	// forward: peers, the LAN and the internet.
	for _, v6 := range fams {
		// iifname "wg0" ip saddr @disabled4 drop
		add(forward, cat(iifname(wg), addrInSet(v6, false, set(setDisabled, v6)), one(drop())))
		// oifname "wg0" ip daddr @disabled4 drop
		add(forward, cat(oifname(wg), addrInSet(v6, true, set(setDisabled, v6)), one(drop())))
	}
	// ct state established,related accept
	add(forward, append(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept()))
	// ct state invalid drop
	add(forward, append(ctState(expr.CtStateBitINVALID), drop()))
	if sv := rs.Services; sv != nil {
		servicesForward(add, forward, rs, egress)
	}
	for _, v6 := range fams {
		// iifname "wg0" oifname "wg0" ip saddr @peers4 accept
		add(forward, cat(iifname(wg), oifname(wg), addrInSet(v6, false, set(setPeers, v6)), one(accept())))
	}
	for _, lan := range rs.LAN {
		v6 := lan.Addr().Is6()
		// iifname "wg0" ip daddr 192.168.1.0/24 ip saddr @lan4 accept
		add(forward, cat(iifname(wg), addrInPrefix(true, lan), addrInSet(v6, false, set(setLAN, v6)), one(accept())))
		// iifname "wg0" ip daddr 192.168.1.0/24 drop
		add(forward, cat(iifname(wg), addrInPrefix(true, lan), one(drop())))
	}
	if rs.WAN != "" {
		for _, v6 := range fams {
			// iifname "wg0" oifname "eth0" ip saddr @internet4 accept
			add(forward, cat(iifname(wg), oifname(rs.WAN), addrInSet(v6, false, set(setInternet, v6)), one(accept())))
		}
		// oifname "wg0" ct status dnat accept
		add(forward, cat(oifname(wg), ctStatusDNAT(), one(accept())))

		for _, f := range rs.Forwards {
			// iifname "eth0" tcp dport 8080 dnat ip to 10.77.0.2:80
			add(prerouting, cat(iifname(rs.WAN), nfproto(false), dport(protoNum(f.Proto), f.Port), dnat(f.To, f.ToPort)))
		}
		// oifname "eth0" ip saddr 10.77.0.0/24 masquerade
		add(postrouting, cat(oifname(rs.WAN), addrInPrefix(false, rs.Tunnel4), one(&expr.Masq{})))
		if rs.Tunnel6.IsValid() {
			// oifname "eth0" ip6 saddr fd77::/64 masquerade
			add(postrouting, cat(oifname(rs.WAN), addrInPrefix(false, rs.Tunnel6), one(&expr.Masq{})))
		}
		if sv := rs.Services; sv != nil {
			// oifname "eth0" ip saddr 10.77.250.0/24 masquerade
			add(postrouting, cat(oifname(rs.WAN), addrInPrefix(false, sv.Subnet), one(&expr.Masq{})))
		}
	}
}

// setSvcEgress is the set of services allowed to reach the internet.
const setSvcEgress = "svc_egress4"

// reserved are the IPv4 ranges a service never reaches, egress or not:
// this-network, RFC 1918, shared address space (CGNAT), loopback,
// link-local, IETF protocol assignments, multicast and the reserved rest.
// 198.18.0.0/15 stays reachable: it is the test internet.
var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// servicesBlocked lists the destinations closed to services: the reserved
// ranges, then the tunnel, the services subnet and the LAN networks that
// the reserved ranges do not already cover.
func servicesBlocked(rs Ruleset) []netip.Prefix {
	out := slices.Clone(reserved)
	more := append([]netip.Prefix{rs.Tunnel4, rs.Services.Subnet}, rs.LAN...)
	for _, p := range more {
		p = p.Masked()
		if !p.Addr().Is4() {
			continue // a service has no IPv6 route out: the final drop takes it
		}
		if !slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	return out
}

// servicesForward adds the forward rules of the services bridge, right
// after the conntrack rules: replies (ct state established,related) have
// been accepted by then, so these see only new connections.
func servicesForward(add func(*nftables.Chain, []expr.Any), forward *nftables.Chain, rs Ruleset, egress *nftables.Set) {
	br := rs.Services.Bridge
	// No service-to-service traffic at L3 (the ports are isolated at L2).
	// iifname "pic-svc0" oifname "pic-svc0" counter drop
	add(forward, cat(iifname(br), oifname(br), one(&expr.Counter{}, drop())))
	// Nothing opens a connection to a service but the cell (the front):
	// not a peer, the LAN or the internet.
	// oifname "pic-svc0" counter drop
	add(forward, cat(oifname(br), one(&expr.Counter{}, drop())))
	if rs.WAN != "" {
		for _, p := range servicesBlocked(rs) {
			// iifname "pic-svc0" ip daddr 192.168.0.0/16 drop
			add(forward, cat(iifname(br), addrInPrefix(true, p), one(drop())))
		}
		// iifname "pic-svc0" oifname "eth0" ip saddr @svc_egress4 accept
		add(forward, cat(iifname(br), oifname(rs.WAN), addrInSet(false, false, egress), one(accept())))
	}
	// iifname "pic-svc0" counter drop
	add(forward, cat(iifname(br), one(&expr.Counter{}, drop())))
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
