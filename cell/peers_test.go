package cell

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

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
}

func (f *fakeNet) network() Network {
	return Network{Mode: "tun", Interface: "wg0", Firewall: f.fw, Links: f.lk, WAN: "eth0",
		LAN: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}, LocalTCP: []uint16{53, 3000}, LocalUDP: []uint16{53},
		Open: func([]netip.Addr) (wireguard.Device, error) {
			f.dev = wireguard.NewFake()
			return f.dev, nil
		}}
}

func setUpCell(t *testing.T) *Cell {
	t.Helper()
	c := newCell(t)
	cfg := Config{Cell: CellConfig{Name: "home", Domain: "home.example.org"},
		Network: NetworkConfig{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: "fd77::/64", WANInterface: "auto"},
		Health:  defaultHealth()}
	if err := c.db.Settings().CompleteSetup(cfg, storage.User{Username: "admin", Role: storage.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	return c
}

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

func TestPeerChangesMatchAFreshReconcile(t *testing.T) {
	c := setUpCell(t)
	live := &fakeNet{fw: &firewall.Fake{}, lk: &links.Fake{}}
	if err := c.StartNetwork(live.network()); err != nil {
		t.Fatal(err)
	}
	if got := live.lk.Configs["wg0"]; !got.Forwarding || len(got.Addresses) != 2 || got.Addresses[0] != netip.MustParsePrefix("10.77.0.1/24") {
		t.Errorf("links = %+v", got)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	names := []string{"a", "b", "c", "d", "e"}
	yes, no := true, false
	for step := range 60 {
		name := names[rng.IntN(len(names))]
		var err error
		switch op := rng.IntN(5); op {
		case 0:
			_, err = c.CreatePeer(NewPeer{Name: name})
		case 1:
			_, err = c.UpdatePeer(name, PeerChange{Enabled: &yes})
		case 2:
			_, err = c.UpdatePeer(name, PeerChange{Enabled: &no})
		case 3:
			pol := []string{storage.Allow, storage.Deny}[rng.IntN(2)]
			_, err = c.SetPeerPolicy(name, PolicyChange{Peers: &pol, Internet: &pol})
		case 4:
			err = c.DeletePeer(name)
		}
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
			t.Fatalf("step %d: %v", step, err)
		}
		// The incremental kernel state equals what a cell starting from
		// this database would build.
		fresh := &fakeNet{fw: &firewall.Fake{}, lk: &links.Fake{}}
		got := state(live)
		want := rebuild(t, c, fresh)
		if d := cmp.Diff(want, got, cmpOpts); d != "" {
			t.Fatalf("step %d: incremental state differs from a fresh reconcile (-fresh +live):\n%s", step, d)
		}
	}
}

// rebuild builds the kernel state from c's database into fresh fakes.
func rebuild(t *testing.T, c *Cell, f *fakeNet) kernelState {
	t.Helper()
	saved := c.net.n
	savedDev, savedApplied, savedBuilt := c.net.dev, c.net.applied, c.net.fwBuilt
	n := f.network()
	c.net.n, c.net.dev = &n, nil
	if err := c.reconcileLocked(true); err != nil {
		t.Fatal(err)
	}
	st := state(f)
	c.net.n, c.net.dev, c.net.applied, c.net.fwBuilt = saved, savedDev, savedApplied, savedBuilt
	return st
}

func TestPeerDisableAndDeleteReachTheKernel(t *testing.T) {
	c := setUpCell(t)
	f := &fakeNet{fw: &firewall.Fake{}, lk: &links.Fake{}}
	if err := c.StartNetwork(f.network()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.CreatePeer(NewPeer{Name: fmt.Sprintf("p%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(f.dev.Peers()); got != 3 {
		t.Fatalf("device has %d peers, want 3", got)
	}
	no := false
	if _, err := c.UpdatePeer("p1", PeerChange{Enabled: &no}); err != nil {
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
	if _, err := c.AddForward(NewForward{Proto: "tcp", Port: 8080, Peer: "p2", ToPort: 80}); err != nil {
		t.Fatal(err)
	}
	if fw := f.fw.Ruleset().Forwards; len(fw) != 1 || fw[0].To != netip.MustParseAddr("10.77.0.4") {
		t.Errorf("forwards = %+v", fw)
	}
	if err := c.DeletePeer("p2"); err != nil {
		t.Fatal(err)
	}
	rs := f.fw.Ruleset()
	if len(rs.Forwards) != 0 || len(rs.Peers) != 2 || len(f.dev.Peers()) != 1 {
		t.Errorf("after delete: forwards %v, firewall peers %d, device peers %d", rs.Forwards, len(rs.Peers), len(f.dev.Peers()))
	}
	// A failing device surfaces as a 503-kind error, after the store.
	f.dev.Err = errors.New("device gone")
	if _, err := c.CreatePeer(NewPeer{Name: "late"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("create with a failing device = %v, want ErrUnavailable", err)
	}
	if _, err := c.db.Peers().Get("late"); err != nil {
		t.Errorf("the peer was not stored before the apply: %v", err)
	}
}
