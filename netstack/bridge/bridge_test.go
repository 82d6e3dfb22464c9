package bridge

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func cfgOf(members ...Member) Config {
	return Config{Name: "pic-svc0", Gateway: netip.MustParsePrefix("10.77.250.1/24"), Members: members}
}

func mem(id string, last byte) Member {
	return Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 77, 250, last}), NetNS: "/run/pic/netns/" + id}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"empty", Config{}, true},
		{"bridge alone", cfgOf(), true},
		{"two members", cfgOf(mem("files", 2), mem("wiki", 3)), true},
		{"members without bridge", Config{Members: []Member{mem("files", 2)}}, false},
		{"long name", Config{Name: strings.Repeat("b", 16), Gateway: netip.MustParsePrefix("10.77.250.1/24")}, false},
		{"no gateway", Config{Name: "pic-svc0"}, false},
		{"gateway is the network", Config{Name: "pic-svc0", Gateway: netip.MustParsePrefix("10.77.250.0/24")}, false},
		{"gateway is broadcast", Config{Name: "pic-svc0", Gateway: netip.MustParsePrefix("10.77.250.255/24")}, false},
		{"host gateway", Config{Name: "pic-svc0", Gateway: netip.MustParsePrefix("10.77.250.1/32")}, false},
		{"bad id", cfgOf(mem("Files", 2)), false},
		{"id too long", cfgOf(mem("a"+strings.Repeat("b", 31), 2)), false},
		{"unsorted", cfgOf(mem("wiki", 3), mem("files", 2)), false},
		{"duplicate id", cfgOf(mem("files", 2), mem("files", 3)), false},
		{"gateway address", cfgOf(mem("files", 1)), false},
		{"network address", cfgOf(mem("files", 0)), false},
		{"broadcast", cfgOf(mem("files", 255)), false},
		{"duplicate addr", cfgOf(mem("files", 2), mem("wiki", 2)), false},
		{"outside subnet", cfgOf(Member{ID: "files", Addr: netip.MustParseAddr("10.77.251.2"), NetNS: "/run/x/files"}), false},
		{"relative netns", cfgOf(Member{ID: "files", Addr: netip.MustParseAddr("10.77.250.2"), NetNS: "run/files"}), false},
		{"unclean netns", cfgOf(Member{ID: "files", Addr: netip.MustParseAddr("10.77.250.2"), NetNS: "/run/../files"}), false},
		{"netns in root", cfgOf(Member{ID: "files", Addr: netip.MustParseAddr("10.77.250.2"), NetNS: "/files"}), false},
		{"same netns", cfgOf(mem("files", 2), Member{ID: "wiki", Addr: netip.MustParseAddr("10.77.250.3"), NetNS: "/run/pic/netns/files"}), false},
	} {
		err := tc.cfg.Validate()
		if got := err == nil; got != tc.ok {
			t.Errorf("%s: Validate = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v does not wrap ErrInvalid", tc.name, err)
		}
	}
}

func TestHostVeth(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"files", "wiki", "a", "a-very-long-service-name-of-31c"} {
		got := HostVeth(id)
		if len(got) > 15 || !strings.HasPrefix(got, "pv") || len(got) != 10 {
			t.Errorf("HostVeth(%q) = %q, want pv + 8 hex digits", id, got)
		}
		if got != HostVeth(id) {
			t.Errorf("HostVeth(%q) not stable", id)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("HostVeth(%q) = HostVeth(%q) = %s", id, other, got)
		}
		seen[got] = id
	}
	// Fixed, so that a cell of a later version still finds its veths.
	if got, want := HostVeth("files"), "pv3d7db37d"; got != want {
		t.Errorf("HostVeth(files) = %s, want %s", got, want)
	}
}

func TestFake(t *testing.T) {
	f := &Fake{}
	cfg := cfgOf(mem("files", 2))
	for i := 0; i < 2; i++ {
		if err := f.Set(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if f.Applies != 1 {
		t.Errorf("Applies = %d after the same Set twice, want 1", f.Applies)
	}
	if got := f.Config(); len(got.Members) != 1 || got.Members[0] != cfg.Members[0] {
		t.Errorf("Config = %+v, want %+v", got, cfg)
	}
	if err := f.Set(cfgOf(mem("Bad", 2))); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid Set = %v, want ErrInvalid", err)
	}
	f.Close()
	if err := f.Set(cfg); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
}
