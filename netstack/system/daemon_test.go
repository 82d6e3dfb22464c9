package system_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// The daemon tests run the real cmd/cell binary: in TUN mode inside the cell
// namespace, and in netstack mode unprivileged on loopback. Clients are
// configured only from the config text the API hands out.

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain removes the daemon binary and the image archives the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	images.Remove() // services_test.go's first-party archives
	os.Exit(code)
}

func daemonBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cell-bin-")
		if buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755) // the netstack test runs it as nobody
		binPath = filepath.Join(binDir, "cell")
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", binPath, "github.com/pic-cell/cell/cmd/cell").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// daemon is a running cell process.
type daemon struct {
	t    testing.TB
	cmd  *exec.Cmd
	args []string
	log  *bytes.Buffer
}

func startDaemon(t testing.TB, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, args: args}
	d.start()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log)
		}
	})
	return d
}

func (d *daemon) start() {
	d.log = &bytes.Buffer{}
	d.cmd = exec.Command(d.args[0], d.args[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
		d.cmd = nil
	}
}

// privateRun is the command line that runs bin inside ns with a private
// /run (/var/run on Debian): its own mount namespace and a tmpfs there, so
// the daemon's UAPI socket, whose path is fixed, never lands on the host.
func privateRun(ns *nstest.NS, bin string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.Name, "unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none /run && exec "$0" "$@"`, bin}, args...)
}

// wg runs the wg tool in the daemon's namespaces (network and mount, where
// its UAPI socket is).
func (d *daemon) wg(args ...string) string {
	d.t.Helper()
	pid := fmt.Sprint(d.cmd.Process.Pid)
	out, err := exec.Command("nsenter", append([]string{"-t", pid, "-m", "-n", "wg"}, args...)...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("wg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// kill9 kills the daemon as a power cut would.
func (d *daemon) kill9() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// api is an admin (or peer) browser session against the daemon.
type api struct {
	*client.Client
	t testing.TB
}

func newAPI(t testing.TB, base string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *api {
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	return &api{Client: client.New(base, client.WithTransport(tr), client.WithTimeout(30*time.Second)), t: t}
}

// ok stops the test on an error of the call what.
func (a *api) ok(what string, err error) {
	a.t.Helper()
	if err != nil {
		a.t.Fatalf("%s: %v", what, err)
	}
}

const adminPW = "a long admin password"

// setUp completes the wizard, with the setup code the daemon made in its data
// directory, and logs in as admin.
func (a *api) setUp(data, domain string, port int) {
	a.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var answered *client.Error
		if _, err := a.Health(ctx); err == nil || errors.As(err, &answered) {
			break
		}
		if time.Now().After(deadline) {
			a.t.Fatal("the daemon never answered /health")
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, err := os.ReadFile(filepath.Join(data, "setup-code"))
	a.ok("the daemon's setup code (DATA/setup-code)", err)
	a.UseSetupCode(strings.TrimSpace(string(code)))
	_, err = a.SetupStep(ctx, "admin", map[string]any{"username": "admin", "password": adminPW})
	a.ok("setup step admin", err)
	_, err = a.SetupStep(ctx, "cell", map[string]any{"name": "home", "domain": domain})
	a.ok("setup step cell", err)
	_, err = a.SetupStep(ctx, "network", map[string]any{"wg_port": port, "subnet_v4": "10.77.0.0/24", "subnet_v6": "fd77::/64", "wan_interface": "auto"})
	a.ok("setup step network", err)
	_, err = a.CompleteSetup(ctx)
	a.ok("complete setup", err)
	a.login("admin", adminPW)
}

func (a *api) login(user, pw string) {
	a.t.Helper()
	a.ok("login", a.Login(context.Background(), user, pw))
}

// waitRunning waits until the daemon has built the device from the config.
func (a *api) waitRunning() {
	a.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		// Refused while the daemon starts.
		if st, err := a.WireGuardStatus(context.Background()); err == nil && st.Running {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.t.Fatal("WireGuard never came up after setup")
}

// TestDaemonTunMode is the end to end: the daemon in TUN mode in the
// cell namespace, real clients made only from the API's config text.
func TestDaemonTunMode(t *testing.T) {
	top := nstest.NewTopology(t)
	bin := daemonBinary(t)
	data := t.TempDir()
	d := startDaemon(t, privateRun(top.Cell, bin, "-data", data, "-listen", "127.0.0.1:3000", "-wg-mode", "tun", "-log-level", "debug")...)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return top.Cell.Dial(addr, 5*time.Second)
	}
	a := newAPI(t, "http://127.0.0.1:3000", dial)
	a.setUp(data, "cell.test", 51820)
	a.waitRunning()

	ctx := context.Background()
	_, err := a.CreatePeer(ctx, client.NewPeer{Name: "client-a"})
	a.ok("POST /api/peers", err)
	_, err = a.CreatePeer(ctx, client.NewPeer{Name: "client-b"})
	a.ok("POST /api/peers", err)
	cfgA, err := a.PeerConfig(ctx, "client-a")
	a.ok("GET /api/peers/client-a/config", err)
	cfgB, err := a.PeerConfig(ctx, "client-b")
	a.ok("GET /api/peers/client-b/config", err)
	resolve := func(host string) string {
		if host != "cell.test" {
			t.Fatalf("endpoint host %q, want the cell's domain", host)
		}
		return nstest.CellWAN
	}
	nstest.NewClient(t, top.A, cfgA, resolve)
	nstest.NewClient(t, top.B, cfgB, resolve)

	if !top.A.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatalf("client-a cannot ping the cell\n%s", top.Cell.Exec(t, "nft", "list", "ruleset"))
	}
	if !top.A.WaitPing("fd77::1", 5*time.Second) {
		t.Error("client-a cannot ping the cell over IPv6")
	}
	if !top.B.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatal("client-b cannot ping the cell")
	}
	st, err := a.WireGuardStatus(ctx)
	a.ok("GET /api/wireguard/status", err)
	for _, p := range st.Peers {
		if p.LastHandshake == nil {
			t.Errorf("status: %s has no handshake", p.Name)
		}
	}
	if got, err := top.A.Get(nstest.ServerAddr+":80", "/", 5*time.Second); err != nil || got != nstest.CellWAN {
		t.Errorf("the server saw client-a as %q (%v), want the cell's WAN address", got, err)
	}
	if got, err := top.A.Get("["+nstest.ServerAddr6+"]:80", "/", 5*time.Second); err != nil || got != nstest.CellWAN6 {
		t.Errorf("the server saw client-a over IPv6 as %q (%v), want the cell's WAN address", got, err)
	}
	// wg show works against the daemon's UAPI socket.
	show := d.wg("show", "wg0")
	for _, want := range []string{"listening port: 51820", "allowed ips: 10.77.0.2/32, fd77::2/128", "allowed ips: 10.77.0.3/32, fd77::3/128"} {
		if !strings.Contains(show, want) {
			t.Errorf("wg show lacks %q:\n%s", want, show)
		}
	}

	// Peer to peer only once the policy allows it.
	if top.A.Ping("10.77.0.3", time.Second) {
		t.Error("client-a reached client-b before the policy allowed it")
	}
	_, err = a.SetPeerRouting(ctx, "client-a", client.PolicyChange{Peers: new("allow")})
	a.ok("PUT /api/routing/peers/client-a", err)
	if !top.A.WaitPing("10.77.0.3", 3*time.Second) {
		t.Error("client-a cannot reach client-b after allowing it")
	}

	// A port forward from the WAN reaches a service on client-a.
	serveOn(t, top.A, "10.77.0.2:8081", "hello from client-a")
	_, err = a.AddForward(ctx, client.NewForward{Proto: "tcp", Port: 8080, Peer: "client-a", ToPort: 8081})
	a.ok("POST /api/routing/forwards", err)
	if got, err := top.WAN.Get(nstest.CellWAN+":8080", "/", 5*time.Second); err != nil || got != "hello from client-a" {
		t.Errorf("GET the cell's WAN port 8080 from the internet = %q, %v; want client-a's service", got, err)
	}

	// The QR decodes, with a real decoder, to the config byte for byte.
	png, err := a.PeerQR(ctx, "client-a", "")
	a.ok("GET /api/peers/client-a/qr", err)
	f := filepath.Join(t.TempDir(), "a.png")
	os.WriteFile(f, png, 0o644)
	if out, err := exec.Command("zbarimg", "--raw", "-q", "-Sbinary", f).Output(); err != nil || string(out) != cfgA {
		t.Errorf("QR decodes to %q (%v), want the config text", out, err)
	}

	// kill -9 and restart: the kernel state is rebuilt to exactly what the
	// database says.
	rulesBefore := normalizeRuleset(top.Cell.Exec(t, "nft", "list", "ruleset"))
	wgBefore := wgConfig(d.wg("showconf", "wg0"))
	d.kill9()
	if _, err := top.Cell.Try("ip", "link", "show", "wg0"); err == nil {
		t.Error("wg0 outlived the daemon")
	}
	d.start()
	a.waitRunning()
	if got := normalizeRuleset(top.Cell.Exec(t, "nft", "list", "ruleset")); got != rulesBefore {
		t.Errorf("ruleset after restart differs:\n%s\nbefore:\n%s", got, rulesBefore)
	}
	wgAfter := wgConfig(d.wg("showconf", "wg0"))
	if wgAfter != wgBefore {
		t.Errorf("wg config after restart differs:\n%s\nbefore:\n%s", wgAfter, wgBefore)
	}
	// And both are what the database says: every enabled peer, with its
	// key and addresses, and nothing else.
	peers, err := a.Peers(ctx)
	a.ok("GET /api/peers", err)
	for _, p := range peers {
		block := fmt.Sprintf("PublicKey = %s\nPresharedKey = ", p.PublicKey)
		allowed := fmt.Sprintf("AllowedIPs = %s/32, %s/128", p.IPv4, p.IPv6)
		if p.Enabled != (strings.Contains(wgAfter, block) && strings.Contains(wgAfter, allowed)) {
			t.Errorf("peer %s (enabled %v) on the device: %v\n%s", p.IPv4, p.Enabled, !p.Enabled, wgAfter)
		}
	}
	if got, want := strings.Count(wgAfter, "[Peer]"), len(peers); got != want {
		t.Errorf("device has %d peers, the database %d", got, want)
	}
	// The clients still hold sessions with the dead process; WireGuard
	// starts a new handshake after 15 s without an answer.
	if !top.A.WaitPing("10.77.0.1", 40*time.Second) {
		t.Fatal("client-a did not come back after the restart")
	}
	top.B.WaitPing("10.77.0.1", 40*time.Second)

	// Disable: a's traffic stops within a second; b is untouched.
	start := time.Now()
	_, err = a.UpdatePeer(ctx, "client-a", client.PeerChange{Enabled: new(false)})
	a.ok("PUT /api/peers/client-a", err)
	for top.A.Ping("10.77.0.1", 200*time.Millisecond) {
		if time.Since(start) > time.Second {
			t.Fatal("client-a still reaches the cell a second after disable")
		}
	}
	t.Logf("disable cut client-a off after %v", time.Since(start))
	if !top.B.Ping("10.77.0.1", time.Second) {
		t.Error("disabling a cut b off too")
	}
	// Delete: b's traffic stops within a second, and b is gone everywhere.
	start = time.Now()
	a.ok("DELETE /api/peers/client-b", a.DeletePeer(ctx, "client-b"))
	for top.B.Ping("10.77.0.1", 200*time.Millisecond) {
		if time.Since(start) > time.Second {
			t.Fatal("client-b still reaches the cell a second after delete")
		}
	}
	t.Logf("delete cut client-b off after %v", time.Since(start))
	if show := d.wg("show", "wg0", "allowed-ips"); strings.Contains(show, "10.77.0.3") {
		t.Errorf("deleted peer still on the device:\n%s", show)
	}
	if rules := top.Cell.Exec(t, "nft", "list", "ruleset"); strings.Contains(rules, "10.77.0.3") {
		t.Errorf("deleted peer still in the firewall:\n%s", rules)
	}
}

// wgConfig drops what changes on its own (endpoints) from `wg showconf` and
// sorts the peers, which the device lists in map order.
func wgConfig(s string) string {
	blocks := strings.Split(s, "\n\n")
	for i, b := range blocks {
		var keep []string
		for _, l := range strings.Split(strings.TrimSpace(b), "\n") {
			if !strings.HasPrefix(l, "Endpoint") {
				keep = append(keep, l)
			}
		}
		blocks[i] = strings.Join(keep, "\n")
	}
	sort.Strings(blocks[1:])
	return strings.Join(blocks, "\n\n")
}

var elementsRE = regexp.MustCompile(`(?s)elements = \{([^}]*)\}`)

// normalizeRuleset sorts set elements, which nft prints in hash order.
func normalizeRuleset(s string) string {
	return elementsRE.ReplaceAllStringFunc(s, func(m string) string {
		var items []string
		for _, f := range strings.Split(elementsRE.FindStringSubmatch(m)[1], ",") {
			if f = strings.TrimSpace(f); f != "" {
				items = append(items, f)
			}
		}
		sort.Strings(items)
		return "elements = { " + strings.Join(items, ", ") + " }"
	})
}

// TestDaemonNetstackMode: the unprivileged mode. The daemon on loopback with
// a userspace device; a netstack client from the config text pings it.
func TestDaemonNetstackMode(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds and runs the daemon")
	}
	bin := daemonBinary(t)
	apiPort, wgPortN := freePort(t, "tcp"), freePort(t, "udp")
	data := t.TempDir()
	args := []string{bin, "-data", filepath.Join(data, "var"), "-listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "-wg-mode", "netstack"}
	if os.Geteuid() == 0 {
		// Prove the mode needs no privilege: run the daemon as nobody.
		for _, dir := range []string{filepath.Dir(data), data} {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}
		args = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)
	}
	startDaemon(t, args...)
	var d net.Dialer
	a := newAPI(t, fmt.Sprintf("http://127.0.0.1:%d", apiPort), d.DialContext)
	a.setUp(filepath.Join(data, "var"), "127.0.0.1", wgPortN)
	a.waitRunning()
	ctx := context.Background()
	_, err := a.CreatePeer(ctx, client.NewPeer{Name: "laptop"})
	a.ok("POST /api/peers", err)
	conf, err := a.PeerConfig(ctx, "laptop")
	a.ok("GET /api/peers/laptop/config", err)
	q, err := nstest.ParseQuick(conf)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []netip.Addr
	for _, pr := range q.Addresses {
		addrs = append(addrs, pr.Addr())
	}
	dev, err := wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: addrs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ep := netip.MustParseAddrPort(q.Peer.Endpoint)
	if err := dev.Set(wireguard.Config{PrivateKey: q.PrivateKey, Peers: []wireguard.Peer{{PublicKey: q.Peer.PublicKey,
		PresharedKey: q.Peer.PresharedKey, Endpoint: ep, AllowedIPs: q.Peer.AllowedIPs, PersistentKeepalive: q.Peer.PersistentKeepalive}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := netstackPing(dev, addrs[0], netip.MustParseAddr("10.77.0.1")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("ping over the netstack tunnel: %v", err)
		}
	}
	st, err := a.WireGuardStatus(ctx)
	a.ok("GET /api/wireguard/status", err)
	if st.Mode != "netstack" || len(st.Peers) != 1 || st.Peers[0].LastHandshake == nil {
		t.Errorf("status = %+v, want netstack with one handshaken peer", st)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(data, "var", "cell.db"))
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
			t.Errorf("cell.db: %v, %v; want it written by nobody (uid 65534)", fi, err)
		}
	}
}

func freePort(t testing.TB, network string) int {
	if network == "udp" {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func netstackPing(dev *wireguard.WG, from, to netip.Addr) error {
	pc, err := dev.Net().DialPingAddr(from, to)
	if err != nil {
		return err
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(time.Second))
	// ICMP echo request: type 8, code 0, checksum, id 1, seq 1.
	msg := []byte{8, 0, 0, 0, 0, 1, 0, 1}
	var sum uint32
	for i := 0; i < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	sum = sum>>16 + sum&0xffff
	cs := ^uint16(sum)
	msg[2], msg[3] = byte(cs>>8), byte(cs)
	if _, err := pc.Write(msg); err != nil {
		return err
	}
	_, err = pc.Read(make([]byte, 1500))
	return err
}

// serveOn answers every HTTP request to addr inside ns with body.
func serveOn(t testing.TB, ns *nstest.NS, addr, body string) {
	var l net.Listener
	if err := ns.Run(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}
