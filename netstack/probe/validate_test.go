package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestValidateAccepts(t *testing.T) {
	p := New(Options{})
	for _, r := range []Request{
		{Kind: "ping", Target: "198.18.0.1"},
		{Kind: "ping", Target: "example.com"},
		{Kind: "ping", Target: "2001:2::1"},
		{Kind: "ping", Target: "router"},
		{Kind: "dns", Target: "example.com"},
		{Kind: "dns", Target: "_sip._udp.example.com", Type: "srv"},
		{Kind: "dns", Target: "example.com@198.18.0.1"},
		{Kind: "dns", Target: "example.com@198.18.0.1:5353", Type: "MX"},
		{Kind: "dns", Target: "example.com@[2001:2::1]:53", Type: "AAAA"},
		{Kind: "dns", Target: "198.18.0.1", Type: "PTR"},
		{Kind: "dns", Target: ".", Type: "NS"},
		{Kind: "http", Target: "http://198.18.0.1/"},
		{Kind: "http", Target: "https://example.com:8443/a/b?c=d&e=f"},
		{Kind: "http", Target: "http://[2001:2::1]/"},
		{Kind: "port", Target: "example.com:443"},
		{Kind: "port", Target: "198.18.0.1:51820", Proto: "udp"},
		{Kind: "port", Target: "[2001:2::1]:22", Proto: "tcp"},
	} {
		if err := p.Validate(r); err != nil {
			t.Errorf("%+v refused: %v", r, err)
		}
	}
}

func TestValidateRefusesHostileInput(t *testing.T) {
	p := New(Options{})
	long := strings.Repeat("ä", 2048) // 4 KB of unicode
	for _, kind := range []string{"ping", "dns", "http", "port"} {
		for _, target := range []string{
			"$(reboot)", "example.com;reboot", "example.com; reboot", ";", "../", "../../etc/passwd",
			"exa\x00mple.com", "example.com\n", "example.com\r\nHost: x", "`reboot`", "a b",
			"http://$(reboot)/", "http://x/;reboot", long, "", strings.Repeat("a", 3000),
			"http://ex\x00ample.com/", "-oProxyCommand=x", "example.com\t",
		} {
			r := Request{Kind: kind, Target: target}
			err := p.Validate(r)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s %q: %v, want ErrInvalid", kind, target, err)
				continue
			}
			if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\x00\n") || len(msg) > 300 {
				t.Errorf("%s %q: message %q", kind, target, msg)
			}
		}
	}
	for _, r := range []Request{
		{Kind: "traceroute", Target: "example.com"},
		{Kind: "", Target: "example.com"},
		{Kind: "ping", Target: "example.com", Proto: "udp"},
		{Kind: "ping", Target: "example.com", Type: "MX"},
		{Kind: "ping", Target: "example.com:80"},
		{Kind: "ping", Target: "exa_mple..com"},
		{Kind: "ping", Target: "-example.com"},
		{Kind: "ping", Target: strings.Repeat("a", 64) + ".com"},
		{Kind: "ping", Target: "1.2.3"},
		{Kind: "ping", Target: "0x7f.1"},
		{Kind: "ping", Target: "fe80::1%eth0"},
		{Kind: "dns", Target: "example.com", Type: "ANY"},
		{Kind: "dns", Target: "example.com", Type: "AXFR"},
		{Kind: "dns", Target: "example.com@ns.example.com"},
		{Kind: "dns", Target: "example.com@198.18.0.1:0"},
		{Kind: "dns", Target: "example.com@198.18.0.1:70000"},
		{Kind: "http", Target: "ftp://198.18.0.1/"},
		{Kind: "http", Target: "file:///etc/passwd"},
		{Kind: "http", Target: "javascript:alert(1)"},
		{Kind: "http", Target: "http://user:secret@198.18.0.1/"},
		{Kind: "http", Target: "http://198.18.0.1:0/"},
		{Kind: "http", Target: "http://198.18.0.1:65536/"},
		{Kind: "http", Target: "http:///path"},
		{Kind: "http", Target: "//198.18.0.1/"},
		{Kind: "http", Target: "http://" + strings.Repeat("a", 2050) + "/"},
		{Kind: "port", Target: "198.18.0.1"},
		{Kind: "port", Target: "198.18.0.1:0"},
		{Kind: "port", Target: "198.18.0.1:65536"},
		{Kind: "port", Target: "198.18.0.1:-1"},
		{Kind: "port", Target: "198.18.0.1:http"},
		{Kind: "port", Target: "198.18.0.1:80", Proto: "sctp"},
		{Kind: "port", Target: "2001:2::1:80"},
	} {
		if err := p.Validate(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", r, err)
		}
	}
}

// recorder is a Dial and a Resolver that count what reaches them.
type recorder struct {
	dials, lookups atomic.Int32
	resolve        map[string][]netip.Addr
}

func (r *recorder) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.dials.Add(1)
	return nil, errors.New("the test's dialer sends nothing")
}

