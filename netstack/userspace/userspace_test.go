package userspace_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/userspace"
	"github.com/pic-cell/cell/netstack/wireguard"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// These tests need no privilege: a cell device in netstack mode and
// client devices in netstack mode, real wireguard-go devices talking over
// loopback UDP. The cell's host sockets are redirected (SetDial) from
// "internet" addresses to servers on loopback, so the tests do not depend
// on the machine's network; the namespace test (ns_test.go) dials for real.

var quiet = slog.New(slog.DiscardHandler)

var (
	cell4   = netip.MustParseAddr("10.77.0.1")
	cell6   = netip.MustParseAddr("fd77::1")
	tunnel4 = netip.MustParsePrefix("10.77.0.0/24")
	tunnel6 = netip.MustParsePrefix("fd77::/64")
	lan     = netip.MustParsePrefix("192.0.2.0/24")
	// internet and lanHost are the destinations the tests dial; the cell's
	// dialer sends them to loopback servers.
	internet  = netip.MustParseAddrPort("198.51.100.7:80")
	internet6 = netip.MustParseAddrPort("[2001:db8::7]:80")
	lanHost   = netip.MustParseAddrPort("192.0.2.10:80")
	udpEcho   = netip.MustParseAddrPort("198.51.100.7:5353")
	dnsEcho   = netip.MustParseAddrPort("198.51.100.7:53")
)

type client struct {
	name   string
	dev    *wireguard.WG
	v4, v6 netip.Addr
}

// world is a cell and its clients.
type world struct {
	t       *testing.T
	cell    *wireguard.WG
	clients map[string]*client

	mu      sync.Mutex
	targets map[string]string // dialled address -> loopback server
	dials   []string          // every host dial the cell made
}

func key(t testing.TB) wireguard.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// newWorld opens the cell and one client per name (10.77.0.2, .3, ...),
// each routing everything through the cell, and waits for their tunnels.
func newWorld(t *testing.T, limits userspace.Limits, names ...string) *world {
	t.Helper()
	w := &world{t: t, clients: map[string]*client{}, targets: map[string]string{}}
	var err error
	w.cell, err = wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: []netip.Addr{cell4, cell6}, Logger: quiet, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cell.Close() })
	userspace.SetDial(w.cell.Net(), w.dial)
	cellKey, port := key(t), freeUDPPort(t)
	cfg := wireguard.Config{PrivateKey: cellKey, ListenPort: port}
	for i, name := range names {
		c := &client{name: name, v4: netip.AddrFrom4([4]byte{10, 77, 0, byte(2 + i)}), v6: netip.MustParseAddr(fmt.Sprintf("fd77::%d", 2+i))}
		c.dev, err = wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Name: name, Addresses: []netip.Addr{c.v4, c.v6}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.dev.Close() })
		k := key(t)
		if err := c.dev.Set(wireguard.Config{PrivateKey: k, Peers: []wireguard.Peer{{PublicKey: cellKey.PublicKey(),
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}}}); err != nil {
			t.Fatal(err)
		}
		cfg.Peers = append(cfg.Peers, wireguard.Peer{PublicKey: k.PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(c.v4, 32), netip.PrefixFrom(c.v6, 128)}})
		w.clients[name] = c
	}
	if err := w.cell.Set(cfg); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.clients {
		if err := c.waitPing(cell4, 10*time.Second); err != nil {
			t.Fatalf("%s cannot ping the cell: %v", c.name, err)
		}
	}
	return w
}

// dial stands in for the host's net.Dialer: redirected addresses go to
// their loopback server, all others are refused (as by an empty network).
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	w.dials = append(w.dials, network+" "+addr)
	to, ok := w.targets[network+" "+addr]
	w.mu.Unlock()
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().IsLoopback() {
		to, ok = addr, true // a service: the only way to the host's loopback
	}
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

func (w *world) dialled(network, addr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.dials {
		if d == network+" "+addr {
			return true
		}
	}
	return false
}

