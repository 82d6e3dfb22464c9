package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Request is one test the admin asks for.
type Request struct {
	Kind   string `json:"kind"`            // ping, dns, http, port
	Target string `json:"target"`          // ping: host or IP; dns: name or name@server; http: URL; port: host:port
	Proto  string `json:"proto,omitempty"` // port only: tcp (default) or udp
	Type   string `json:"type,omitempty"`  // dns only: A (default), AAAA, MX, TXT, ...
}

// Result is what a test found.
type Result struct {
	Kind, Target string
	OK           bool
	Address      string        // the address actually probed (after resolving)
	RTT          time.Duration // ping: the average round trip; others: the time to the answer
	Detail       string        // in plain words
	Answers      []string      // dns
	Status       int           // http
}

// Options configure a Prober; zero values get the defaults.
type Options struct {
	// Resolver resolves host names; nil: net.DefaultResolver.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// DNSServer gives the servers (host:port) a dns test asks; nil: those
	// of /etc/resolv.conf.
	DNSServer func() []string
	// Forbidden refuses more addresses (the cell's own API addresses and
	// ports); a ping's and a name's check have port 0.
	Forbidden func(netip.AddrPort) bool
	// MaxConcurrent tests at once, default 4; more get ErrBusy at once.
	MaxConcurrent int
	// Timeout per test, default 5 s.
	Timeout time.Duration
	// Dial dials checked literal addresses; nil: a net.Dialer whose
	// Control hook checks the address again.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ErrBusy: too many tests at once (the API answers 429).
var ErrBusy = errors.New("too many network tests at once: try again in a moment")

// ErrInvalid: a bad or forbidden request (the API answers 400). The error
// that wraps it says why in plain words.
var ErrInvalid = errors.New("invalid network test")

type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error { return invalidError(fmt.Sprintf(format, args...)) }

// Prober runs tests.
type Prober struct {
	o    Options
	sem  chan struct{}
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New makes a Prober.
func New(o Options) *Prober {
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Resolver == nil {
		o.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	p := &Prober{o: o, sem: make(chan struct{}, o.MaxConcurrent)}
	p.dial = o.Dial
	if p.dial == nil {
		d := &net.Dialer{Control: p.control}
		p.dial = d.DialContext
	}
	return p
}

// control is the default dialer's last look at the address it connects to.
func (p *Prober) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return invalid("the cell dials only checked addresses, not %q", address)
	}
	return p.checkAddr(ap)
}

const (
	maxName = 253
	maxURL  = 2048
)

// Validate checks r without sending anything or resolving names.
func (p *Prober) Validate(r Request) error {
	_, err := p.parse(r)
	return err
}

// parsed is a checked request.
type parsed struct {
	host  string // ping, port: a name or an IP literal (no brackets)
	port  uint16 // port
	url   *url.URL
	name  string // dns: the query name, fully qualified
	qtype uint16
	srv   string // dns: the server given with @, host:port
}

func (p *Prober) parse(r Request) (parsed, error) {
	var q parsed
	if r.Proto != "" && r.Kind != "port" {
		return q, invalid("a proto is for port tests only")
	}
	if r.Type != "" && r.Kind != "dns" {
		return q, invalid("a record type is for dns tests only")
	}
	limit := maxName
	switch r.Kind {
	case "ping", "dns", "port":
		if r.Kind == "port" {
			limit = maxName + len(":65535") + 2
		}
		if r.Kind == "dns" {
			limit = maxName + len("@[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
		}
	case "http":
		limit = maxURL
	case "":
		return q, invalid("the kind of test is missing (ping, dns, http or port)")
	default:
		return q, invalid("unknown kind of test: use ping, dns, http or port")
	}
	if err := checkText(r.Target, limit); err != nil {
		return q, err
	}
	switch r.Kind {
	case "ping":
		h, err := p.checkHost(r.Target, 0)
		if err != nil {
			return q, err
		}
		q.host = h
	case "port":
		switch r.Proto {
		case "", "tcp", "udp":
		default:
			return q, invalid("the proto must be tcp or udp")
		}
		h, port, err := splitHostPort(r.Target, false)
		if err != nil {
			return q, err
		}
		if q.host, err = p.checkHost(h, port); err != nil {
			return q, err
		}
		q.port = port
	case "http":
		u, err := p.checkURL(r.Target)
		if err != nil {
			return q, err
		}
		q.url = u
	case "dns":
		name, srv, hasSrv := strings.Cut(r.Target, "@")
		if hasSrv {
			h, port, err := splitHostPort(srv, true)
			if err != nil {
				return q, invalid("the DNS server after @: %v", err)
			}
			a, err := netip.ParseAddr(h)
			if err != nil {
				return q, invalid("the DNS server after @ must be an IP address")
			}
			if port == 0 {
				port = 53
			}
			ap := netip.AddrPortFrom(a.Unmap(), port)
			if err := p.checkAddr(ap); err != nil {
				return q, err
			}
			q.srv = ap.String()
		}
		t := strings.ToUpper(r.Type)
		if t == "" {
			t = "A"
		}
		qt, ok := queryTypes[t]
		if !ok {
			return q, invalid("unknown or unsupported record type: use one of %s", typeList)
		}
		q.qtype = qt
		if a, err := netip.ParseAddr(name); err == nil && qt == dns.TypePTR {
			rev, err := dns.ReverseAddr(a.String())
			if err != nil {
				return q, invalid("cannot make a reverse name of that address")
			}
			q.name = rev
		} else {
			if err := checkName(name, true); err != nil {
				return q, err
			}
			q.name = dns.Fqdn(name)
		}
	}
	return q, nil
}

// queryTypes are the record types a dns test may ask for.
var queryTypes = map[string]uint16{
	"A": dns.TypeA, "AAAA": dns.TypeAAAA, "CNAME": dns.TypeCNAME, "MX": dns.TypeMX,
	"NS": dns.TypeNS, "PTR": dns.TypePTR, "SOA": dns.TypeSOA, "SRV": dns.TypeSRV,
	"TXT": dns.TypeTXT, "CAA": dns.TypeCAA, "HTTPS": dns.TypeHTTPS, "SVCB": dns.TypeSVCB,
	"DS": dns.TypeDS, "DNSKEY": dns.TypeDNSKEY,
}

const typeList = "A, AAAA, CAA, CNAME, DNSKEY, DS, HTTPS, MX, NS, PTR, SOA, SRV, SVCB, TXT"

// checkText refuses what no target may hold.
func checkText(s string, limit int) error {
	if s == "" {
		return invalid("the target is empty")
	}
	if len(s) > limit {
		return invalid("the target is too long (at most %d characters)", limit)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0:
			return invalid("the target contains a NUL byte")
		case c == '\n' || c == '\r':
			return invalid("the target contains a line break")
		case c == ' ' || c == '\t':
			return invalid("the target contains a space")
		case c < 0x20 || c == 0x7f:
			return invalid("the target contains a control character")
		case c >= 0x80:
			return invalid("the target contains characters outside ASCII: write names in their xn-- form and percent-encode URLs")
		case c == ';' || c == '`':
			return invalid("the target contains %q, which no host name or URL needs", string(c))
		}
	}
	if strings.Contains(s, "$(") {
		return invalid(`the target contains "$(", which no host name or URL needs`)
	}
	return nil
}

// checkName checks a DNS name: labels of letters, digits, '-' and '_'.
func checkName(name string, allowRoot bool) error {
	if name == "." && allowRoot {
		return nil
	}
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return invalid("the name is empty")
	}
	if len(n) > maxName {
		return invalid("the name is too long (at most %d characters)", maxName)
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" {
			return invalid("the name has an empty label (two dots in a row)")
		}
		if len(l) > 63 {
			return invalid("a label of the name is longer than 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return invalid("a label of the name starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return invalid("the name may hold letters, digits, '-', '_' and dots only, not %q", string(c))
			}
		}
	}
	return nil
}

