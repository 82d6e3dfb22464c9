package dns

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

const domain = "home.example.org"

// sampleZone is a cell with two peers, services on the cell's address, and
// one record of every type.
func sampleZone() Zone {
	return Zone{Domain: domain, Serial: 7, Records: []Record{
		{Name: "@", Type: "A", Value: "10.77.0.1"},
		{Name: "@", Type: "AAAA", Value: "fd77::1"},
		{Name: "alice-phone", Type: "A", Value: "10.77.0.2"},
		{Name: "alice-phone", Type: "AAAA", Value: "fd77::2"},
		{Name: "bob", Type: "a", Value: "10.77.0.3", TTL: 60},
		{Name: "files", Type: "A", Value: "10.77.0.1"},
		{Name: "mail.home.example.org.", Type: "A", Value: "10.77.0.1"},
		{Name: "www", Type: "CNAME", Value: "files"},
		{Name: "ext", Type: "CNAME", Value: "example.test"},
		{Name: "@", Type: "TXT", Value: "v=spf1 mx -all"},
		{Name: "@", Type: "MX", Value: "10 mail"},
		{Name: "_sip._tcp", Type: "SRV", Value: "10 5 5060 bob"},
		{Name: "10.77.0.9", Type: "PTR", Value: "printer"},
	}}
}

func newSample(t *testing.T) (*cell, *testUpstream) {
	up := newUpstream(t,
		"example.test. 60 IN A 198.18.0.80",
		"other.example.test. 60 IN A 198.18.0.81",
		"200.0.77.10.in-addr.arpa. 60 IN PTR somebody.example.test.")
	c := startCell(t, Config{Zone: sampleZone(), Upstreams: []string{up.Addr}})
	return c, up
}

