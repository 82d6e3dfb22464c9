package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
}

// world is a throwaway namespace standing for the cell's, and a directory
// for the members' namespace files.
type world struct {
	outer *nstest.NS
	dir   string
	b     Bridge
}

func requireKernel(t testing.TB) {
	t.Helper()
	nstest.RequireRoot(t)
	for _, tool := range []string{"nsenter", "bridge", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: needs %s", tool)
		}
	}
}

func newWorld(t testing.TB, role string) *world {
	t.Helper()
	w := &world{outer: nstest.NewNS(t, role), dir: t.TempDir()}
	// Runs last: the Bridge makes dir a bind mount of itself (as iproute2
	// does with /run/netns); a lazy unmount takes it and anything left
	// mounted below it away, so that the temp dir can be removed.
	t.Cleanup(func() { unix.Unmount(w.dir, unix.MNT_DETACH) })
	w.b = w.newBridge(t)
	t.Cleanup(func() {
		if err := w.b.Set(Config{}); err != nil {
			t.Errorf("cleanup Set(Config{}): %v", err)
		}
		w.b.Close()
	})
	return w
}

// newBridge makes a Bridge acting in the outer namespace, as a cell
// process would after a restart.
func (w *world) newBridge(t testing.TB) Bridge {
	t.Helper()
	var b Bridge
	if err := w.outer.Run(func() error { b = New(quiet()); return nil }); err != nil {
		t.Fatal(err)
	}
	return b
}

func (w *world) member(id string, last byte) Member {
	return Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 77, 250, last}), NetNS: filepath.Join(w.dir, id)}
}

func (w *world) set(t testing.TB, cfg Config) {
	t.Helper()
	if err := w.b.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

// inNS runs a command inside the namespace file path.
func inNS(path string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...).CombinedOutput()
	return string(out), err
}

func mustInNS(t testing.TB, path string, args ...string) string {
	t.Helper()
	out, err := inNS(path, args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", path, strings.Join(args, " "), err, out)
	}
	return out
}

func ping(path, addr string) bool {
	_, err := inNS(path, "ping", "-n", "-q", "-c", "1", "-W", "1", addr)
	return err == nil
}

func waitPing(path, addr string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if ping(path, addr) {
			return true
		}
	}
	return false
}

// runIn calls f on a thrown-away OS thread inside the namespace file path:
// sockets it opens stay in that namespace.
func runIn(path string, f func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// echo listens on addr inside path and echoes lines back.
func echo(t testing.TB, path, addr string) {
	t.Helper()
	var l net.Listener
	if err := runIn(path, func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != msg {
		return fmt.Errorf("echo = %q, want %q", line, msg)
	}
	return nil
}

var timerRE = regexp.MustCompile(`(\w+_timer)\s+[0-9.]+`)

// snapshot is what ip and bridge print for the outer namespace and every
// member's, with the bridge's running timers blanked.
func (w *world) snapshot(t testing.TB, cfg Config) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-d", "link", "show"}, {"ip", "addr", "show"}, {"bridge", "-d", "link", "show"}} {
		fmt.Fprintf(&b, "## outer: %s\n%s", strings.Join(args, " "), w.outer.Exec(t, args...))
	}
	for _, m := range cfg.Members {
		for _, args := range [][]string{{"ip", "-d", "link", "show"}, {"ip", "addr", "show"}, {"ip", "route", "show"}} {
			fmt.Fprintf(&b, "## %s: %s\n%s", m.ID, strings.Join(args, " "), mustInNS(t, m.NetNS, args...))
		}
	}
	return timerRE.ReplaceAllString(b.String(), "$1")
}

// settled takes snapshots until IPv6 duplicate address detection is over
// and three in a row agree: link-watch updates operstates and DAD clears
// "tentative" a second or two after links come up.
func (w *world) settled(t testing.TB, cfg Config) string {
	t.Helper()
	prev, same := w.snapshot(t, cfg), 0
	for range 40 {
		time.Sleep(300 * time.Millisecond)
		cur := w.snapshot(t, cfg)
		if cur == prev && !strings.Contains(cur, "tentative") {
			if same++; same == 2 {
				return cur
			}
		} else {
			same = 0
		}
		prev = cur
	}
	t.Fatalf("state never settled:\n%s", prev)
	return ""
}

func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var x, y string
		if i < len(wl) {
			x = wl[i]
		}
		if i < len(gl) {
			y = gl[i]
		}
		if x != y {
			fmt.Fprintf(&b, "line %d:\n-%s\n+%s\n", i+1, x, y)
		}
	}
	return b.String()
}

