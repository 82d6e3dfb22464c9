package portmap

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/wireguard"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The Keeper must run with all of its goroutines in the cell's (LAN)
// namespace: Discover probes from several goroutines and net/http dials
// from its own, and a goroutine does not inherit a thread's namespace. So
// the system tests run it in a child process, this test binary started
// with `ip netns exec`, driven over stdin and reporting over stdout:
//
//	in:  "set <gateway> <local>", "renew", "rtt" (one NAT-PMP address request)
//	out: "status <json>" at every change, "rtt <nanoseconds>", "done" after Run returned
//
// Closing stdin ends the Keeper's context.
const helperEnv = "PORTMAP_TEST_KEEPER"

// anyProtocol lets the helper's Keeper use whatever Discover finds.
const anyProtocol Protocol = "any"

func TestMain(m *testing.M) {
	if p := os.Getenv(helperEnv); p != "" {
		os.Exit(keeperHelper(Protocol(p)))
	}
	os.Exit(m.Run())
}

func keeperHelper(only Protocol) int {
	out := make(chan string, 64)
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for l := range out {
			fmt.Println(l)
		}
	}()
	disc := func(ctx context.Context, gateway, local netip.Addr) ([]Client, error) {
		cs, err := Discover(ctx, gateway, local)
		var keep []Client
		for _, c := range cs {
			if c.Protocol() == only || only == anyProtocol {
				keep = append(keep, c)
			}
		}
		if len(keep) == 0 && err == nil {
			err = fmt.Errorf("the router does not answer %s", only)
		}
		return keep, err
	}
	k := NewKeeper(KeeperOptions{Port: 51820, Discover: disc, Retry: time.Second, Log: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		for {
			ch := k.Changed()
			b, _ := json.Marshal(k.Status())
			out <- "status " + string(b)
			select {
			case <-ch:
			case <-done:
				b, _ := json.Marshal(k.Status())
				out <- "status " + string(b)
				return
			}
		}
	}()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "set":
			k.Set(netip.MustParseAddr(f[1]), netip.MustParseAddr(f[2]))
		case len(f) == 1 && f[0] == "renew":
			k.Renew()
		case len(f) == 3 && f[0] == "rtt":
			c := NewNATPMP(netip.MustParseAddr(f[1]), netip.MustParseAddr(f[2]))
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			t0 := time.Now()
			_, err := c.ExternalAddr(actx)
			acancel()
			if err != nil {
				out <- "rtt -1"
			} else {
				out <- fmt.Sprintf("rtt %d", time.Since(t0))
			}
		}
	}
	cancel()
	<-done
	<-reported // the last status is out
	out <- "done"
	close(out)
	<-printed
	return 0
}

// keeperProc is the parent's side of a helper.
type keeperProc struct {
	t      testing.TB
	in     io.WriteCloser
	status chan Status
	rtt    chan time.Duration
	done   chan struct{}
	last   Status
}

func startKeeper(t testing.TB, ns *nstest.NS, p Protocol) *keeperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(p))
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k := &keeperProc{t: t, in: in, status: make(chan Status, 1024), rtt: make(chan time.Duration, 16), done: make(chan struct{})}
	go func() {
		defer close(k.done)
		sc := bufio.NewScanner(outp)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			kind, rest, _ := strings.Cut(sc.Text(), " ")
			switch kind {
			case "status":
				var s Status
				if err := json.Unmarshal([]byte(rest), &s); err == nil {
					k.status <- s
				}
			case "rtt":
				var d time.Duration
				fmt.Sscan(rest, &d)
				k.rtt <- d
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-k.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		cmd.Wait()
	})
	return k
}

func (k *keeperProc) send(format string, args ...any) {
	fmt.Fprintf(k.in, format+"\n", args...)
}

// wait returns the first status ok accepts, within d.
func (k *keeperProc) wait(what string, d time.Duration, ok func(Status) bool) Status {
	k.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case s := <-k.status:
			k.last = s
			if ok(s) {
				return s
			}
		case <-timeout:
			k.t.Fatalf("no status %s within %v; last: %+v", what, d, k.last)
		}
	}
}

// stop ends the Keeper's context and returns its last status.
func (k *keeperProc) stop() Status {
	k.t.Helper()
	k.in.Close()
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
		k.t.Fatal("the keeper did not end 10 s after its context")
	}
	for {
		select {
		case s := <-k.status:
			k.last = s
		default:
			return k.last
		}
	}
}

