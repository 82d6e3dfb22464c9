package firewall

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError}))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func peerN(i int) Peer {
	return Peer{
		Addr4:    netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}),
		Addr6:    netip.AddrFrom16([16]byte{0xfd, 0x77, 15: byte(i), 14: byte(i >> 8)}),
		Enabled:  i%5 != 0,
		Internet: true,
		LAN:      i%2 == 0,
		Peers:    i%3 == 0,
	}
}

func sample(peers int) Ruleset {
	rs := Ruleset{
		WGInterface: "wg0", WGPort: 51820, WAN: "wan0",
		Tunnel4:  netip.MustParsePrefix("10.77.0.0/16"),
		Tunnel6:  netip.MustParsePrefix("fd77::/64"),
		LAN:      []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
		LocalTCP: []uint16{53, 3000}, LocalUDP: []uint16{53}, WANTCP: []uint16{443},
		Forwards: []Forward{{Proto: "tcp", Port: 8080, To: netip.MustParseAddr("10.77.0.2"), ToPort: 80}},
	}
	for i := 2; i < peers+2; i++ {
		rs.Peers = append(rs.Peers, peerN(i))
	}
	return rs
}

// withServices is sample with the services bridge, two services of three
// allowed out.
func withServices(peers int) Ruleset {
	rs := sample(peers)
	rs.Services = &Services{
		Bridge:  "pic-svc0",
		Subnet:  netip.MustParsePrefix("10.78.250.0/24"),
		Gateway: netip.MustParseAddr("10.78.250.1"),
		Egress:  []netip.Addr{netip.MustParseAddr("10.78.250.4"), netip.MustParseAddr("10.78.250.2")},
	}
	return rs
}

// recorder is a fake netlink connection: it records every batch sent and
// acknowledges it.
type recorder struct {
	sends [][]netlink.Message
}

func (r *recorder) dial(req []netlink.Message) ([]netlink.Message, error) {
	if req == nil {
		return nil, nil
	}
	r.sends = append(r.sends, append([]netlink.Message(nil), req...))
	return req, nil
}

// msgs returns the messages of all batches since the last call, without the
// batch begin/end markers.
func (r *recorder) take() (batches int, out []netlink.Message) {
	batches = len(r.sends)
	for _, b := range r.sends {
		for _, m := range b {
			if t := m.Header.Type; t == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) || t == netlink.HeaderType(unix.NFNL_MSG_BATCH_END) {
				continue
			}
			out = append(out, m)
		}
	}
	r.sends = nil
	return batches, out
}

var msgNames = map[int]string{
	unix.NFT_MSG_NEWTABLE: "newtable", unix.NFT_MSG_DELTABLE: "deltable",
	unix.NFT_MSG_NEWCHAIN: "newchain", unix.NFT_MSG_NEWRULE: "newrule",
	unix.NFT_MSG_NEWSET: "newset", unix.NFT_MSG_NEWSETELEM: "newsetelem",
	unix.NFT_MSG_DELSETELEM: "delsetelem",
}

// dump renders messages one per line: kind, then the payload in hex (the
// 4-byte nfgenmsg header included), the format of google/nftables' tests.
func dump(ms []netlink.Message) string {
	var b strings.Builder
	for _, m := range ms {
		kind := msgNames[int(m.Header.Type)&0xff]
		fmt.Fprintf(&b, "%s %x\n", kind, m.Data)
	}
	return b.String()
}

