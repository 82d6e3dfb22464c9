package httpapi

import (
	"testing"
	"time"
)

func init() {
	routeCases["GET /api/wireguard/history"] = routeCase{path: "/api/wireguard/history?peer=nobody"}
}

// The history as the API serves it, sampled by hand with the test's clock (the
// cell samples every minute from Start; the env does not start it). Without a
// network the device shows no peer, so every interval is zero: the deltas
// themselves are cell/peers' history_test.go.
func TestWireGuardHistory(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	a.must(201, "POST", "/api/peers", map[string]any{"name": "alice"})
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if err := e.cell.Peers.SampleTraffic(t0.Add(time.Duration(i) * time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	a.must(201, "POST", "/api/peers", map[string]any{"name": "bob"}) // no sample since: no points
	type hist struct {
		IntervalSeconds int `json:"interval_seconds"`
		Peers           []struct {
			Name   string
			Points []struct {
				T       string
				RxBytes *uint64 `json:"rx_bytes"`
				TxBytes *uint64 `json:"tx_bytes"`
			}
		}
	}
	var h hist
	a.must(200, "GET", "/api/wireguard/history", nil).json(t, &h)
	if h.IntervalSeconds != 60 || len(h.Peers) != 2 || h.Peers[0].Name != "alice" || h.Peers[1].Name != "bob" {
		t.Fatalf("history = %+v", h)
	}
	if got := h.Peers[0].Points; len(got) != 2 || got[0].T != "2030-01-01T12:01:00Z" || got[1].T != "2030-01-01T12:02:00Z" ||
		got[1].RxBytes == nil || *got[1].RxBytes != 0 || got[1].TxBytes == nil {
		t.Errorf("alice's points = %+v", got)
	}
	if h.Peers[1].Points == nil || len(h.Peers[1].Points) != 0 {
		t.Errorf("bob's points = %+v, want []", h.Peers[1].Points)
	}
	h = hist{}
	a.must(200, "GET", "/api/wireguard/history?peer=bob", nil).json(t, &h)
	if len(h.Peers) != 1 || h.Peers[0].Name != "bob" {
		t.Errorf("?peer=bob = %+v", h)
	}
	for _, bad := range []string{"nobody", "../x", "UPPER"} {
		if r := a.do("GET", "/api/wireguard/history?peer="+urlq(bad), nil); r.status != 404 || r.code() != "peer_not_found" {
			t.Errorf("?peer=%s: %d %s", bad, r.status, r.body)
		}
	}
	// Deleted: gone at the next sample.
	a.must(200, "DELETE", "/api/peers/alice", nil)
	for i := 3; i < 5; i++ { // bob's baseline, then his first interval
		if err := e.cell.Peers.SampleTraffic(t0.Add(time.Duration(i) * time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	h = hist{}
	a.must(200, "GET", "/api/wireguard/history", nil).json(t, &h)
	if len(h.Peers) != 1 || h.Peers[0].Name != "bob" || len(h.Peers[0].Points) != 1 {
		t.Errorf("after deleting alice = %+v", h)
	}
	// Admin only.
	if r := e.client().do("GET", "/api/wireguard/history", nil); r.status != 401 {
		t.Errorf("anonymous: %d", r.status)
	}
}
