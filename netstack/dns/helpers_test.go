package dns

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func quiet() *slog.Logger {
	if os.Getenv("DNS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// clock is a settable time for TTLs and rate limits.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// upstream is an in-process miekg/dns server on 127.0.0.1 answering from a
// table, counting what it is asked, per transport.
type testUpstream struct {
	Addr string

	mu      sync.Mutex
	records map[string][]mdns.RR // by "name type"
	counts  map[string]int       // by "udp name type" / "tcp name type"
}

func newUpstream(t testing.TB, zone ...string) *testUpstream {
	t.Helper()
	u := &testUpstream{records: map[string][]mdns.RR{}, counts: map[string]int{}}
	for _, z := range zone {
		rr, err := mdns.NewRR(z)
		if err != nil {
			t.Fatal(err)
		}
		k := rr.Header().Name + " " + mdns.TypeToString[rr.Header().Rrtype]
		u.records[k] = append(u.records[k], rr)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	u.Addr = pc.LocalAddr().String()
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

var upstreamSOA, _ = mdns.NewRR("example.test. 3600 IN SOA ns.example.test. host.example.test. 1 3600 600 86400 30")

func (u *testUpstream) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	tcp := w.RemoteAddr().Network() == "tcp"
	u.mu.Lock()
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	u.counts[proto+" "+name+" "+mdns.TypeToString[q.Qtype]]++
	m := new(mdns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Answer = append(m.Answer, u.records[name+" "+mdns.TypeToString[q.Qtype]]...)
	if len(m.Answer) == 0 {
		exists := false
		for k := range u.records {
			exists = exists || strings.HasPrefix(k, name+" ")
		}
		if !exists {
			m.Rcode = mdns.RcodeNameError
		}
		m.Ns = []mdns.RR{upstreamSOA}
	}
	u.mu.Unlock()
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	if !tcp {
		size := mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// count is how often name/type was asked over proto ("udp", "tcp", "" both).
func (u *testUpstream) count(proto, name, qtype string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if proto == "" {
		return u.counts["udp "+name+" "+qtype] + u.counts["tcp "+name+" "+qtype]
	}
	return u.counts[proto+" "+name+" "+qtype]
}

// blackhole is a UDP socket that never answers: an upstream that is down.
func blackhole(t testing.TB) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// cell is a Server on 127.0.0.1 random ports (UDP and TCP on the same port).
type cell struct {
	*Server
	Addr  string
	clock *clock
}

func startCell(t testing.TB, cfg Config) *cell {
	t.Helper()
	c := &cell{clock: newClock()}
	c.Server = New(Options{Logger: quiet(), Now: c.clock.Now})
	if cfg.Allowed == nil {
		cfg.Allowed = loopback
	}
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(pc, ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	c.Addr = pc.LocalAddr().String()
	return c
}

// ask sends one query over network ("udp" or "tcp") with EDNS and returns
// the answer; a timeout is an error.
func ask(addr, network, name string, qtype uint16) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	c := mdns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(q, addr)
	return r, err
}

func mustAsk(t testing.TB, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	r, err := ask(addr, "udp", name, qtype)
	if err != nil {
		t.Fatalf("%s %s: %v", name, mdns.TypeToString[qtype], err)
	}
	return r
}

// rrs renders a section one record a line, tabs as spaces.
func rrs(section []mdns.RR) string {
	var out []string
	for _, rr := range section {
		if rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return strings.Join(out, "\n")
}

// summary is "RCODE aa|- answer… ; authority…", the shape a table compares.
func summary(r *mdns.Msg) string {
	aa := "-"
	if r.Authoritative {
		aa = "aa"
	}
	var ns []string
	for _, rr := range r.Ns {
		ns = append(ns, mdns.TypeToString[rr.Header().Rrtype])
	}
	return fmt.Sprintf("%s %s [%s] ns=%s", mdns.RcodeToString[r.Rcode], aa, strings.ReplaceAll(rrs(r.Answer), "\n", " | "), strings.Join(ns, ","))
}

func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}
