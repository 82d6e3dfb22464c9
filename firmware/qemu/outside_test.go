package qemu_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	sntp "github.com/beevik/ntp"

	"github.com/pic-cell/cell/cell/ntp"
	"github.com/pic-cell/cell/cell/outside"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/portmap"
)

// checkOutsideAndTime asks the booted cell of TestPhoneThroughTunnel how the
// outside reaches it and what its clock says, and asks its SNTP server for
// the time through the phone's tunnel. It reuses that test's VM: slirp is the
// home router here, one that speaks no port mapping protocol and forwards
// nothing by itself, in front of a domain that resolves nowhere, and no NTP
// server can be reached from the VM. The cell must say all of that honestly.
func checkOutsideAndTime(t *testing.T, a *labAPI, phone *nstest.NS) {
	ctx := context.Background()

	t.Run("network status", func(t *testing.T) {
		// The outside loop reads the uplink at once; the port mapper gives up
		// on slirp after its discovery deadline. Wait for both.
		var st outside.Status
		err := waitFor(90*time.Second, func() error {
			if err := a.Do(ctx, "GET", "/api/network", nil, &st); err != nil {
				return err
			}
			if st.Uplink.Interface == "" {
				return fmt.Errorf("no uplink read yet: %+v", st.Uplink)
			}
			if st.PortMapping.State == portmap.StateTrying {
				return fmt.Errorf("the port mapper is still trying: %+v", st.PortMapping)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("GET /api/network from the LAN: %v", err)
		}
		t.Logf("uplink %+v; public %+v; port mapping %+v; endpoint %+v; warnings %q", st.Uplink, st.PublicAddress, st.PortMapping, st.Endpoint, st.Warnings)

		// The uplink is the VM's NIC with slirp's DHCP address, a private one.
		if !slices.Contains(st.Uplink.Addrs, guestAddr+"/24") || st.Uplink.Kind != "private" || st.Uplink.Gateway != "10.0.2.2" {
			t.Errorf("uplink = %+v, want %s/24 (private) via 10.0.2.2", st.Uplink, guestAddr)
		}
		var nic *outside.Interface
		for i := range st.Interfaces {
			if st.Interfaces[i].Name == st.Uplink.Interface {
				nic = &st.Interfaces[i]
			}
		}
		if nic == nil || !nic.Up || !slices.Contains(nic.Addrs, guestAddr+"/24") {
			t.Errorf("the uplink %q among the interfaces: %+v (all: %+v)", st.Uplink.Interface, nic, st.Interfaces)
		}

		// Port mapping is on in tun mode by default; slirp answers none of
		// PCP, NAT-PMP and UPnP, and the cell says so.
		pm := st.PortMapping
		if !pm.Enabled {
			t.Errorf("port mapping is off on the image: %+v (config.json's cell should map in tun mode)", pm)
		}
		if pm.State == portmap.StateMapped || pm.External != "" {
			t.Errorf("port mapping = %+v: slirp maps nothing", pm)
		}
		if pm.Reason == "" && pm.LastError == "" {
			t.Errorf("port mapping in state %q without a reason: %+v", pm.State, pm)
		}

		// home.example.org resolves nowhere: the endpoint check says so.
		if len(st.Endpoint.Warnings) == 0 || len(st.Warnings) == 0 {
			t.Errorf("no endpoint warning for %s, which does not resolve: endpoint %+v, warnings %q", st.Endpoint.Host, st.Endpoint, st.Warnings)
		}
		if st.Endpoint.Host != "home.example.org" || st.Endpoint.Port != 51820 {
			t.Errorf("endpoint = %+v, want the domain home.example.org and port 51820", st.Endpoint)
		}
	})

	t.Run("ntp status", func(t *testing.T) {
		var raw map[string]json.RawMessage
		if err := a.Do(ctx, "GET", "/api/ntp", nil, &raw); err != nil {
			t.Fatalf("GET /api/ntp from the LAN: %v", err)
		}
		var kernel map[string]json.RawMessage
		if err := json.Unmarshal(raw["kernel"], &kernel); err != nil || kernel["status"] == nil {
			t.Errorf("GET /api/ntp: kernel %s, want the adjtimex state with its status (%v)", raw["kernel"], err)
		}
		var v ntp.View
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		t.Logf("ntp: %+v", v)
		if len(v.Servers) == 0 {
			t.Error("GET /api/ntp names no servers")
		}
		// STA_UNSYNC (0x40) set means the kernel does not count as synchronised.
		if v.Kernel.Synchronised && v.Kernel.Status&0x40 != 0 {
			t.Errorf("kernel synchronised with STA_UNSYNC set: %+v", v.Kernel)
		}
		if v.Time.IsZero() {
			t.Error("GET /api/ntp has no time")
		}
		if d := time.Since(v.Time); d < -2*time.Minute || d > 2*time.Minute {
			t.Logf("note: the VM's clock is %s from the host's", d.Round(time.Millisecond))
		}
	})

	t.Run("sntp through the tunnel", func(t *testing.T) {
		var v ntp.View
		var r *sntp.Response
		err := waitFor(30*time.Second, func() error {
			if err := a.Do(ctx, "GET", "/api/ntp", nil, &v); err != nil {
				return err
			}
			return phone.Run(func() (err error) {
				r, err = sntp.QueryWithOptions(tunCell, sntp.QueryOptions{Timeout: 3 * time.Second})
				return err
			})
		})
		if err != nil {
			t.Fatalf("SNTP from the phone to %s:123 through the tunnel: %v", tunCell, err)
		}
		t.Logf("SNTP answer: time %s leap %d stratum %d; the API said %s synchronised %v",
			r.Time.UTC().Format(time.RFC3339Nano), r.Leap, r.Stratum, v.Time.Format(time.RFC3339Nano), v.Synchronised)
		// The answer is the VM's clock, which the API read just before.
		if d := r.Time.Sub(v.Time); d < -5*time.Second || d > 5*time.Second {
			t.Errorf("the SNTP answer's time %s is %s from the cell's own (%s)", r.Time.UTC(), d, v.Time)
		}
		// Its leap indicator says what the API says: no NTP server is
		// reachable from the VM, so most likely "not synchronised" (3), which
		// every client refuses to set its clock from.
		if v.Synchronised {
			if r.Leap == sntp.LeapNotInSync || r.Stratum >= 16 {
				t.Errorf("the cell says it is synchronised, but its SNTP answer has leap %d stratum %d", r.Leap, r.Stratum)
			}
		} else {
			if r.Leap != sntp.LeapNotInSync || r.Stratum != 16 {
				t.Errorf("the cell says it is not synchronised, but its SNTP answer has leap %d stratum %d, want 3 and 16", r.Leap, r.Stratum)
			}
			if err := r.Validate(); err == nil {
				t.Error("a real SNTP client accepts the unsynchronised cell's time")
			}
		}
	})
}
