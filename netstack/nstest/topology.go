package nstest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Topology is the cell's world in four namespaces:
//
//	client-a 198.18.1.2 ─┐
//	                     wan (router; HTTP server at 198.18.0.1:80) ── cell 198.18.0.2 (wan0)
//	client-b 198.18.2.2 ─┘                      and [2001:2::1]:80          2001:2::2
//
// All of 198.18.0.0/15 is "the internet". The server answers every request
// with the caller's address as it sees it, so a test can tell NAT.
type Topology struct {
	WAN, Cell, A, B *NS
}

// Addresses of the topology.
const (
	ServerAddr = "198.18.0.1"
	CellWAN    = "198.18.0.2"
	// The IPv6 internet between wan and cell: 2001:2::/48, the IPv6
	// benchmarking range.
	ServerAddr6 = "2001:2::1"
	CellWAN6    = "2001:2::2"
	CellWANIf   = "wan0"
	AAddr       = "198.18.1.2"
	BAddr       = "198.18.2.2"
)

// NewTopology builds the namespaces, links and the HTTP server.
func NewTopology(t testing.TB) *Topology {
	t.Helper()
	RequireRoot(t)
	top := &Topology{WAN: NewNS(t, "wan"), Cell: NewNS(t, "cell"), A: NewNS(t, "client-a"), B: NewNS(t, "client-b")}
	Veth(t, top.WAN, "to-cell", ServerAddr+"/24", top.Cell, CellWANIf, CellWAN+"/24")
	Veth(t, top.WAN, "to-a", "198.18.1.1/24", top.A, "eth0", AAddr+"/24")
	Veth(t, top.WAN, "to-b", "198.18.2.1/24", top.B, "eth0", BAddr+"/24")
	top.Cell.Exec(t, "ip", "route", "add", "default", "via", ServerAddr)
	top.WAN.Exec(t, "ip", "addr", "add", ServerAddr6+"/64", "dev", "to-cell", "nodad")
	top.Cell.Exec(t, "ip", "addr", "add", CellWAN6+"/64", "dev", CellWANIf, "nodad")
	top.Cell.Exec(t, "ip", "-6", "route", "add", "default", "via", ServerAddr6)
	top.A.Exec(t, "ip", "route", "add", "default", "via", "198.18.1.1")
	top.B.Exec(t, "ip", "route", "add", "default", "via", "198.18.2.1")
	// /proc/sys/net belongs to the namespace of the thread that opens it.
	if err := top.WAN.Run(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	top.serve(t)
	return top
}

func (top *Topology) serve(t testing.TB) {
	var l, l6 net.Listener
	err := top.WAN.Run(func() (err error) {
		if l, err = net.Listen("tcp", ServerAddr+":80"); err != nil {
			return err
		}
		l6, err = net.Listen("tcp", "["+ServerAddr6+"]:80")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sink" { // throughput benchmarks upload here
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
			return
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	})}
	go srv.Serve(l)
	go srv.Serve(l6)
	t.Cleanup(func() { srv.Close() })
}

// Dial opens a TCP connection from inside ns.
func (ns *NS) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Run(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// Get fetches http://addr/path from inside ns and returns the body.
func (ns *NS) Get(addr, path string, timeout time.Duration) (string, error) {
	c, err := ns.Dial(addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// Ping sends one echo request from ns and reports whether a reply came
// within timeout.
func (ns *NS) Ping(addr string, timeout time.Duration) bool {
	secs := fmt.Sprintf("%.1f", timeout.Seconds())
	_, err := ns.Try("ping", "-n", "-q", "-c", "1", "-W", secs, addr)
	return err == nil
}

// WaitPing pings until a reply or until d passes.
func (ns *NS) WaitPing(addr string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ns.Ping(addr, 500*time.Millisecond) {
			return true
		}
	}
	return false
}