func newRecorded(t *testing.T) (*NFT, *recorder) {
	t.Helper()
	r := &recorder{}
	n, err := newWith(Options{Logger: quiet()}, nftables.WithTestDial(r.dial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, r
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (-update to accept):\n%s", name, lineDiff(string(want), got))
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n-%s\n+%s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// TestRebuildBytes holds the exact netlink bytes of a rebuild. The batch
// opens with
//
//	add table inet pic; delete table inet pic; add table inet pic
//
// so it works whether or not the table exists, and everything is one batch.
func TestRebuildBytes(t *testing.T) {
	n, r := newRecorded(t)
	if err := n.Set(sample(3)); err != nil {
		t.Fatal(err)
	}
	batches, ms := r.take()
	if batches != 1 {
		t.Errorf("rebuild sent %d batches, want 1", batches)
	}
	if len(ms) < 3 {
		t.Fatalf("rebuild sent %d messages", len(ms))
	}
	var kinds []string
	for _, m := range ms[:3] {
		kinds = append(kinds, msgNames[int(m.Header.Type)&0xff])
	}
	if got, want := strings.Join(kinds, ","), "newtable,deltable,newtable"; got != want {
		t.Errorf("batch opens with %s, want %s", got, want)
	}
	// nft add table inet pic: family inet (1), table name "pic".
	if want := []byte{unix.NFPROTO_INET, 0, 0, 0, 8, 0, 1, 0, 'p', 'i', 'c', 0}; !bytes.HasPrefix(ms[0].Data, want) {
		t.Errorf("add table = %x, want prefix %x", ms[0].Data, want)
	}
	golden(t, "rebuild.netlink", dump(ms))
}

// TestRebuildBytesServices holds the bytes of a rebuild with the services
// bridge; rebuild.netlink (without it) must not change.
func TestRebuildBytesServices(t *testing.T) {
	n, r := newRecorded(t)
	if err := n.Set(withServices(3)); err != nil {
		t.Fatal(err)
	}
	batches, ms := r.take()
	if batches != 1 {
		t.Errorf("rebuild sent %d batches, want 1", batches)
	}
	golden(t, "rebuild-services.netlink", dump(ms))
}

// TestServicesChanges: services on, off or with other egress rebuild the
// table; the same services (egress in another order) send nothing, and a
// change to the caller's slice after Set is not mistaken for the applied
// state.
func TestServicesChanges(t *testing.T) {
	n, r := newRecorded(t)
	rs := withServices(3)
	if err := n.Set(rs); err != nil {
		t.Fatal(err)
	}
	r.take()
	same := withServices(3)
	slices.Reverse(same.Services.Egress)
	rs.Services.Egress[0] = netip.MustParseAddr("10.78.250.9") // the caller reuses its slice
	if err := n.Set(same); err != nil {
		t.Fatal(err)
	}
	if b, ms := r.take(); b != 0 || len(ms) != 0 {
		t.Errorf("same services sent %d batches, %d messages; want none", b, len(ms))
	}
	for name, mut := range map[string]func(*Ruleset){
		"off":        func(r *Ruleset) { r.Services = nil },
		"on":         func(r *Ruleset) {},
		"egress off": func(r *Ruleset) { r.Services.Egress = r.Services.Egress[:1] },
		"bridge":     func(r *Ruleset) { r.Services.Bridge = "pic-svc1" },
	} {
		next := withServices(3)
		mut(&next)
		if err := n.Set(next); err != nil {
			t.Fatal(err)
		}
		if b, ms := r.take(); b != 1 || len(ms) < 3 || msgNames[int(ms[1].Header.Type)&0xff] != "deltable" {
			t.Errorf("%s: sent %d batches, %d messages; want a rebuild", name, b, len(ms))
		}
	}
}

// TestSetTwiceSendsNothing: the second Set of an equal ruleset is free.
func TestSetTwiceSendsNothing(t *testing.T) {
	n, r := newRecorded(t)
	rs := sample(20)
	if err := n.Set(rs); err != nil {
		t.Fatal(err)
	}
	r.take()
	if err := n.Set(rs); err != nil {
		t.Fatal(err)
	}
	if b, ms := r.take(); b != 0 || len(ms) != 0 {
		t.Errorf("second Set sent %d batches, %d messages; want none", b, len(ms))
	}
}

// TestPeerChangeCostIsConstant: changing one peer sends the same messages
// at 10 and at 5,000 peers, and no rule.
func TestPeerChangeCostIsConstant(t *testing.T) {
	sizes := map[int]string{}
	for _, peers := range []int{10, 5000} {
		n, r := newRecorded(t)
		rs := sample(peers)
		if err := n.Set(rs); err != nil {
			t.Fatal(err)
		}
		r.take()
		// Peer 4 (enabled, internet, lan) turned off and moved to deny-LAN.
		p := peerN(4)
		p.Enabled, p.LAN = false, false
		rs.Peers[2] = p
		if err := n.Set(rs); err != nil {
			t.Fatal(err)
		}
		_, ms := r.take()
		for _, m := range ms {
			if k := msgNames[int(m.Header.Type)&0xff]; k != "newsetelem" && k != "delsetelem" {
				t.Errorf("%d peers: peer change sent %s", peers, k)
			}
		}
		sizes[peers] = dump(ms)
		// The same through PutPeer, then back.
		p.Enabled, p.LAN = true, true
		if err := n.PutPeer(p); err != nil {
			t.Fatal(err)
		}
		if _, ms := r.take(); len(ms) != 4 { // disabled4/6 out, lan4/6 in
			t.Errorf("%d peers: PutPeer sent %d messages, want 4:\n%s", peers, len(ms), dump(ms))
		}
	}
	if sizes[10] != sizes[5000] {
		t.Errorf("peer change differs between 10 and 5000 peers:\n%s\nvs\n%s", sizes[10], sizes[5000])
	}
	if !strings.Contains(sizes[10], "newsetelem") || !strings.Contains(sizes[10], "delsetelem") {
		t.Errorf("peer change = %s, want element adds and deletes", sizes[10])
	}
}

// TestLargeRebuildIsChunked: 20,000 peers still go in one batch, with every
// element message small enough for a 16-bit attribute length.
func TestLargeRebuildIsChunked(t *testing.T) {
	n, r := newRecorded(t)
	if err := n.Set(sample(20000)); err != nil {
		t.Fatal(err)
	}
	batches, ms := r.take()
	if batches != 1 {
		t.Errorf("%d batches, want 1", batches)
	}
	elems := 0
	for _, m := range ms {
		if len(m.Data) > 65000 {
			t.Errorf("message of %d bytes", len(m.Data))
		}
		if int(m.Header.Type)&0xff == unix.NFT_MSG_NEWSETELEM {
			elems++
		}
	}
	if elems < 8 {
		t.Errorf("%d element messages for 20,000 peers, want them chunked", elems)
	}
}

func TestValidateRejects(t *testing.T) {
	ok := sample(2)
	for name, mut := range map[string]func(*Ruleset){
		"no wg":         func(r *Ruleset) { r.WGInterface = "" },
		"long wan":      func(r *Ruleset) { r.WAN = strings.Repeat("x", 16) },
		"no port":       func(r *Ruleset) { r.WGPort = 0 },
		"v6 tunnel4":    func(r *Ruleset) { r.Tunnel4 = netip.MustParsePrefix("fd00::/64") },
		"dup peer":      func(r *Ruleset) { r.Peers = append(r.Peers, r.Peers[0]) },
		"bad proto":     func(r *Ruleset) { r.Forwards[0].Proto = "icmp" },
		"forward to v6": func(r *Ruleset) { r.Forwards[0].To = netip.MustParseAddr("fd77::2") },
		"svc no bridge": func(r *Ruleset) { r.Services.Bridge = "" },
		"svc bridge wg": func(r *Ruleset) { r.Services.Bridge = "wg0" },
		"svc v6 subnet": func(r *Ruleset) { r.Services.Subnet = netip.MustParsePrefix("fd78::/64") },
		"svc unmasked":  func(r *Ruleset) { r.Services.Subnet = netip.MustParsePrefix("10.78.250.1/24") },
		"svc in tunnel": func(r *Ruleset) { r.Services.Subnet = netip.MustParsePrefix("10.77.250.0/24") },
		"svc in lan":    func(r *Ruleset) { r.Services.Subnet = netip.MustParsePrefix("192.168.1.0/25") },
		"svc gateway":   func(r *Ruleset) { r.Services.Gateway = netip.MustParseAddr("10.78.251.1") },
		"svc egress out": func(r *Ruleset) {
			r.Services.Egress = []netip.Addr{netip.MustParseAddr("10.78.251.2")}
		},
		"svc egress gw": func(r *Ruleset) { r.Services.Egress = []netip.Addr{r.Services.Gateway} },
		"svc egress dup": func(r *Ruleset) {
			r.Services.Egress = append(r.Services.Egress, r.Services.Egress[0])
		},
	} {
		rs := withServices(2)
		rs.Forwards = append([]Forward(nil), ok.Forwards...)
		mut(&rs)
		if err := (&Fake{}).Set(rs); err == nil {
			t.Errorf("%s: Set accepted an invalid ruleset", name)
		}
	}
	for _, rs := range []Ruleset{ok, withServices(2)} {
		if err := (&Fake{}).Set(rs); err != nil {
			t.Errorf("valid ruleset refused: %v", err)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	n, _ := newRecorded(t)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := n.Set(sample(1)); err != ErrClosed {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
}
