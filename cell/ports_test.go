package cell

import (
	"errors"
	"testing"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/health"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/peers"
	"github.com/pic-cell/cell/storage"
)

// TestForwardsKeepOffTheCellsOwnPorts: the ports no forward may take are the
// ones the daemon listens on (here the API on 3100, the front on 8443 and
// 8080), DNS and the WireGuard port, not a fixed list: 3000, 80 and 443 are
// free when nothing of the cell listens there.
func TestForwardsKeepOffTheCellsOwnPorts(t *testing.T) {
	f := newFakeNet()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	netSec := config.Network{WGPort: 51999, SubnetV4: "10.77.0.0/24", WANInterface: "auto"}
	doc := map[string]any{"cell": config.Cell{Name: "home", Domain: "home.example.org"}, "network": netSec, "health": health.Default()}
	if err := db.Settings().CompleteSetup(doc, storage.User{Username: "admin", Role: storage.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	book, _ := logs.Open(logs.Options{})
	c, err := New(Options{DB: db, Logs: book, HashMemoryKiB: 64, Network: f.network(), OwnTCPPorts: []int{3100, 8443, 8080}})
	if err != nil {
		t.Fatal(err)
	}
	c.Start(t.Context())
	t.Cleanup(c.Close)
	if err := c.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.Peers.CreatePeer(ctx, peers.NewPeer{Name: "p1"}, by); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		proto string
		port  int
	}{{"tcp", 3100}, {"tcp", 8443}, {"tcp", 8080}, {"tcp", 53}, {"udp", 53}, {"udp", 51999}} {
		_, err := c.Peers.AddForward(ctx, peers.NewForward{Proto: r.proto, Port: r.port, Peer: "p1"}, by)
		var fe *fault.Error
		if !errors.As(err, &fe) || fe.Code != "port_reserved" {
			t.Errorf("forward of %s/%d, the cell's own: %v, want port_reserved", r.proto, r.port, err)
		}
	}
	for _, port := range []int{3000, 80, 443} {
		if _, err := c.Peers.AddForward(ctx, peers.NewForward{Proto: "tcp", Port: port, Peer: "p1"}, by); err != nil {
			t.Errorf("forward of tcp/%d, which the cell does not listen on: %v", port, err)
		}
	}
}
