package dns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Upstream is a resolver the server forwards to.
type Upstream struct {
	Addr netip.AddrPort
	// TLSName is empty for plain DNS (UDP, TCP on truncation) and the name
	// the certificate must carry for DNS over TLS.
	TLSName string
}

// String is the canonical form ParseUpstream accepts back.
func (u Upstream) String() string {
	if u.TLSName == "" {
		return u.Addr.String()
	}
	if u.TLSName == u.Addr.Addr().String() {
		return "tls://" + u.Addr.String()
	}
	return "tls://" + u.TLSName + "@" + u.Addr.String()
}

// ParseUpstream reads the forms the package doc lists: "198.18.0.53",
// "198.18.0.53:53", "2001:db8::1", "[2001:db8::1]:53", "tls://1.1.1.1",
// "tls://dns.example@1.1.1.1:853". The address is always an IP address:
// the cell cannot resolve its resolver's name.
func ParseUpstream(s string) (Upstream, error) {
	if err := checkText(s); err != nil {
		return Upstream{}, invalid("upstream", s, "%s", err)
	}
	rest, port, tlsName := s, uint16(53), ""
	tlsMode := false
	if i := strings.Index(s, "://"); i >= 0 {
		switch scheme := strings.ToLower(s[:i]); scheme {
		case "tls":
			tlsMode, port, rest = true, 853, s[i+3:]
		case "udp", "dns":
			rest = s[i+3:]
		default:
			return Upstream{}, invalid("upstream", s, "unknown scheme %s: use an address (plain DNS) or tls://address (DNS over TLS)", quote(scheme))
		}
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if !tlsMode {
			return Upstream{}, invalid("upstream", s, "a name@address form is for tls:// only")
		}
		tlsName, rest = strings.ToLower(strings.TrimSuffix(rest[:at], ".")), rest[at+1:]
		if err := checkName(tlsName); err != nil {
			return Upstream{}, invalid("upstream", s, "TLS name %s", err)
		}
	}
	var ap netip.AddrPort
	if len(rest) > 2 && rest[0] == '[' && rest[len(rest)-1] == ']' {
		rest = rest[1 : len(rest)-1] // [IPv6] without a port
	}
	if a, err := netip.ParseAddr(rest); err == nil {
		ap = netip.AddrPortFrom(a, port)
	} else if h, p, err := net.SplitHostPort(rest); err == nil {
		a, err := netip.ParseAddr(h)
		if err != nil {
			return Upstream{}, invalid("upstream", s, "%s is not an IP address (the cell cannot look up its own resolver's name)", quote(h))
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Upstream{}, invalid("upstream", s, "port %s is not a number from 1 to 65535", quote(p))
		}
		ap = netip.AddrPortFrom(a, uint16(n))
	} else {
		return Upstream{}, invalid("upstream", s, "not an address: write an IP address, address:port, [IPv6]:port or tls://address")
	}
	a := ap.Addr()
	switch {
	case a.Zone() != "":
		return Upstream{}, invalid("upstream", s, "an address with a zone (%%%s) is not supported", a.Zone())
	case a.IsUnspecified() || a.IsMulticast():
		return Upstream{}, invalid("upstream", s, "not a host's address")
	}
	ap = netip.AddrPortFrom(a.Unmap(), ap.Port())
	if tlsMode && tlsName == "" {
		tlsName = ap.Addr().String() // the certificate must name the IP address
	}
	return Upstream{Addr: ap, TLSName: tlsName}, nil
}

// ValidateUpstream reports whether ParseUpstream accepts s; the error wraps
// ErrInvalid.
func ValidateUpstream(s string) error {
	_, err := ParseUpstream(s)
	return err
}

// checkText refuses control characters and runaway lengths in short fields.
func checkText(s string) error {
	if s == "" {
		return nameError("is empty")
	}
	if len(s) > 300 {
		return nameError(fmt.Sprintf("is %d bytes long", len(s)))
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return nameError(fmt.Sprintf("contains the control character %q", r))
		}
		if r == ' ' {
			return nameError("contains a space")
		}
	}
	return nil
}

// Exchanger sends one query to one upstream. The server gives every call a
// context with its deadline; Network is the real one, tests inject fakes.
type Exchanger interface {
	Exchange(ctx context.Context, q *mdns.Msg, u Upstream) (*mdns.Msg, error)
}

// Network is the real Exchanger: UDP with a retry over TCP when the answer
// is truncated, or DNS over TLS on connections kept for reuse.
type Network struct {
	RootCAs *x509.CertPool // optional; nil means the system's roots
	// Dial opens the sockets to the upstreams; optional, default a
	// net.Dialer. The caller sets it to reach the upstreams from another
	// network stack or namespace than the process's own.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	idle map[Upstream][]*mdns.Conn // DoT connections ready for another query
}