func (r *recorder) Resolver(ctx context.Context, host string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	if a, ok := r.resolve[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestForbiddenTargets(t *testing.T) {
	rec := &recorder{resolve: map[string][]netip.Addr{
		"metadata.test": {netip.MustParseAddr("169.254.169.254")},
		"mixed.test":    {netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("127.0.0.1")},
		"mapped.test":   {netip.MustParseAddr("::ffff:127.0.0.1")},
		"own.test":      {netip.MustParseAddr("198.18.0.2")},
		"mcast.test":    {netip.MustParseAddr("ff02::1")},
	}}
	own := netip.MustParseAddr("198.18.0.2")
	p := New(Options{
		Resolver: rec.Resolver, Dial: rec.Dial, Timeout: time.Second,
		DNSServer: func() []string { return []string{"198.18.0.1:53"} },
		Forbidden: func(ap netip.AddrPort) bool { return ap.Addr() == own && (ap.Port() == 0 || ap.Port() == 443) },
	})
	for _, c := range []struct {
		r    Request
		want string
	}{
		{Request{Kind: "ping", Target: "169.254.169.254"}, "link-local"},
		{Request{Kind: "ping", Target: "fe80::1"}, "link-local"},
		{Request{Kind: "ping", Target: "224.0.0.1"}, "multicast"},
		{Request{Kind: "ping", Target: "ff02::1"}, "multicast"},
		{Request{Kind: "ping", Target: "127.0.0.1"}, "loopback"},
		{Request{Kind: "ping", Target: "127.9.9.9"}, "loopback"},
		{Request{Kind: "ping", Target: "::1"}, "loopback"},
		{Request{Kind: "ping", Target: "::ffff:127.0.0.1"}, "loopback"},
		{Request{Kind: "ping", Target: "0.0.0.0"}, "this machine"},
		{Request{Kind: "ping", Target: "0.1.2.3"}, "this machine"},
		{Request{Kind: "ping", Target: "::"}, "this machine"},
		{Request{Kind: "ping", Target: "255.255.255.255"}, "broadcast"},
		{Request{Kind: "ping", Target: "198.18.0.2"}, "belongs to the cell"},
		{Request{Kind: "port", Target: "198.18.0.2:443"}, "belongs to the cell"},
		{Request{Kind: "port", Target: "127.0.0.1:22"}, "loopback"},
		{Request{Kind: "port", Target: "[::1]:22", Proto: "udp"}, "loopback"},
		{Request{Kind: "http", Target: "http://127.0.0.1/"}, "loopback"},
		{Request{Kind: "http", Target: "http://[fe80::1]/"}, "link-local"},
		{Request{Kind: "http", Target: "https://198.18.0.2/"}, "belongs to the cell"},
		{Request{Kind: "http", Target: "http://169.254.169.254/latest/meta-data/"}, "link-local"},
		{Request{Kind: "dns", Target: "example.com@127.0.0.53"}, "loopback"},
		{Request{Kind: "dns", Target: "example.com@224.0.0.251:5353"}, "multicast"},
		// Names resolving to forbidden addresses: refused after resolving.
		{Request{Kind: "ping", Target: "metadata.test"}, "169.254.169.254 is a link-local"},
		{Request{Kind: "port", Target: "metadata.test:80"}, "link-local"},
		{Request{Kind: "port", Target: "mixed.test:80", Proto: "udp"}, "loopback"},
		{Request{Kind: "http", Target: "http://metadata.test/"}, "link-local"},
		{Request{Kind: "http", Target: "http://mapped.test/"}, "loopback"},
		{Request{Kind: "http", Target: "https://own.test/"}, "belongs to the cell"},
		{Request{Kind: "ping", Target: "mcast.test"}, "multicast"},
	} {
		res, err := p.Run(context.Background(), c.r)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %+v, %v; want ErrInvalid", c.r, res, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %q does not say %q", c.r, err, c.want)
		}
	}
	if n := rec.dials.Load(); n != 0 {
		t.Errorf("%d dials for forbidden targets, want none", n)
	}
	// The cell's own address on another port is not the caller's concern.
	if _, err := p.Run(context.Background(), Request{Kind: "port", Target: "198.18.0.2:22"}); err != nil {
		t.Errorf("own address, port 22: %v", err)
	}
}

func TestDialControl(t *testing.T) {
	p := New(Options{Forbidden: func(ap netip.AddrPort) bool { return ap.Port() == 8443 }})
	for addr, ok := range map[string]bool{
		"198.18.0.1:80": true, "127.0.0.1:80": false, "[::1]:80": false, "169.254.1.1:80": false,
		"198.18.0.1:8443": false, "example.com:80": false, "[fe80::1%eth0]:80": false,
	} {
		err := p.control("tcp4", addr, nil)
		if ok != (err == nil) || (!ok && !errors.Is(err, ErrInvalid)) {
			t.Errorf("Control %s: %v", addr, err)
		}
	}
	// The default dialer refuses at connect time what slipped past: a
	// literal dialled directly.
	_, err := p.dial(context.Background(), "tcp", "127.0.0.1:1")
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("the default dialer connected to loopback: %v", err)
	}
}

func TestResolveFailureIsAFailedProbe(t *testing.T) {
	rec := &recorder{}
	p := New(Options{Resolver: rec.Resolver, Dial: rec.Dial, Timeout: time.Second})
	for _, r := range []Request{
		{Kind: "ping", Target: "nosuch.test"},
		{Kind: "port", Target: "nosuch.test:80"},
		{Kind: "http", Target: "http://nosuch.test/"},
	} {
		res, err := p.Run(context.Background(), r)
		if err != nil || res.OK || !strings.Contains(res.Detail, "does not exist") {
			t.Errorf("%+v: %+v, %v; want a failed probe saying the name does not exist", r, res, err)
		}
	}
}
