package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/pic-cell/cell/netstack/nstest"
)

// world is a target namespace at 198.18.0.1 with an HTTP server (:80), a
// DNS server (:53), a TCP listener (:7000), a UDP echo (:7001) and a silent
// UDP socket (:7004), and a prober namespace at 198.18.0.2 beside it.
type world struct {
	target, prober *nstest.NS
	slowNow        atomic.Int32 // /slow requests in progress
	slowMax        atomic.Int32
	slowSeen       atomic.Int32
}

const (
	targetAddr  = "198.18.0.1"
	targetAddr6 = "2001:2::1"
)

func newWorld(t *testing.T) *world {
	t.Helper()
	nstest.RequireRoot(t)
	w := &world{target: nstest.NewNS(t, "ptarget"), prober: nstest.NewNS(t, "prober")}
	nstest.Veth(t, w.target, "t0", targetAddr+"/24", w.prober, "p0", "198.18.0.2/24")
	w.target.Exec(t, "ip", "addr", "add", targetAddr6+"/64", "dev", "t0", "nodad")
	w.prober.Exec(t, "ip", "addr", "add", "2001:2::2/64", "dev", "p0", "nodad")
	var hl, tl net.Listener
	var dnsU, echo, silent net.PacketConn
	var dnsT net.Listener
	err := w.target.Run(func() (err error) {
		if hl, err = net.Listen("tcp", targetAddr+":80"); err != nil {
			return err
		}
		if tl, err = net.Listen("tcp", ":7000"); err != nil {
			return err
		}
		if dnsU, err = net.ListenPacket("udp", targetAddr+":53"); err != nil {
			return err
		}
		if dnsT, err = net.Listen("tcp", targetAddr+":53"); err != nil {
			return err
		}
		if echo, err = net.ListenPacket("udp", targetAddr+":7001"); err != nil {
			return err
		}
		silent, err = net.ListenPacket("udp", targetAddr+":7004")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cookie") != "" {
			http.Error(rw, "cookies sent", 400)
			return
		}
		http.SetCookie(rw, &http.Cookie{Name: "c", Value: "1"})
		fmt.Fprint(rw, strings.Repeat("x", 1<<20)) // more than the prober reads
	})
	mux.HandleFunc("/to-local", func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, "http://127.0.0.1/", http.StatusFound)
	})
	mux.HandleFunc("/to-name", func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, "http://metadata.test/", http.StatusFound)
	})
	mux.HandleFunc("/to-root", func(rw http.ResponseWriter, r *http.Request) {
		// A cookie the prober must not send back after the redirect.
		http.SetCookie(rw, &http.Cookie{Name: "c", Value: "1"})
		http.Redirect(rw, r, "/", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(rw http.ResponseWriter, r *http.Request) {
		n := w.slowNow.Add(1)
		defer w.slowNow.Add(-1)
		w.slowSeen.Add(1)
		for {
			m := w.slowMax.Load()
			if n <= m || w.slowMax.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(2 * time.Second)
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(hl)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go nstest.EchoPackets(echo)
	h := dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		switch {
		case name == "www.test." && q.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR("www.test. 60 IN A 198.18.0.1")
			m.Answer = append(m.Answer, rr)
		case name == "mail.test." && q.Question[0].Qtype == dns.TypeMX:
			rr, _ := dns.NewRR("mail.test. 60 IN MX 10 mx.test.")
			m.Answer = append(m.Answer, rr)
		case name == "big.test.":
			for i := 0; i < 40; i++ {
				rr, _ := dns.NewRR(fmt.Sprintf("big.test. 60 IN TXT \"record %02d %s\"", i, strings.Repeat("y", 60)))
				m.Answer = append(m.Answer, rr)
			}
			if _, udp := rw.RemoteAddr().(*net.UDPAddr); udp {
				m.Answer, m.Truncated = nil, true
			}
		case name == "www.test.":
		default:
			m.Rcode = dns.RcodeNameError
		}
		rw.WriteMsg(m)
	})
	du, dt := &dns.Server{PacketConn: dnsU, Handler: h}, &dns.Server{Listener: dnsT, Handler: h}
	go du.ActivateAndServe()
	go dt.ActivateAndServe()
	t.Cleanup(func() {
		hs.Close()
		tl.Close()
		du.Shutdown()
		dt.Shutdown()
		echo.Close()
		silent.Close()
	})
	return w
}

// prober is a Prober whose sockets are in the prober namespace.
func (w *world) newProber(o Options) *Prober {
	var d net.Dialer
	o.Dial = func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = w.prober.Run(func() error { c, err = d.DialContext(ctx, network, addr); return err })
		return c, err
	}
	if o.Resolver == nil {
		o.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "www.test":
				return []netip.Addr{netip.MustParseAddr(targetAddr)}, nil
			case "metadata.test":
				return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
	}
	return New(o)
}

// run runs r from inside the prober namespace.
func (w *world) run(p *Prober, r Request) (res Result, err error) {
	w.prober.Run(func() error { res, err = p.Run(context.Background(), r); return nil })
	return res, err
}

func TestKinds(t *testing.T) {
	w := newWorld(t)
	p := w.newProber(Options{Timeout: 1500 * time.Millisecond, DNSServer: func() []string { return []string{targetAddr + ":53"} }})
	for _, c := range []struct {
		r      Request
		ok     bool
		detail string
		check  func(t *testing.T, res Result)
	}{
		{Request{Kind: "ping", Target: targetAddr}, true, "3 of 3 replies from 198.18.0.1 (0% lost)", nil},
		{Request{Kind: "ping", Target: "www.test"}, true, "3 of 3 replies", nil},
		{Request{Kind: "ping", Target: targetAddr6}, true, "3 of 3 replies from 2001:2::1", nil},
		{Request{Kind: "ping", Target: "2001:2::99"}, false, "no reply from 2001:2::99", nil},
		{Request{Kind: "port", Target: "[2001:2::1]:7000"}, true, "open: connected to [2001:2::1]:7000", nil},
		{Request{Kind: "ping", Target: "198.18.0.99"}, false, "no reply from 198.18.0.99 (3 echoes sent, 100% lost)", nil},
		{Request{Kind: "dns", Target: "www.test"}, true, "NOERROR from 198.18.0.1:53", func(t *testing.T, res Result) {
			if len(res.Answers) != 1 || res.Answers[0] != targetAddr || res.Address != targetAddr+":53" {
				t.Errorf("answers %q from %s", res.Answers, res.Address)
			}
		}},
		{Request{Kind: "dns", Target: "mail.test@" + targetAddr, Type: "mx"}, true, "10 mx.test.", nil},
		{Request{Kind: "dns", Target: "big.test", Type: "TXT"}, true, "and 35 more", func(t *testing.T, res Result) {
			if len(res.Answers) != 40 {
				t.Errorf("%d answers of a truncated UDP answer asked again over TCP, want 40", len(res.Answers))
			}
		}},
		{Request{Kind: "dns", Target: "nosuch.test"}, false, "NXDOMAIN", nil},
		{Request{Kind: "dns", Target: "www.test", Type: "AAAA"}, false, "has no AAAA records", nil},
		{Request{Kind: "dns", Target: "www.test@" + targetAddr + ":5353"}, false, "no DNS server answered", nil},
		{Request{Kind: "http", Target: "http://198.18.0.1/"}, true, "HTTP 200 OK", func(t *testing.T, res Result) {
			if res.Status != 200 || res.Address != targetAddr+":80" || res.RTT <= 0 {
				t.Errorf("%+v", res)
			}
		}},
		{Request{Kind: "http", Target: "http://www.test/to-root"}, true, "(redirected)", nil},
		{Request{Kind: "http", Target: "http://198.18.0.1/missing"}, false, "HTTP 404 Not Found", func(t *testing.T, res Result) {
			if res.Status != 404 {
				t.Errorf("status %d, want 404", res.Status)
			}
		}},
		{Request{Kind: "http", Target: "http://198.18.0.1:81/"}, false, "connection refused", nil},
		{Request{Kind: "http", Target: "https://198.18.0.1:80/"}, false, "does not speak TLS", nil},
		{Request{Kind: "port", Target: "198.18.0.1:7000"}, true, "open: connected to 198.18.0.1:7000", nil},
		{Request{Kind: "port", Target: "www.test:7002"}, false, "closed: 198.18.0.1:7002 refused the connection", nil},
		{Request{Kind: "port", Target: "198.18.0.1:7001", Proto: "udp"}, true, "open: 198.18.0.1:7001 answered (1 bytes)", nil},
		{Request{Kind: "port", Target: "198.18.0.1:7003", Proto: "udp"}, false, "closed: 198.18.0.1:7003 answered port unreachable", nil},
		{Request{Kind: "port", Target: "198.18.0.1:7004", Proto: "udp"}, false, "open or filtered", nil},
	} {
		start := time.Now()
		res, err := w.run(p, c.r)
		took := time.Since(start)
		if err != nil {
			t.Errorf("%+v: %v", c.r, err)
			continue
		}
		if res.OK != c.ok || !strings.Contains(res.Detail, c.detail) || res.Kind != c.r.Kind || res.Target != c.r.Target {
			t.Errorf("%+v: OK %v %q, want OK %v and %q", c.r, res.OK, res.Detail, c.ok, c.detail)
		}
		if took > 2500*time.Millisecond {
			t.Errorf("%+v took %v, over its 1.5 s deadline", c.r, took)
		}
		if c.check != nil {
			c.check(t, res)
		}
		t.Logf("%s %s: %s (%v)", c.r.Kind, c.r.Target, res.Detail, took.Round(time.Millisecond))
	}

	// Redirects to forbidden places are refused, not followed.
	for _, target := range []string{"http://198.18.0.1/to-local", "http://198.18.0.1/to-name"} {
		if _, err := w.run(p, Request{Kind: "http", Target: target}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "redirects to a forbidden place") && !strings.Contains(err.Error(), "forbidden address") {
			t.Errorf("%s: %v, want ErrInvalid", target, err)
		}
	}
}

func TestPingSockets(t *testing.T) {
	w := newWorld(t)
	p := w.newProber(Options{Timeout: 1500 * time.Millisecond})
	// Without a ping_group_range for root the raw socket is used; with one,
	// the unprivileged datagram socket.
	for _, rng := range []string{"1 0", "0 0"} {
		var raw bool
		err := w.prober.Run(func() error {
			if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte(rng), 0o644); err != nil {
				return err
			}
			ic, err := listenICMP(false)
			if err != nil {
				return err
			}
			raw = ic.raw
			return ic.c.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		if raw != (rng == "1 0") {
			t.Errorf("ping_group_range %q: raw socket %v", rng, raw)
		}
		res, err := w.run(p, Request{Kind: "ping", Target: targetAddr})
		if err != nil || !res.OK || res.RTT <= 0 || res.Address != targetAddr {
			t.Errorf("ping_group_range %q: %+v, %v", rng, res, err)
		}
	}
}

func TestConcurrencyBound(t *testing.T) {
	w := newWorld(t)
	p := w.newProber(Options{Timeout: 5 * time.Second, MaxConcurrent: 4})
	var busy, done, other atomic.Int32
	var slowBusy atomic.Int64 // the slowest ErrBusy, ns
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			res, err := w.run(p, Request{Kind: "http", Target: "http://198.18.0.1/slow"})
			switch {
			case errors.Is(err, ErrBusy):
				busy.Add(1)
				if d := int64(time.Since(t0)); d > slowBusy.Load() {
					slowBusy.Store(d)
				}
			case err == nil && res.OK:
				done.Add(1)
			default:
				other.Add(1)
				t.Logf("unexpected: %+v %v", res, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if m := w.slowMax.Load(); m > 4 || m < 1 {
		t.Errorf("%d probes at the target at once, want at most 4", m)
	}
	if s := w.slowSeen.Load(); s != done.Load() || s > 8 {
		t.Errorf("%d requests reached the target, %d tests done", s, done.Load())
	}
	if busy.Load()+done.Load() != 100 || other.Load() != 0 || busy.Load() < 92 {
		t.Errorf("%d busy, %d done, %d other", busy.Load(), done.Load(), other.Load())
	}
	if d := time.Duration(slowBusy.Load()); d > 500*time.Millisecond {
		t.Errorf("the slowest ErrBusy took %v, want it at once", d)
	}
}