// TestZoneAnswers asks for every kind of name in the zone and compares
// rcode, AA, answer and authority.
func TestZoneAnswers(t *testing.T) {
	c, up := newSample(t)
	const d = "home.example.org."
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"alice-phone." + d, mdns.TypeA, "NOERROR aa [alice-phone.home.example.org. 300 IN A 10.77.0.2] ns="},
		{"ALICE-Phone.Home.Example.ORG.", mdns.TypeAAAA, "NOERROR aa [alice-phone.home.example.org. 300 IN AAAA fd77::2] ns="},
		{"bob." + d, mdns.TypeA, "NOERROR aa [bob.home.example.org. 60 IN A 10.77.0.3] ns="},
		{d, mdns.TypeA, "NOERROR aa [home.example.org. 300 IN A 10.77.0.1] ns="},
		{d, mdns.TypeSOA, "NOERROR aa [home.example.org. 60 IN SOA home.example.org. hostmaster.home.example.org. 7 3600 600 86400 60] ns="},
		{d, mdns.TypeNS, "NOERROR aa [home.example.org. 300 IN NS home.example.org.] ns="},
		{d, mdns.TypeTXT, `NOERROR aa [home.example.org. 300 IN TXT "v=spf1 mx -all"] ns=`},
		{d, mdns.TypeMX, "NOERROR aa [home.example.org. 300 IN MX 10 mail.home.example.org.] ns="},
		{"_sip._tcp." + d, mdns.TypeSRV, "NOERROR aa [_sip._tcp.home.example.org. 300 IN SRV 10 5 5060 bob.home.example.org.] ns="},
		{"www." + d, mdns.TypeA, "NOERROR aa [www.home.example.org. 300 IN CNAME files.home.example.org. | files.home.example.org. 300 IN A 10.77.0.1] ns="},
		{"www." + d, mdns.TypeCNAME, "NOERROR aa [www.home.example.org. 300 IN CNAME files.home.example.org.] ns="},
		// A CNAME out of the zone is followed through the upstream.
		{"ext." + d, mdns.TypeA, "NOERROR aa [ext.home.example.org. 300 IN CNAME example.test. | example.test. 60 IN A 198.18.0.80] ns="},
		// Unknown name: NXDOMAIN with the SOA; known name, other type: NODATA.
		{"nobody." + d, mdns.TypeA, "NXDOMAIN aa [] ns=SOA"},
		{"alice-phone." + d, mdns.TypeTXT, "NOERROR aa [] ns=SOA"},
		{"x.alice-phone." + d, mdns.TypeA, "NXDOMAIN aa [] ns=SOA"},
		// _tcp exists because _sip._tcp does (an empty non-terminal).
		{"_tcp." + d, mdns.TypeA, "NOERROR aa [] ns=SOA"},
		// Reverse names: derived from A/AAAA; the apex wins its address
		// over the services on it; an explicit PTR wins.
		{"2.0.77.10.in-addr.arpa.", mdns.TypePTR, "NOERROR aa [2.0.77.10.in-addr.arpa. 300 IN PTR alice-phone.home.example.org.] ns="},
		{"1.0.77.10.in-addr.arpa.", mdns.TypePTR, "NOERROR aa [1.0.77.10.in-addr.arpa. 300 IN PTR home.example.org.] ns="},
		{"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.d.f.ip6.arpa.", mdns.TypePTR, "NOERROR aa [2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.d.f.ip6.arpa. 300 IN PTR alice-phone.home.example.org.] ns="},
		{"9.0.77.10.in-addr.arpa.", mdns.TypePTR, "NOERROR aa [9.0.77.10.in-addr.arpa. 300 IN PTR printer.home.example.org.] ns="},
		// An address outside the zone's records is the upstream's.
		{"200.0.77.10.in-addr.arpa.", mdns.TypePTR, "NOERROR - [200.0.77.10.in-addr.arpa. 60 IN PTR somebody.example.test.] ns="},
	} {
		r := mustAsk(t, c.Addr, tc.name, tc.qtype)
		if got := summary(r); got != tc.want {
			t.Errorf("%s %s:\n got %s\nwant %s", tc.name, mdns.TypeToString[tc.qtype], got, tc.want)
		}
		if !r.RecursionAvailable {
			t.Errorf("%s: RA not set", tc.name)
		}
		if got := r.Question[0].Name; got != tc.name {
			t.Errorf("%s: question came back as %s", tc.name, got)
		}
	}
	if n := up.count("", "home.example.org.", "A") + up.count("", "nobody.home.example.org.", "A"); n != 0 {
		t.Errorf("the upstream was asked %d times for names in the zone; want never (split horizon)", n)
	}
	if st := c.Stats(); st.Records != 13 || st.Domain != domain || st.Serial != 7 {
		t.Errorf("stats: %d records, domain %q, serial %d; want 13, %q, 7", st.Records, st.Domain, st.Serial, domain)
	}
}

// TestRefusedQueries: zone transfers (the zone lists the household's
// devices) and classes other than IN are refused, whoever asks.
func TestRefusedQueries(t *testing.T) {
	c, up := newSample(t)
	for _, tc := range []struct {
		name  string
		qtype uint16
		net   string
	}{{domain + ".", mdns.TypeAXFR, "tcp"}, {domain + ".", mdns.TypeIXFR, "udp"}, {"example.test.", mdns.TypeAXFR, "tcp"}} {
		r, err := ask(c.Addr, tc.net, tc.name, tc.qtype)
		if err != nil || r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s %s over %s: %v %v, want REFUSED", tc.name, mdns.TypeToString[tc.qtype], tc.net, err, r)
		}
	}
	q := new(mdns.Msg)
	q.SetQuestion("alice-phone."+domain+".", mdns.TypeA)
	q.Question[0].Qclass = mdns.ClassCHAOS
	if r, err := mdns.Exchange(q, c.Addr); err != nil || r.Rcode != mdns.RcodeRefused {
		t.Errorf("class CH: %v %v, want REFUSED", err, r)
	}
	if n := up.count("", "example.test.", "AXFR"); n != 0 {
		t.Errorf("an AXFR was forwarded %d times", n)
	}
}

// TestNegativeAnswerSOA: the SOA of an NXDOMAIN is the zone's, its minimum
// what the package doc says.
func TestNegativeAnswerSOA(t *testing.T) {
	c, _ := newSample(t)
	r := mustAsk(t, c.Addr, "nobody."+domain+".", mdns.TypeA)
	soa, ok := r.Ns[0].(*mdns.SOA)
	if !ok {
		t.Fatalf("authority = %v, want the SOA", r.Ns)
	}
	if soa.Minttl != soaMinimum || soa.Hdr.Name != domain+"." || soa.Serial != 7 {
		t.Errorf("SOA = %v, want minimum %d at %s serial 7", soa, soaMinimum, domain)
	}
}