// serveTCP starts a loopback server that the cell reaches when it dials
// as: it reads until the peer's FIN, then answers "<as> got <data>" and
// closes (so both half-closes are exercised).
func (w *world) serveTCP(as ...netip.AddrPort) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "got %s", b)
			}()
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range as {
		w.targets["tcp "+a.String()] = l.Addr().String()
	}
}

// serveUDP starts a loopback echo server reached as as.
func (w *world) serveUDP(as ...netip.AddrPort) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range as {
		w.targets["udp "+a.String()] = c.LocalAddr().String()
	}
}

func (w *world) setPolicy(p userspace.Policy) {
	w.t.Helper()
	p.Tunnel = []netip.Prefix{tunnel4, tunnel6}
	p.LAN = []netip.Prefix{lan}
	if err := w.cell.Userspace().SetPolicy(p); err != nil {
		w.t.Fatal(err)
	}
}

// access gives each named client the access on both its addresses.
func (w *world) access(acc map[string]userspace.Access) map[netip.Addr]userspace.Access {
	m := map[netip.Addr]userspace.Access{}
	for name, a := range acc {
		m[w.clients[name].v4] = a
		m[w.clients[name].v6] = a
	}
	return m
}

// exchange sends msg over TCP to addr from c, half-closes, and returns the
// answer.
func (c *client) exchange(addr netip.AddrPort, msg string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.dev.Net().DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, msg); err != nil {
		return "", err
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

// udp sends msg from c to addr and waits for one datagram back.
func (c *client) udp(addr netip.AddrPort, msg string, timeout time.Duration) (string, error) {
	conn, err := c.dev.Net().DialContext(context.Background(), "udp", addr.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return roundTrip(conn, msg, timeout)
}

func roundTrip(conn net.Conn, msg string, timeout time.Duration) (string, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, msg); err != nil {
		return "", err
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

// ping sends one echo request from c to dst and waits for the reply.
func (c *client) ping(dst netip.Addr, timeout time.Duration) error {
	from := c.v4
	if dst.Is6() {
		from = c.v6
	}
	pc, err := c.dev.Net().DialPingAddr(from, dst)
	if err != nil {
		return err
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(timeout))
	typ := byte(8)
	if dst.Is6() {
		typ = 128
	}
	msg := []byte{typ, 0, 0, 0, 0, 1, 0, 7, 'p', 'i', 'c', '!'}
	if !dst.Is6() { // the stack computes only the ICMPv6 checksum
		var sum uint32
		for i := 0; i < len(msg); i += 2 {
			sum += uint32(msg[i])<<8 | uint32(msg[i+1])
		}
		sum = sum>>16 + sum&0xffff
		cs := ^uint16(sum + sum>>16)
		msg[2], msg[3] = byte(cs>>8), byte(cs)
	}
	if _, err := pc.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := pc.Read(buf)
	if err != nil {
		return err
	}
	if n < 8 || (buf[0] != 0 && buf[0] != 129) {
		return fmt.Errorf("not an echo reply: % x", buf[:n])
	}
	return nil
}

func (c *client) waitPing(dst netip.Addr, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := c.ping(dst, 500*time.Millisecond)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

func refused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "refused")
}

// TestForward: a peer with internet access reaches TCP and UDP servers
// beyond the cell over IPv4 and IPv6, with half-close both ways.
func TestForward(t *testing.T) {
	w := newWorld(t, userspace.Limits{}, "a")
	w.serveTCP(internet, internet6)
	w.serveUDP(udpEcho)
	a := w.clients["a"]
	// Before any policy: the cell's own addresses only.
	if _, err := a.exchange(internet, "x", time.Second); err == nil {
		t.Error("a flow was forwarded before there was a policy")
	}
	w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"a": {Internet: true}})})
	for _, dst := range []netip.AddrPort{internet, internet6} {
		got, err := a.exchange(dst, "hello "+dst.String(), 5*time.Second)
		if want := "got hello " + dst.String(); err != nil || got != want {
			t.Errorf("TCP to %v: %q, %v; want %q", dst, got, err, want)
		}
	}
	// A large transfer both ways survives.
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	if got, err := a.exchange(internet, big, 20*time.Second); err != nil || got != "got "+big {
		t.Errorf("1 MiB over TCP: %d bytes back, %v", len(got), err)
	}
	if got, err := a.udp(udpEcho, "ping over udp", 5*time.Second); err != nil || got != "ping over udp" {
		t.Errorf("UDP echo: %q, %v", got, err)
	}
	// A destination that refuses is a RST to the peer, promptly.
	start := time.Now()
	if _, err := a.exchange(netip.MustParseAddrPort("198.51.100.8:81"), "x", 5*time.Second); !refused(err) {
		t.Errorf("TCP to a refusing destination: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
	// Ping beyond the cell, answered locally (the host has no ICMP sockets
	// to spare in a unit test).
	userspace.SetHostPing(w.cell.Net(), false)
	if err := a.ping(internet.Addr(), 2*time.Second); err != nil {
		t.Errorf("ping beyond the cell: %v", err)
	}
	if err := a.ping(internet6.Addr(), 2*time.Second); err != nil {
		t.Errorf("ping6 beyond the cell: %v", err)
	}
}

// TestPolicy: each class of destination follows the source's access;
// sources outside the policy get nothing; a policy change cuts flows it no
// longer allows.
func TestPolicy(t *testing.T) {
	w := newWorld(t, userspace.Limits{}, "inet", "lan", "stranger")
	w.serveTCP(internet, lanHost)
	w.serveUDP(udpEcho, netip.AddrPortFrom(lanHost.Addr(), 5353))
	userspace.SetHostPing(w.cell.Net(), false)
	l, err := w.cell.Userspace().ListenTCP(netip.AddrPortFrom(cell4, 3000))
	if err != nil {
		t.Fatal(err)
	}
	go serveHello(l)
	w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"inet": {Internet: true}, "lan": {LAN: true}})})
	inet, lanOnly, stranger := w.clients["inet"], w.clients["lan"], w.clients["stranger"]

	for _, tc := range []struct {
		c    *client
		dst  netip.AddrPort
		want bool
	}{
		{inet, internet, true}, {inet, lanHost, false},
		{lanOnly, internet, false}, {lanOnly, lanHost, true},
	} {
		_, err := tc.c.exchange(tc.dst, "x", 5*time.Second)
		if tc.want && err != nil {
			t.Errorf("%s -> %v: %v, want allowed", tc.c.name, tc.dst, err)
		}
		if !tc.want && !refused(err) {
			t.Errorf("%s -> %v: %v, want a RST", tc.c.name, tc.dst, err)
		}
		_, err = tc.c.udp(netip.AddrPortFrom(tc.dst.Addr(), 5353), "x", time.Second)
		if tc.want != (err == nil) {
			t.Errorf("%s -> udp %v: %v, want allowed %v", tc.c.name, tc.dst.Addr(), err, tc.want)
		}
		err = tc.c.ping(tc.dst.Addr(), time.Second)
		if tc.want != (err == nil) {
			t.Errorf("%s -> ping %v: %v, want allowed %v", tc.c.name, tc.dst.Addr(), err, tc.want)
		}
	}
	// Every policy source reaches the cell's own listener and address.
	for _, c := range []*client{inet, lanOnly} {
		if got, err := get(c, netip.AddrPortFrom(cell4, 3000)); err != nil || got != c.v4.String() {
			t.Errorf("%s -> cell API: %q, %v", c.name, got, err)
		}
	}
	// A peer on the device but not in the policy gets nothing, not even the
	// cell (no RST either: silence).
	if err := stranger.ping(cell4, time.Second); err == nil {
		t.Error("a source outside the policy pinged the cell")
	}
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(cell4, 3000), internet} {
		if _, err := stranger.exchange(dst, "x", 700*time.Millisecond); err == nil || refused(err) {
			t.Errorf("a source outside the policy -> %v: %v, want a timeout", dst, err)
		}
	}

	// An open flow ends when the policy stops allowing it.
	conn, err := inet.dev.Net().DialContext(context.Background(), "tcp", internet.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "half a request")
	waitFlows(t, w.cell.Net(), 1, -1)
	w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"inet": {LAN: true}, "lan": {LAN: true}})})
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err == nil {
		t.Error("the flow survived a policy that no longer allows it (ended cleanly)")
	} else if strings.Contains(err.Error(), "timeout") {
		t.Error("the flow survived a policy that no longer allows it")
	}
	waitFlows(t, w.cell.Net(), 0, -1)
}

