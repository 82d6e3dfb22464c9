package reconcile

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/wireguard"
	"github.com/pic-cell/cell/storage"
)

type countingFirewall struct {
	*firewall.Fake
	sets atomic.Int32
}

func (f *countingFirewall) Set(rs firewall.Ruleset) error {
	f.sets.Add(1)
	return f.Fake.Set(rs)
}

// setUpDB is a database of a cell whose setup is complete.
func setUpDB(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	doc := map[string]any{"cell": config.Cell{Name: "home", Domain: "home.example.org"},
		"network": config.Network{WGPort: 51820, SubnetV4: "10.77.0.0/24", WANInterface: "auto"}}
	if err := db.Settings().CompleteSetup(doc, storage.User{Username: "admin", Role: storage.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	return db
}

// A cell that starts before DHCP has given a default route looks for it
// without rebuilding, and rebuilds once, with the uplink, when it appears.
func TestUplinkFoundLaterRebuildsOnce(t *testing.T) {
	wanFirstWait = 10 * time.Millisecond
	defer func() { wanFirstWait = 5 * time.Second }()
	db := setUpDB(t)
	var lookups atomic.Int32
	fw := &countingFirewall{Fake: &firewall.Fake{}}
	n := Network{Mode: "tun", Interface: "wg0", Firewall: fw, Links: &links.Fake{},
		DefaultWAN: func() (string, error) {
			if lookups.Add(1) < 4 {
				return "", errors.New("no default route yet")
			}
			return "eth9", nil
		},
		Open: func([]netip.Addr) (wireguard.Device, error) { return wireguard.NewFake(), nil }}
	l := New(db, n, slog.New(slog.DiscardHandler), rand.Reader)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; l.Close() }()
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Live().WAN != "eth9" {
		if time.Now().After(deadline) {
			t.Fatalf("the uplink was never found: %+v after %d lookups", l.Live(), lookups.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The first build and the one that found the uplink; the failed lookups
	// in between rebuilt nothing.
	if got := fw.sets.Load(); got != 2 {
		t.Errorf("the firewall was rebuilt %d times, want 2 (start, uplink found)", got)
	}
}

// An rtnetlink event rebuilds when the uplink the last build used changed
// (a new default route), and only then.
func TestUplinkEventRebuildsWhenTheUplinkChanged(t *testing.T) {
	db := setUpDB(t)
	var wan atomic.Pointer[string]
	first := "eth0"
	wan.Store(&first)
	events := make(chan struct{}, 1)
	fw := &countingFirewall{Fake: &firewall.Fake{}}
	n := Network{Mode: "tun", Interface: "wg0", Firewall: fw, Links: &links.Fake{},
		DefaultWAN:  func() (string, error) { return *wan.Load(), nil },
		WatchUplink: func(context.Context) <-chan struct{} { return events },
		Open:        func([]netip.Addr) (wireguard.Device, error) { return wireguard.NewFake(), nil }}
	l := New(db, n, slog.New(slog.DiscardHandler), rand.Reader)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; l.Close() }()
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if l.Live().WAN != "eth0" || fw.sets.Load() != 1 {
		t.Fatalf("first build: wan %q, %d firewall sets", l.Live().WAN, fw.sets.Load())
	}
	// An event with nothing changed rebuilds nothing.
	events <- struct{}{}
	time.Sleep(100 * time.Millisecond)
	if got := fw.sets.Load(); got != 1 {
		t.Errorf("an event without a change rebuilt the firewall (%d sets)", got)
	}
	second := "eth1"
	wan.Store(&second)
	events <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for l.Live().WAN != "eth1" {
		if time.Now().After(deadline) {
			t.Fatalf("the new uplink was not taken up: %+v", l.Live())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := fw.sets.Load(); got != 2 {
		t.Errorf("the firewall was built %d times, want 2", got)
	}
}
