package clock

import (
	"net"
	"testing"
	"time"

	"github.com/beevik/ntp"
	"github.com/pic-cell/cell/netstack/nstest"
)

// TestServeInNamespace: the server on UDP 123 of a cell namespace, asked
// by a real client in a peer namespace across a link, as a peer would.
func TestServeInNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	cell, peer := nstest.NewNS(t, "ntpcell"), nstest.NewNS(t, "ntppeer")
	nstest.Veth(t, cell, "to-peer", "198.18.0.2/24", peer, "to-cell", "198.18.0.3/24")
	var pc net.PacketConn
	if err := cell.Run(func() (err error) { pc, err = net.ListenPacket("udp", "198.18.0.2:123"); return err }); err != nil {
		t.Fatal(err)
	}
	s := &Server{Now: func() time.Time { return time.Now().Add(threeHours) }, State: synced(time.Now().Add(threeHours)), Log: quiet}
	done := make(chan error, 1)
	go func() { done <- s.Serve(pc) }()
	defer func() {
		pc.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var r *ntp.Response
	err := peer.Run(func() (err error) {
		r, err = ntp.QueryWithOptions("198.18.0.2", ntp.QueryOptions{Timeout: 3 * time.Second})
		return err
	})
	if err != nil {
		t.Fatalf("query from the peer namespace: %v", err)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("the peer refuses the reply: %v", err)
	}
	if d := r.ClockOffset - threeHours; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("the peer sees offset %v, want the cell's 3h ± 50 ms", r.ClockOffset)
	}
}