// TestRefusedDestinations: whatever the access, loopback, link-local and
// the host's own addresses are never dialled; the configured services are
// the way to the host.
func TestRefusedDestinations(t *testing.T) {
	w := newWorld(t, userspace.Limits{}, "a")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go serveHello(l)
	lp := netip.MustParseAddrPort(l.Addr().String())
	all := userspace.Access{Internet: true, LAN: true, Peers: true}
	w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"a": all}),
		Services: []userspace.Service{{Proto: "tcp", Port: 3000, To: lp}}})
	a := w.clients["a"]
	refusedDsts := []netip.AddrPort{lp,
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), lp.Port()),
		netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), lp.Port()),
		netip.AddrPortFrom(netip.MustParseAddr("0.0.0.0"), lp.Port()),
		netip.MustParseAddrPort("169.254.169.254:80"),
		netip.MustParseAddrPort("[fe80::1]:80"),
		netip.MustParseAddrPort("224.0.0.1:80"),
	}
	if ifas, err := net.InterfaceAddrs(); err == nil {
		for _, ifa := range ifas {
			if n, ok := ifa.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				a, _ := netip.AddrFromSlice(n.IP)
				refusedDsts = append(refusedDsts, netip.AddrPortFrom(a.Unmap(), lp.Port()))
			}
		}
	}
	var wg sync.WaitGroup
	for _, dst := range refusedDsts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.exchange(dst, "x", 1500*time.Millisecond); err == nil {
				t.Errorf("%v: reached, want refused", dst)
			}
		}()
	}
	wg.Wait()
	for _, dst := range refusedDsts {
		if w.dialled("tcp", dst.String()) {
			t.Errorf("%v: the cell dialled it", dst)
		}
	}
	// The service mapping reaches the loopback server through the cell's
	// tunnel address.
	if got, err := get(a, netip.AddrPortFrom(cell4, 3000)); err != nil || got != "127.0.0.1" {
		t.Errorf("service 10.77.0.1:3000 -> %v: %q, %v (want the host's loopback as the client)", lp, got, err)
	}
	// A port with neither listener nor service: RST.
	if _, err := a.exchange(netip.AddrPortFrom(cell4, 3001), "x", 2*time.Second); !refused(err) {
		t.Errorf("cell port without service: %v, want refused", err)
	}
}

