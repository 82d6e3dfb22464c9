package system_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/ddns"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/portmap"
)

// The outside's two latencies through the real daemon, each as a ratio to
// the plain protocol exchange it is made of, measured in the same run
// against the same server: what the daemon adds (hearing rtnetlink, the
// 200 ms debounce, reading the uplink, the keeper's turn) is the ratio
// minus one.

// BenchmarkAddressChangeToDNSRecord: from the uplink's address changing in
// the cell namespace to BIND answering the new A record, against one RFC
// 2136 update of the same record sent directly plus one lookup.
func BenchmarkAddressChangeToDNSRecord(b *testing.B) {
	c := startPublicCell(b, true)
	_, err := c.a.putDDNS(rfc2136(c.bind, c.bind.Secret))
	c.a.ok("PUT /api/network/ddns", err)
	c.waitA(b, nstest.CellWAN, 15*time.Second)

	// The anchor: what the keeper sends (the same addresses), from the
	// cell's namespace, then BIND asked once.
	var addrs []netip.Addr
	for _, s := range c.a.ddns().Addrs {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	direct := &ddns.RFC2136{Server: c.bind.Addr.String(), Zone: outsideZone, Name: outsideName,
		KeyName: c.bind.KeyName, Algorithm: c.bind.Algorithm, Secret: c.bind.Secret}
	const anchors = 10
	var anchor time.Duration
	for range anchors {
		t0 := time.Now()
		err := c.top.Cell.Run(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return direct.Update(ctx, addrs)
		})
		if err != nil {
			b.Fatalf("direct RFC 2136 update: %v", err)
		}
		if got, err := c.bindSays(); err != nil || !slices.Equal(got, []string{nstest.CellWAN}) {
			b.Fatalf("after the direct update BIND says %v (%v)", got, err)
		}
		anchor += time.Since(t0)
	}
	anchor /= anchors

	addrsCycle := []string{"198.18.0.9", nstest.CellWAN}
	cur := nstest.CellWAN
	var total time.Duration
	n := 0
	for b.Loop() {
		next := addrsCycle[n%2]
		n++
		t0 := time.Now()
		c.moveUplink(b, cur, next)
		cur = next
		pollFast(b, 10*time.Second, "BIND answers "+next, func() error {
			got, err := c.bindSays()
			if err != nil || !slices.Equal(got, []string{next}) {
				return fmt.Errorf("%v (%v)", got, err)
			}
			return nil
		})
		total += time.Since(t0)
	}
	b.ReportMetric(float64(total)/float64(n)/float64(anchor), "x-direct-update")
	b.Logf("address change to record: %v on average over %d; direct update and lookup: %v", (total / time.Duration(n)).Round(time.Millisecond), n, anchor.Round(time.Microsecond))
}

// BenchmarkAddressChangeToMappingRenewed: from the cell's LAN address
// changing (in the Home's LAN namespace) to the daemon reporting the router's
// mapping pointing at the new address, against one NAT-PMP map request to
// the same miniupnpd sent directly from the LAN namespace.
func BenchmarkAddressChangeToMappingRenewed(b *testing.B) {
	c := startHomeCell(b, nstest.HomeOptions{}, nstest.MiniUPnPdOptions{NATPMP: true}, false)
	h := c.h
	waitInternal := func(addr netip.Addr) {
		want := netip.AddrPortFrom(addr, 51820).String()
		pollFast(b, 15*time.Second, "mapped from "+want, func() error {
			pm := c.a.network().PortMapping
			if pm.State != "mapped" || pm.Internal != want {
				return fmt.Errorf("%+v", pm)
			}
			return nil
		})
	}
	waitInternal(h.CellLAN)

	const anchors = 10
	var anchor time.Duration
	pmp := portmap.NewNATPMP(h.RouterLAN, h.CellLAN)
	for i := range anchors {
		port := uint16(40000 + i)
		err := h.LAN.Run(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			t0 := time.Now()
			m, err := pmp.Map(ctx, netip.AddrPortFrom(h.CellLAN, port), port, 2*time.Minute)
			anchor += time.Since(t0)
			if err != nil {
				return err
			}
			return pmp.Unmap(ctx, m)
		})
		if err != nil {
			b.Fatalf("direct NAT-PMP map: %v", err)
		}
	}
	anchor /= anchors

	cycle := []netip.Addr{netip.MustParseAddr("192.168.77.3"), h.CellLAN}
	cur := h.CellLAN
	var total time.Duration
	n := 0
	for b.Loop() {
		next := cycle[n%2]
		n++
		t0 := time.Now()
		h.LAN.Exec(b, "ip", "addr", "del", cur.String()+"/24", "dev", nstest.HomeCellIf)
		h.LAN.Exec(b, "ip", "addr", "add", next.String()+"/24", "dev", nstest.HomeCellIf)
		h.LAN.Exec(b, "ip", "route", "replace", "default", "via", h.RouterLAN.String())
		cur = next
		waitInternal(next)
		total += time.Since(t0)
	}
	b.ReportMetric(float64(total)/float64(n)/float64(anchor), "x-direct-map")
	b.Logf("address change to mapping renewed: %v on average over %d; direct NAT-PMP map: %v", (total / time.Duration(n)).Round(time.Millisecond), n, anchor.Round(time.Microsecond))
}

// pollFast calls f every 5 ms until it succeeds; tb fails after d.
func pollFast(tb testing.TB, d time.Duration, what string, f func() error) {
	tb.Helper()
	eventually(tb, d, 5*time.Millisecond, what, f)
}