// TestForwardAndCache: a forwarded name is asked upstream once for two
// queries; the cached TTL goes down with the clock; the entry expires.
func TestForwardAndCache(t *testing.T) {
	c, up := newSample(t)
	r := mustAsk(t, c.Addr, "example.test.", mdns.TypeA)
	if got, want := rrs(r.Answer), "example.test. 60 IN A 198.18.0.80"; got != want || r.Authoritative {
		t.Fatalf("first answer %q (aa %v), want %q not authoritative", got, r.Authoritative, want)
	}
	c.clock.Add(10 * time.Second)
	r = mustAsk(t, c.Addr, "ExAmPlE.TeSt.", mdns.TypeA)
	// The owner name is compressed to the question's, so it takes the
	// query's case too, as from most servers.
	if got, want := rrs(r.Answer), "ExAmPlE.TeSt. 50 IN A 198.18.0.80"; got != want {
		t.Errorf("cached answer after 10 s = %q, want %q", got, want)
	}
	if got := r.Question[0].Name; got != "ExAmPlE.TeSt." {
		t.Errorf("question came back as %q, want the query's own case", got)
	}
	if n := up.count("udp", "example.test.", "A"); n != 1 {
		t.Errorf("upstream asked %d times for two queries, want 1", n)
	}
	c.clock.Add(51 * time.Second)
	r = mustAsk(t, c.Addr, "example.test.", mdns.TypeA)
	if got, want := rrs(r.Answer), "example.test. 60 IN A 198.18.0.80"; got != want {
		t.Errorf("answer after expiry = %q, want %q (fresh)", got, want)
	}
	if n := up.count("udp", "example.test.", "A"); n != 2 {
		t.Errorf("upstream asked %d times after the TTL ran out, want 2", n)
	}
	st := c.Stats()
	if st.CacheHits != 1 || st.CacheMisses != 2 || st.CacheEntries != 1 {
		t.Errorf("cache stats hits %d misses %d entries %d, want 1, 2, 1", st.CacheHits, st.CacheMisses, st.CacheEntries)
	}
	if len(st.Upstreams) != 1 || st.Upstreams[0].OK != 2 || st.Upstreams[0].Err != "" || st.Upstreams[0].LastOK.IsZero() {
		t.Errorf("upstream stats %+v, want 2 answers and no error", st.Upstreams)
	}
}

// TestNegativeCaching: NXDOMAIN is kept for the SOA's minimum (30 s here).
func TestNegativeCaching(t *testing.T) {
	c, up := newSample(t)
	for range 2 {
		if r := mustAsk(t, c.Addr, "nx.example.test.", mdns.TypeA); r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
			t.Fatalf("answer %s, want NXDOMAIN with the SOA", summary(r))
		}
	}
	if n := up.count("udp", "nx.example.test.", "A"); n != 1 {
		t.Errorf("upstream asked %d times for two queries, want 1", n)
	}
	c.clock.Add(31 * time.Second)
	mustAsk(t, c.Addr, "nx.example.test.", mdns.TypeA)
	if n := up.count("udp", "nx.example.test.", "A"); n != 2 {
		t.Errorf("upstream asked %d times after the SOA minimum, want 2", n)
	}
}

// TestTruncationRetriesOverTCP: an answer too big for UDP comes from the
// upstream over TCP, and reaches a UDP client as TC (it asks again over
// TCP and gets it all).
func TestTruncationRetriesOverTCP(t *testing.T) {
	var zone []string
	for i := range 15 {
		zone = append(zone, "big.example.test. 60 IN TXT \""+strings.Repeat(string(rune('a'+i)), 200)+"\"")
	}
	up := newUpstream(t, zone...)
	c := startCell(t, Config{Upstreams: []string{up.Addr}})
	r := mustAsk(t, c.Addr, "big.example.test.", mdns.TypeTXT)
	if !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("UDP answer: TC %v, %d records; want TC and none", r.Truncated, len(r.Answer))
	}
	r, err := ask(c.Addr, "tcp", "big.example.test.", mdns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 15 || r.Truncated {
		t.Errorf("TCP answer: %d records, TC %v; want 15", len(r.Answer), r.Truncated)
	}
	if u, tc := up.count("udp", "big.example.test.", "TXT"), up.count("tcp", "big.example.test.", "TXT"); u != 1 || tc != 1 {
		t.Errorf("upstream asked %d times over UDP and %d over TCP, want 1 and 1 (then cached)", u, tc)
	}
}