// TestPeerToPeer: peers reach each other only with Access.Peers, see each
// other's real addresses, and the other side may answer.
func TestPeerToPeer(t *testing.T) {
	w := newWorld(t, userspace.Limits{}, "a", "b")
	a, b := w.clients["a"], w.clients["b"]
	la, err := a.dev.Net().ListenTCP(netip.AddrPortFrom(a.v4, 7000))
	if err != nil {
		t.Fatal(err)
	}
	go serveHello(la)
	lb, err := b.dev.Net().ListenTCP(netip.AddrPortFrom(b.v4, 7000))
	if err != nil {
		t.Fatal(err)
	}
	go serveHello(lb)
	w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"a": {Peers: true}, "b": {}})})
	if got, err := get(a, netip.AddrPortFrom(b.v4, 7000)); err != nil || got != a.v4.String() {
		t.Errorf("a -> b: %q, %v; want b to see a's address", got, err)
	}
	if err := a.ping(b.v4, 2*time.Second); err != nil {
		t.Errorf("a pings b: %v", err)
	}
	if err := a.ping(b.v6, 2*time.Second); err != nil {
		t.Errorf("a pings b over IPv6: %v", err)
	}
	if _, err := getTimeout(b, netip.AddrPortFrom(a.v4, 7000), time.Second); err == nil {
		t.Error("b reached a without Access.Peers")
	}
	if err := b.ping(a.v4, time.Second); err == nil {
		t.Error("b pinged a without Access.Peers")
	}
	// A tunnel address that is no peer.
	if err := a.ping(netip.MustParseAddr("10.77.0.99"), time.Second); err == nil {
		t.Error("a ping to an unknown tunnel address was answered")
	}
}