const maxIdleTLS = 2 // idle DoT connections kept per upstream

// Exchange implements Exchanger.
func (n *Network) Exchange(ctx context.Context, q *mdns.Msg, u Upstream) (*mdns.Msg, error) {
	if u.TLSName != "" {
		return n.exchangeTLS(ctx, q, u)
	}
	r, err := n.plain(ctx, "udp", q, u)
	if err == nil && r.Truncated {
		r, err = n.plain(ctx, "tcp", q, u)
	}
	return r, err
}

func (n *Network) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.Dial != nil {
		return n.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// plain is one exchange over a new socket (a new source port per query,
// which is what makes a forged answer hard to land).
func (n *Network) plain(ctx context.Context, network string, q *mdns.Msg, u Upstream) (*mdns.Msg, error) {
	c, err := n.dial(ctx, network, u.Addr.String())
	if err != nil {
		return nil, err
	}
	co := &mdns.Conn{Conn: c, UDPSize: ednsSize}
	defer co.Close()
	return roundTrip(ctx, co, q)
}

func (n *Network) exchangeTLS(ctx context.Context, q *mdns.Msg, u Upstream) (*mdns.Msg, error) {
	// A kept connection may have been closed by the far end meanwhile: one
	// failure on it is forgiven and retried on a new one.
	if co := n.takeIdle(u); co != nil {
		if r, err := roundTrip(ctx, co, q); err == nil {
			n.putIdle(u, co)
			return r, nil
		}
		co.Close()
	}
	raw, err := n.dial(ctx, "tcp", u.Addr.String())
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{ServerName: u.TLSName, RootCAs: n.RootCAs, MinVersion: tls.VersionTLS12})
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	co := &mdns.Conn{Conn: c, UDPSize: ednsSize}
	r, err := roundTrip(ctx, co, q)
	if err != nil {
		co.Close()
		return nil, err
	}
	n.putIdle(u, co)
	return r, nil
}

// roundTrip writes q on co and reads its answer, until ctx's deadline or
// until ctx is cancelled (the server shutting down).
func roundTrip(ctx context.Context, co *mdns.Conn, q *mdns.Msg) (*mdns.Msg, error) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(forwardBudget)
	}
	co.SetDeadline(d)
	stop := context.AfterFunc(ctx, func() { co.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := co.WriteMsg(q); err != nil {
		return nil, err
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == q.Id { // else a late answer to an earlier query: skip it
			return r, nil
		}
	}
}

func (n *Network) takeIdle(u Upstream) *mdns.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.idle[u]
	if len(l) == 0 {
		return nil
	}
	co := l[len(l)-1]
	n.idle[u] = l[:len(l)-1]
	return co
}

func (n *Network) putIdle(u Upstream, co *mdns.Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.idle == nil {
		n.idle = map[Upstream][]*mdns.Conn{}
	}
	if len(n.idle[u]) >= maxIdleTLS {
		co.Close()
		return
	}
	n.idle[u] = append(n.idle[u], co)
}

// Close closes the kept DoT connections.
func (n *Network) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u, l := range n.idle {
		for _, co := range l {
			co.Close()
		}
		delete(n.idle, u)
	}
}

// upstream is an upstream with its health, kept across Sets that keep it.
type upstream struct {
	Upstream
	mu       sync.Mutex
	lastOK   time.Time
	lastFail time.Time
	err      string
	ok, fail uint64
	rtt      time.Duration
}

// UpstreamStats is one upstream's health for the status page.
type UpstreamStats struct {
	Upstream string        // canonical form
	LastOK   time.Time     // zero: never answered
	LastFail time.Time     // zero: never failed
	Err      string        // the last failure, "" when the last try answered
	OK, Fail uint64        // answers and failures since it was configured
	RTT      time.Duration // of the last answer
}

func (u *upstream) stats() UpstreamStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return UpstreamStats{Upstream: u.String(), LastOK: u.lastOK, LastFail: u.lastFail, Err: u.err, OK: u.ok, Fail: u.fail, RTT: u.rtt}
}

// failing reports whether the last try failed less than downFor ago: such
// an upstream is asked after the others.
func (u *upstream) failing(now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastFail.After(u.lastOK) && now.Sub(u.lastFail) < downFor
}

// record notes a try's result and returns whether it changed the upstream
// from answering to failing or back, for the log.
func (u *upstream) record(now time.Time, rtt time.Duration, err error) (changed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	wasFailing := u.lastFail.After(u.lastOK)
	if err == nil {
		u.lastOK, u.err, u.rtt = now, "", rtt
		u.ok++
		return wasFailing
	}
	u.lastFail, u.err = now, err.Error()
	u.fail++
	return !wasFailing
}
