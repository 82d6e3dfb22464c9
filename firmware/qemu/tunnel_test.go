package qemu_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/netstack/nstest"
)

// The phone's world, in two namespaces of their own; nothing here touches the
// host's interfaces, routes or firewall:
//
//	phone 198.18.1.2 (eth0, default via lab) ── lab 198.18.1.1 (to-phone)
//	  wg0: the real WireGuard client            lo: 198.18.0.1  the home's public address:
//	       made from the cell's config text           QEMU's slirp forwards udp 41820 → the
//	                                                  guest's 51820 and tcp 8080 → its API
//	                                              lo: 198.18.0.80 "the internet": an HTTP
//	                                                  server that answers with the caller's
//	                                                  address as it sees it
//
// QEMU runs inside lab, so its user-mode network (slirp) is lab's: the guest's
// connections leave through lab's sockets, and the hostfwd ports are lab's.
const (
	tunPublic        = "198.18.0.1"  // where the phone finds the cell (hostfwd)
	tunInternet      = "198.18.0.80" // the web server the phone browses to
	tunLabLink       = "198.18.1.1"
	tunPhone         = "198.18.1.2"
	tunWGPort        = 41820         // the home router's port: not the cell's 51820
	tunAPIPort       = 8080          // → the guest's 443: the front
	tunPlainPort     = 8081          // → the guest's 80: /ca.crt and the redirect
	tunCell          = "10.77.0.1"   // the cell's tunnel address (subnet 10.77.0.0/24)
	tunResolver      = "198.18.0.53" // a resolver in the internet (dnsmasq)
	tunAdminPassword = "phone-test-admin-pass-4c1e"
)