// TestServfailFastWhenUpstreamsDown: with every upstream a black hole the
// answer is SERVFAIL within a second, and the zone is answered meanwhile.
func TestServfailFastWhenUpstreamsDown(t *testing.T) {
	for _, n := range []int{1, 3} {
		var ups []string
		for range n {
			ups = append(ups, blackhole(t))
		}
		c := startCell(t, Config{Zone: sampleZone(), Upstreams: ups})
		type result struct {
			r   *mdns.Msg
			err error
			d   time.Duration
		}
		fwd := make(chan result)
		go func() {
			start := time.Now()
			r, err := ask(c.Addr, "udp", "example.test.", mdns.TypeA)
			fwd <- result{r, err, time.Since(start)}
		}()
		time.Sleep(50 * time.Millisecond) // the forward is waiting now
		start := time.Now()
		r := mustAsk(t, c.Addr, "alice-phone."+domain+".", mdns.TypeA)
		if d := time.Since(start); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || d > 300*time.Millisecond {
			t.Errorf("%d upstreams down: zone answer %s after %v, want the A record at once", n, summary(r), d)
		}
		res := <-fwd
		if res.err != nil {
			t.Fatalf("%d upstreams down: %v after %v, want SERVFAIL", n, res.err, res.d)
		}
		if res.r.Rcode != mdns.RcodeServerFailure || res.d >= time.Second {
			t.Errorf("%d upstreams down: %s after %v; want SERVFAIL in under 1 s", n, mdns.RcodeToString[res.r.Rcode], res.d)
		}
		st := c.Stats()
		for _, u := range st.Upstreams {
			if u.Err == "" || u.Fail != 1 || u.LastFail.IsZero() {
				t.Errorf("%d upstreams down: stats %+v, want one failure with its error", n, u)
			}
		}
	}
}

// TestFailedUpstreamAskedLast: after the first upstream failed, the second
// is asked first, so a dead resolver costs one slow query, not every one.
func TestFailedUpstreamAskedLast(t *testing.T) {
	up := newUpstream(t, "example.test. 60 IN A 198.18.0.80", "other.example.test. 60 IN A 198.18.0.81")
	c := startCell(t, Config{Upstreams: []string{blackhole(t), up.Addr}, CacheSize: -1})
	start := time.Now()
	if r := mustAsk(t, c.Addr, "example.test.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("first query: %s", summary(r))
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > time.Second {
		t.Errorf("first query took %v; want the dead upstream's share (400 ms) and then an answer", d)
	}
	start = time.Now()
	if r := mustAsk(t, c.Addr, "other.example.test.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("second query: %s", summary(r))
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("second query took %v; want the live upstream asked first (not after the dead one's 400 ms)", d)
	}
}

// TestSetTakesEffectAtOnce: records come and go with Set, PutRecord and
// RemoveRecord, visible to the very next query.
func TestSetTakesEffectAtOnce(t *testing.T) {
	c, _ := newSample(t)
	carol := Record{Name: "carol", Type: "A", Value: "10.77.0.4"}
	aliceName := "alice-phone." + domain + "."
	check := func(step, name string, want int) {
		t.Helper()
		r := mustAsk(t, c.Addr, name, mdns.TypeA)
		if r.Rcode != want {
			t.Errorf("%s: %s is %s, want %s", step, name, mdns.RcodeToString[r.Rcode], mdns.RcodeToString[want])
		}
	}
	check("start", "carol."+domain+".", mdns.RcodeNameError)
	if err := c.PutRecord(carol); err != nil {
		t.Fatal(err)
	}
	check("PutRecord", "carol."+domain+".", mdns.RcodeSuccess)
	check("PutRecord", "4.0.77.10.in-addr.arpa.", mdns.RcodeSuccess)
	if err := c.RemoveRecord(carol); err != nil {
		t.Fatal(err)
	}
	check("RemoveRecord", "carol."+domain+".", mdns.RcodeNameError)

	z := sampleZone()
	z.Records = z.Records[:2] // alice and the rest gone
	z.Records = append(z.Records, carol)
	if err := c.Set(Config{Zone: z, Allowed: loopback}); err != nil {
		t.Fatal(err)
	}
	check("Set", aliceName, mdns.RcodeNameError)
	check("Set", "carol."+domain+".", mdns.RcodeSuccess)
	if r := mustAsk(t, c.Addr, "2.0.77.10.in-addr.arpa.", mdns.TypePTR); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("alice's PTR after she went: %s; want it forwarded (and SERVFAIL, no upstreams left)", summary(r))
	}
	if st := c.Stats(); st.Records != 3 {
		t.Errorf("stats: %d records, want 3", st.Records)
	}
}

