package system_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/netstack/clock"
	"github.com/pic-cell/cell/netstack/echo"
	"github.com/pic-cell/cell/netstack/nstest"
)

// The outside's end to end, from the user's side, with the real daemon: a
// cell behind an ordinary home router (nstest.Home, miniupnpd) keeps its
// public name in a real BIND (RFC 2136 with TSIG), has the router open its
// WireGuard port by itself, and a phone on "mobile data" (the Phone
// namespace) resolves that name through BIND, dials it and gets the cell's
// DNS and time through the tunnel. Everything is set through the API only;
// what is asserted is what an admin sees (GET /api/network, /api/ntp,
// /api/status) and what the phone, the router and BIND see.
//
// The internet's services the tests run themselves: BIND (the zone
// example.org), an SNTP server that says it is synchronised (the cell's
// upstream), and the reachability echo service (netstack/echo). Each runs in
// the Internet namespace on 198.18.3.1, the address the phone's side of
// the internet has, which the router's WAN side reaches as well.

const (
	outsideZone = "example.org"
	outsideName = "home.example.org"
	echoPort    = 8053
)

// The API's answers, as the typed client decodes them.
type (
	networkView = client.NetworkStatus
	ddnsView    = client.DDNS
	ntpView     = client.NTPStatus
	testResult  = client.NetworkTestResult
)

func (a *api) network() networkView {
	a.t.Helper()
	var v networkView
	a.ok("GET /api/network", a.Do(context.Background(), "GET", "/api/network", nil, &v))
	return v
}

func (a *api) ddns() ddnsView {
	a.t.Helper()
	var v ddnsView
	a.ok("GET /api/network/ddns", a.Do(context.Background(), "GET", "/api/network/ddns", nil, &v))
	return v
}

func (a *api) putDDNS(body map[string]any) (ddnsView, error) {
	var v ddnsView
	err := a.Do(context.Background(), "PUT", "/api/network/ddns", body, &v)
	return v, err
}

func (a *api) netTest(body map[string]any) (testResult, error) {
	var r testResult
	err := a.Do(context.Background(), "POST", "/api/network/test", body, &r)
	return r, err
}

// rfc2136 is the PUT /api/network/ddns body that points the cell at b.
func rfc2136(b *nstest.BIND, secret string) map[string]any {
	return map[string]any{"provider": "rfc2136", "server": b.Addr.Addr().String(), "zone": outsideZone,
		"key_name": b.KeyName, "algorithm": b.Algorithm, "secret": secret, "interval_minutes": 60}
}

// eventually calls f every interval until it returns nil, and fails tb with
// f's last error after d.
func eventually(tb testing.TB, d, interval time.Duration, what string, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(interval)
	}
}

// privateRunResolv is privateRun with /etc/resolv.conf replaced, inside the
// daemon's own mount namespace, by the file resolv: the cell's host resolver
// is then the test's BIND, as a home router's DNS would be.
func privateRunResolv(ns *nstest.NS, resolv, bin string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.Name, "unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none /run && mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv, bin}, args...)
}

// askDNS sends one question to server from inside ns and returns the answers
// of qtype in presentation form (none for NXDOMAIN).
func askDNS(ns *nstest.NS, server, name string, qtype uint16) ([]string, error) {
	var r *mdns.Msg
	err := ns.Run(func() error {
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), qtype)
		c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
		var err error
		r, _, err = c.Exchange(m, server)
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Rcode == mdns.RcodeNameError {
		return nil, nil
	}
	if r.Rcode != mdns.RcodeSuccess {
		return nil, fmt.Errorf("%s answered %s", server, mdns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
		}
	}
	return out, nil
}

// startTimeServer answers SNTP on addr inside ns as a synchronised stratum 1
// server: the cell's upstream.
func startTimeServer(t testing.TB, ns *nstest.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Run(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	s := &clock.Server{Log: quiet, State: func() clock.Status {
		return clock.Status{Synchronised: true, Stratum: 1, LastSync: time.Now(), Server: "reference clock"}
	}}
	go s.Serve(pc)
	t.Cleanup(func() { pc.Close() })
}

// startEchoService runs the reachability echo service on addr inside ns,
// resolving names through dnsServer (the test's BIND), each request on a
// thread inside ns so that its UDP socket is made there. It returns the URL.
func startEchoService(t testing.TB, ns *nstest.NS, addr, dnsServer string) string {
	t.Helper()
	var l net.Listener
	if err := ns.Run(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var c net.Conn
		err := ns.Run(func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, dnsServer)
			return err
		})
		return c, err
	}}
	h := &echo.Handler{Log: quiet, Resolver: res}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns.Run(func() error { h.ServeHTTP(w, r); return nil })
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + addr + "/"
}