// TestPhoneThroughTunnel: the image with config.json's programs and args (the
// cell with -wg-mode tun), set up through its API, serves a phone: a real
// WireGuard client made from nothing but GET /api/peers/phone/config completes
// the handshake, browses the internet through the cell (forwarded and
// masqueraded), reaches the admin API on the cell's tunnel address, pings it
// and resolves the household's names and forwarded ones through it. The admin API stays reachable from the LAN once the firewall is built.
// Last, on the same VM, the cell says how the outside reaches it (GET
// /api/network) and what its clock says (GET /api/ntp), and its SNTP server
// answers the phone through the tunnel (outside_test.go).
func TestPhoneThroughTunnel(t *testing.T) {
	needVM(t)
	nstest.RequireRoot(t)
	f := newFixture(t)
	// The programs and their args exactly as config.json has them; the
	// fixture's key and sizes.
	shipped, err := image.LoadConfig(filepath.Join(moduleRoot(t), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.cellConfig("1.0.0")
	cfg.Packages = shipped.Packages
	// With containerd as config.json's image: its cell waits for the socket
	// its -containerd names.
	cfg.Settings.Containerd = shipped.Settings.Containerd
	start := time.Now()
	img := f.imageWithServices(cfg)
	t.Logf("image built in %s", time.Since(start).Round(time.Second))

	lab := nstest.NewNS(t, "lab")
	phone := nstest.NewNS(t, "phone")
	nstest.Veth(t, lab, "to-phone", tunLabLink+"/24", phone, "eth0", tunPhone+"/24")
	lab.Exec(t, "ip", "addr", "add", tunPublic+"/32", "dev", "lo")
	lab.Exec(t, "ip", "addr", "add", tunInternet+"/32", "dev", "lo")
	phone.Exec(t, "ip", "route", "add", "default", "via", tunLabLink)
	serveCallerAddr(t, lab, tunInternet+":80")

	vm := startInNS(t, lab, img, []qemu.Forward{
		{Proto: "tcp", HostPort: tunAPIPort, GuestPort: 443},
		{Proto: "tcp", HostPort: tunPlainPort, GuestPort: 80},
		{Proto: "udp", HostPort: tunWGPort, GuestPort: 51820},
	})
	a := newLabAPI(t, lab)
	boot := a.waitHealth(vm, 4*time.Minute)
	t.Logf("/health answered %s after QEMU started (%s)", boot.Round(100*time.Millisecond), qemu.KVMReason())

	a.setupAndLogin(f.code)
	t.Cleanup(func() {
		if t.Failed() {
			a.dump()
		}
	})
	// The cell builds wg0, its addresses and the firewall within its 2 s
	// reconcile. From here on every request is a new connection from the
	// LAN, which the firewall must let in: the appliance's admin UI is there.
	ctx := context.Background()
	var st client.WireGuardStatus
	if err := waitFor(30*time.Second, func() (err error) {
		if st, err = a.WireGuardStatus(ctx); err == nil && !st.Running {
			err = fmt.Errorf("WireGuard not running: %+v", st)
		}
		return err
	}); err != nil {
		t.Fatalf("GET /api/wireguard/status from the LAN after setup: %v", err)
	}
	if st.Mode != "tun" {
		t.Fatalf("the image's cell runs WireGuard in mode %q, want tun", st.Mode)
	}
	if err := waitFor(30*time.Second, func() error {
		lines, err := a.SearchLogs(ctx, "network built from the database", "", 5)
		if err == nil && len(lines) == 0 {
			err = fmt.Errorf("the cell has not logged \"network built from the database\"")
		}
		if err == nil {
			t.Logf("cell: %s %v", lines[len(lines)-1].Message, lines[len(lines)-1].Attrs)
		}
		return err
	}); err != nil {
		t.Fatalf("the cell's network once set up, asked from the LAN: %v", err)
	}

	// The kernel parts are up, and the cell masquerades out of a WAN it
	// found from the default route (gokrazy's DHCP lease from slirp).
	status, err := a.Status(ctx)
	a.ok("GET /api/status", err)
	for _, part := range []string{"wireguard", "firewall"} {
		if p := status.Parts[part]; p.State != "ok" {
			t.Errorf("the cell's %s part is %s: %s", part, p.State, p.Reason)
		}
	}
	routing, err := a.Routing(ctx)
	a.ok("GET /api/routing", err)
	if !routing.NAT.Enabled || routing.NAT.WANInterface == "" || len(routing.NAT.Masquerade) == 0 {
		t.Errorf("the cell's NAT: %+v, want masquerade out of a WAN interface", routing.NAT)
	}
	t.Logf("NAT: %+v", routing.NAT)

	created, err := a.CreatePeer(ctx, client.NewPeer{Name: "phone", Route: "full"})
	a.ok("POST /api/peers", err)
	text, err := a.PeerConfig(ctx, "phone")
	a.ok("GET /api/peers/phone/config", err)
	// The phone is outside the home: it reaches the cell at the router's
	// public address and forwarded port, as its owner would type them in.
	ep := regexp.MustCompile(`(?m)^Endpoint = .*$`)
	if !ep.MatchString(text) {
		t.Fatalf("the config has no Endpoint line:\n%s", text)
	}
	text = ep.ReplaceAllString(text, fmt.Sprintf("Endpoint = %s:%d", tunPublic, tunWGPort))
	wgc := nstest.NewClient(t, phone, text, nil)
	if len(wgc.Quick.Addresses) == 0 {
		t.Fatalf("the config gives the phone no address:\n%s", text)
	}
	phoneAddr := wgc.Quick.Addresses[0].Addr().String()
	t.Logf("peer %q has tunnel address %s", created.Peer.Name, phoneAddr)
	ph := nsHTTP(phone, 10*time.Second)

	ok := t.Run("handshake", func(t *testing.T) {
		began := time.Now()
		err := waitFor(90*time.Second, func() error {
			phone.Ping(tunCell, 500*time.Millisecond) // traffic makes the client handshake
			s, err := wgc.Dev.Stats()
			if err == nil && (len(s) != 1 || s[0].LastHandshake.IsZero()) {
				err = fmt.Errorf("no handshake yet: %+v", s)
			}
			return err
		})
		if err != nil {
			t.Fatalf("the phone's client: %v", err)
		}
		t.Logf("the client reports a handshake within %s of its first check", time.Since(began).Round(100*time.Millisecond))
		st, err := a.WireGuardStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Name == "phone" && p.LastHandshake == nil {
				t.Errorf("the cell's status has no handshake for the phone: %+v", p)
			}
		}
	})
	if !ok {
		t.FailNow()
	}

	t.Run("internet", func(t *testing.T) {
		// 198.18.0.80 is routed into wg0 on the phone (AllowedIPs 0.0.0.0/0):
		// it answers only if the cell forwards the request out of its WAN;
		// the server then sees the lab's side of slirp, never the phone's
		// tunnel or link address. (slirp itself rewrites every connection
		// it carries, so the masquerade is the cell's NAT report above.)
		before := txBytes(t, wgc)
		body, err := httpGet(ph, "http://"+tunInternet+"/", 30*time.Second)
		if err != nil {
			t.Fatalf("GET http://%s/ from the phone through the tunnel: %v", tunInternet, err)
		}
		seen := strings.TrimSpace(body)
		if seen == phoneAddr || seen == tunPhone || strings.HasPrefix(seen, "10.77.") {
			t.Errorf("the server saw the phone as %s: not masqueraded by the cell", seen)
		}
		if after := txBytes(t, wgc); after <= before {
			t.Errorf("the request did not go through the tunnel (client tx %d → %d bytes)", before, after)
		}
		t.Logf("the internet server saw the phone as %s (the lab's side of slirp)", seen)
	})

	t.Run("admin api on the tunnel", func(t *testing.T) {
		// The front on the tunnel address, with a certificate for it.
		c := client.New("https://"+tunCell, client.WithHTTPClient(nsHTTPS(phone, 10*time.Second, a.ca, tunCell, "")))
		err := waitFor(30*time.Second, func() error { _, err := c.Health(ctx); return err })
		if err != nil {
			t.Fatalf("GET https://%s/health through the tunnel: %v", tunCell, err)
		}
	})

	t.Run("ping", func(t *testing.T) {
		if !phone.WaitPing(tunCell, 20*time.Second) {
			t.Fatalf("the phone cannot ping %s through the tunnel", tunCell)
		}
	})

	// Names through the tunnel: the cell's resolver on 10.77.0.1:53 (the
	// config's DNS line) answers the household's zone itself and forwards the
	// rest to the resolver the admin named, a real dnsmasq in the internet.
	t.Run("dns", func(t *testing.T) {
		for _, tool := range []string{"dig", "dnsmasq"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("skipped: needs %s (Debian: bind9-dnsutils, dnsmasq-base)", tool)
			}
		}
		lab.Exec(t, "ip", "addr", "add", tunResolver+"/32", "dev", "lo")
		dir := t.TempDir()
		dm := exec.Command("ip", "netns", "exec", lab.Name, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
			"--listen-address="+tunResolver, "--bind-interfaces", "--port=53", "--user=root", "--local-ttl=300",
			"--address=/example.test/"+tunInternet, "--pid-file="+filepath.Join(dir, "pid"))
		if err := dm.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dm.Process.Kill(); dm.Wait() })
		_, err := a.PatchConfig(ctx, map[string]any{"dns": map[string]any{"upstreams": []string{tunResolver}}})
		a.ok("PUT /api/config dns.upstreams", err)
		dig := func(args ...string) (string, error) {
			out, err := phone.Try(append([]string{"dig", "+short", "+time=3", "+tries=2", "@" + tunCell}, args...)...)
			return strings.TrimSpace(out), err
		}
		for _, c := range []struct{ args, want string }{
			{"phone.home.example.org A", phoneAddr},
			{"home.example.org A", tunCell},
			{"-x " + phoneAddr, "phone.home.example.org."},
			{"www.example.test A", tunInternet},
		} {
			var got string
			err := waitFor(30*time.Second, func() (err error) {
				if got, err = dig(strings.Fields(c.args)...); err == nil && got != c.want {
					err = fmt.Errorf("answer %q", got)
				}
				return err
			})
			if err != nil {
				t.Errorf("dig @%s %s through the tunnel: %v, want %q", tunCell, c.args, err, c.want)
			}
		}
		st, err := a.DNS(ctx)
		a.ok("GET /api/dns", err)
		if st.State != "ok" || len(st.Listening) == 0 {
			t.Errorf("the cell's DNS status: %+v", st)
		}
		t.Logf("DNS: listening %v, zone %s, %d records, upstreams %+v", st.Listening, st.Zone, st.Records, st.Upstreams)
	})

	// The household's files: installed from the archive in the image, reached
	// by the phone through the tunnel at https://files.<domain>/ (the name
	// from the cell's DNS, the certificate from its CA), with the username and
	// password the cell handed the phone.
	t.Run("files through the tunnel", func(t *testing.T) {
		c := nsHTTPS(phone, 30*time.Second, a.ca, "files.home.example.org", tunCell+":443")
		useFiles(t, a.Client, "phone", c, "written through the tunnel\n")
		// The phone found it by that name: the cell's DNS answers it with the
		// address the requests went to.
		if out, err := phone.Try("dig", "+short", "+time=3", "@"+tunCell, "files.home.example.org"); err != nil || strings.TrimSpace(out) != tunCell {
			t.Errorf("files.home.example.org through the cell's DNS: %q %v, want %s", out, err, tunCell)
		}
	})

	t.Run("admin api from the lan", func(t *testing.T) {
		if _, err := a.WireGuardStatus(ctx); err != nil {
			t.Fatalf("the admin API from the LAN with the phone connected: %v", err)
		}
	})

	// How the outside reaches the cell and its time (outside_test.go), on
	// the same VM.
	checkOutsideAndTime(t, a, phone)
}