// TestSetIdempotent: the same config twice publishes nothing new; with
// Serial 0 the server counts changes.
func TestSetIdempotent(t *testing.T) {
	c := startCell(t, Config{})
	z := sampleZone()
	z.Serial = 0
	cfg := Config{Zone: z, Allowed: loopback}
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	before := c.zone.Load()
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if c.zone.Load() != before {
		t.Errorf("a second Set of the same config published a new zone")
	}
	cfg.Zone.Records = append(cfg.Zone.Records, Record{Name: "dave", Type: "A", Value: "10.77.0.5"})
	if err := c.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Stats().Serial, before.serial+1; got != want {
		t.Errorf("serial after a change = %d, want %d", got, want)
	}
}

// TestSetRefusesAndKeepsOld: a config with a bad record, a CNAME beside
// other data, or a bad upstream is refused whole.
func TestSetRefusesAndKeepsOld(t *testing.T) {
	c, _ := newSample(t)
	before := c.zone.Load()
	for name, mut := range map[string]func(*Config){
		"hostile name": func(c *Config) {
			c.Zone.Records = append(c.Zone.Records, Record{Name: "$(reboot)", Type: "A", Value: "10.77.0.9"})
		},
		"cname and data": func(c *Config) { c.Zone.Records = append(c.Zone.Records, Record{Name: "www", Type: "TXT", Value: "x"}) },
		"two cnames": func(c *Config) {
			c.Zone.Records = append(c.Zone.Records, Record{Name: "www", Type: "CNAME", Value: "mail"})
		},
		"bad upstream": func(c *Config) { c.Upstreams = []string{"resolver.example"} },
		"bad prefix":   func(c *Config) { c.Allowed = []netip.Prefix{{}} },
		"no domain":    func(c *Config) { c.Zone.Domain = "" },
	} {
		cfg := Config{Zone: sampleZone(), Allowed: loopback}
		cfg.Zone.Records = append([]Record{{Name: "new", Type: "A", Value: "10.77.0.50"}}, cfg.Zone.Records...)
		mut(&cfg)
		err := c.Set(cfg)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Set = %v, want ErrInvalid", name, err)
		}
		if c.zone.Load() != before {
			t.Errorf("%s: the refused Set changed the zone", name)
		}
	}
	if r := mustAsk(t, c.Addr, "new."+domain+".", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("a record of a refused Set is served: %s", summary(r))
	}
	if err := c.PutRecord(Record{Name: "alice-phone", Type: "CNAME", Value: "files"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutRecord of a CNAME beside an A = %v, want ErrInvalid", err)
	}
	if r := mustAsk(t, c.Addr, "alice-phone."+domain+".", mdns.TypeA); len(r.Answer) != 1 {
		t.Errorf("after the refused PutRecord: %s", summary(r))
	}
}

