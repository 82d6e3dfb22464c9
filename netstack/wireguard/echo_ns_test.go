package wireguard_test

// The reachability hook in network namespaces: outside the package because
// nstest imports it.

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/echo"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/wireguard"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func newKey(t testing.TB) wireguard.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newNonce(t testing.TB) [16]byte {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		t.Fatal(err)
	}
	return n
}

var quiet = slog.New(slog.DiscardHandler)

// pingOnce sends one ICMP echo through d's stack and waits for the reply.
func pingOnce(d *wireguard.WG, from, to string, timeout time.Duration) error {
	pc, err := d.Net().DialPingAddr(netip.MustParseAddr(from), netip.MustParseAddr(to))
	if err != nil {
		return err
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(timeout))
	// type 8, code 0, checksum of this header and "pic", id 1, seq 1.
	req := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'c'}
	var sum uint32
	for i := 0; i < len(req); i += 2 {
		if i+1 < len(req) {
			sum += uint32(req[i])<<8 | uint32(req[i+1])
		} else {
			sum += uint32(req[i]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	req[2], req[3] = byte(^uint16(sum)>>8), byte(^uint16(sum))
	if _, err := pc.Write(req); err != nil {
		return err
	}
	_, err = pc.Read(make([]byte, 1500))
	return err
}

// openIn opens a netstack-mode device whose UDP sockets live in ns and
// configures it there (a port change reopens the sockets on the caller's
// thread).
func openIn(t *testing.T, ns *nstest.NS, addr string, cfg wireguard.Config) *wireguard.WG {
	t.Helper()
	var w *wireguard.WG
	err := ns.Run(func() (err error) {
		if w, err = wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Logger: quiet}); err != nil {
			return err
		}
		return w.Set(cfg)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// TestEchoThroughHomeRouter is the reachability test end to end: the echo
// service in the internet, the cell behind a home router, and the answer
// depends on the router's port forward.
//
//	internet 198.18.0.1 (echo service :8080) ── router 198.18.0.2 / 192.168.77.1 ── cell 192.168.77.2
func TestEchoThroughHomeRouter(t *testing.T) {
	nstest.RequireRoot(t)
	inet, router, cellNS := nstest.NewNS(t, "inet"), nstest.NewNS(t, "router"), nstest.NewNS(t, "cell")
	nstest.Veth(t, inet, "to-router", "198.18.0.1/24", router, "wan0", "198.18.0.2/24")
	nstest.Veth(t, router, "lan0", "192.168.77.1/24", cellNS, "eth0", "192.168.77.2/24")
	cellNS.Exec(t, "ip", "route", "add", "default", "via", "192.168.77.1")
	if err := router.Run(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	router.Exec(t, "nft", "add", "table", "ip", "home")
	router.Exec(t, "nft", "add", "chain", "ip", "home", "pre", "{ type nat hook prerouting priority -100; }")
	router.Exec(t, "nft", "add", "chain", "ip", "home", "post", "{ type nat hook postrouting priority 100; }")
	router.Exec(t, "nft", "add", "rule", "ip", "home", "post", "oifname", "wan0", "masquerade")

	// The echo service.
	var l net.Listener
	if err := inet.Run(func() (err error) { l, err = net.Listen("tcp", "198.18.0.1:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	// Each request is served on a thread in the internet namespace, so that
	// the service's UDP socket is made there.
	h := &echo.Handler{Log: quiet}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inet.Run(func() error { h.ServeHTTP(w, r); return nil })
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	// The cell's device on 51820, and its way to the echo service.
	const port = 51820
	cell := openIn(t, cellNS, "10.77.0.1", wireguard.Config{PrivateKey: newKey(t), ListenPort: port})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return cellNS.Dial(addr, 3*time.Second)
		},
	}}
	const url = "http://198.18.0.1:8080/"
	public := "198.18.0.2:" + strconv.Itoa(port)
	ask := func(target string) ([16]byte, error) {
		n := newNonce(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return n, echo.Ask(ctx, client, url, target, n)
	}
	wait := func(n [16]byte, d time.Duration) (netip.AddrPort, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return cell.WaitEcho(ctx, n)
	}

	// No port forward yet: the service sends, nothing arrives.
	n, err := ask(public)
	if err != nil {
		t.Fatal(err)
	}
	if from, err := wait(n, time.Second); err == nil {
		t.Fatalf("heard from %v without a port forward", from)
	}

	// The person adds the port forward: now it arrives, from the service.
	router.Exec(t, "nft", "add", "rule", "ip", "home", "pre", "iifname", "wan0", "udp", "dport", strconv.Itoa(port), "dnat", "to", "192.168.77.2")
	if n, err = ask(public); err != nil {
		t.Fatal(err)
	}
	from, err := wait(n, 3*time.Second)
	if err != nil {
		t.Fatalf("with the port forward: %v", err)
	}
	if from.Addr() != netip.MustParseAddr("198.18.0.1") {
		t.Errorf("heard from %v, want the echo service's 198.18.0.1", from)
	}

	// The service refuses the cell's private address (and sends nothing).
	n, err = ask("192.168.77.2:" + strconv.Itoa(port))
	if err == nil {
		t.Error("the echo service accepted a private target")
	}
	if from, err := wait(n, 500*time.Millisecond); err == nil {
		t.Errorf("a refused request arrived from %v", from)
	}
}

// TestSendAfterTheAddressChanged: after the uplink's address changes, the
// cell still reaches its peer first, before the peer's next packet teaches
// it the new address. wireguard-go's own route listener, which would clear a
// stale remembered source, does not run for the wrapped bind; the bind's
// retry covers that where the source is remembered (see echo.go;
// TestSendRetriesWithoutStaleSource tests the retry itself).
func TestSendAfterTheAddressChanged(t *testing.T) {
	nstest.RequireRoot(t)
	wan, cellNS := nstest.NewNS(t, "wan"), nstest.NewNS(t, "cell")
	nstest.Veth(t, wan, "to-cell", "198.18.0.1/24", cellNS, "wan0", "198.18.0.2/24")
	cellKey, clientKey := newKey(t), newKey(t)
	const port = 51820
	cell := openIn(t, cellNS, "10.77.0.1", wireguard.Config{PrivateKey: cellKey, ListenPort: port, Peers: []wireguard.Peer{{
		PublicKey: clientKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32")}}}})
	client := openIn(t, wan, "10.77.0.2", wireguard.Config{PrivateKey: clientKey, Peers: []wireguard.Peer{{
		PublicKey: cellKey.PublicKey(), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}}}})
	deadline := time.Now().Add(10 * time.Second)
	for pingOnce(client, "10.77.0.2", "10.77.0.1", time.Second) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the tunnel does not come up")
		}
	}

	// The uplink's address changes from .2 to .3.
	cellNS.Exec(t, "ip", "addr", "del", "198.18.0.2/24", "dev", "wan0")
	cellNS.Exec(t, "ip", "addr", "add", "198.18.0.3/24", "dev", "wan0")
	// The cell speaks first.
	var err error
	for range 3 {
		if err = pingOnce(cell, "10.77.0.1", "10.77.0.2", 2*time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the cell cannot reach its peer after its address changed: %v", err)
	}
}