// serveCallerAddr answers every request on addr (inside ns) with the caller's
// address as the server sees it.
func serveCallerAddr(t *testing.T, ns *nstest.NS, addr string) {
	var l net.Listener
	if err := ns.Run(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// nsHTTP is an HTTP client whose connections are made inside ns, one per
// request (no keep-alive: each request is a new connection, as a firewall
// sees a browser's).
func nsHTTP(ns *nstest.NS, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := timeout
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
				d = time.Until(dl)
			}
			return ns.Dial(addr, d)
		},
	}}
}

// nsHTTPS is nsHTTP over TLS with the cell's CA, for serverName; dialTo,
// when set, is where every connection goes (a forward to the guest).
func nsHTTPS(ns *nstest.NS, timeout time.Duration, ca *x509.CertPool, serverName, dialTo string) *http.Client {
	c := nsHTTP(ns, timeout)
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: ca, ServerName: serverName}
	if dialTo != "" {
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) { return dial(ctx, network, dialTo) }
	}
	return c
}

func httpGet(c *http.Client, url string, within time.Duration) (string, error) {
	var body string
	err := waitFor(within, func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", url, resp.Status, b)
		}
		body = string(b)
		return nil
	})
	return body, err
}

func txBytes(t *testing.T, c *nstest.Client) uint64 {
	s, err := c.Dev.Stats()
	if err != nil || len(s) != 1 {
		t.Fatalf("client stats: %v %+v", err, s)
	}
	return s[0].TxBytes
}