// TestRefusedSource: a source outside Allowed gets nothing back, over UDP
// or TCP, and is counted.
func TestRefusedSource(t *testing.T) {
	c, _ := newSample(t)
	if err := c.Set(Config{Zone: sampleZone(), Allowed: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	q := new(mdns.Msg)
	q.SetQuestion("alice-phone."+domain+".", mdns.TypeA)
	for _, network := range []string{"udp", "tcp"} {
		cl := mdns.Client{Net: network, Timeout: 300 * time.Millisecond}
		r, _, err := cl.Exchange(q, c.Addr)
		if err == nil {
			t.Errorf("%s from outside Allowed answered: %s", network, summary(r))
		}
	}
	if got := c.Stats().Refused; got != 2 {
		t.Errorf("stats: %d refused, want 2", got)
	}
	if err := c.Set(Config{Zone: sampleZone(), Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}); err != nil {
		t.Fatal(err)
	}
	if r := mustAsk(t, c.Addr, "alice-phone."+domain+".", mdns.TypeA); len(r.Answer) != 1 {
		t.Errorf("after allowing 127.0.0.1: %s", summary(r))
	}
}

// TestRateLimit: with 5/s and a burst of 10, 30 queries at one instant get
// 10 answers; a second later 5 more tokens have come.
func TestRateLimit(t *testing.T) {
	c := startCell(t, Config{Zone: sampleZone(), RatePerSecond: 5, Burst: 10})
	burst := func(n int) int {
		conn, err := net.Dial("udp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := range n {
			q := new(mdns.Msg)
			q.SetQuestion("alice-phone."+domain+".", mdns.TypeA)
			q.Id = uint16(i)
			b, _ := q.Pack()
			conn.Write(b)
		}
		got := 0
		buf := make([]byte, 1500)
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			if _, err := conn.Read(buf); err != nil {
				return got
			}
			got++
		}
	}
	if got := burst(30); got != 10 {
		t.Errorf("30 queries at once: %d answered, want the burst of 10", got)
	}
	c.clock.Add(time.Second)
	if got := burst(30); got != 5 {
		t.Errorf("30 queries a second later: %d answered, want 5", got)
	}
	st := c.Stats()
	if st.Limited != 45 || len(st.Sources) != 1 || st.Sources[0].Queries != 60 || st.Sources[0].Limited != 45 {
		t.Errorf("stats: limited %d, sources %+v; want 45 limited of 60 from one source", st.Limited, st.Sources)
	}
}

// TestSourceTableBounded: the per-source table forgets rather than grows.
func TestSourceTableBounded(t *testing.T) {
	var s sources
	now := time.Now()
	for i := range 3 * maxSources {
		a := netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)})
		if !s.admit(a, now, 50, 100) {
			t.Fatalf("first query of a new source limited")
		}
	}
	if n := len(s.m); n > maxSources {
		t.Errorf("%d sources tracked, want at most %d", n, maxSources)
	}
}

// TestShutdown: Shutdown joins every goroutine, even with a query waiting
// on a dead upstream, and may be called twice.
func TestShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	c := startCell(t, Config{Upstreams: []string{blackhole(t)}})
	go ask(c.Addr, "udp", "example.test.", mdns.TypeA)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	c.Shutdown()
	c.Shutdown()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Shutdown took %v with a query in flight", d)
	}
	if err := c.Start(nil, nil); err != ErrClosed {
		t.Errorf("Start after Shutdown = %v, want ErrClosed", err)
	}
	if _, err := ask(c.Addr, "udp", "example.test.", mdns.TypeA); err == nil {
		t.Errorf("an answer after Shutdown")
	}
	// The client goroutine above ends with its timeout; allow for it and
	// the runtime's own.
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+1 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Shutdown, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestStartOnTwoAddresses: one server, two sockets (as on the tunnel's
// IPv4 and IPv6 addresses), both in Stats.
func TestStartOnTwoAddresses(t *testing.T) {
	c := startCell(t, Config{Zone: sampleZone(), Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if err := c.Start(pc, nil); err != nil {
		t.Fatal(err)
	}
	r := mustAsk(t, pc.LocalAddr().String(), "alice-phone."+domain+".", mdns.TypeAAAA)
	if len(r.Answer) != 1 {
		t.Errorf("over IPv6: %s", summary(r))
	}
	if got := c.Stats().Listening; len(got) != 3 {
		t.Errorf("listening on %v, want udp and tcp on 127.0.0.1 and udp on ::1", got)
	}
}
