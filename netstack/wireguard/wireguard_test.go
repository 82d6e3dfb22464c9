package wireguard

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t testing.TB) Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError}))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestDiffUAPI(t *testing.T) {
	priv, a, b := mustKey(t), mustKey(t).PublicKey(), mustKey(t).PublicKey()
	pa := Peer{PublicKey: a, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32")}}
	pb := Peer{PublicKey: b, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.3/32")}}
	want := Config{PrivateKey: priv, ListenPort: 51820, Peers: []Peer{pa, pb}}

	full := diffUAPI(deviceState{}, want)
	for _, line := range []string{
		"private_key=" + hexKey(priv), "listen_port=51820",
		"public_key=" + hexKey(a), "allowed_ip=10.77.0.2/32",
		"public_key=" + hexKey(b), "allowed_ip=10.77.0.3/32",
	} {
		if !strings.Contains(full, line+"\n") {
			t.Errorf("diff from empty lacks %q:\n%s", line, full)
		}
	}
	// A device that already matches (with a roamed endpoint) needs nothing.
	roamed := pa
	roamed.Endpoint = netip.MustParseAddrPort("198.18.1.2:40000")
	if got := diffUAPI(deviceState{PrivateKey: priv, ListenPort: 51820, Peers: []Peer{pb, roamed}}, want); got != "" {
		t.Errorf("diff of equal state = %q, want empty", got)
	}
	// Dropping b removes it and only it.
	got := diffUAPI(deviceState{PrivateKey: priv, ListenPort: 51820, Peers: []Peer{pa, pb}}, Config{PrivateKey: priv, ListenPort: 51820, Peers: []Peer{pa}})
	if want := "public_key=" + hexKey(b) + "\nremove=true\n"; got != want {
		t.Errorf("diff removing b = %q, want %q", got, want)
	}
}

func TestParseUAPIRoundTrip(t *testing.T) {
	priv, psk := mustKey(t), mustKey(t)
	p := Peer{PublicKey: mustKey(t).PublicKey(), PresharedKey: psk, PersistentKeepalive: 25,
		Endpoint:   netip.MustParseAddrPort("198.18.0.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	text := diffUAPI(deviceState{}, Config{PrivateKey: priv, ListenPort: 1234, Peers: []Peer{p}})
	text += "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\n"
	st, err := parseUAPI(strings.ReplaceAll(text, "replace_allowed_ips=true\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	if st.PrivateKey != priv || st.ListenPort != 1234 {
		t.Errorf("device = %v/%d, want the written key and port 1234", st.PrivateKey.PublicKey(), st.ListenPort)
	}
	if diff := cmp.Diff([]Peer{p}, st.Peers, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	wantStats := PeerStats{PublicKey: p.PublicKey, Endpoint: p.Endpoint, LastHandshake: time.Unix(1700000000, 5), RxBytes: 10, TxBytes: 20}
	if len(st.Stats) != 1 || st.Stats[0] != wantStats {
		t.Errorf("stats = %+v, want %+v", st.Stats, wantStats)
	}
	if _, err := parseUAPI("garbage"); err == nil {
		t.Error("parseUAPI(garbage) succeeded")
	}
}

// pair opens two netstack devices that know each other: a "cell" at
// 10.77.0.1 and a "client" at 10.77.0.2 pointed at the cell's port.
func pair(t *testing.T) (cell, client *WG, cellCfg, clientCfg Config) {
	t.Helper()
	var err error
	cell, err = Open(Options{Mode: ModeNetstack, Addresses: []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::1")}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cell.Close() })
	client, err = Open(Options{Mode: ModeNetstack, Addresses: []netip.Addr{netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("fd77::2")}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	cellKey, clientKey, psk := mustKey(t), mustKey(t), mustKey(t)
	port := freeUDPPort(t)
	cellCfg = Config{PrivateKey: cellKey, ListenPort: port, Peers: []Peer{{
		PublicKey: clientKey.PublicKey(), PresharedKey: psk,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32"), netip.MustParsePrefix("fd77::2/128")},
	}}}
	clientCfg = Config{PrivateKey: clientKey, Peers: []Peer{{
		PublicKey: cellKey.PublicKey(), PresharedKey: psk, PersistentKeepalive: 25,
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd77::/64")},
	}}}
	if err := cell.Set(cellCfg); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(clientCfg); err != nil {
		t.Fatal(err)
	}
	return cell, client, cellCfg, clientCfg
}

// ping sends one ICMP echo over the client's netstack and waits for the reply.
func ping(client *WG, from, to string, timeout time.Duration) error {
	pc, err := client.Net().DialPingAddr(netip.MustParseAddr(from), netip.MustParseAddr(to))
	if err != nil {
		return err
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(timeout))
	// The netstack ping conn builds the ICMP header itself from the payload.
	req := icmpEcho(to)
	if _, err := pc.Write(req); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	if _, err := pc.Read(buf); err != nil {
		return err
	}
	return nil
}

func icmpEcho(to string) []byte {
	typ := byte(8)
	if strings.Contains(to, ":") {
		typ = 128
	}
	// type, code, checksum (filled by the stack for v6; computed for v4), id, seq, payload.
	b := []byte{typ, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'c'}
	if typ == 8 {
		var sum uint32
		for i := 0; i < len(b); i += 2 {
			if i+1 < len(b) {
				sum += uint32(b[i])<<8 | uint32(b[i+1])
			} else {
				sum += uint32(b[i]) << 8
			}
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		cs := ^uint16(sum)
		b[2], b[3] = byte(cs>>8), byte(cs)
	}
	return b
}

func waitPing(t *testing.T, client *WG, from, to string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = ping(client, from, to, time.Second); err == nil {
			return
		}
	}
	t.Fatalf("ping %s -> %s: %v", from, to, err)
}

func handshake(t *testing.T, d *WG, pub Key) time.Time {
	t.Helper()
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.PublicKey == pub {
			return s.LastHandshake
		}
	}
	t.Fatalf("peer %s not in stats", pub)
	return time.Time{}
}

// TestNetstackHandshakeAndPing is the unprivileged mode end to end: two real
// wireguard-go devices over loopback UDP, a handshake, pings over v4 and v6.
func TestNetstackHandshakeAndPing(t *testing.T) {
	cell, client, cellCfg, clientCfg := pair(t)
	waitPing(t, client, "10.77.0.2", "10.77.0.1")
	waitPing(t, client, "fd77::2", "fd77::1")
	hs := handshake(t, cell, clientCfg.PrivateKey.PublicKey())
	if hs.IsZero() || time.Since(hs) > time.Minute {
		t.Errorf("cell's last handshake with client = %v, want just now", hs)
	}
	st, _ := cell.Stats()
	if st[0].RxBytes == 0 || st[0].TxBytes == 0 {
		t.Errorf("cell stats = %+v, want traffic both ways", st[0])
	}
	pub, err := cell.PublicKey()
	if err != nil || pub != cellCfg.PrivateKey.PublicKey() {
		t.Errorf("PublicKey() = %v, %v; want the configured key's", pub, err)
	}

	// Set again with the same config: nothing changes, the session survives.
	if err := cell.Set(cellCfg); err != nil {
		t.Fatal(err)
	}
	if got := handshake(t, cell, clientCfg.PrivateKey.PublicKey()); !got.Equal(hs) {
		t.Errorf("handshake after idempotent Set = %v, want unchanged %v", got, hs)
	}
	if err := ping(client, "10.77.0.2", "10.77.0.1", 2*time.Second); err != nil {
		t.Errorf("ping after idempotent Set: %v", err)
	}

	// Removing the peer cuts it off.
	if err := cell.RemovePeer(clientCfg.PrivateKey.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if err := ping(client, "10.77.0.2", "10.77.0.1", time.Second); err == nil {
		t.Error("ping succeeded after the cell removed the peer")
	}
	// And PutPeer brings it back once the client starts a new session (a
	// real client would after its rekey timeout).
	if err := cell.PutPeer(cellCfg.Peers[0]); err != nil {
		t.Fatal(err)
	}
	if err := client.RemovePeer(cellCfg.PrivateKey.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(clientCfg); err != nil {
		t.Fatal(err)
	}
	waitPing(t, client, "10.77.0.2", "10.77.0.1")
}

// TestSetCyclesRandomly applies random peer sets in random order and checks
// after each that the device reports exactly the desired peers.
func TestSetCyclesRandomly(t *testing.T) {
	d, err := Open(Options{Mode: ModeNetstack, Addresses: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	priv := mustKey(t)
	var pool []Peer
	for i := range 8 {
		pool = append(pool, Peer{PublicKey: mustKey(t).PublicKey(), PersistentKeepalive: i % 2 * 25,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, 0, byte(2 + i)}), 32)}})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 40 {
		var want []Peer
		for _, p := range pool {
			if rng.IntN(2) == 0 {
				if rng.IntN(4) == 0 { // sometimes change the peer's addresses
					p.AllowedIPs = append(slices.Clone(p.AllowedIPs), netip.MustParsePrefix(fmt.Sprintf("fd77::%x/128", round*16+len(want)+2)))
				}
				want = append(want, p)
			}
		}
		cfg := Config{PrivateKey: priv, ListenPort: 0, Peers: want}
		if err := d.Set(cfg); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		d.mu.Lock()
		st, err := d.stateLocked()
		d.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if diff := diffUAPI(st, cfg); diff != "" {
			t.Fatalf("round %d: device differs from desired after Set:\n%s", round, diff)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	before := runtime.NumGoroutine()
	d, err := Open(Options{Mode: ModeNetstack, Addresses: []netip.Addr{netip.MustParseAddr("10.77.0.1")}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Set(Config{PrivateKey: mustKey(t), Peers: []Peer{{PublicKey: mustKey(t).PublicKey(),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32")}}}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := d.Set(Config{PrivateKey: mustKey(t)}); err != ErrClosed {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
	// Close ends every goroutine the device started.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestValidate(t *testing.T) {
	k := mustKey(t)
	for name, cfg := range map[string]Config{
		"no key":         {ListenPort: 1},
		"port":           {PrivateKey: k, ListenPort: 70000},
		"peer no key":    {PrivateKey: k, Peers: []Peer{{}}},
		"duplicate peer": {PrivateKey: k, Peers: []Peer{{PublicKey: k.PublicKey()}, {PublicKey: k.PublicKey()}}},
	} {
		if err := NewFake().Set(cfg); err == nil {
			t.Errorf("%s: Set succeeded", name)
		}
	}
}

func TestFakeCountsOnlyChanges(t *testing.T) {
	f := NewFake()
	cfg := Config{PrivateKey: mustKey(t), ListenPort: 51820, Peers: []Peer{{PublicKey: mustKey(t).PublicKey()}}}
	for range 3 {
		if err := f.Set(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if f.Sets != 1 {
		t.Errorf("Sets = %d after three equal Sets, want 1", f.Sets)
	}
	_ = context.Background
}