// waitFor calls f every half second until it returns nil or d passes; then
// it returns f's last error.
func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", d, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// nsVM is QEMU started inside a namespace.
type nsVM struct {
	cmd     *exec.Cmd
	serial  *syncBuffer
	started time.Time
	done    chan struct{}
}

// startInNS boots img (snapshot: the file stays unchanged) with QEMU running
// inside ns, its hostfwd ports bound to tunPublic there. It is qemu.Start but
// for the namespace and the forwards' address, which qemu.Args fixes to
// 127.0.0.1 (right for `cellctl vm run`, useless to a second namespace).
func startInNS(t *testing.T, ns *nstest.NS, img string, fwd []qemu.Forward) *nsVM {
	t.Helper()
	code, varsTemplate := ovmfFiles(t)
	vars := filepath.Join(t.TempDir(), "ovmf-vars.fd")
	b, err := os.ReadFile(varsTemplate)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	args := qemu.Args(qemu.Options{Image: img, Forwards: fwd, Snapshot: true}, code, vars)
	n := 0
	for i, a := range args {
		if strings.Contains(a, "hostfwd=") {
			n += strings.Count(a, ":127.0.0.1:")
			args[i] = strings.ReplaceAll(a, ":127.0.0.1:", ":"+tunPublic+":")
		}
	}
	if n != len(fwd) {
		t.Fatalf("qemu.Args wrote its forwards in an unknown form: %q", args)
	}
	v := &nsVM{serial: &syncBuffer{}, done: make(chan struct{})}
	v.cmd = exec.Command(qemu.Binary, args...)
	v.cmd.Stdout, v.cmd.Stderr, v.cmd.Stdin = v.serial, v.serial, nil
	v.cmd.WaitDelay = 5 * time.Second
	// The child inherits the namespace of the OS thread that forks it.
	if err := ns.Run(v.cmd.Start); err != nil {
		t.Fatalf("starting QEMU in %s: %v", ns.Name, err)
	}
	v.started = time.Now()
	go func() { v.cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		select {
		case <-v.done:
		case <-time.After(30 * time.Second):
			t.Errorf("QEMU (pid %d) did not exit after kill", v.cmd.Process.Pid)
		}
		if t.Failed() {
			s := v.serial.String()
			if len(s) > 8000 {
				s = s[len(s)-8000:]
			}
			t.Logf("serial console (tail):\n%s", s)
		}
	})
	return v
}

