package peers

import (
	"fmt"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

func TestHistoryDeltas(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	alice := storage.Peer{Name: "alice", PublicKey: "ka"}
	bob := storage.Peer{Name: "bob", PublicKey: "kb"}
	on := func(kv ...any) map[string]wireguard.PeerStats {
		m := map[string]wireguard.PeerStats{}
		for i := 0; i+2 < len(kv)+1; i += 3 {
			m[kv[i].(string)] = wireguard.PeerStats{RxBytes: uint64(kv[i+1].(int)), TxBytes: uint64(kv[i+2].(int))}
		}
		return m
	}
	h := newHistory(time.Minute, 4)
	steps := []struct {
		peers []storage.Peer
		st    map[string]wireguard.PeerStats
	}{
		{[]storage.Peer{alice}, on("ka", 100, 10)},                // 0: baseline
		{[]storage.Peer{alice}, on("ka", 150, 30)},                // 1: +50 +20
		{[]storage.Peer{alice, bob}, on("ka", 40, 5, "kb", 7, 7)}, // 2: alice reset: counts from 0; bob's baseline
		{[]storage.Peer{alice, bob}, on("kb", 10, 9)},             // 3: alice off the device: 0; bob +3 +2
		{[]storage.Peer{alice, bob}, on("ka", 5, 5, "kb", 10, 9)}, // 4: alice back: a new baseline (0); bob 0
		{[]storage.Peer{alice, bob}, on("ka", 8, 9, "kb", 11, 9)}, // 5: +3 +4; the ring keeps 4
	}
	for i, s := range steps {
		h.sample(t0.Add(time.Duration(i)*time.Minute), s.peers, s.st)
	}
	for _, tc := range []struct{ name, want string }{
		{"alice", "12:02 40/5 12:03 0/0 12:04 0/0 12:05 3/4"},
		{"bob", "12:03 3/2 12:04 0/0 12:05 1/0"},
		{"nobody", ""},
	} {
		if got := pointsText(h.points(tc.name)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Deleted: gone at the next sample. Added again under the same name with
	// another key: a new series from a new baseline.
	h.sample(t0.Add(6*time.Minute), []storage.Peer{alice}, on("ka", 8, 9))
	if _, ok := h.peers["bob"]; ok {
		t.Error("bob's series outlived his deletion")
	}
	h.sample(t0.Add(7*time.Minute), []storage.Peer{alice, {Name: "bob", PublicKey: "kb2"}}, on("ka", 8, 9, "kb2", 500, 500))
	h.sample(t0.Add(8*time.Minute), []storage.Peer{alice, {Name: "bob", PublicKey: "kb2"}}, on("ka", 8, 9, "kb2", 600, 500))
	if got, want := pointsText(h.points("bob")), "12:08 100/0"; got != want {
		t.Errorf("bob again: %q, want %q", got, want)
	}
}

func pointsText(ps []TrafficPoint) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s %d/%d", p.T.Format("15:04"), p.RxBytes, p.TxBytes)
	}
	return s
}

// The memory bound: a day of samples of many peers stays within the
// documented 16 bytes a point plus the shared times.
func TestHistoryBounded(t *testing.T) {
	const peers, keep = 50, HistoryKeep
	var ps []storage.Peer
	for i := range peers {
		ps = append(ps, storage.Peer{Name: fmt.Sprintf("p%d", i), PublicKey: fmt.Sprintf("k%d", i)})
	}
	h := newHistory(time.Minute, keep)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	st := map[string]wireguard.PeerStats{}
	for i := range 2*keep + 7 {
		for j := range peers {
			st[fmt.Sprintf("k%d", j)] = wireguard.PeerStats{RxBytes: uint64(i * 1000), TxBytes: uint64(i * 10)}
		}
		h.sample(t0.Add(time.Duration(i)*time.Minute), ps, st)
	}
	for _, p := range ps {
		s := h.peers[p.Name]
		if len(s.rx) != keep || len(s.tx) != keep {
			t.Fatalf("%s's ring holds %d points, want %d", p.Name, len(s.rx), keep)
		}
	}
	pts := h.points("p7")
	if len(pts) != keep || pts[0].RxBytes != 1000 || pts[keep-1].TxBytes != 10 {
		t.Fatalf("p7: %d points, first %+v last %+v", len(pts), pts[0], pts[len(pts)-1])
	}
	if want := t0.Add(time.Duration(2*keep+6) * time.Minute); !pts[keep-1].T.Equal(want) || !pts[0].T.Equal(want.Add(-time.Duration(keep-1)*time.Minute)) {
		t.Errorf("times %v .. %v, want the last %d minutes up to %v", pts[0].T, pts[keep-1].T, keep, want)
	}
}