// TestKernelSetTwice: a second Set, and a Set from a new Bridge (a cell
// restart), change nothing ip or bridge can see; the ports are isolated;
// a member reaches the gateway and is reached from the cell, but not
// another member.
func TestKernelSetTwice(t *testing.T) {
	requireKernel(t)
	w := newWorld(t, "bridge")
	a, c := w.member("alpha", 2), w.member("charlie", 3)
	cfg := cfgOf(a, c)
	w.set(t, cfg)
	if !waitPing(a.NetNS, "10.77.250.1") {
		t.Fatalf("alpha cannot ping the gateway:\n%s", w.snapshot(t, cfg))
	}
	first := w.settled(t, cfg)
	w.set(t, cfg)
	if second := w.snapshot(t, cfg); second != first {
		t.Errorf("second Set changed the state:\n%s", lineDiff(first, second))
	}
	// A new Bridge over the existing state reuses the namespaces and veths.
	b2 := w.newBridge(t)
	defer b2.Close()
	if err := b2.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if again := w.snapshot(t, cfg); again != first {
		t.Errorf("Set after a restart changed the state:\n%s", lineDiff(first, again))
	}

	ports := w.outer.Exec(t, "bridge", "-d", "link", "show")
	for _, id := range []string{"alpha", "charlie"} {
		name := HostVeth(id)
		re := regexp.MustCompile(`(?m)^\d+: ` + name + `@\S+:[^\n]*master pic-svc0[^\n]*(\n\s+[^\n]*)*isolated on`)
		if !re.MatchString(ports) {
			t.Errorf("port %s is not an isolated port of pic-svc0:\n%s", name, ports)
		}
	}
	if got := mustInNS(t, a.NetNS, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(got, "10.77.250.2/24") {
		t.Errorf("alpha eth0 = %s, want 10.77.250.2/24", got)
	}
	if got := mustInNS(t, a.NetNS, "ip", "route", "show", "default"); !strings.Contains(got, "default via 10.77.250.1 dev eth0") {
		t.Errorf("alpha default route = %q", got)
	}
	if got := w.outer.Exec(t, "ip", "-4", "-o", "addr", "show", "dev", "pic-svc0"); !strings.Contains(got, "10.77.250.1/24") {
		t.Errorf("bridge address = %s", got)
	}

	if !ping(c.NetNS, "10.77.250.1") {
		t.Error("charlie cannot ping the gateway")
	}
	if ping(a.NetNS, "10.77.250.3") {
		t.Error("alpha pings charlie: the ports are not isolated")
	}
	// The cell reaches a service's port (the front proxying to it) ...
	echo(t, a.NetNS, "10.77.250.2:8080")
	conn, err := w.outer.Dial("10.77.250.2:8080", 3*time.Second)
	if err != nil {
		t.Fatalf("cell to alpha:8080: %v", err)
	}
	defer conn.Close()
	if err := roundTrip(conn, "hello"); err != nil {
		t.Fatal(err)
	}
	// ... and a service the cell's address (its admin calls).
	var l net.Listener
	if err := w.outer.Run(func() (err error) { l, err = net.Listen("tcp", "10.77.250.1:9090"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			fmt.Fprintln(c, "cell")
			c.Close()
		}
	}()
	err = runIn(a.NetNS, func() error {
		c, err := net.DialTimeout("tcp", "10.77.250.1:9090", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "cell\n" {
			err = fmt.Errorf("read %q", line)
		}
		return err
	})
	if err != nil {
		t.Errorf("alpha to the gateway's TCP port: %v", err)
	}

	// Removing charlie leaves alpha's connection alone and takes
	// charlie's veth and namespace file away.
	alphaIdx := mustInNS(t, a.NetNS, "ip", "-o", "link", "show", "eth0")
	w.set(t, cfgOf(a))
	if err := roundTrip(conn, "still there"); err != nil {
		t.Errorf("alpha's connection after removing charlie: %v", err)
	}
	if got := mustInNS(t, a.NetNS, "ip", "-o", "link", "show", "eth0"); got != alphaIdx {
		t.Errorf("alpha's eth0 changed: %s -> %s", alphaIdx, got)
	}
	if out, err := w.outer.Try("ip", "link", "show", HostVeth("charlie")); err == nil {
		t.Errorf("charlie's veth still there: %s", out)
	}
	if _, err := os.Stat(c.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("charlie's netns file: %v, want gone", err)
	}
}

// TestKernelRepair: a veth deleted from inside the namespace, and a
// namespace file unmounted behind the cell's back, are made again.
func TestKernelRepair(t *testing.T) {
	requireKernel(t)
	w := newWorld(t, "repair")
	a := w.member("alpha", 2)
	cfg := cfgOf(a)
	w.set(t, cfg)
	mustInNS(t, a.NetNS, "ip", "link", "del", "eth0")
	if out, err := w.outer.Try("ip", "link", "show", HostVeth("alpha")); err == nil {
		t.Fatalf("host veth survived its peer: %s", out)
	}
	w.set(t, cfg)
	if !waitPing(a.NetNS, "10.77.250.1") {
		t.Fatalf("no ping after the veth was recreated:\n%s", w.snapshot(t, cfg))
	}
	// A file unmounted and made again: the Bridge still holds the old
	// namespace open, so the old pair lives on and must be replaced.
	if err := unix.Unmount(a.NetNS, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	os.Remove(a.NetNS)
	w.set(t, cfg)
	if !waitPing(a.NetNS, "10.77.250.1") {
		t.Fatalf("no ping after the namespace was recreated:\n%s", w.snapshot(t, cfg))
	}
	if n := strings.Count(w.outer.Exec(t, "ip", "-o", "link", "show", "type", "veth"), HostVeth("alpha")); n != 1 {
		t.Errorf("%d host veths for alpha, want 1", n)
	}
	// Everything goes with Set(Config{}).
	w.set(t, Config{})
	if out, err := w.outer.Try("ip", "link", "show", "pic-svc0"); err == nil {
		t.Errorf("bridge still there after Set(Config{}): %s", out)
	}
	if ents, _ := os.ReadDir(w.dir); len(ents) != 0 {
		t.Errorf("namespace files left: %v", ents)
	}
}

// describe is the state in words that do not depend on ifindexes, MACs or
// the directory: what a fresh apply must equal.
func (w *world) describe(t testing.TB) string {
	t.Helper()
	var lines []string
	err := w.outer.Run(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			if l.Type() != "bridge" && l.Type() != "veth" {
				continue
			}
			s := fmt.Sprintf("link %s %s up=%v", a.Name, l.Type(), a.Flags&net.FlagUp != 0)
			if a.MasterIndex != 0 {
				master, _ := h.LinkByIndex(a.MasterIndex)
				pi, _ := h.LinkGetProtinfo(l)
				s += fmt.Sprintf(" master=%s isolated=%v", master.Attrs().Name, pi.Isolated)
			}
			addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
			for _, ad := range addrs {
				s += " " + ad.IPNet.String()
			}
			lines = append(lines, s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(w.dir)
	for _, e := range ents {
		p := filepath.Join(w.dir, e.Name())
		_, mounted, _ := statNetNS(p)
		s := fmt.Sprintf("netns %s mounted=%v", e.Name(), mounted)
		if mounted {
			br := strings.Fields(mustInNS(t, p, "ip", "-4", "-br", "addr", "show", "dev", "eth0"))
			s += " eth0: " + strings.Join(br[1:], " ") // without the peer's ifindex
			s += " route: " + strings.TrimSpace(mustInNS(t, p, "ip", "route", "show", "default"))
			lo := mustInNS(t, p, "ip", "-o", "link", "show", "lo")
			s += fmt.Sprintf(" lo-up=%v", strings.Contains(lo, "<LOOPBACK,UP"))
		}
		lines = append(lines, s)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestKernelRandomTransitions moves through random configs; after each Set
// the state must equal a fresh apply of the same config elsewhere.
func TestKernelRandomTransitions(t *testing.T) {
	requireKernel(t)
	live := newWorld(t, "live")
	rng := rand.New(rand.NewPCG(11, 12))
	ids := []string{"alpha", "bravo", "charlie", "delta"}
	for step := range 12 {
		var cfg Config
		if rng.IntN(6) != 0 { // now and then nothing at all
			cfg = cfgOf()
			for _, id := range ids {
				if rng.IntN(2) == 0 {
					continue
				}
				m := live.member(id, byte(2+rng.IntN(3)*10+slices.Index(ids, id)))
				if rng.IntN(4) == 0 {
					m.NetNS += "-2" // the service's namespace moved
				}
				cfg.Members = append(cfg.Members, m)
			}
			if rng.IntN(4) == 0 {
				cfg.Gateway = netip.MustParsePrefix("10.77.250.254/24")
			}
		}
		live.set(t, cfg)
		got := live.describe(t)

		fresh := newWorld(t, "fresh")
		fcfg := cfg
		fcfg.Members = nil
		for _, m := range cfg.Members {
			m.NetNS = filepath.Join(fresh.dir, filepath.Base(m.NetNS))
			fcfg.Members = append(fcfg.Members, m)
		}
		fresh.set(t, fcfg)
		if want := fresh.describe(t); got != want {
			t.Fatalf("step %d: state differs from a fresh apply:\n%s", step, lineDiff(want, got))
		}
		for _, m := range cfg.Members {
			// A port just made may take a moment to forward (and ARP to
			// answer) on a loaded machine: asked for up to 5 s. Seen only
			// with other packages' namespace tests running beside this one:
			// a member that still cannot, once; Set again (idempotent: it
			// repairs what is not as configured) must make it reach it.
			if !waitPing(m.NetNS, cfg.Gateway.Addr().String()) {
				t.Logf("step %d: %s could not ping the gateway; setting the same config again\n%s", step, m.ID, live.describe(t))
				live.set(t, cfg)
				if !waitPing(m.NetNS, cfg.Gateway.Addr().String()) {
					t.Errorf("step %d: %s cannot ping the gateway", step, m.ID)
				}
			}
		}
	}
}

// BenchmarkSetNoChange measures a Set that finds everything right, with
// ten members: the cost the cell pays on every reconcile.
func BenchmarkSetNoChange(b *testing.B) {
	requireKernel(b)
	w := newWorld(b, "bench")
	cfg := cfgOf()
	for i := range 10 {
		cfg.Members = append(cfg.Members, w.member(fmt.Sprintf("svc%d", i), byte(2+i)))
	}
	w.set(b, cfg)
	b.ResetTimer()
	for range b.N {
		if err := w.b.Set(cfg); err != nil {
			b.Fatal(err)
		}
	}
}