// routerForwards is miniupnpd's DNAT rule for UDP 51820 in the router, ""
// when there is none.
func routerForwards(t testing.TB, h *nstest.Home) string {
	t.Helper()
	out, err := h.Router.Try("nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "dnat") && strings.Contains(l, "51820") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// homeCell is a Home with miniupnpd, the internet's services and the daemon
// in the LAN namespace, set up with the domain home.example.org.
type homeCell struct {
	h       *nstest.Home
	mu      *nstest.MiniUPnPd
	bind    *nstest.BIND
	ntpAddr string
	echoURL string
	d       *daemon
	a       *api
}

// startHomeCell builds the Home, miniupnpd and, with services, BIND, the
// time server and the echo service; then starts the daemon and sets it up.
func startHomeCell(t testing.TB, home nstest.HomeOptions, upnp nstest.MiniUPnPdOptions, services bool) *homeCell {
	t.Helper()
	h := nstest.NewHome(t, home)
	c := &homeCell{h: h}
	nameserver := "127.0.0.1" // nothing listens: a name fails at once
	if services {
		c.bind = nstest.StartBIND(t, h.Internet, h.InternetPhone, outsideZone)
		nameserver = c.bind.Addr.Addr().String()
	}
	c.mu = h.StartMiniUPnPd(t, upnp)
	if services {
		c.ntpAddr = h.InternetPhone.String() + ":123"
		startTimeServer(t, h.Internet, c.ntpAddr)
		c.echoURL = startEchoService(t, h.Internet, fmt.Sprintf("%s:%d", h.InternetPhone, echoPort), c.bind.Addr.String())
	}
	resolv := resolvConf(t, nameserver)
	data := t.TempDir()
	c.d = startDaemon(t, privateRunResolv(h.LAN, resolv, daemonBinary(t), "-data", data, "-listen", "127.0.0.1:3000",
		"-wg-mode", "tun", "-port-map", "auto", "-time-check", "-log-level", "debug")...)
	c.a = newAPI(t, "http://127.0.0.1:3000", func(ctx context.Context, network, addr string) (net.Conn, error) {
		return h.LAN.Dial(addr, 5*time.Second)
	})
	c.a.setUp(data, outsideName, 51820)
	c.a.waitRunning()
	return c
}

// waitMappedAndNamed waits until the admin sees the router's mapping, the
// router's address as the public one and the name kept up to date, and
// BIND answers the name with the router's address.
func (c *homeCell) waitMappedAndNamed(t testing.TB, protocol string) networkView {
	t.Helper()
	wantExt := netip.AddrPortFrom(c.h.RouterWAN, 51820).String()
	wantA := []string{c.h.RouterWAN.String()}
	var v networkView
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("miniupnpd:\n%s", c.mu.Output())
		}
	})
	eventually(t, 30*time.Second, 200*time.Millisecond, "mapped and named", func() error {
		v = c.a.network()
		pm, pub := v.PortMapping, v.PublicAddress
		if pm.State != "mapped" || pm.External != wantExt || (protocol != "" && pm.Protocol != protocol) {
			return fmt.Errorf("port_mapping %+v, want mapped %s to %s", pm, protocol, wantExt)
		}
		if !slices.Equal(pub.Addrs, wantA) || pub.Source != "router" {
			return fmt.Errorf("public_address %+v, want %v from the router", pub, wantA)
		}
		if v.DDNS.State != "ok" {
			return fmt.Errorf("ddns %+v, want ok", v.DDNS)
		}
		got, err := askDNS(c.h.Phone, c.bind.Addr.String(), outsideName, mdns.TypeA)
		if err != nil || !slices.Equal(got, wantA) {
			return fmt.Errorf("BIND answers %s A %v (%v), want %v", outsideName, got, err, wantA)
		}
		return nil
	})
	t.Logf("mapped (%s %s -> %s) and named in BIND %v after the DDNS settings", v.PortMapping.Protocol, v.PortMapping.External, v.PortMapping.Internal, time.Since(start).Round(time.Millisecond))
	if want := netip.AddrPortFrom(c.h.CellLAN, 51820).String(); v.PortMapping.Internal != want {
		t.Errorf("port_mapping.internal %q, want %s", v.PortMapping.Internal, want)
	}
	if r := routerForwards(t, c.h); !strings.Contains(r, c.h.CellLAN.String()) {
		t.Errorf("the router's forwarding rule %q: want one to %s\nminiupnpd:\n%s", r, c.h.CellLAN, c.mu.Output())
	}
	return v
}