// serveHello answers every HTTP request with the client's address.
func serveHello(l net.Listener) {
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	}))
}

// get fetches http://addr/ from c and returns the body.
func get(c *client, addr netip.AddrPort) (string, error) {
	return getTimeout(c, addr, 5*time.Second)
}

func getTimeout(c *client, addr netip.AddrPort, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.dev.Net().DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// waitFlows waits for the numbers of open flows; -1 is any.
func waitFlows(t *testing.T, s *userspace.Stack, wantTCP, wantUDP int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tcp, udp := s.Flows()
		if (tcp == wantTCP || wantTCP < 0) && (udp == wantUDP || wantUDP < 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flows: %d TCP, %d UDP; want %d, %d", tcp, udp, wantTCP, wantUDP)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLimits: flows per source are bounded; UDP flows end when idle.
func TestLimits(t *testing.T) {
	w := newWorld(t, userspace.Limits{UDPFlowsPerSource: 2, TCPFlowsPerSource: 2, UDPIdle: 2 * time.Second, DNSIdle: time.Second}, "a")
	w.serveUDP(udpEcho, dnsEcho)
	w.serveTCP(internet)
	w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"a": {Internet: true}})})
	a := w.clients["a"]
	var conns []net.Conn
	for i := range 3 {
		c, err := a.dev.Net().DialContext(context.Background(), "udp", udpEcho.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		_, err = roundTrip(c, "x", 500*time.Millisecond)
		if (i < 2) != (err == nil) {
			t.Errorf("UDP flow %d: %v (limit 2)", i+1, err)
		}
		if i == 1 {
			waitFlows(t, w.cell.Net(), 0, 2)
		}
	}
	// Idle flows end and free their slots.
	waitFlows(t, w.cell.Net(), 0, 0)
	if _, err := roundTrip(conns[2], "x", time.Second); err != nil {
		t.Errorf("UDP after the idle flows ended: %v", err)
	}
	if _, err := a.udp(dnsEcho, "query", time.Second); err != nil {
		t.Errorf("DNS-port UDP: %v", err)
	}
	// The DNS flow's shorter idle time ends it before the other.
	start := time.Now()
	waitFlows(t, w.cell.Net(), 0, 1)
	if d := time.Since(start); d > 1900*time.Millisecond {
		t.Errorf("the DNS flow lived %v idle, want about 1 s", d)
	}

	var tcps []net.Conn
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := a.dev.Net().DialContext(ctx, "tcp", internet.String())
		cancel()
		if (i < 2) != (err == nil) {
			t.Errorf("TCP flow %d: %v (limit 2)", i+1, err)
		}
		if err == nil {
			tcps = append(tcps, c)
		}
	}
	for _, c := range tcps {
		c.Close()
	}
	waitFlows(t, w.cell.Net(), 0, 0)
}

