package cell

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/health"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/peers"
	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/cell/vault"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

// fakeNet is a Network of fakes; dev is the device Open handed out.
type fakeNet struct {
	dev *wireguard.Fake
	fw  *firewall.Fake
	lk  *links.Fake
	// expectFail: the first build is meant to fail (startCell goes on).
	expectFail bool
}

func newFakeNet() *fakeNet { return &fakeNet{fw: &firewall.Fake{}, lk: &links.Fake{}} }

func (f *fakeNet) network() reconcile.Network {
	return reconcile.Network{Mode: "tun", Interface: "wg0", Firewall: f.fw, Links: f.lk, WAN: "eth0",
		LAN: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}, LocalTCP: []uint16{53, 3000}, LocalUDP: []uint16{53},
		Open: func([]netip.Addr) (wireguard.Device, error) {
			f.dev = wireguard.NewFake()
			return f.dev, nil
		}}
}

// startCell is a set-up cell over f, its loops running until the test ends.
func startCell(t *testing.T, f *fakeNet) *Cell {
	t.Helper()
	return startCellWith(t, f, f.network())
}

// startCellWith is startCell over n, f's network with parts swapped.
func startCellWith(t *testing.T, f *fakeNet, n reconcile.Network) *Cell {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	netSec := config.Network{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: "fd77::/64", WANInterface: "auto"}
	doc := map[string]any{"cell": config.Cell{Name: "home", Domain: "home.example.org"}, "network": netSec, "health": health.Default()}
	if err := db.Settings().CompleteSetup(doc, storage.User{Username: "admin", Role: storage.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	book, _ := logs.Open(logs.Options{})
	c, err := New(Options{DB: db, Logs: book, HashMemoryKiB: 64, Network: n})
	if err != nil {
		t.Fatal(err)
	}
	c.Start(t.Context())
	t.Cleanup(c.Close)
	if err := c.Settle(t.Context()); err != nil && !f.expectFail {
		t.Fatal(err)
	}
	return c
}

var by = storage.Entry{Actor: "test", Action: "test"}

// kernelState is what the fakes hold, in comparable form.
type kernelState struct {
	Peers []wireguard.Peer
	Rules firewall.Ruleset
}

func state(f *fakeNet) kernelState {
	rs := f.fw.Ruleset()
	slices.SortFunc(rs.Peers, func(a, b firewall.Peer) int { return a.Addr4.Compare(b.Addr4) })
	if len(rs.Peers) == 0 {
		rs.Peers = nil
	}
	return kernelState{Peers: f.dev.Peers(), Rules: rs}
}

var cmpOpts = cmp.Options{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })}

// rebuild builds the kernel state from c's database into fresh fakes, as a
// cell starting from this database would.
func rebuild(t *testing.T, c *Cell, f *fakeNet) kernelState {
	t.Helper()
	book, _ := logs.Open(logs.Options{})
	l := reconcile.New(c.DB, f.network(), book.Logger("rebuild"), nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	err := l.Sync(ctx)
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	return state(f)
}

func TestPeerChangesMatchAFreshReconcile(t *testing.T) {
	live := newFakeNet()
	c := startCell(t, live)
	if got := live.lk.Configs["wg0"]; !got.Forwarding || len(got.Addresses) != 2 || got.Addresses[0] != netip.MustParsePrefix("10.77.0.1/24") {
		t.Errorf("links = %+v", got)
	}
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(7, 8))
	names := []string{"a", "b", "c", "d", "e"}
	yes, no := true, false
	for step := range 60 {
		name := names[rng.IntN(len(names))]
		var err error
		switch op := rng.IntN(5); op {
		case 0:
			_, err = c.Peers.CreatePeer(ctx, peers.NewPeer{Name: name}, by)
		case 1:
			_, err = c.Peers.UpdatePeer(ctx, name, peers.PeerChange{Enabled: &yes}, by)
		case 2:
			_, err = c.Peers.UpdatePeer(ctx, name, peers.PeerChange{Enabled: &no}, by)
		case 3:
			pol := []string{storage.Allow, storage.Deny}[rng.IntN(2)]
			_, err = c.Peers.SetPeerPolicy(ctx, name, peers.PolicyChange{Peers: &pol, Internet: &pol}, by)
		case 4:
			err = c.Peers.DeletePeer(ctx, name, by)
		}
		if err != nil && !errors.Is(err, fault.ErrNotFound) && !errors.Is(err, fault.ErrConflict) {
			t.Fatalf("step %d: %v", step, err)
		}
		// The incremental kernel state equals what a cell starting from
		// this database would build.
		got := state(live)
		want := rebuild(t, c, newFakeNet())
		if d := cmp.Diff(want, got, cmpOpts); d != "" {
			t.Fatalf("step %d: incremental state differs from a fresh reconcile (-fresh +live):\n%s", step, d)
		}
	}
}

