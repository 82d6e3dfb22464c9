package dns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/nstest"
)

// The system test's world:
//
//	client 10.77.0.2, fd77::2 ── cell 10.77.0.1, fd77::1 (lan0)        the server
//	                             cell 198.18.0.2 (wan0) ── inet 198.18.0.1, dnsmasq on 198.18.0.53
//	wan 198.18.3.2 ──────────────────────────────────────── inet 198.18.3.1 (routes 10.77.0.0/24 to the cell)
//
// No WireGuard here: the client stands where a peer's tunnel ends, with a
// source address in 10.77.0.0/24; the whole tunnel is the system tests'.
const (
	nsCell4    = "10.77.0.1"
	nsCell6    = "fd77::1"
	nsCellWAN  = "198.18.0.2"
	nsDnsmasq  = "198.18.0.53"
	nsWANHost  = "198.18.3.2"
	nsZoneName = "home.example.org"
)

type nsWorld struct {
	inet, cell, client, wan *nstest.NS
	dnsmasqLog              string
}

func requireTools(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	for _, tool := range []string{"dig", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: needs %s (Debian: bind9-dnsutils, dnsmasq-base): %v", tool, err)
		}
	}
}

func newWorld(t *testing.T) *nsWorld {
	w := &nsWorld{inet: nstest.NewNS(t, "inet"), cell: nstest.NewNS(t, "dnscell"), client: nstest.NewNS(t, "dnsclient"), wan: nstest.NewNS(t, "dnswan")}
	nstest.Veth(t, w.inet, "to-cell", "198.18.0.1/24", w.cell, "wan0", nsCellWAN+"/24")
	w.inet.Exec(t, "ip", "addr", "add", nsDnsmasq+"/24", "dev", "to-cell")
	nstest.Veth(t, w.cell, "lan0", nsCell4+"/24", w.client, "eth0", "10.77.0.2/24")
	w.cell.Exec(t, "ip", "addr", "add", nsCell6+"/64", "dev", "lan0", "nodad")
	w.client.Exec(t, "ip", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad")
	nstest.Veth(t, w.inet, "to-wan", "198.18.3.1/24", w.wan, "eth0", nsWANHost+"/24")
	w.wan.Exec(t, "ip", "route", "add", "default", "via", "198.18.3.1")
	w.cell.Exec(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	w.inet.Exec(t, "ip", "route", "add", "10.77.0.0/24", "via", nsCellWAN)
	if err := w.inet.Run(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	w.startDnsmasq(t)
	return w
}

// startDnsmasq runs a real dnsmasq in the "internet" as the cell's
// upstream, logging every query it gets to a file.
func (w *nsWorld) startDnsmasq(t *testing.T) {
	dir := t.TempDir()
	w.dnsmasqLog = filepath.Join(dir, "dnsmasq.log")
	cmd := exec.Command("ip", "netns", "exec", w.inet.Name, "dnsmasq",
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--address=/example.test/198.18.0.80", "--address=/nx.test/",
		"--txt-record=txt.example.test,forwarded", "--local-ttl=120",
		"--listen-address="+nsDnsmasq, "--bind-interfaces", "--port=53", "--user=root",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--log-queries", "--log-facility="+w.dnsmasqLog)
	out, err := os.Create(filepath.Join(dir, "dnsmasq.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; {
		if r := dig(t, w.inet, nsDnsmasq, "ready.example.test", "A"); r.status == "NOERROR" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.out"))
			t.Fatalf("dnsmasq did not come up:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// upstreamQueries counts the queries dnsmasq logged for name and type.
func (w *nsWorld) upstreamQueries(t *testing.T, qtype, name string) int {
	b, err := os.ReadFile(w.dnsmasqLog)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "query["+qtype+"] "+name+" from ")
}

// startServer runs the cell's server in the cell namespace: its sockets
// opened there, and its upstream sockets too.
func (w *nsWorld) startServer(t *testing.T, cfg Config) *Server {
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = w.cell.Run(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	s := New(Options{Logger: quiet(), Exchange: &Network{Dial: dial}})
	if err := s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	for _, a := range []string{nsCell4, nsCell6, nsCellWAN} {
		var pc net.PacketConn
		var ln net.Listener
		err := w.cell.Run(func() (err error) {
			hp := net.JoinHostPort(a, "53")
			if pc, err = net.ListenPacket("udp", hp); err != nil {
				return err
			}
			ln, err = net.Listen("tcp", hp)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(pc, ln); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// digResult is what a dig run printed, reduced to what the tests compare.
type digResult struct {
	status  string   // NOERROR, NXDOMAIN, ... or "timeout" when nothing came back
	flags   []string // qr aa rd ra ...
	answer  []string // "name ttl IN type data", one per record
	auth    []string // types in the authority section
	raw     string
	failure string // "connection timed out", "communications error", ...
}

func dig(t *testing.T, ns *nstest.NS, server, name, qtype string, opts ...string) digResult {
	t.Helper()
	args := append([]string{"dig", "@" + server, name, qtype, "+time=1", "+tries=1"}, opts...)
	out, _ := ns.Try(args...)
	r := digResult{raw: out, status: "timeout"}
	section := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "status: "):
			r.status = strings.TrimSuffix(strings.Fields(strings.SplitN(line, "status: ", 2)[1])[0], ",")
		case strings.HasPrefix(line, ";; flags: "):
			f := strings.SplitN(strings.TrimPrefix(line, ";; flags: "), ";", 2)[0]
			r.flags = strings.Fields(f)
		case strings.HasPrefix(line, ";; ANSWER SECTION:"):
			section = "answer"
		case strings.HasPrefix(line, ";; AUTHORITY SECTION:"):
			section = "auth"
		case strings.HasPrefix(line, ";; ADDITIONAL SECTION:"), strings.HasPrefix(line, ";; Query time"):
			section = ""
		case strings.Contains(line, "timed out") || strings.Contains(line, "communications error") || strings.Contains(line, "no servers could be reached"):
			r.failure = strings.TrimSpace(strings.TrimPrefix(line, ";;"))
		case line == "" || strings.HasPrefix(line, ";"):
		case section == "answer":
			r.answer = append(r.answer, strings.Join(strings.Fields(line), " "))
		case section == "auth":
			r.auth = append(r.auth, strings.Fields(line)[3])
		}
	}
	return r
}

func (r digResult) has(flag string) bool { return slices.Contains(r.flags, flag) }

// TestSystemDig serves the cell's zone in a namespace, forwarding to a real
// dnsmasq, and asks it with dig from a peer's address and from the WAN.
func TestSystemDig(t *testing.T) {
	requireTools(t)
	w := newWorld(t)
	zone := Zone{Domain: nsZoneName, Records: []Record{
		{Name: "@", Type: "A", Value: nsCell4},
		{Name: "@", Type: "AAAA", Value: nsCell6},
		{Name: "alice-phone", Type: "A", Value: "10.77.0.2"},
		{Name: "alice-phone", Type: "AAAA", Value: "fd77::2"},
		{Name: "files", Type: "A", Value: nsCell4},
		{Name: "@", Type: "MX", Value: "10 mail"},
		{Name: "printer", Type: "CNAME", Value: "alice-phone"},
	}}
	cfg := Config{Zone: zone, Upstreams: []string{nsDnsmasq},
		Allowed: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd77::/64")}}
	s := w.startServer(t, cfg)

	const d = nsZoneName + "."
	for _, tc := range []struct {
		server, name, qtype string
		opts                []string
		status              string
		aa                  bool
		answer              string // joined with " | "
	}{
		{nsCell4, "alice-phone." + d, "A", nil, "NOERROR", true, "alice-phone.home.example.org. 300 IN A 10.77.0.2"},
		{nsCell4, "alice-phone." + d, "AAAA", nil, "NOERROR", true, "alice-phone.home.example.org. 300 IN AAAA fd77::2"},
		{nsCell6, "alice-phone." + d, "A", nil, "NOERROR", true, "alice-phone.home.example.org. 300 IN A 10.77.0.2"},
		{nsCell4, "-x", "10.77.0.2", nil, "NOERROR", true, "2.0.77.10.in-addr.arpa. 300 IN PTR alice-phone.home.example.org."},
		{nsCell4, "-x", "fd77::2", nil, "NOERROR", true, "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.d.f.ip6.arpa. 300 IN PTR alice-phone.home.example.org."},
		{nsCell4, "-x", nsCell4, nil, "NOERROR", true, "1.0.77.10.in-addr.arpa. 300 IN PTR home.example.org."},
		{nsCell4, d, "A", nil, "NOERROR", true, "home.example.org. 300 IN A 10.77.0.1"},
		{nsCell4, d, "SOA", nil, "NOERROR", true, "home.example.org. 60 IN SOA home.example.org. hostmaster.home.example.org. " + strconv.FormatUint(uint64(s.Stats().Serial), 10) + " 3600 600 86400 60"},
		{nsCell4, d, "NS", nil, "NOERROR", true, "home.example.org. 300 IN NS home.example.org."},
		{nsCell4, d, "MX", nil, "NOERROR", true, "home.example.org. 300 IN MX 10 mail.home.example.org."},
		{nsCell4, "printer." + d, "A", nil, "NOERROR", true, "printer.home.example.org. 300 IN CNAME alice-phone.home.example.org. | alice-phone.home.example.org. 300 IN A 10.77.0.2"},
		{nsCell4, "nobody." + d, "A", nil, "NXDOMAIN", true, ""},
		{nsCell4, "files." + d, "TXT", nil, "NOERROR", true, ""},
		{nsCell4, "www.example.test", "A", nil, "NOERROR", false, "www.example.test. 120 IN A 198.18.0.80"},
		{nsCell4, "txt.example.test", "TXT", nil, "NOERROR", false, `txt.example.test. 120 IN TXT "forwarded"`},
		{nsCell4, "host.nx.test", "A", nil, "NXDOMAIN", false, ""},
		{nsCell4, "alice-phone." + d, "A", []string{"+tcp"}, "NOERROR", true, "alice-phone.home.example.org. 300 IN A 10.77.0.2"},
		{nsCell6, "tcp.example.test", "A", []string{"+tcp"}, "NOERROR", false, "tcp.example.test. 120 IN A 198.18.0.80"},
	} {
		name, qtype := tc.name, tc.qtype
		r := dig(t, w.client, tc.server, name, qtype, tc.opts...)
		what := strings.Join(append([]string{"@" + tc.server, name, qtype}, tc.opts...), " ")
		if r.status != tc.status || r.has("aa") != tc.aa || !r.has("ra") {
			t.Errorf("%s: status %s, flags %v; want %s, aa %v, ra\n%s", what, r.status, r.flags, tc.status, tc.aa, r.raw)
			continue
		}
		if got := strings.Join(r.answer, " | "); got != tc.answer {
			t.Errorf("%s:\n got %s\nwant %s", what, got, tc.answer)
		}
		if (tc.status == "NXDOMAIN" || tc.answer == "") && tc.aa && !slices.Equal(r.auth, []string{"SOA"}) {
			t.Errorf("%s: authority %v, want the zone's SOA", what, r.auth)
		}
	}

	// Asked again: from the cache, dnsmasq's log still shows one query.
	hits := s.Stats().CacheHits
	if r := dig(t, w.client, nsCell4, "www.example.test", "A"); len(r.answer) != 1 || !strings.HasSuffix(r.answer[0], "IN A 198.18.0.80") {
		t.Errorf("www.example.test again: %s %v", r.status, r.answer)
	}
	if n := w.upstreamQueries(t, "A", "www.example.test"); n != 1 {
		t.Errorf("dnsmasq saw %d queries for www.example.test after two from the client, want 1", n)
	}
	if got := s.Stats().CacheHits - hits; got != 1 {
		t.Errorf("%d cache hits for the repeat, want 1", got)
	}

	// The answer changes right after Set, and again after PutRecord.
	carol := Record{Name: "carol", Type: "A", Value: "10.77.0.4"}
	cfg.Zone.Records = append(slices.Clone(zone.Records[:3]), carol) // alice-phone's AAAA and the rest gone
	if err := s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if r := dig(t, w.client, nsCell4, "carol."+d, "A"); r.status != "NOERROR" || len(r.answer) != 1 || !strings.HasSuffix(r.answer[0], "10.77.0.4") {
		t.Errorf("carol right after Set: %s %v\n%s", r.status, r.answer, r.raw)
	}
	if r := dig(t, w.client, nsCell4, "files."+d, "A"); r.status != "NXDOMAIN" {
		t.Errorf("files right after its removal: %s %v", r.status, r.answer)
	}
	if err := s.PutRecord(Record{Name: "dave", Type: "AAAA", Value: "fd77::5"}); err != nil {
		t.Fatal(err)
	}
	if r := dig(t, w.client, nsCell4, "dave."+d, "AAAA"); len(r.answer) != 1 || !strings.HasSuffix(r.answer[0], "fd77::5") {
		t.Errorf("dave right after PutRecord: %s %v", r.status, r.answer)
	}

	// From the WAN: nothing at all comes back, on the tunnel address (routed
	// through the cell) or the cell's WAN address, over UDP or TCP.
	refusedBefore := s.Stats().Refused
	for _, server := range []string{nsCell4, nsCellWAN} {
		for _, opts := range [][]string{nil, {"+tcp"}} {
			r := dig(t, w.wan, server, "alice-phone."+d, "A", opts...)
			if r.status != "timeout" || r.failure == "" {
				t.Errorf("from the WAN to %s %v: status %s, want no answer\n%s", server, opts, r.status, r.raw)
			}
		}
	}
	if n := s.Stats().Refused - refusedBefore; n < 4 {
		t.Errorf("%d queries counted as refused, want at least 4 (2 UDP, 2 TCP)", n)
	}
	if n := w.upstreamQueries(t, "A", "alice-phone."+nsZoneName); n != 0 {
		t.Errorf("dnsmasq saw %d queries for a name of the zone; want none", n)
	}
	st := s.Stats()
	if len(st.Listening) != 6 {
		t.Errorf("listening on %v, want udp and tcp on three addresses", st.Listening)
	}
	if i := slices.IndexFunc(st.Sources, func(x SourceStats) bool { return x.Addr == netip.MustParseAddr("10.77.0.2") }); i < 0 || st.Sources[i].Queries < 10 {
		t.Errorf("per-source counts %+v, want the client's queries", st.Sources)
	}
}
