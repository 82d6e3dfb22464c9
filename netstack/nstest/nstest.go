// Package nstest builds throwaway network namespaces for system tests: the
// cell's "internet" (198.18.0.0/15), a cell and WireGuard clients, joined by
// veth pairs. It is imported by tests only (imports_test.go holds that), so it
// may run ip, nft and ping, which production code never does.
//
// Every namespace has a unique name and is deleted when the test ends;
// nothing here touches the host's own interfaces, routes or firewall. Code
// that must create sockets or devices inside a namespace runs through
// NS.Run, on an OS thread that enters the namespace and is thrown away after.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// RequireRoot skips t unless it runs as root (namespaces, TUN, nf_tables),
// and under -short (make unit), which is for the unit tests alone.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped with -short: a system test in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces, TUN devices and nf_tables state")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("system test needs %s: %v", tool, err)
		}
	}
}

// NS is a network namespace owned by a test.
type NS struct {
	Name   string
	handle netns.NsHandle
}

// uniq is a per-test-binary prefix: tests in different packages run in
// parallel, each binary with its own.
var uniq = func() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

var counter atomic.Int32

// NewNS creates an empty namespace with loopback up; it is deleted when t
// ends.
func NewNS(t testing.TB, role string) *NS {
	t.Helper()
	name := fmt.Sprintf("pic%s%d-%s", uniq, counter.Add(1), role)
	Cmd(t, "ip", "netns", "add", name)
	t.Cleanup(func() { run("ip", "netns", "del", name) })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	ns := &NS{Name: name, handle: h}
	ns.Exec(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Fd is the namespace's file descriptor (for netlink libraries that take one).
func (ns *NS) Fd() int { return int(ns.handle) }

// Run calls f on an OS thread inside the namespace. Sockets, TUN devices
// and /proc/sys/net files opened by f belong to the namespace for good; the
// thread itself is discarded afterwards so that no goroutine inherits it.
func (ns *NS) Run(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the goroutine ends locked and the runtime
		// terminates the thread rather than reuse it in the wrong namespace.
		if err := netns.Set(ns.handle); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Exec runs a command inside the namespace and returns its output; a
// failure ends the test.
func (ns *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Cmd(t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its output and error.
func (ns *NS) Try(args ...string) (string, error) {
	return run(append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Cmd runs a command; a failure ends the test.
func Cmd(t testing.TB, args ...string) string {
	t.Helper()
	out, err := run(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// run is the one place the harness starts a tool (ip, nft, ping, sysctl
// readers): tests build and check kernel state with the real CLIs.
func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// Veth joins a (interface aIf, address aAddr) and b (bIf, bAddr) with a veth
// pair created directly inside a, so the host never sees it.
func Veth(t testing.TB, a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	t.Helper()
	a.Exec(t, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	a.Exec(t, "ip", "addr", "add", aAddr, "dev", aIf)
	b.Exec(t, "ip", "addr", "add", bAddr, "dev", bIf)
	a.Exec(t, "ip", "link", "set", aIf, "up")
	b.Exec(t, "ip", "link", "set", bIf, "up")
}

// EchoPackets sends every datagram pc receives back to its sender until pc
// is closed: the UDP echo the tests probe (run it with go).
func EchoPackets(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// Command is a command that runs name in the namespace (nsenter into its
// network namespace, as NewContainerdHost does): for the daemons the tests
// start there (named, miniupnpd).
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + n.Name, "--", name}, args...)...)
}