func TestPeerDisableAndDeleteReachTheKernel(t *testing.T) {
	f := newFakeNet()
	c := startCell(t, f)
	ctx := t.Context()
	for i := range 3 {
		if _, err := c.Peers.CreatePeer(ctx, peers.NewPeer{Name: fmt.Sprintf("p%d", i)}, by); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(f.dev.Peers()); got != 3 {
		t.Fatalf("device has %d peers, want 3", got)
	}
	no := false
	if _, err := c.Peers.UpdatePeer(ctx, "p1", peers.PeerChange{Enabled: &no}, by); err != nil {
		t.Fatal(err)
	}
	if got := len(f.dev.Peers()); got != 2 {
		t.Errorf("device has %d peers after disabling one, want 2", got)
	}
	for _, p := range f.fw.Ruleset().Peers {
		if p.Addr4 == netip.MustParseAddr("10.77.0.3") && p.Enabled {
			t.Errorf("firewall still has p1 enabled: %+v", p)
		}
	}
	if _, err := c.Peers.AddForward(ctx, peers.NewForward{Proto: "tcp", Port: 8080, Peer: "p2", ToPort: 80}, by); err != nil {
		t.Fatal(err)
	}
	if fw := f.fw.Ruleset().Forwards; len(fw) != 1 || fw[0].To != netip.MustParseAddr("10.77.0.4") {
		t.Errorf("forwards = %+v", fw)
	}
	if err := c.Peers.DeletePeer(ctx, "p2", by); err != nil {
		t.Fatal(err)
	}
	rs := f.fw.Ruleset()
	if len(rs.Forwards) != 0 || len(rs.Peers) != 2 || len(f.dev.Peers()) != 1 {
		t.Errorf("after delete: forwards %v, firewall peers %d, device peers %d", rs.Forwards, len(rs.Peers), len(f.dev.Peers()))
	}
	// A failing device surfaces as a 503-kind error, after the store.
	f.dev.Err = errors.New("device gone")
	if _, err := c.Peers.CreatePeer(ctx, peers.NewPeer{Name: "late"}, by); !errors.Is(err, fault.ErrUnavailable) {
		t.Errorf("create with a failing device = %v, want ErrUnavailable", err)
	}
	if _, err := c.DB.Peers().Get("late"); err != nil {
		t.Errorf("the peer was not stored before the apply: %v", err)
	}
}

// The effects across capabilities run in the storing transaction: a hook that
// fails rolls the whole change back, audit entry included.
func TestHooksRunInTheStoringTransaction(t *testing.T) {
	f := newFakeNet()
	c := startCell(t, f)
	ctx := t.Context()
	var seen []string
	c.Peers.OnCreate(func(tx *storage.Tx, p storage.Peer) error {
		if p.Name == "refused" {
			return errors.New("the service refused the account")
		}
		seen = append(seen, "create "+p.Name+" "+p.IPv4.String())
		return nil
	})
	c.Peers.OnDelete(func(tx *storage.Tx, p storage.Peer) error {
		seen = append(seen, "delete "+p.Name)
		return nil
	})
	if _, err := c.Peers.CreatePeer(ctx, peers.NewPeer{Name: "kept"}, by); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Peers.CreatePeer(ctx, peers.NewPeer{Name: "refused"}, by); err == nil {
		t.Fatal("a failing hook did not fail the create")
	}
	if _, err := c.DB.Peers().Get("refused"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the refused peer was stored: %v", err)
	}
	if _, err := c.DB.Users().Get("refused"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the refused peer's login was stored: %v", err)
	}
	if err := c.Peers.DeletePeer(ctx, "kept", by); err != nil {
		t.Fatal(err)
	}
	want := []string{"create kept 10.77.0.2", "delete kept"}
	if d := cmp.Diff(want, seen); d != "" {
		t.Errorf("hooks (-want +got):\n%s", d)
	}
	entries, _, err := c.Audit.Query(storage.Filter{TargetID: "refused"})
	if err != nil || len(entries) != 0 {
		t.Errorf("the refused create left audit entries %+v (err %v)", entries, err)
	}
	entries, _, err = c.Audit.Query(storage.Filter{TargetID: "kept"})
	if err != nil || len(entries) != 2 {
		t.Errorf("audit entries of kept = %+v (err %v), want the create and the delete", entries, err)
	}
}

// slowDevice blocks in Set until released: a rebuild that takes long.
type slowDevice struct {
	*wireguard.Fake
	release chan struct{}
}

func (d slowDevice) Set(cfg wireguard.Config) error {
	<-d.release
	return d.Fake.Set(cfg)
}

// Health never waits on an apply: while the loop is stuck in a rebuild,
// /api/status's checks answer at once.
func TestHealthDoesNotWaitOnAnApply(t *testing.T) {
	f := newFakeNet()
	c := startCell(t, f)
	release := make(chan struct{})
	slow := slowDevice{Fake: f.dev, release: release}
	n := f.network()
	n.Open = func([]netip.Addr) (wireguard.Device, error) { return slow, nil }
	book, _ := logs.Open(logs.Options{})
	l := reconcile.New(c.DB, n, book.Logger("slow"), nil)
	c.Health.Register("wireguard", l.CheckWireGuard)
	ctx, cancel := context.WithCancel(t.Context())
	go l.Run(ctx)
	defer func() { close(release); cancel() }()
	time.Sleep(50 * time.Millisecond) // the loop is now inside Set
	start := time.Now()
	st := c.Health.Status(t.Context())
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("status took %v while a rebuild ran", took)
	}
	if _, ok := st.Parts["wireguard"]; !ok {
		t.Errorf("status has no wireguard part: %+v", st)
	}
}