// wgNode is a netstack wireguard-go device whose UDP socket lives in ns.
func wgNode(t testing.TB, ns *nstest.NS, addr string, cfg wireguard.Config) *wireguard.WG {
	t.Helper()
	var d *wireguard.WG
	err := ns.Run(func() (err error) {
		d, err = wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Logger: quiet()})
		if err != nil {
			return err
		}
		return d.Set(cfg)
	})
	if err != nil {
		t.Fatalf("wireguard device in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// wgPair is the cell listening on 51820 in the LAN, with an echo service
// on 10.77.0.1:7, and the keys for phones.
type wgPair struct {
	cell         *wireguard.WG
	cellKey, psk wireguard.Key
	phoneKey     wireguard.Key
}

func newCell(t testing.TB, h *nstest.Home) *wgPair {
	t.Helper()
	var p wgPair
	var err error
	for _, k := range []*wireguard.Key{&p.cellKey, &p.psk, &p.phoneKey} {
		if *k, err = wgtypes.GeneratePrivateKey(); err != nil {
			t.Fatal(err)
		}
	}
	p.cell = wgNode(t, h.LAN, "10.77.0.1", wireguard.Config{PrivateKey: p.cellKey, ListenPort: 51820, Peers: []wireguard.Peer{{
		PublicKey: p.phoneKey.PublicKey(), PresharedKey: p.psk, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32")},
	}}})
	pc, err := p.cell.Net().ListenUDP(netip.MustParseAddrPort("10.77.0.1:7"))
	if err != nil {
		t.Fatal(err)
	}
	go nstest.EchoPackets(pc)
	return &p
}

// phoneEcho brings up a phone whose endpoint is the router's public
// address and reports whether a datagram to the cell's echo service came
// back through the tunnel within d.
func (p *wgPair) phoneEcho(t testing.TB, h *nstest.Home, d time.Duration) error {
	t.Helper()
	phone := wgNode(t, h.Phone, "10.77.0.2", wireguard.Config{PrivateKey: p.phoneKey, Peers: []wireguard.Peer{{
		PublicKey: p.cellKey.PublicKey(), PresharedKey: p.psk,
		Endpoint:   netip.AddrPortFrom(h.RouterWAN, 51820),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")},
	}}})
	defer phone.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := phone.Net().DialContext(ctx, "udp", "10.77.0.1:7")
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for ctx.Err() == nil {
		c.Write([]byte("through the mapping"))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == "through the mapping" {
			return nil
		}
	}
	return fmt.Errorf("no echo through the tunnel within %v", d)
}

// routerDNAT is miniupnpd's forwarding rule for UDP 51820, if any.
func routerDNAT(t testing.TB, h *nstest.Home) string {
	out := h.Router.Exec(t, "nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "dnat") && strings.Contains(l, "51820") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// TestMapThroughMiniUPnPd maps UDP 51820 through a real miniupnpd with
// each protocol, then a phone on the internet completes a WireGuard
// handshake with the cell behind the router and exchanges data; after
// the Keeper's end the router forwards nothing any more.
func TestMapThroughMiniUPnPd(t *testing.T) {
	for _, p := range []Protocol{UPnP, NATPMP, PCP} {
		t.Run(string(p), func(t *testing.T) {
			h := nstest.NewHome(t, nstest.HomeOptions{})
			mu := h.StartMiniUPnPd(t, nstest.MiniUPnPdOptions{UPnP: p == UPnP, NATPMP: p != UPnP})
			wg := newCell(t, h)

			k := startKeeper(t, h.LAN, p)
			k.send("set %s %s", h.RouterLAN, h.CellLAN)
			s := k.wait("mapped", 15*time.Second, func(s Status) bool { return s.State == StateMapped || s.State == StateFailing })
			if s.State != StateMapped {
				t.Fatalf("status %+v\nminiupnpd:\n%s", s, mu.Output())
			}
			if s.Mapping.Protocol != p || s.Mapping.External != netip.AddrPortFrom(h.RouterWAN, 51820) ||
				s.Mapping.Internal != netip.AddrPortFrom(h.CellLAN, 51820) || s.Mapping.Lifetime <= 0 {
				t.Errorf("mapping %+v: want %s %s:51820 -> %s:51820 with a lease", s.Mapping, p, h.RouterWAN, h.CellLAN)
			}
			if s.External != h.RouterWAN || s.CGNAT {
				t.Errorf("status %+v: want the router's WAN address, no CGNAT", s)
			}
			if r := routerDNAT(t, h); !strings.Contains(r, h.CellLAN.String()) {
				t.Errorf("router's DNAT rule %q: want one to %s", r, h.CellLAN)
			}

			if err := wg.phoneEcho(t, h, 15*time.Second); err != nil {
				t.Fatalf("phone -> %s:51820 -> cell: %v", h.RouterWAN, err)
			}
			st, err := wg.cell.Stats()
			if err != nil || len(st) != 1 || st[0].LastHandshake.IsZero() || st[0].Endpoint.Addr() != h.PhoneAddr {
				t.Errorf("cell's peer %+v (%v): want a handshake with the phone at %s", st, err, h.PhoneAddr)
			}

			last := k.stop()
			if last.State != StateOff || last.Mapping != nil {
				t.Errorf("after the end: %+v, want off", last)
			}
			if r := routerDNAT(t, h); r != "" {
				t.Errorf("after the end the router still forwards: %s", r)
			}
			// A new phone (a new source port: the old flow's conntrack
			// entry would still be DNATed) cannot reach the cell.
			if err := wg.phoneEcho(t, h, 3*time.Second); err == nil {
				t.Error("a new phone reached the cell after the mapping was deleted")
			}
		})
	}
	t.Run("upnp through a stateful firewall", func(t *testing.T) {
		// The cell's own input chain in tun mode drops what is not a reply:
		// the SSDP group's answers are not (they come from the gateway's
		// address, not the group's), the gateway's answer to the search
		// sent straight to it is.
		h := nstest.NewHome(t, nstest.HomeOptions{})
		mu := h.StartMiniUPnPd(t, nstest.MiniUPnPdOptions{UPnP: true})
		h.LAN.Exec(t, "nft", "add table inet cellfw")
		h.LAN.Exec(t, "nft", "add chain inet cellfw input { type filter hook input priority filter; policy drop; }")
		h.LAN.Exec(t, "nft", "add rule inet cellfw input iifname lo accept")
		h.LAN.Exec(t, "nft", "add rule inet cellfw input ct state established,related accept")
		k := startKeeper(t, h.LAN, UPnP)
		k.send("set %s %s", h.RouterLAN, h.CellLAN)
		s := k.wait("mapped", 15*time.Second, func(s Status) bool { return s.State == StateMapped || s.State == StateFailing })
		if s.State != StateMapped || s.Mapping.Protocol != UPnP {
			t.Fatalf("status %+v\nminiupnpd:\n%s", s, mu.Output())
		}
		k.stop()
	})
	t.Run("no protocol", func(t *testing.T) {
		// The router does NAT but runs no miniupnpd: the Keeper says so
		// within its discovery deadline and names the manual way.
		h := nstest.NewHome(t, nstest.HomeOptions{})
		k := startKeeper(t, h.LAN, anyProtocol)
		t0 := time.Now()
		k.send("set %s %s", h.RouterLAN, h.CellLAN)
		s := k.wait("failing", 10*time.Second, func(s Status) bool { return s.State == StateFailing })
		if el := time.Since(t0); el > 5*time.Second {
			t.Errorf("failing after %v, want within the 3 s discovery deadline", el)
		}
		if !strings.Contains(s.Reason, "answers none of UPnP, NAT-PMP and PCP") || !strings.Contains(s.Reason, "by hand") || s.LastError == "" {
			t.Errorf("status %+v: want a plain reason and the error", s)
		}
	})
	t.Run("cgnat", func(t *testing.T) {
		h := nstest.NewHome(t, nstest.HomeOptions{WAN: netip.MustParsePrefix("100.64.0.2/24")})
		mu := h.StartMiniUPnPd(t, nstest.MiniUPnPdOptions{UPnP: true, NATPMP: true})
		k := startKeeper(t, h.LAN, anyProtocol)
		k.send("set %s %s", h.RouterLAN, h.CellLAN)
		s := k.wait("mapped", 15*time.Second, func(s Status) bool { return s.State == StateMapped || s.State == StateFailing })
		if s.External != netip.MustParseAddr("100.64.0.2") || !s.CGNAT || !strings.Contains(s.Reason, "without a relay") {
			t.Errorf("status %+v: want external 100.64.0.2, CGNAT and a plain reason\nminiupnpd:\n%s", s, mu.Output())
		}
	})
}

// BenchmarkRenewAfterUplinkChange: the time from Set(a new local address)
// to the mapping renewed through miniupnpd's NAT-PMP from it, as a ratio
// to one NAT-PMP public address request to the same router in the same
// run.
func BenchmarkRenewAfterUplinkChange(b *testing.B) {
	h := nstest.NewHome(b, nstest.HomeOptions{})
	h.StartMiniUPnPd(b, nstest.MiniUPnPdOptions{NATPMP: true})
	alt := netip.MustParseAddr("192.168.77.3")
	h.LAN.Exec(b, "ip", "addr", "add", alt.String()+"/24", "dev", nstest.HomeCellIf)
	k := startKeeper(b, h.LAN, NATPMP)
	k.send("set %s %s", h.RouterLAN, h.CellLAN)
	k.wait("mapped", 15*time.Second, func(s Status) bool { return s.State == StateMapped })

	var anchor time.Duration
	const anchors = 20
	for range anchors {
		k.send("rtt %s %s", h.RouterLAN, h.CellLAN)
		select {
		case d := <-k.rtt:
			if d < 0 {
				b.Fatal("NAT-PMP address request failed")
			}
			anchor += d
		case <-time.After(5 * time.Second):
			b.Fatal("no rtt")
		}
	}
	anchor /= anchors

	addrs := []netip.Addr{alt, h.CellLAN}
	var total time.Duration
	n := 0
	for b.Loop() {
		a := addrs[n%2]
		n++
		t0 := time.Now()
		k.send("set %s %s", h.RouterLAN, a)
		k.wait("mapped from "+a.String(), 15*time.Second, func(s Status) bool {
			return s.State == StateMapped && s.Mapping.Internal.Addr() == a
		})
		total += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/float64(n)/float64(anchor), "x-natpmp-rtt")
}