// checkHost checks a host: an IP literal (checked as an address with
// port) or a name. It returns the host without brackets.
func (p *Prober) checkHost(h string, port uint16) (string, error) {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.Contains(h, "%") {
		return "", invalid("addresses with a zone (%%) are link-local: not allowed")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if err := p.checkAddr(netip.AddrPortFrom(a, port)); err != nil {
			return "", err
		}
		return a.Unmap().String(), nil
	}
	if strings.Contains(h, ":") {
		return "", invalid("the host is neither a name nor an IP address (a port is for port tests)")
	}
	if err := checkName(h, false); err != nil {
		return "", err
	}
	// An all-digit last label is an address in some odd form (1.2.3,
	// 0x7f.1): refused rather than left to the resolver's reading.
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" || strings.HasPrefix(strings.ToLower(last), "0x") {
		return "", invalid("the host looks like an incomplete IP address")
	}
	return h, nil
}

// splitHostPort splits host:port; with optional, a missing port is 0.
func splitHostPort(s string, optional bool) (string, uint16, error) {
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		if optional && !strings.Contains(strings.Trim(s, "[]"), "]") {
			if _, perr := netip.ParseAddr(strings.Trim(s, "[]")); perr == nil {
				return strings.Trim(s, "[]"), 0, nil
			}
		}
		return "", 0, invalid("write host:port (an IPv6 address in brackets: [2001:db8::1]:443)")
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return "", 0, invalid("the port must be a number from 1 to 65535")
	}
	return h, uint16(port), nil
}