// A firewall that cannot be built leaves the cell up, degraded and saying why,
// and fails closed: the link does not turn forwarding on.
func TestFirewallDownFailsClosed(t *testing.T) {
	f := newFakeNet()
	f.fw.Err = errors.New("no nf_tables in this kernel")
	f.expectFail = true
	c := startCell(t, f)
	if got := f.lk.Configs["wg0"]; got.Forwarding || len(got.Addresses) != 2 {
		t.Errorf("link with the firewall down = %+v, want addresses and no forwarding", got)
	}
	st := c.Health.Status(t.Context())
	if fw := st.Parts["firewall"]; fw.State != storage.StateDown || !strings.Contains(fw.Reason, "nf_tables") {
		t.Errorf("firewall part = %+v, want down naming the cause", fw)
	}
	if st.State != storage.StateDown {
		t.Errorf("overall state = %s, want down", st.State)
	}
	// Healing: once the firewall takes a ruleset, the next rebuild turns forwarding on.
	f.fw.Err = nil
	if err := c.Network.Rebuild(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := f.lk.Configs["wg0"]; !got.Forwarding {
		t.Errorf("link after the firewall healed = %+v, want forwarding", got)
	}
	if fw := c.Health.Status(t.Context()).Parts["firewall"]; fw.State != storage.StateOK {
		t.Errorf("firewall part after healing = %+v", fw)
	}
}

// countingFirewall counts full rebuilds (Set calls).
type countingFirewall struct {
	*firewall.Fake
	sets atomic.Int32
}

func (f *countingFirewall) Set(rs firewall.Ruleset) error {
	f.sets.Add(1)
	return f.Fake.Set(rs)
}

// A certificate the CA issues (the front's, or one through the API) changes
// nothing the loop builds, so it sets off no rebuild; a config change does.
func TestCertificatesDoNotRebuildTheNetwork(t *testing.T) {
	f := newFakeNet()
	cf := &countingFirewall{Fake: f.fw}
	n := f.network()
	n.Firewall = cf
	c := startCellWith(t, f, n)
	before := cf.sets.Load()
	if _, err := c.Vault.IssueCert(t.Context(), vault.NewCert{CommonName: "printer.home.example.org", Days: 30}, by); err != nil {
		t.Fatal(err)
	}
	if err := c.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := cf.sets.Load(); got != before {
		t.Errorf("issuing a certificate rebuilt the firewall %d times", got-before)
	}
	if _, _, err := c.Settings.PatchConfig([]byte(`{"cell":{"name":"attic"}}`), by); err != nil {
		t.Fatal(err)
	}
	if err := c.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cf.sets.Load() == before {
		t.Error("a config change did not rebuild the firewall (the counter counts nothing)")
	}
}
