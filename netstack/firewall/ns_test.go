package firewall

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pic-cell/cell/netstack/nstest"
)

var elementsRE = regexp.MustCompile(`(?s)elements = \{([^}]*)\}`)

// normalize sorts set elements, which nft prints in hash order.
func normalize(ruleset string) string {
	return elementsRE.ReplaceAllStringFunc(ruleset, func(m string) string {
		inner := elementsRE.FindStringSubmatch(m)[1]
		var items []string
		for _, f := range strings.Split(inner, ",") {
			if f = strings.TrimSpace(f); f != "" {
				items = append(items, f)
			}
		}
		sort.Strings(items)
		return "elements = { " + strings.Join(items, ", ") + " }"
	})
}

func listRuleset(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	return normalize(ns.Exec(t, "nft", "list", "ruleset"))
}

func kernelFirewall(t *testing.T, ns *nstest.NS) *NFT {
	t.Helper()
	n, err := New(Options{NetNS: ns.Fd(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestKernelRulesetGolden applies each ruleset twice in a fresh namespace
// and compares `nft list ruleset` with its golden file in testdata.
func TestKernelRulesetGolden(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tc := range []struct {
		golden string
		rs     Ruleset
	}{
		{"ruleset.nft", sample(3)},
		{"ruleset-services.nft", withServices(3)},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			ns := nstest.NewNS(t, "fw")
			n := kernelFirewall(t, ns)
			rs := tc.rs
			if err := n.Rebuild(rs); err != nil {
				t.Fatal(err)
			}
			first := listRuleset(t, ns)
			// A new Firewall (as after a restart) rebuilds over the existing table.
			n2 := kernelFirewall(t, ns)
			if err := n2.Rebuild(rs); err != nil {
				t.Fatal(err)
			}
			if err := n2.Set(rs); err != nil {
				t.Fatal(err)
			}
			second := listRuleset(t, ns)
			if first != second {
				t.Errorf("ruleset changed on the second apply:\n%s", lineDiff(first, second))
			}
			golden(t, tc.golden, second)
		})
	}
}

// TestKernelRandomTransitions cycles through random rulesets in random
// order; after every Set (incremental where possible) the kernel must hold
// exactly what a from-scratch rebuild of the same ruleset gives.
func TestKernelRandomTransitions(t *testing.T) {
	nstest.RequireRoot(t)
	live, ref := nstest.NewNS(t, "live"), nstest.NewNS(t, "ref")
	nl, nr := kernelFirewall(t, live), kernelFirewall(t, ref)
	rng := rand.New(rand.NewPCG(3, 4))
	var states []Ruleset
	for i := range 5 {
		rs := sample(6)
		for j := range rs.Peers {
			p := &rs.Peers[j]
			p.Enabled, p.Internet, p.LAN, p.Peers = rng.IntN(2) == 0, rng.IntN(2) == 0, rng.IntN(2) == 0, rng.IntN(2) == 0
		}
		rs.Peers = rs.Peers[:2+rng.IntN(4)]
		if i == 4 {
			rs.WAN = "" // a structural change
		}
		if i%2 == 1 { // services on, with some of them allowed out
			rs.Services = withServices(0).Services
			rs.Services.Egress = rs.Services.Egress[:rng.IntN(3)]
		}
		states = append(states, rs)
	}
	var rs Ruleset
	for step := range 24 {
		switch op := rng.IntN(3); {
		case step == 0 || op == 0:
			rs = states[rng.IntN(len(states))]
			rs.Peers = append([]Peer(nil), rs.Peers...)
			if err := nl.Set(rs); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		case op == 1: // one peer changes or arrives
			p := peerN(2 + rng.IntN(8))
			p.Enabled, p.LAN = rng.IntN(2) == 0, rng.IntN(2) == 0
			if err := nl.PutPeer(p); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			i := slices.IndexFunc(rs.Peers, func(q Peer) bool { return q.Addr4 == p.Addr4 })
			if i >= 0 {
				rs.Peers[i] = p
			} else {
				rs.Peers = append(rs.Peers, p)
			}
		default: // one peer goes
			p := peerN(2 + rng.IntN(8))
			if err := nl.RemovePeer(p.Addr4); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			rs.Peers = slices.DeleteFunc(rs.Peers, func(q Peer) bool { return q.Addr4 == p.Addr4 })
		}
		if err := nr.Rebuild(rs); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if got, want := listRuleset(t, live), listRuleset(t, ref); got != want {
			t.Fatalf("step %d: incremental ruleset differs from rebuild:\n%s", step, lineDiff(want, got))
		}
	}
}