// checkURL checks an http(s) URL without resolving its host.
func (p *Prober) checkURL(s string) (*url.URL, error) {
	if len(s) > maxURL {
		return nil, invalid("the URL is too long (at most %d characters)", maxURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, invalid("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, invalid("only http:// and https:// URLs can be tested")
	}
	if u.User != nil {
		return nil, invalid("the URL holds a user name or password: leave them out")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, invalid("the URL has no host")
	}
	if ps := u.Port(); ps != "" {
		if port, err := strconv.ParseUint(ps, 10, 16); err != nil || port == 0 {
			return nil, invalid("the URL's port must be a number from 1 to 65535")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, invalid("the URL's port is empty")
	}
	if _, err := p.checkHost(u.Hostname(), urlPort(u)); err != nil {
		return nil, err
	}
	return u, nil
}

func urlPort(u *url.URL) uint16 {
	if ps := u.Port(); ps != "" {
		n, _ := strconv.ParseUint(ps, 10, 16)
		return uint16(n)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// checkAddr refuses addresses that are not out there, and the caller's.
func (p *Prober) checkAddr(ap netip.AddrPort) error {
	a := ap.Addr().Unmap()
	ap = netip.AddrPortFrom(a, ap.Port())
	switch {
	case !a.IsValid():
		return invalid("no address")
	case a.Zone() != "":
		return invalid("addresses with a zone are link-local: not allowed")
	case a.IsUnspecified() || thisNetwork.Contains(a):
		return invalid("%s means this machine itself: not a target", a)
	case a.IsLoopback():
		return invalid("%s is a loopback address (this machine itself): not a target", a)
	case a.IsLinkLocalUnicast():
		return invalid("%s is a link-local address: not a target", a)
	case a.IsMulticast():
		return invalid("%s is a multicast address: not a target", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return invalid("%s is the broadcast address: not a target", a)
	}
	if p.o.Forbidden != nil && p.o.Forbidden(ap) {
		if ap.Port() == 0 {
			return invalid("%s belongs to the cell itself: not a target", a)
		}
		return invalid("%s belongs to the cell itself: not a target", ap)
	}
	return nil
}

// resolve gives host's addresses, each checked; a host that resolves to
// any forbidden address is refused. A failure to resolve is a failed probe
// (its text), not an error.
func (p *Prober) resolve(ctx context.Context, host string, port uint16) ([]netip.Addr, string, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		return []netip.Addr{a}, "", p.checkAddr(netip.AddrPortFrom(a, port))
	}
	addrs, err := p.o.Resolver(ctx, host)
	if err != nil {
		return nil, "cannot resolve " + host + ": " + plain(err), nil
	}
	if len(addrs) == 0 {
		return nil, "cannot resolve " + host + ": no addresses", nil
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
		if err := p.checkAddr(netip.AddrPortFrom(addrs[i], port)); err != nil {
			return nil, "", invalid("%s resolves to a forbidden address: %v", host, err)
		}
	}
	return addrs, "", nil
}

// Run runs one test. A failed probe is a Result with OK false; an error is
// for a bad or forbidden request (ErrInvalid) or too many at once
// (ErrBusy).
func (p *Prober) Run(ctx context.Context, r Request) (Result, error) {
	q, err := p.parse(r)
	if err != nil {
		return Result{}, err
	}
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	default:
		return Result{}, ErrBusy
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	res := Result{Kind: r.Kind, Target: r.Target}
	switch r.Kind {
	case "ping":
		err = p.ping(ctx, q, &res)
	case "dns":
		err = p.dnsQuery(ctx, q, &res)
	case "http":
		err = p.httpGet(ctx, q, &res)
	case "port":
		if r.Proto == "udp" {
			err = p.udpPort(ctx, q, &res)
		} else {
			err = p.tcpPort(ctx, q, &res)
		}
	}
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// plain is a network error in words, without Go's operation prefixes.
func plain(err error) string {
	if err == nil {
		return ""
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return "no answer in time"
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return "the name does not exist"
		}
		if de.IsTimeout {
			return "the name server did not answer in time"
		}
		return de.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ECONNREFUSED:
			return "connection refused"
		case syscall.EHOSTUNREACH:
			return "host unreachable"
		case syscall.ENETUNREACH:
			return "network unreachable (no route)"
		case syscall.ECONNRESET:
			return "connection reset"
		}
		return errno.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// ms is d in milliseconds, to a sensible precision.
func ms(d time.Duration) string {
	x := float64(d) / float64(time.Millisecond)
	prec := 0
	switch {
	case x < 1:
		prec = 3
	case x < 10:
		prec = 2
	case x < 100:
		prec = 1
	}
	return strconv.FormatFloat(x, 'f', prec, 64) + " ms"
}