// ovmfFiles are Debian's OVMF code and variable template (package ovmf), as
// qemu.Start finds them.
func ovmfFiles(t *testing.T) (code, vars string) {
	for _, p := range [][2]string{
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	} {
		_, e1 := os.Stat(p[0])
		_, e2 := os.Stat(p[1])
		if e1 == nil && e2 == nil {
			return p[0], p[1]
		}
	}
	t.Skip("OVMF not found (Debian package ovmf)")
	return "", ""
}

// labAPI is the admin's browser on the LAN: the cell's API client, its
// connections made inside the lab namespace, one per request.
// Its client exists once waitHealth has fetched the cell's CA.
type labAPI struct {
	*client.Client
	t  *testing.T
	ns *nstest.NS
	ca *x509.CertPool
}

func newLabAPI(t *testing.T, ns *nstest.NS) *labAPI { return &labAPI{t: t, ns: ns} }

func (a *labAPI) ok(what string, err error) {
	a.t.Helper()
	if err != nil {
		a.t.Fatalf("%s from the LAN: %v", what, err)
	}
}

// waitHealth polls /health until it answers and returns how long after
// QEMU's start that was.
// It first fetches the CA from http://…/ca.crt (the front's port 80) as a
// browser on the LAN would, then asks over HTTPS with that CA pinned.
func (a *labAPI) waitHealth(v *nsVM, timeout time.Duration) time.Duration {
	a.t.Helper()
	err := waitFor(timeout, func() error {
		select {
		case <-v.done:
			return fmt.Errorf("QEMU exited: %v", v.cmd.ProcessState)
		default:
		}
		if a.Client == nil {
			body, err := httpGet(nsHTTP(a.ns, 5*time.Second), fmt.Sprintf("http://%s:%d/ca.crt", tunPublic, tunPlainPort), time.Second)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(body)) {
				return fmt.Errorf("/ca.crt is not a PEM certificate: %q", body)
			}
			// 30 s: a login hashes a password, which is slow under TCG.
			a.ca = pool
			a.Client = client.New("https://"+guestAddr, client.WithHTTPClient(
				nsHTTPS(a.ns, 30*time.Second, pool, guestAddr, fmt.Sprintf("%s:%d", tunPublic, tunAPIPort))))
		}
		_, err := a.Health(context.Background())
		return err
	})
	if err != nil {
		a.t.Fatalf("the cell never answered /health: %v", err)
	}
	return time.Since(v.started)
}

func (a *labAPI) setupAndLogin(code string) {
	a.t.Helper()
	setUpCell(a.t, a.Client, tunAdminPassword, code)
	a.ok("login", a.Login(context.Background(), "admin", tunAdminPassword))
}

// dump logs the cell's status and recent logs, for a failure's message.
func (a *labAPI) dump() {
	ctx := context.Background()
	st, err := a.Status(ctx)
	a.t.Logf("status from the LAN: %+v %v", st, err)
	wg, err := a.WireGuardStatus(ctx)
	a.t.Logf("wireguard status from the LAN: %+v %v", wg, err)
	lines, err := a.Logs(ctx, "", 60)
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s %s %s: %s %v\n", l.Time.Format(time.TimeOnly), l.Level, l.Service, l.Message, l.Attrs)
	}
	a.t.Logf("the cell's logs from the LAN (%v):\n%s", err, b.String())
}
