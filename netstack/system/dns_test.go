package system_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/netstack/nstest"
)

// The phone's side of the cell in both modes: a real WireGuard client made
// from the config text alone resolves the household's names and forwarded ones
// through the tunnel with dig, against a real dnsmasq in "the internet", reaches
// the internet (seen as the cell's WAN address), and is refused where its policy
// says deny. In netstack mode the cell runs as nobody, with no TUN and no
// nftables rule.
func TestDaemonDNSAndInternet(t *testing.T) {
	for _, mode := range []string{"tun", "netstack"} {
		t.Run(mode, func(t *testing.T) { testDaemonDNS(t, mode) })
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: needs %s (Debian: bind9-dnsutils, dnsmasq-base, containerd, runc, curl, cadaver)", tool)
		}
	}
}

// dig asks the cell from ns and returns dig's answer section (+short) and
// its status line; err is set when no answer came at all.
func dig(ns *nstest.NS, args ...string) (short, status string, err error) {
	base := []string{"dig", "+time=2", "+tries=1"}
	out, err := ns.Try(append(append(base, "+short"), args...)...)
	if err != nil {
		return out, "", err
	}
	full, err := ns.Try(append(append(base, "+noall", "+comments"), args...)...)
	for _, line := range strings.Split(full, "\n") {
		if i := strings.Index(line, "status: "); i >= 0 {
			status = strings.TrimSuffix(strings.Fields(line[i+len("status: "):])[0], ",")
		}
	}
	return strings.TrimSpace(out), status, err
}

