package userspace_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/userspace"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// The namespace tests run the cell as its own process, inside the cell
// namespace, as nobody: this test binary started again with helperEnv set,
// which makes TestMain run cellMain instead of the tests. That is the
// daemon's situation (one process, one namespace, no privilege), so the
// host sockets of forwarded flows are opened where the daemon's would be.

const helperEnv = "PIC_USERSPACE_CELL"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(cellMain(cfg))
	}
	os.Exit(m.Run())
}

// cellConfig is what the helper process is told.
type cellConfig struct {
	PrivateKey wireguard.Key
	ListenPort int
	Addresses  []netip.Addr
	Peers      []wireguard.Peer
	Policy     userspace.Policy
	// HTTP is where, on a tunnel address, to serve an HTTP server that
	// answers with the client's address; DNS where to serve a DNS server
	// (UDP and TCP) that knows cell.test and whoami.
	HTTP, DNS netip.AddrPort
}

// cellMain is the helper process: it wires a netstack device the way the
// daemon should (see the package documentation) and obeys stdin: a line
// "policy <json>" sets the policy; end of input closes the device, and the
// helper reports how many goroutines outlived it.
func cellMain(raw string) int {
	fail := func(err error) int {
		fmt.Println("error", err)
		return 1
	}
	var cfg cellConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fail(err)
	}
	before := runtime.NumGoroutine()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dev, err := wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: cfg.Addresses, Logger: log})
	if err != nil {
		return fail(err)
	}
	if err := dev.Set(wireguard.Config{PrivateKey: cfg.PrivateKey, ListenPort: cfg.ListenPort, Peers: cfg.Peers}); err != nil {
		return fail(err)
	}
	us := dev.Userspace()
	if err := us.SetPolicy(cfg.Policy); err != nil {
		return fail(err)
	}
	var served []chan struct{}
	serve := func(f func()) {
		done := make(chan struct{})
		served = append(served, done)
		go func() { defer close(done); f() }()
	}
	if cfg.HTTP.IsValid() {
		l, err := us.ListenTCP(cfg.HTTP)
		if err != nil {
			return fail(err)
		}
		serve(func() {
			http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				host, _, _ := net.SplitHostPort(r.RemoteAddr)
				io.WriteString(w, host)
			}))
		})
	}
	var dnsServers []*dns.Server
	if cfg.DNS.IsValid() {
		pc, err := us.ListenUDP(cfg.DNS)
		if err != nil {
			return fail(err)
		}
		l, err := us.ListenTCP(cfg.DNS)
		if err != nil {
			return fail(err)
		}
		h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(q)
			switch q.Question[0].Name {
			case "cell.test.":
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "cell.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: cfg.Addresses[0].AsSlice()})
			case "whoami.":
				host, _, _ := net.SplitHostPort(w.RemoteAddr().String())
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: "whoami.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{host}})
			default:
				m.Rcode = dns.RcodeNameError
			}
			w.WriteMsg(m)
		})
		dnsServers = []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}}
		for _, s := range dnsServers {
			serve(func() { s.ActivateAndServe() })
		}
	}
	fmt.Printf("ready uid=%d\n", os.Getuid())
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "policy":
			var p userspace.Policy
			err := json.Unmarshal([]byte(arg), &p)
			if err == nil {
				err = us.SetPolicy(p)
			}
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			fmt.Println("ok")
		default:
			fmt.Println("error unknown command", cmd)
		}
	}
	for _, s := range dnsServers {
		s.Shutdown()
	}
	dev.Close() // closes the listeners: http.Serve returns
	for _, done := range served {
		<-done
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("closed goroutines=%d\n", runtime.NumGoroutine()-before)
	return 0
}

// cellProc is the helper process, seen from the test.
type cellProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
	uid    int
}

// helperBinary is a copy of this test binary that nobody may run.
func helperBinary(t testing.TB) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "userspace-cell-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "cell.test")
	src, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startCell runs the helper in ns as nobody (uid and gid 65534).
func startCell(t testing.TB, ns *nstest.NS, cfg cellConfig) *cellProc {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cellProc{t: t}
	c.cmd = exec.Command("ip", "netns", "exec", ns.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", helperBinary(t))
	c.cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	c.cmd.Stderr = &c.stderr
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.out = bufio.NewReader(stdout)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil { // not closed by the test: end of input, then a kill
			c.stdin.Close()
			done := make(chan struct{})
			go func() { c.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			t.Logf("cell log:\n%s", c.stderr.String())
		}
	})
	line := c.line()
	if _, err := fmt.Sscanf(line, "ready uid=%d", &c.uid); err != nil {
		t.Fatalf("cell helper: %q\n%s", line, c.stderr.String())
	}
	return c
}

func (c *cellProc) line() string {
	c.t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := c.out.ReadString('\n'); ch <- res{s, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatalf("cell helper output: %v\n%s", r.err, c.stderr.String())
		}
		return strings.TrimSpace(r.s)
	case <-time.After(30 * time.Second):
		c.t.Fatalf("cell helper silent for 30 s\n%s", c.stderr.String())
	}
	return ""
}

func (c *cellProc) setPolicy(p userspace.Policy) {
	c.t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(c.stdin, "policy %s\n", raw)
	if got := c.line(); got != "ok" {
		c.t.Fatalf("set policy: %s", got)
	}
}

// close ends the helper and returns how many goroutines outlived the device.
func (c *cellProc) close() int {
	c.t.Helper()
	c.stdin.Close()
	var n int
	line := c.line()
	if _, err := fmt.Sscanf(line, "closed goroutines=%d", &n); err != nil {
		c.t.Fatalf("cell helper at close: %q", line)
	}
	if err := c.cmd.Wait(); err != nil {
		c.t.Errorf("cell helper: %v", err)
	}
	return n
}
