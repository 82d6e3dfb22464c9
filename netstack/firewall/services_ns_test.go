package firewall

import (
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/nstest"
)

// listen accepts TCP connections on addr inside ns and writes "ok" to each,
// until the test ends.
func listen(t *testing.T, ns *nstest.NS, addr string) {
	t.Helper()
	var l net.Listener
	if err := ns.Run(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "ok")
			c.Close()
		}
	}()
}

// reaches reports whether a TCP connection from ns to addr is answered.
func reaches(ns *nstest.NS, addr string) bool {
	c, err := ns.Dial(addr, 800*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b) == "ok"
}

// udpArrives sends one datagram from ns to addr and reports whether pc
// (listening there) receives it.
func udpArrives(t *testing.T, ns *nstest.NS, pc net.PacketConn, addr string) bool {
	t.Helper()
	msg := "probe " + ns.Name
	err := ns.Run(func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.WriteString(c, msg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	for {
		pc.SetReadDeadline(time.Now().Add(800 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == msg {
			return true
		}
	}
}

// counter is the packet count of the first rule in chain whose text
// contains rule.
func counter(t *testing.T, ns *nstest.NS, chain, rule string) int {
	t.Helper()
	out := ns.Exec(t, "nft", "list", "chain", "inet", TableName, chain)
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(rule) + ` counter packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rule %q in chain %s:\n%s", rule, chain, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestKernelServices builds the cell's world (nstest.Topology) with a
// services bridge holding two services, a LAN host and a peer-side host
// (a veth named wg0 stands for the tunnel), applies the firewall and
// proves the services fence both ways.
//
//	peer 10.77.0.2 ─ wg0 ┐                ┌ pic-svc0 10.77.250.1 ─ svc-n 10.77.250.2 (no egress)
//	lan 192.168.1.2 ─ lan0 ┤ cell ── wan0 ── wan (198.18.0.1) ── client-a
//	                       └ pic-svc0 ─ svc-e 10.77.250.3 (egress)
func TestKernelServices(t *testing.T) {
	top := nstest.NewTopology(t)
	cell := top.Cell
	peer, lan := nstest.NewNS(t, "peer"), nstest.NewNS(t, "lan")
	nstest.Veth(t, cell, "wg0", "10.77.0.1/24", peer, "eth0", "10.77.0.2/24")
	peer.Exec(t, "ip", "route", "add", "default", "via", "10.77.0.1")
	nstest.Veth(t, cell, "lan0", "192.168.1.1/24", lan, "eth0", "192.168.1.2/24")
	lan.Exec(t, "ip", "route", "add", "default", "via", "192.168.1.1")

	cell.Exec(t, "ip", "link", "add", "pic-svc0", "type", "bridge")
	cell.Exec(t, "ip", "addr", "add", "10.77.250.1/24", "dev", "pic-svc0")
	cell.Exec(t, "ip", "link", "set", "pic-svc0", "up")
	svcN, svcE := nstest.NewNS(t, "svc-n"), nstest.NewNS(t, "svc-e")
	for _, s := range []struct {
		ns   *nstest.NS
		port string
		addr string
	}{{svcN, "sv-n", "10.77.250.2/24"}, {svcE, "sv-e", "10.77.250.3/24"}} {
		cell.Exec(t, "ip", "link", "add", s.port, "type", "veth", "peer", "name", "eth0", "netns", s.ns.Name)
		cell.Exec(t, "ip", "link", "set", s.port, "master", "pic-svc0", "up")
		cell.Exec(t, "ip", "link", "set", s.port, "type", "bridge_slave", "isolated", "on")
		s.ns.Exec(t, "ip", "addr", "add", s.addr, "dev", "eth0")
		s.ns.Exec(t, "ip", "link", "set", "eth0", "up")
		s.ns.Exec(t, "ip", "route", "add", "default", "via", "10.77.250.1")
	}
	// The internet routes the cell's inner networks to it, so that a
	// packet from client-a to a service would arrive if let through.
	top.WAN.Exec(t, "ip", "route", "add", "10.77.0.0/16", "via", nstest.CellWAN)
	if err := cell.Run(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) }); err != nil {
		t.Fatal(err)
	}

	listen(t, cell, "0.0.0.0:3000") // the API
	listen(t, cell, "0.0.0.0:443")  // the front, open from everywhere else
	listen(t, svcN, "10.77.250.2:8080")
	listen(t, svcE, "10.77.250.3:8080")
	listen(t, lan, "192.168.1.2:80")

	rs := Ruleset{
		WGInterface: "wg0", WGPort: 51820, WAN: nstest.CellWANIf,
		Tunnel4:  netip.MustParsePrefix("10.77.0.0/24"),
		LAN:      []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
		LocalTCP: []uint16{53, 3000}, LocalUDP: []uint16{53}, WANTCP: []uint16{443},
		Peers: []Peer{{Addr4: netip.MustParseAddr("10.77.0.2"), Enabled: true, Internet: true, LAN: true, Peers: true}},
		Services: &Services{
			Bridge: "pic-svc0", Subnet: netip.MustParsePrefix("10.77.250.0/24"),
			Gateway: netip.MustParseAddr("10.77.250.1"),
			Egress:  []netip.Addr{netip.MustParseAddr("10.77.250.3")},
		},
	}
	if err := kernelFirewall(t, cell).Set(rs); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		what string
		from *nstest.NS
		to   string
		want bool
	}{
		// Controls: the world works where the rules allow it.
		{"peer to the cell API", peer, "10.77.0.1:3000", true},
		{"peer to the LAN", peer, "192.168.1.2:80", true},
		{"the cell (front) to a service", cell, "10.77.250.2:8080", true},
		{"the internet to the front", top.A, nstest.CellWAN + ":443", true},
		// A service reaches none of the cell's own ports, by any address.
		{"service to the API on the gateway", svcN, "10.77.250.1:3000", false},
		{"egress service to the API on the gateway", svcE, "10.77.250.1:3000", false},
		{"egress service to the API on the tunnel address", svcE, "10.77.0.1:3000", false},
		{"egress service to the cell's WAN address", svcE, nstest.CellWAN + ":3000", false},
		{"service to the front's port", svcN, "10.77.250.1:443", false},
		// Nor the LAN or the peers, egress or not.
		{"egress service to a LAN host", svcE, "192.168.1.2:80", false},
		{"egress service to a peer", svcE, "10.77.0.2:3000", false},
		// The internet only with egress.
		{"service without egress to the internet", svcN, nstest.ServerAddr + ":80", false},
		// Nobody opens a connection to a service but the cell.
		{"peer to a service", peer, "10.77.250.2:8080", false},
		{"LAN host to a service", lan, "10.77.250.3:8080", false},
		{"internet to a service", top.A, "10.77.250.3:8080", false},
	} {
		if got := reaches(c.from, c.to); got != c.want {
			t.Errorf("%s (%s): reached=%v, want %v", c.what, c.to, got, c.want)
		}
	}
	// Nor the cell's UDP ports: DNS and WireGuard.
	for _, port := range []string{"53", "51820"} {
		var pc net.PacketConn
		if err := cell.Run(func() (err error) { pc, err = net.ListenPacket("udp4", "0.0.0.0:"+port); return err }); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		for _, c := range []struct {
			what string
			from *nstest.NS
			to   string
			want bool
		}{
			{"peer", peer, "10.77.0.1:" + port, true}, // the control
			{"service", svcE, "10.77.250.1:" + port, false},
		} {
			if got := udpArrives(t, c.from, pc, c.to); got != c.want {
				t.Errorf("%s to the cell's UDP %s: arrived=%v, want %v", c.what, c.to, got, c.want)
			}
		}
	}

	got, err := svcE.Get(nstest.ServerAddr+":80", "/", 3*time.Second)
	if err != nil {
		t.Fatalf("egress service to the internet: %v", err)
	}
	if got != nstest.CellWAN {
		t.Errorf("the internet saw the egress service as %s, want the cell's WAN address %s (masquerade)", got, nstest.CellWAN)
	}

	// Service to service through the gateway (a route past the isolated
	// ports) meets the forward drop, which counts it.
	svcE.Exec(t, "ip", "route", "add", "10.77.250.2/32", "via", "10.77.250.1")
	cell.Exec(t, "sysctl", "-q", "-w", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.pic-svc0.send_redirects=0")
	before := counter(t, cell, "forward", `iifname "pic-svc0" oifname "pic-svc0"`)
	if reaches(svcE, "10.77.250.2:8080") {
		t.Error("service reached another service through the gateway")
	}
	if after := counter(t, cell, "forward", `iifname "pic-svc0" oifname "pic-svc0"`); after <= before {
		t.Errorf("service-to-service counter %d -> %d, want it to count the attempt", before, after)
	}
	if n := counter(t, cell, "input", `iifname "pic-svc0"`); n == 0 {
		t.Error("the input drop for the bridge counted nothing")
	}
}
