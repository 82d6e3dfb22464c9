package dns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// dumpZone renders every owner's answers, sorted, and checks the trie's
// count of names on the way.
func dumpZone(t *testing.T, z *zone) string {
	t.Helper()
	var lines []string
	names := 0
	var walk func(n *tnode)
	walk = func(n *tnode) {
		if n == nil {
			return
		}
		if !n.leaf {
			for _, k := range n.kids {
				walk(k)
			}
			return
		}
		for _, o := range n.own {
			names++
			if len(o.items) == 0 {
				lines = append(lines, o.name+" (empty non-terminal)")
			}
			for _, set := range o.sets {
				for _, rr := range set {
					lines = append(lines, strings.Join(strings.Fields(rr.String()), " "))
				}
			}
		}
	}
	walk(z.root)
	if names != z.names {
		t.Errorf("the trie holds %d names, the zone counts %d", names, z.names)
	}
	slices.Sort(lines)
	return fmt.Sprintf("%d records\n%s", z.records, strings.Join(lines, "\n"))
}

// TestRandomTransitions applies random Sets, PutRecords and RemoveRecords
// (some refused: a CNAME beside other data); after each, the zone must
// equal one built from scratch with the same records, and the zone
// published before must not have changed (readers may still hold it).
func TestRandomTransitions(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { randomTransitions(t, seed) })
	}
}

func randomTransitions(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	names := []string{"@", "alice", "bob", "a.x.y", "x.y", "b.x.y", "_sip._tcp", "www"}
	values := map[string][]string{
		"A":     {"10.77.0.1", "10.77.0.2", "10.77.0.3"},
		"AAAA":  {"fd77::1", "fd77::2"},
		"TXT":   {"one", "two"},
		"CNAME": {"alice", "example.com"},
		"PTR":   {"alice", "printer"},
	}
	random := func() Record {
		typ := []string{"A", "A", "AAAA", "TXT", "CNAME", "PTR"}[rng.IntN(6)]
		r := Record{Name: names[rng.IntN(len(names))], Type: typ, Value: values[typ][rng.IntN(len(values[typ]))]}
		if typ == "CNAME" && r.Name == "@" {
			r.Name = "www"
		}
		if typ == "PTR" && rng.IntN(2) == 0 {
			r.Name = "10.77.0." + fmt.Sprint(1+rng.IntN(3)) // replaces a derived PTR
		}
		if rng.IntN(4) == 0 {
			r.TTL = 60
		}
		if rng.IntN(5) == 0 {
			r.Type = strings.ToLower(r.Type) // the same record to the server
		}
		return r
	}
	live := New(Options{Logger: quiet()})
	model := map[Record]bool{}
	list := func() []Record {
		var out []Record
		for r := range model {
			out = append(out, r)
		}
		return out
	}
	refused := 0
	var lastList []Record
	for step := range 400 {
		before := live.zone.Load()
		beforeDump := dumpZone(t, before)
		var err error
		var next map[Record]bool
		switch op := rng.IntN(5); {
		case step == 0 || op == 0:
			lastList = nil
			for range rng.IntN(12) {
				lastList = append(lastList, random())
			}
			next = setOf(lastList)
			err = live.Set(Config{Zone: Zone{Domain: domain, Records: slices.Clone(lastList)}})
		case op == 4:
			// The last list with one record in, out or twice, in place:
			// the common beginning and end of the two lists are skipped.
			l := slices.Clone(lastList)
			switch at := rng.IntN(len(l) + 1); {
			case rng.IntN(3) == 0 && at < len(l):
				l = slices.Delete(l, at, at+1)
			case rng.IntN(2) == 0 && at < len(l):
				l = slices.Insert(l, at, l[at])
			default:
				l = slices.Insert(l, at, random())
			}
			if err = live.Set(Config{Zone: Zone{Domain: domain, Records: l}}); err == nil {
				lastList = l
			}
			next = setOf(l)
		case op == 1 && len(model) > 0:
			r := list()[rng.IntN(len(model))]
			next = maps(model)
			delete(next, r)
			err = live.RemoveRecord(r)
		default:
			r := random()
			next = maps(model)
			next[normal(r)] = true
			err = live.PutRecord(r)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("step %d: %v", step, err)
			}
			refused++
			if live.zone.Load() != before {
				t.Fatalf("step %d: a refused change published a zone", step)
			}
			continue
		}
		model = next
		if got := dumpZone(t, before); got != beforeDump {
			t.Fatalf("step %d: the previous zone changed under its readers:\n%s", step, lineDiff(beforeDump, got))
		}
		ref := New(Options{Logger: quiet()})
		if err := ref.Set(Config{Zone: Zone{Domain: domain, Records: list()}}); err != nil {
			t.Fatalf("step %d: the live server took records a fresh one refuses: %v", step, err)
		}
		if got, want := dumpZone(t, live.zone.Load()), dumpZone(t, ref.zone.Load()); got != want {
			t.Fatalf("step %d: zone differs from a rebuild:\n%s", step, lineDiff(want, got))
		}
	}
	if refused == 0 || refused > 300 {
		t.Errorf("%d of 400 changes refused; want some (CNAME conflicts), not most", refused)
	}
}

func setOf(l []Record) map[Record]bool {
	m := map[Record]bool{}
	for _, r := range l {
		m[normal(r)] = true
	}
	return m
}

func maps(m map[Record]bool) map[Record]bool {
	c := make(map[Record]bool, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "-%s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+%s\n", l)
		}
	}
	return b.String()
}

// TestTrieLarge: 10,000 names in and half of them out again, through the
// copy-on-write paths; every lookup agrees with a map.
func TestTrieLarge(t *testing.T) {
	var root *tnode
	want := map[string]bool{}
	for i := range 10000 {
		n := fmt.Sprintf("peer%d.%s.", i, domain)
		root, _ = root.put(uint64(i+1), 0, &owner{name: n, hash: hashName(n)})
		want[n] = true
	}
	for i := 0; i < 10000; i += 2 {
		n := fmt.Sprintf("peer%d.%s.", i, domain)
		root = root.del(uint64(20000+i), 0, hashName(n), n)
		delete(want, n)
	}
	for i := range 10000 {
		n := fmt.Sprintf("peer%d.%s.", i, domain)
		if got := root.get(hashName(n), n) != nil; got != want[n] {
			t.Fatalf("%s: found %v, want %v", n, got, want[n])
		}
	}
}

// TestFake: the fake refuses what the server refuses and keeps the rest.
func TestFake(t *testing.T) {
	var f Fake
	var r Resolver = &f
	cfg := Config{Zone: sampleZone(), Upstreams: []string{"198.18.0.53"}, Allowed: loopback}
	if err := r.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if err := r.Set(cfg); err != nil || f.Applies != 1 {
		t.Errorf("Set twice: %v, %d applies; want 1", err, f.Applies)
	}
	if err := r.PutRecord(Record{Name: "$(x)", Type: "A", Value: "10.77.0.9"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("hostile PutRecord = %v", err)
	}
	if err := r.Set(Config{Zone: sampleZone(), Upstreams: []string{"dns.example"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad upstream Set = %v", err)
	}
	carol := Record{Name: "carol", Type: "A", Value: "10.77.0.4"}
	r.PutRecord(carol)
	if got := r.Stats().Records; got != 14 {
		t.Errorf("%d records after PutRecord, want 14", got)
	}
	r.RemoveRecord(carol)
	if got := f.Config(); len(got.Zone.Records) != 13 || got.Zone.Domain != domain {
		t.Errorf("config after RemoveRecord: %d records, domain %q", len(got.Zone.Records), got.Zone.Domain)
	}
}