// phone brings up the phone's WireGuard client from the config text of a
// new peer, resolving the endpoint's name through BIND from the phone's
// namespace (as its mobile network's resolver would).
func (c *homeCell) phone(t testing.TB, name string) *nstest.Client {
	t.Helper()
	ctx := context.Background()
	_, err := c.a.CreatePeer(ctx, client.NewPeer{Name: name})
	c.a.ok("POST /api/peers", err)
	cfg, err := c.a.PeerConfig(ctx, name)
	c.a.ok("GET the peer's config", err)
	if !strings.Contains(cfg, "Endpoint = "+outsideName+":51820") {
		t.Fatalf("the config does not dial %s:51820:\n%s", outsideName, cfg)
	}
	return nstest.NewClient(t, c.h.Phone, cfg, func(host string) string {
		got, err := askDNS(c.h.Phone, c.bind.Addr.String(), host, mdns.TypeA)
		if err != nil || len(got) != 1 {
			t.Fatalf("the phone resolves %s through BIND: %v %v", host, got, err)
		}
		return got[0]
	})
}

// resolvConf writes a resolv.conf naming nameserver alone, with short
// timeouts (the endpoint check looks the cell's name up on every GET
// /api/network).
func resolvConf(t testing.TB, nameserver string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver "+nameserver+"\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReachableFromOutsideThroughTheHomeRouter is "done when": a cell behind
// an ordinary home router with UPnP on is reachable at its public name from
// a phone on mobile data with no manual step. The second run has a router
// that speaks only NAT-PMP and PCP (the cell prefers PCP).
func TestReachableFromOutsideThroughTheHomeRouter(t *testing.T) {
	t.Run("upnp", func(t *testing.T) { testReachable(t, nstest.MiniUPnPdOptions{UPnP: true}, "upnp", true) })
	t.Run("natpmp-pcp", func(t *testing.T) { testReachable(t, nstest.MiniUPnPdOptions{NATPMP: true}, "pcp", false) })
}

func testReachable(t *testing.T, upnp nstest.MiniUPnPdOptions, protocol string, full bool) {
	c := startHomeCell(t, nstest.HomeOptions{}, upnp, true)
	a, h := c.a, c.h
	ctx := context.Background()

	// The time upstream and the echo service, through the config.
	_, err := a.PatchConfig(ctx, map[string]any{"ntp": map[string]any{"servers": []string{c.ntpAddr}},
		"outside": map[string]any{"echo_url": c.echoURL}})
	a.ok("PUT /api/config ntp.servers, outside.echo_url", err)

	// Dynamic DNS: the whole of the admin's part.
	v, err := a.putDDNS(rfc2136(c.bind, c.bind.Secret))
	a.ok("PUT /api/network/ddns", err)
	if !v.SecretSet || v.Provider != "rfc2136" {
		t.Errorf("PUT /api/network/ddns answered %+v", v)
	}
	nv := c.waitMappedAndNamed(t, protocol)
	if len(nv.Warnings) != 0 {
		t.Errorf("warnings with everything working: %q", nv.Warnings)
	}
	if !slices.Equal(nv.Endpoint.ResolvesTo, []string{h.RouterWAN.String()}) {
		t.Errorf("endpoint check %+v: want %s resolving to the router's address", nv.Endpoint, outsideName)
	}

	// The phone on mobile data: the name through BIND, the handshake
	// through the router's mapping, the cell's DNS and time in the tunnel.
	ph := c.phone(t, "phone")
	start := time.Now()
	if !h.Phone.WaitPing("10.77.0.1", 15*time.Second) {
		t.Fatalf("the phone cannot reach the cell through %s:51820\nrouter:\n%s", h.RouterWAN, h.Router.Exec(t, "nft", "list", "ruleset"))
	}
	t.Logf("the phone's first ping through the mapping after %v", time.Since(start).Round(time.Millisecond))
	if st, err := ph.Dev.Stats(); err != nil || len(st) != 1 || st[0].LastHandshake.IsZero() {
		t.Errorf("the phone's device: %+v %v, want a handshake", st, err)
	}
	if got, err := askDNS(h.Phone, "10.77.0.1:53", "phone."+outsideName, mdns.TypeA); err != nil || !slices.Equal(got, []string{"10.77.0.2"}) {
		t.Errorf("phone.%s through the tunnel: %v %v, want 10.77.0.2", outsideName, got, err)
	}

	// The cell's clock: synchronised with the test's server, and served.
	var nt ntpView
	eventually(t, 15*time.Second, 200*time.Millisecond, "GET /api/ntp synchronised", func() error {
		nt = ntpView{}
		if err := a.Do(ctx, "GET", "/api/ntp", nil, &nt); err != nil {
			return err
		}
		if !nt.Synchronised || nt.Server != c.ntpAddr {
			return fmt.Errorf("%+v", nt)
		}
		return nil
	})
	if !nt.Serving || !slices.Equal(nt.Servers, []string{c.ntpAddr}) || nt.Stratum != 2 {
		t.Errorf("GET /api/ntp %+v: want serving, servers [%s], stratum 2", nt, c.ntpAddr)
	}
	var sample clock.Sample
	err = h.Phone.Run(func() (err error) {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		sample, err = clock.Query(qctx, "10.77.0.1:123")
		return err
	})
	if err != nil {
		t.Errorf("SNTP to the cell through the tunnel: %v", err)
	} else if sample.Offset > 2*time.Second || sample.Offset < -2*time.Second || sample.Stratum != 3 {
		t.Errorf("SNTP through the tunnel: %+v, want the cell's time (offset within 2 s) at stratum 3", sample)
	}

	// The one test that tells a person the port forward works.
	r, err := a.netTest(map[string]any{"kind": "reachability"})
	a.ok("POST /api/network/test reachability", err)
	if !r.OK || r.Target != outsideName+":51820" || !strings.HasPrefix(r.Address, h.InternetWAN.String()+":") {
		// The echo service's datagram leaves the internet namespace from
		// its address towards the router.
		t.Errorf("reachability %+v: want ok, heard from the echo service at %s", r, h.InternetWAN)
	}

	st, err := a.Status(ctx)
	a.ok("GET /api/status", err)
	for _, part := range []string{"ddns", "ntp"} {
		if p := st.Parts[part]; p.State != "ok" {
			t.Errorf("GET /api/status %s part %+v, want ok", part, p)
		}
	}

	if full {
		hostileDDNS(t, c)
		// Port mapping off: the router forwards nothing, and the
		// reachability test says so plainly.
		_, err = a.PatchConfig(ctx, map[string]any{"outside": map[string]any{"port_mapping": false}})
		a.ok("PUT /api/config outside.port_mapping false", err)
		eventually(t, 10*time.Second, 200*time.Millisecond, "the mapping removed after port_mapping false", func() error {
			if r := routerForwards(t, h); r != "" {
				return fmt.Errorf("the router still forwards: %s", r)
			}
			if pm := a.network().PortMapping; pm.State != "off" || pm.Enabled {
				return fmt.Errorf("port_mapping %+v, want off", pm)
			}
			return nil
		})
		r, err = a.netTest(map[string]any{"kind": "reachability"})
		a.ok("POST /api/network/test reachability without the mapping", err)
		if r.OK || !strings.Contains(r.Detail, "did not arrive") || !strings.Contains(r.Detail, "forward") {
			t.Errorf("reachability without the mapping %+v: want ok false, a plain detail", r)
		}
		_, err = a.PatchConfig(ctx, map[string]any{"outside": map[string]any{"port_mapping": true}})
		a.ok("PUT /api/config outside.port_mapping true", err)
		c.waitMappedAndNamed(t, protocol)
	}

	// The cell stops: the mapping goes with it.
	c.d.stop()
	if r := routerForwards(t, h); r != "" {
		t.Errorf("after the cell stopped the router still forwards: %s\nminiupnpd:\n%s", r, c.mu.Output())
	}
}

// hostileDDNS: hostile DDNS settings through the real daemon are 400 with
// plain words, and nothing is stored.
func hostileDDNS(t *testing.T, c *homeCell) {
	t.Helper()
	before := c.a.ddns()
	wrongLen := base64.StdEncoding.EncodeToString([]byte("short"))
	for _, bad := range []struct {
		what string
		body map[string]any
	}{
		{"a hostile hostname", with(rfc2136(c.bind, c.bind.Secret), "hostname", "home.example.org;rm -rf /")},
		{"a hostname with a newline", with(rfc2136(c.bind, c.bind.Secret), "hostname", "evil\n.example.org")},
		{"a secret that is not base64", with(rfc2136(c.bind, c.bind.Secret), "secret", "not base64 at all!")},
		{"a secret too short", with(rfc2136(c.bind, c.bind.Secret), "secret", wrongLen)},
		{"a server with a shell", with(rfc2136(c.bind, c.bind.Secret), "server", "$(reboot)")},
		{"a zone that does not hold the name", with(rfc2136(c.bind, c.bind.Secret), "zone", "example.net")},
		{"dyndns2 over plain http", map[string]any{"provider": "dyndns2", "url": "http://dyn.example.org/nic/update",
			"username": "u", "secret": "p", "interval_minutes": 60}},
		{"an unknown provider", map[string]any{"provider": "telnet", "interval_minutes": 60}},
		{"an interval out of range", with(rfc2136(c.bind, c.bind.Secret), "interval_minutes", 1)},
	} {
		_, err := c.a.putDDNS(bad.body)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest {
			t.Errorf("%s: %v, want 400", bad.what, err)
			continue
		}
		if ce.Message == "" || strings.Contains(ce.Message, c.bind.Secret) || strings.Contains(ce.Message, "*") || strings.Contains(ce.Message, "json: ") {
			t.Errorf("%s: message %q: want plain words without the secret", bad.what, ce.Message)
		}
	}
	after := c.a.ddns()
	if after.Provider != before.Provider || after.Server != before.Server || after.Zone != before.Zone ||
		after.Hostname != before.Hostname || after.State != "ok" || !after.SecretSet {
		t.Errorf("after the refused PUTs: %+v, before %+v", after, before)
	}
	if got, err := askDNS(c.h.Internet, c.bind.Addr.String(), outsideName, mdns.TypeA); err != nil || !slices.Equal(got, []string{c.h.RouterWAN.String()}) {
		t.Errorf("BIND after the refused PUTs: %v %v", got, err)
	}
}

// with is m with k set to v (a copy).
func with(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// publicCell is the daemon in the Topology's cell namespace (a public
// uplink, 198.18.0.2 on wan0) with BIND in the WAN namespace.
type publicCell struct {
	top  *nstest.Topology
	bind *nstest.BIND
	d    *daemon
	a    *api
}

func startPublicCell(t testing.TB, withBIND bool) *publicCell {
	t.Helper()
	top := nstest.NewTopology(t)
	c := &publicCell{top: top}
	nameserver := "127.0.0.1" // nothing listens: a name fails at once
	if withBIND {
		c.bind = nstest.StartBIND(t, top.WAN, netip.MustParseAddr(nstest.ServerAddr), outsideZone)
		nameserver = nstest.ServerAddr
	}
	data := t.TempDir()
	c.d = startDaemon(t, privateRunResolv(top.Cell, resolvConf(t, nameserver), daemonBinary(t), "-data", data, "-listen", "127.0.0.1:3000",
		"-wg-mode", "tun", "-time-check=false", "-log-level", "debug")...)
	c.a = newAPI(t, "http://127.0.0.1:3000", func(ctx context.Context, network, addr string) (net.Conn, error) {
		return top.Cell.Dial(addr, 5*time.Second)
	})
	c.a.setUp(data, outsideName, 51820)
	c.a.waitRunning()
	return c
}

// moveUplink gives wan0 the address to instead of from, as a new DHCP lease
// would, and puts the default route back.
func (c *publicCell) moveUplink(t testing.TB, from, to string) {
	t.Helper()
	// Deleting the primary address takes the secondaries of its subnet
	// with it: the old one goes first.
	c.top.Cell.Exec(t, "ip", "addr", "del", from+"/24", "dev", nstest.CellWANIf)
	c.top.Cell.Exec(t, "ip", "addr", "add", to+"/24", "dev", nstest.CellWANIf)
	c.top.Cell.Exec(t, "ip", "route", "replace", "default", "via", nstest.ServerAddr)
}

// bindSays is BIND's A answer for the cell's name.
func (c *publicCell) bindSays() ([]string, error) {
	return askDNS(c.top.WAN, c.bind.Addr.String(), outsideName, mdns.TypeA)
}

func (c *publicCell) waitA(t testing.TB, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, d, 20*time.Millisecond, "BIND answers "+want, func() error {
		got, err := c.bindSays()
		if err != nil || !slices.Equal(got, []string{want}) {
			return fmt.Errorf("%s A %v (%v)", outsideName, got, err)
		}
		return nil
	})
	return time.Since(start)
}

// TestDDNSFollowsTheUplink: RFC 2136 against BIND with a public uplink. The
// record follows a new address on the uplink within seconds (the daemon
// hears rtnetlink; the interval is an hour); a wrong key is reported
// plainly and not retried in a tight loop.
func TestDDNSFollowsTheUplink(t *testing.T) {
	c := startPublicCell(t, true)
	a := c.a
	ctx := context.Background()
	_, err := a.putDDNS(rfc2136(c.bind, c.bind.Secret))
	a.ok("PUT /api/network/ddns", err)
	c.waitA(t, nstest.CellWAN, 15*time.Second)
	v := a.network()
	if v.PublicAddress.Source != "uplink" || !slices.Contains(v.PublicAddress.Addrs, nstest.CellWAN) || v.Uplink.Interface != nstest.CellWANIf {
		t.Errorf("GET /api/network: uplink %+v, public %+v; want %s on %s, from the uplink", v.Uplink, v.PublicAddress, nstest.CellWAN, nstest.CellWANIf)
	}

	const moved = "198.18.0.9"
	c.moveUplink(t, nstest.CellWAN, moved)
	took := c.waitA(t, moved, 10*time.Second)
	t.Logf("the uplink's new address in BIND after %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the record followed after %v, want within a few seconds", took)
	}
	eventually(t, 5*time.Second, 200*time.Millisecond, "GET /api/network/ddns ok with the new address", func() error {
		if d := a.ddns(); d.State != "ok" || !slices.Contains(d.Addrs, moved) {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})

	// A wrong secret (valid base64, another key): refused, said plainly,
	// not retried.
	wrong := base64.StdEncoding.EncodeToString([]byte("another key, thirty-two bytes!!!"))
	_, err = a.putDDNS(rfc2136(c.bind, wrong))
	a.ok("PUT /api/network/ddns with a wrong secret", err)
	var d ddnsView
	eventually(t, 15*time.Second, 200*time.Millisecond, "the wrong key reported", func() error {
		d = a.ddns()
		if (d.State != "refused" && d.State != "failing") || d.LastError == "" {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})
	if strings.Contains(d.LastError, wrong) || strings.Contains(d.LastError, "*") || strings.Contains(d.LastError, "%!") {
		t.Errorf("last_error %q: want plain words without the secret", d.LastError)
	}
	failures := d.Failures
	time.Sleep(5 * time.Second)
	d2 := a.ddns()
	if d2.Failures != failures || d2.State != d.State {
		t.Errorf("5 s after the refusal: %+v, before %+v: retried in a loop", d2, d)
	}
	if got, err := c.bindSays(); err != nil || !slices.Equal(got, []string{moved}) {
		t.Errorf("BIND after the wrong key: %v %v, want the record kept at %s", got, err, moved)
	}
	if nv := a.network(); !containsWord(nv.Warnings, "dynamic DNS") {
		t.Errorf("GET /api/network warnings %q: want one about dynamic DNS", nv.Warnings)
	}
	if p := mustStatus(t, a).Parts["ddns"]; p.State != "degraded" || p.Reason == "" {
		t.Errorf("GET /api/status ddns %+v, want degraded with a reason", p)
	}
	var rv ddnsView
	a.ok("POST /api/network/ddns/refresh", a.Do(ctx, "POST", "/api/network/ddns/refresh", nil, &rv))
	if rv.Provider != "rfc2136" {
		t.Errorf("refresh answered %+v", rv)
	}
	// The refresh tried once more (a person acted), and failed again.
	eventually(t, 10*time.Second, 200*time.Millisecond, "the refresh tried again", func() error {
		if d := a.ddns(); d.Failures <= failures {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})
	// The right key again: ok, and the record still right.
	_, err = a.putDDNS(rfc2136(c.bind, c.bind.Secret))
	a.ok("PUT /api/network/ddns with the right secret", err)
	eventually(t, 10*time.Second, 200*time.Millisecond, "ok again", func() error {
		if d := a.ddns(); d.State != "ok" {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})
}

func mustStatus(t testing.TB, a *api) client.Status {
	t.Helper()
	st, err := a.Status(context.Background())
	a.ok("GET /api/status", err)
	return st
}

func containsWord(list []string, word string) bool {
	for _, s := range list {
		if strings.Contains(strings.ToLower(s), strings.ToLower(word)) {
			return true
		}
	}
	return false
}

// TestCGNATSaidPlainly: a home router whose own address is in 100.64/10
// maps the port, but the admin is told the cell needs a relay.
func TestCGNATSaidPlainly(t *testing.T) {
	c := startHomeCell(t, nstest.HomeOptions{WAN: netip.MustParsePrefix("100.64.0.2/24")}, nstest.MiniUPnPdOptions{UPnP: true, NATPMP: true}, true)
	var v networkView
	eventually(t, 30*time.Second, 200*time.Millisecond, "CGNAT in GET /api/network", func() error {
		v = c.a.network()
		if !v.PublicAddress.CGNAT || !v.PortMapping.CGNAT {
			return fmt.Errorf("public %+v, port mapping %+v", v.PublicAddress, v.PortMapping)
		}
		if !containsWord(v.Warnings, "relay") {
			return fmt.Errorf("warnings %q", v.Warnings)
		}
		return nil
	})
	t.Logf("public %+v; port mapping %+v; warnings %q", v.PublicAddress, v.PortMapping, v.Warnings)
	if len(v.PublicAddress.Addrs) != 0 || !strings.Contains(v.PublicAddress.Error, "relay") {
		t.Errorf("public_address %+v: want no address and the reason, naming a relay", v.PublicAddress)
	}
	// Nothing is sent to a DNS provider for an address nobody outside can
	// reach (the keeper is never given it).
	_, err := c.a.putDDNS(rfc2136(c.bind, c.bind.Secret))
	c.a.ok("PUT /api/network/ddns", err)
	time.Sleep(2 * time.Second)
	if got, err := askDNS(c.h.Internet, c.bind.Addr.String(), outsideName, mdns.TypeA); err != nil || len(got) != 0 {
		t.Errorf("BIND has %s A %v (%v) behind a CGNAT, want nothing", outsideName, got, err)
	}
}

// TestNetworkDiagnostics: POST /api/network/test through the real daemon,
// against targets the test runs in the WAN namespace and against closed
// ones; forbidden targets are 400; 100 at once are bounded.
func TestNetworkDiagnostics(t *testing.T) {
	c := startPublicCell(t, false)
	a, top := c.a, c.top

	// A DNS server, a UDP echo and a slow HTTP server in "the internet".
	startTestDNS(t, top.WAN, nstest.ServerAddr+":53")
	startUDPEcho(t, top.WAN, nstest.ServerAddr+":7")
	var now, most atomic.Int32
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(2 * time.Second)
		w.Write([]byte("slow"))
	})}
	var sl net.Listener
	if err := top.WAN.Run(func() (err error) { sl, err = net.Listen("tcp", nstest.ServerAddr+":8081"); return err }); err != nil {
		t.Fatal(err)
	}
	go slow.Serve(sl)
	t.Cleanup(func() { slow.Close() })

	for _, tc := range []struct {
		body map[string]any
		ok   bool
	}{
		{map[string]any{"kind": "ping", "target": nstest.ServerAddr}, true},
		{map[string]any{"kind": "ping", "target": nstest.AAddr}, true},
		{map[string]any{"kind": "ping", "target": "198.18.0.77"}, false},
		{map[string]any{"kind": "dns", "target": "probe.example.test@" + nstest.ServerAddr}, true},
		{map[string]any{"kind": "dns", "target": "probe.example.test@198.18.0.77"}, false},
		{map[string]any{"kind": "dns", "target": "missing.example.test@" + nstest.ServerAddr}, false},
		{map[string]any{"kind": "http", "target": "http://" + nstest.ServerAddr + "/"}, true},
		{map[string]any{"kind": "http", "target": "http://" + nstest.ServerAddr + ":81/"}, false},
		{map[string]any{"kind": "port", "target": nstest.ServerAddr + ":80"}, true},
		{map[string]any{"kind": "port", "target": nstest.ServerAddr + ":81"}, false},
		{map[string]any{"kind": "port", "target": nstest.ServerAddr + ":7", "proto": "udp"}, true},
		{map[string]any{"kind": "port", "target": nstest.ServerAddr + ":9", "proto": "udp"}, false},
	} {
		r, err := a.netTest(tc.body)
		if err != nil {
			t.Errorf("%v: %v", tc.body, err)
			continue
		}
		if r.OK != tc.ok || r.Detail == "" {
			t.Errorf("%v: %+v, want ok %v with a detail", tc.body, r, tc.ok)
		}
		if tc.body["kind"] == "dns" && tc.ok && !slices.Equal(r.Answers, []string{"198.18.0.80"}) && !slices.ContainsFunc(r.Answers, func(s string) bool { return strings.Contains(s, "198.18.0.80") }) {
			t.Errorf("dns answers %q, want 198.18.0.80", r.Answers)
		}
		if tc.body["kind"] == "http" && tc.ok && r.Status != 200 {
			t.Errorf("http status %d, want 200", r.Status)
		}
	}
	for _, body := range []map[string]any{
		{"kind": "ping", "target": "169.254.1.1"},
		{"kind": "ping", "target": "224.0.0.1"},
		{"kind": "port", "target": "127.0.0.1:3000"},
		{"kind": "http", "target": "http://127.0.0.1:3000/api/status"},
		{"kind": "http", "target": "http://169.254.169.254/latest/meta-data/"},
		{"kind": "ping", "target": "198.18.0.1; reboot"},
		{"kind": "dns", "target": "$(reboot).example.org"},
		{"kind": "shell", "target": "198.18.0.1"},
	} {
		_, err := a.netTest(body)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Message == "" {
			t.Errorf("%v: %v, want 400 with a reason", body, err)
		}
	}

	// 100 at once against the slow target: at most 4 reach it together.
	var wg sync.WaitGroup
	var ok, busy, other atomic.Int32
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := a.netTest(map[string]any{"kind": "http", "target": "http://" + nstest.ServerAddr + ":8081/"})
			switch {
			case err == nil && r.OK:
				ok.Add(1)
			case client.IsStatus(err, http.StatusTooManyRequests):
				busy.Add(1)
			default:
				other.Add(1) // the API's own per-source connection limit closes some
			}
		}()
	}
	wg.Wait()
	t.Logf("100 at once: %d ran, %d refused with 429, %d other; at most %d at the target together", ok.Load(), busy.Load(), other.Load(), most.Load())
	if most.Load() > 4 || most.Load() < 1 {
		t.Errorf("the slow target saw %d at once, want 1 to 4", most.Load())
	}
	if ok.Load() < 1 || busy.Load() < 1 {
		t.Errorf("%d ran, %d got 429: want both", ok.Load(), busy.Load())
	}
}

// startTestDNS answers probe.example.test A 198.18.0.80 on addr (UDP) inside
// ns, NXDOMAIN for anything else.
func startTestDNS(t testing.TB, ns *nstest.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Run(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, "probe.example.test.") && q.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR("probe.example.test. 60 IN A 198.18.0.80")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// startUDPEcho answers every datagram to addr inside ns with itself.
func startUDPEcho(t testing.TB, ns *nstest.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Run(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go nstest.EchoPackets(pc)
}