// TestCloseJoinsEverything: closing the cell device with flows open,
// listeners accepting and pings in flight leaves no goroutine behind.
func TestCloseJoinsEverything(t *testing.T) {
	// Earlier tests' goroutines (their servers, their devices) may still be
	// ending; and this test's own servers end with the subtest below.
	time.Sleep(200 * time.Millisecond)
	before := runtime.NumGoroutine()
	t.Run("with flows", func(t *testing.T) {
		w := newWorld(t, userspace.Limits{}, "a")
		w.serveTCP(internet)
		w.serveUDP(udpEcho)
		w.setPolicy(userspace.Policy{Peers: w.access(map[string]userspace.Access{"a": {Internet: true}})})
		a := w.clients["a"]
		l, err := w.cell.Userspace().ListenTCP(netip.AddrPortFrom(cell4, 3000))
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- http.Serve(l, http.NotFoundHandler()) }()
		pc, err := w.cell.Userspace().ListenUDP(netip.AddrPortFrom(cell4, 53))
		if err != nil {
			t.Fatal(err)
		}
		read := make(chan error, 1)
		go func() { _, _, err := pc.ReadFrom(make([]byte, 512)); read <- err }()
		tcp, err := a.dev.Net().DialContext(context.Background(), "tcp", internet.String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(tcp, "unfinished")
		if _, err := a.udp(udpEcho, "x", 2*time.Second); err != nil {
			t.Fatal(err)
		}
		waitFlows(t, w.cell.Net(), 1, 1)
		if err := w.cell.Close(); err != nil {
			t.Fatal(err)
		}
		for what, c := range map[string]chan error{"http.Serve": served, "ReadFrom": read} {
			select {
			case <-c:
			case <-time.After(5 * time.Second):
				t.Errorf("%s on a closed device did not return", what)
			}
		}
		if _, err := w.cell.Userspace().ListenTCP(netip.AddrPortFrom(cell4, 3001)); err == nil {
			t.Error("ListenTCP on a closed device succeeded")
		}
		tcp.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestListenOnlyOnOwnAddresses(t *testing.T) {
	w := newWorld(t, userspace.Limits{})
	us := w.cell.Userspace()
	for _, ap := range []string{"0.0.0.0:53", "[::]:53", "198.51.100.7:80", "10.77.0.2:80"} {
		if l, err := us.ListenTCP(netip.MustParseAddrPort(ap)); err == nil {
			l.Close()
			t.Errorf("ListenTCP(%s) succeeded; only the cell's own addresses may listen", ap)
		}
		if c, err := us.ListenUDP(netip.MustParseAddrPort(ap)); err == nil {
			c.Close()
			t.Errorf("ListenUDP(%s) succeeded", ap)
		}
	}
	if err := us.SetPolicy(userspace.Policy{Services: []userspace.Service{{Proto: "sctp", Port: 1, To: netip.MustParseAddrPort("127.0.0.1:1")}}}); err == nil {
		t.Error("a service with an unknown protocol was accepted")
	}
	// The mapping from a firewall ruleset writes zero addresses and
	// prefixes for what a peer or the cell lacks: skipped, not an error.
	if err := us.SetPolicy(userspace.Policy{Peers: map[netip.Addr]userspace.Access{{}: {Internet: true}},
		Tunnel: []netip.Prefix{tunnel4, {}}}); err != nil {
		t.Errorf("a policy with zero addresses: %v", err)
	}
	var tunUS wireguard.Userspace = (&wireguard.WG{}).Userspace()
	if tunUS != nil {
		t.Error("a device without a userspace stack reports one")
	}
}

func TestFake(t *testing.T) {
	f := userspace.NewFake(cell4)
	var us wireguard.Userspace = f
	p := userspace.Policy{Peers: map[netip.Addr]userspace.Access{netip.MustParseAddr("10.77.0.2"): {Internet: true}}}
	if err := us.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if got, n := f.Policy(); n != 1 || !got.Peers[netip.MustParseAddr("10.77.0.2")].Internet {
		t.Errorf("Policy() = %+v, %d", got, n)
	}
	l, err := us.ListenTCP(netip.AddrPortFrom(cell4, 3000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if f.Addr("tcp", netip.AddrPortFrom(cell4, 3000)).String() != l.Addr().String() {
		t.Error("Addr does not say where the fake listens")
	}
	if _, err := us.ListenUDP(netip.MustParseAddrPort("10.77.0.9:53")); err == nil {
		t.Error("the fake listened on an address that is not the cell's")
	}
}