func startDnsmasq(t *testing.T, ns *nstest.NS) (stop func(), queries func() int) {
	t.Helper()
	dir := t.TempDir()
	logf := filepath.Join(dir, "dnsmasq.log")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
		"--listen-address="+nstest.ServerAddr, "--bind-interfaces", "--port=53", "--user=root",
		"--address=/example.test/198.18.0.80", "--local-ttl=300", "--log-queries", "--log-facility="+logf, "--pid-file="+filepath.Join(dir, "pid"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, status, err := dig(ns, "@"+nstest.ServerAddr, "ready.example.test"); err == nil && status == "NOERROR" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dnsmasq never answered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	queries = func() int {
		raw, _ := os.ReadFile(logf)
		return strings.Count(string(raw), "query[A] cached-name.example.test")
	}
	return stop, queries
}

func testDaemonDNS(t *testing.T, mode string) {
	nstest.RequireRoot(t)
	requireTools(t, "dig", "dnsmasq")
	top := nstest.NewTopology(t)
	stopUpstream, upstreamQueries := startDnsmasq(t, top.WAN)
	bin := daemonBinary(t)
	data := t.TempDir()
	args := []string{"-data", data, "-listen", "127.0.0.1:3000", "-wg-mode", mode, "-log-level", "debug"}
	if mode == "tun" {
		startDaemon(t, privateRun(top.Cell, bin, args...)...)
	} else {
		for _, dir := range []string{filepath.Dir(data), data} {
			os.Chmod(dir, 0o777)
		}
		startDaemon(t, append([]string{"ip", "netns", "exec", top.Cell.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", bin}, args...)...)
	}
	a := newAPI(t, "http://127.0.0.1:3000", func(ctx context.Context, network, addr string) (net.Conn, error) {
		return top.Cell.Dial(addr, 5*time.Second)
	})
	a.setUp(data, "cell.test", 51820)
	a.waitRunning()
	ctx := context.Background()
	_, err := a.PatchConfig(ctx, map[string]any{"dns": map[string]any{"upstreams": []string{nstest.ServerAddr}, "rate_per_second": 20, "burst": 40}})
	a.ok("PUT /api/config dns.upstreams", err)
	for _, name := range []string{"client-a", "client-b"} {
		_, err := a.CreatePeer(ctx, client.NewPeer{Name: name})
		a.ok("POST /api/peers "+name, err)
	}
	resolve := func(string) string { return nstest.CellWAN }
	for _, c := range []struct {
		ns   *nstest.NS
		name string
	}{{top.A, "client-a"}, {top.B, "client-b"}} {
		cfg, err := a.PeerConfig(ctx, c.name)
		a.ok("GET config", err)
		if !strings.Contains(cfg, "DNS = 10.77.0.1, fd77::1") {
			t.Fatalf("config names no cell DNS:\n%s", cfg)
		}
		nstest.NewClient(t, c.ns, cfg, resolve)
	}
	if !top.A.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatal("client-a cannot ping the cell")
	}

	// The household's names, split horizon: inside the tunnel the cell's own
	// name is its tunnel address.
	for _, c := range []struct{ args, want string }{
		{"client-b.cell.test A", "10.77.0.3"},
		{"client-b.cell.test AAAA", "fd77::3"},
		{"-x 10.77.0.2", "client-a.cell.test."},
		{"-x fd77::3", "client-b.cell.test."},
		{"cell.test A", "10.77.0.1"},
		{"cell.test AAAA", "fd77::1"},
	} {
		got, status, err := dig(top.A, append([]string{"@10.77.0.1"}, strings.Fields(c.args)...)...)
		if err != nil || got != c.want || status != "NOERROR" {
			t.Errorf("dig %s = %q %s (%v), want %q", c.args, got, status, err, c.want)
		}
	}
	// Over TCP and over the IPv6 tunnel address too.
	if got, _, err := dig(top.A, "@fd77::1", "+tcp", "client-a.cell.test"); err != nil || got != "10.77.0.2" {
		t.Errorf("dig over TCP to fd77::1 = %q (%v)", got, err)
	}
	// A custom record.
	_, err = a.AddDNSRecord(ctx, client.NewDNSRecord{Name: "files", Type: "CNAME", Value: "client-b"})
	a.ok("POST /api/dns/records", err)
	if got, _, err := dig(top.A, "@10.77.0.1", "files.cell.test"); err != nil || !strings.Contains(got, "client-b.cell.test.") || !strings.Contains(got, "10.77.0.3") {
		t.Errorf("dig files.cell.test = %q (%v), want the CNAME to client-b and its address", got, err)
	}
	if _, status, _ := dig(top.A, "@10.77.0.1", "nobody.cell.test"); status != "NXDOMAIN" {
		t.Errorf("a name not in the zone: %s, want NXDOMAIN", status)
	}
	// Forwarded to the real resolver in the internet, a repeat from the cache.
	for i := range 3 {
		if got, _, err := dig(top.A, "@10.77.0.1", "cached-name.example.test"); err != nil || got != "198.18.0.80" {
			t.Errorf("forwarded name, try %d: %q (%v)", i, got, err)
		}
	}
	if n := upstreamQueries(); n != 1 { // dig() asks twice: 6 questions, 1 forwarded
		t.Errorf("dnsmasq saw %d queries for the name asked 6 times, want 1 (the rest from the cache)", n)
	}
	// A change answers at once: a peer added, then deleted.
	_, err = a.CreatePeer(ctx, client.NewPeer{Name: "newcomer"})
	a.ok("POST /api/peers newcomer", err)
	if got, _, err := dig(top.A, "@10.77.0.1", "newcomer.cell.test"); err != nil || got != "10.77.0.4" {
		t.Errorf("a peer just added = %q (%v), want 10.77.0.4", got, err)
	}
	a.ok("DELETE newcomer", a.DeletePeer(ctx, "newcomer"))
	if _, status, _ := dig(top.A, "@10.77.0.1", "newcomer.cell.test"); status != "NXDOMAIN" {
		t.Errorf("a peer just deleted: %s, want NXDOMAIN", status)
	}
	// Never an open resolver: from the internet, the cell's WAN address says nothing.
	if got, _, err := dig(top.WAN, "@"+nstest.CellWAN, "client-a.cell.test"); err == nil {
		t.Errorf("the cell answered a query from the WAN: %q", got)
	}

	// The internet through the cell, seen as the cell's WAN address.
	if got, err := top.A.Get(nstest.ServerAddr+":80", "/", 5*time.Second); err != nil || got != nstest.CellWAN {
		t.Errorf("the server saw client-a as %q (%v), want the cell's WAN address", got, err)
	}
	// The API answers on the cell's tunnel address (netstack: inside the stack).
	if mode == "netstack" {
		if _, err := top.A.Get("10.77.0.1:3000", "/health", 5*time.Second); err != nil {
			t.Errorf("the API on the tunnel address: %v", err)
		}
		if out := top.Cell.Exec(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
			t.Errorf("netstack mode left nftables rules:\n%s", out)
		}
		// Port forwards need the kernel: refused, naming the mode.
		_, err := a.AddForward(ctx, client.NewForward{Proto: "tcp", Port: 8080, Peer: "client-a"})
		if !client.IsCode(err, "forwards_need_tun") || !strings.Contains(err.Error(), "netstack") {
			t.Errorf("a port forward in netstack mode: %v, want 409 forwards_need_tun naming the mode", err)
		}
	}
	// Denied by policy: no internet for client-b.
	_, err = a.SetPeerRouting(ctx, "client-b", client.PolicyChange{Internet: new("deny")})
	a.ok("PUT /api/routing/peers/client-b", err)
	if !top.B.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatal("client-b cannot ping the cell")
	}
	if got, err := top.B.Get(nstest.ServerAddr+":80", "/", 3*time.Second); err == nil {
		t.Errorf("client-b reached the internet against its policy: %q", got)
	}
	if got, _, err := dig(top.B, "@10.77.0.1", "client-a.cell.test"); err != nil || got != "10.77.0.2" {
		t.Errorf("client-b, denied the internet, still resolves the cell's names: %q (%v)", got, err)
	}

	// A query flood from one peer is limited; the cell stays responsive.
	if err := top.A.Run(func() error { return flood(netip.MustParseAddrPort("10.77.0.1:53"), 600) }); err != nil {
		t.Fatal(err)
	}
	st, err := a.DNS(ctx)
	a.ok("GET /api/dns", err)
	if st.Limited == 0 {
		t.Errorf("a flood of 600 queries was never limited: %+v", st)
	}
	if st.State != "ok" || st.Cache.Hits == 0 || len(st.Upstreams) != 1 || !st.Upstreams[0].Healthy {
		t.Errorf("dns status = %+v", st)
	}
	counted := false
	for _, p := range st.Peers {
		if p.Peer == "client-a" && p.Queries > 600 {
			counted = true
		}
	}
	if !counted {
		t.Errorf("queries per peer = %+v, want client-a's flood counted", st.Peers)
	}
	time.Sleep(2 * time.Second) // the bucket refills
	if got, _, err := dig(top.B, "@10.77.0.1", "client-a.cell.test"); err != nil || got != "10.77.0.2" {
		t.Errorf("another peer after the flood: %q (%v)", got, err)
	}

	// Upstream down: SERVFAIL within a second, the zone still answered.
	stopUpstream()
	start := time.Now()
	if _, status, err := dig(top.B, "@10.77.0.1", "other-name.example.test"); err != nil || status != "SERVFAIL" {
		t.Errorf("with the upstream down: %s (%v), want SERVFAIL", status, err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond { // dig's own start-up counts too
		t.Errorf("SERVFAIL took %v", took)
	}
	if got, _, err := dig(top.B, "@10.77.0.1", "client-a.cell.test"); err != nil || got != "10.77.0.2" {
		t.Errorf("the zone with the upstream down: %q (%v)", got, err)
	}
}

// flood sends n queries to ap at about 2,500 a second, reading no answer.
func flood(ap netip.AddrPort, n int) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range n {
		m := new(mdns.Msg)
		m.SetQuestion(fmt.Sprintf("flood%d.cell.test.", i), mdns.TypeA)
		raw, err := m.Pack()
		if err != nil {
			return err
		}
		if _, err := c.Write(raw); err != nil {
			return err
		}
		if i%50 == 49 { // paced only so the client's TUN queue keeps them: still 2,500/s
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // the last ones arrive
	return nil
}
