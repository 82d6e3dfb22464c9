package main

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/pic-cell/cell/netstack/firewall"
)

// TestOpenAPI: an API on every address (the appliance's -listen 0.0.0.0:80) or
// on a LAN address is opened from the LAN/WAN in every ruleset; one on
// loopback is not.
func TestOpenAPI(t *testing.T) {
	rs := firewall.Ruleset{WGInterface: "wg0", WGPort: 51820, WAN: "eth0",
		Tunnel4: netip.MustParsePrefix("10.77.0.0/24"), LocalTCP: []uint16{53, 80}, WANTCP: []uint16{443}}
	for _, tt := range []struct {
		host string
		want []uint16
	}{
		{"0.0.0.0", []uint16{443, 80}},
		{"::", []uint16{443, 80}},
		{"", []uint16{443, 80}},
		{"127.0.0.1", []uint16{443}},
		{"192.168.1.5", []uint16{443, 80}},
		{"localhost", []uint16{443}},
		{"::1", []uint16{443}},
	} {
		fake := &firewall.Fake{}
		if err := openAPI(fake, tt.host, 80).Set(rs); err != nil {
			t.Fatal(err)
		}
		if got := fake.Ruleset().WANTCP; !slices.Equal(got, tt.want) {
			t.Errorf("-listen %s:80: WANTCP %v, want %v", tt.host, got, tt.want)
		}
	}
	if !slices.Equal(rs.WANTCP, []uint16{443}) {
		t.Errorf("the caller's ruleset was changed: %v", rs.WANTCP)
	}
}
