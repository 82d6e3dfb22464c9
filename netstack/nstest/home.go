package nstest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Home is a home network behind a NAT router, with a phone on the internet:
//
//	phone 198.18.3.2 ── internet (198.18.3.1, 198.18.4.1) ── router wan 198.18.4.2 ── router lan 192.168.77.1 ── cell 192.168.77.2 (eth0)
//
// The router masquerades the LAN behind its WAN address (nftables, in its
// own namespace) and forwards nothing inwards except what was DNATed (by
// miniupnpd's rules, once StartMiniUPnPd runs). The internet namespace has
// no route to the LAN: only the router's mappings reach the cell. SSDP's
// multicast (239.255.255.250) needs no route of its own: the cell's
// default route goes out of eth0, where miniupnpd listens.
type Home struct {
	Internet, Router, LAN, Phone *NS

	InternetWAN   netip.Addr // the internet's address facing the router
	InternetPhone netip.Addr // the internet's address facing the phone
	RouterWAN     netip.Addr
	RouterLAN     netip.Addr
	CellLAN       netip.Addr
	PhoneAddr     netip.Addr
}

// Interface names in the Home's namespaces.
const (
	HomeRouterWANIf = "wan"  // in Router
	HomeRouterLANIf = "lan"  // in Router
	HomeCellIf      = "eth0" // in LAN
	HomePhoneIf     = "eth0" // in Phone
)

// HomeOptions change the Home.
type HomeOptions struct {
	// WAN is the router's WAN address and prefix; the internet takes the
	// prefix's first address. Default 198.18.4.2/24; 100.64.0.2/24 puts
	// the home behind a carrier-grade NAT's address space.
	WAN netip.Prefix
}

// NewHome builds the four namespaces, their links, routes and the router's
// NAT. It needs root.
func NewHome(t testing.TB, o HomeOptions) *Home {
	t.Helper()
	RequireRoot(t)
	if !o.WAN.IsValid() {
		o.WAN = netip.MustParsePrefix("198.18.4.2/24")
	}
	h := &Home{
		Internet: NewNS(t, "internet"), Router: NewNS(t, "router"), LAN: NewNS(t, "lan"), Phone: NewNS(t, "phone"),
		InternetWAN:   o.WAN.Masked().Addr().Next(),
		InternetPhone: netip.MustParseAddr("198.18.3.1"),
		RouterWAN:     o.WAN.Addr(),
		RouterLAN:     netip.MustParseAddr("192.168.77.1"),
		CellLAN:       netip.MustParseAddr("192.168.77.2"),
		PhoneAddr:     netip.MustParseAddr("198.18.3.2"),
	}
	bits := fmt.Sprintf("/%d", o.WAN.Bits())
	Veth(t, h.Internet, "to-phone", h.InternetPhone.String()+"/24", h.Phone, HomePhoneIf, h.PhoneAddr.String()+"/24")
	Veth(t, h.Internet, "to-router", h.InternetWAN.String()+bits, h.Router, HomeRouterWANIf, h.RouterWAN.String()+bits)
	Veth(t, h.Router, HomeRouterLANIf, h.RouterLAN.String()+"/24", h.LAN, HomeCellIf, h.CellLAN.String()+"/24")
	h.Phone.Exec(t, "ip", "route", "add", "default", "via", h.InternetPhone.String())
	h.Router.Exec(t, "ip", "route", "add", "default", "via", h.InternetWAN.String())
	h.LAN.Exec(t, "ip", "route", "add", "default", "via", h.RouterLAN.String())
	for _, ns := range []*NS{h.Internet, h.Router} {
		if err := ns.Run(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) }); err != nil {
			t.Fatal(err)
		}
	}
	// The router: out from the LAN masqueraded; in, only replies and
	// what a DNAT (a port mapping) let through.
	nftApply(t, h.Router, `table inet home {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		iifname "lan" oifname "wan" accept
		ct status dnat accept
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		oifname "wan" masquerade
	}
}
`)
	return h
}

// nftApply loads a ruleset file into ns.
func nftApply(t testing.TB, ns *NS, rules string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.Exec(t, "nft", "-f", f)
}

// MiniUPnPdOptions choose the protocols miniupnpd speaks. NATPMP turns on
// PCP as well: miniupnpd serves both on port 5351 under one switch.
type MiniUPnPdOptions struct {
	UPnP, NATPMP bool
}

// MiniUPnPd is a running miniupnpd in a Home's router.
type MiniUPnPd struct {
	Log string // path of its log (stdout and stderr)
	cmd *exec.Cmd
}

// StartMiniUPnPd runs Debian's miniupnpd (the nftables build) in the
// router, listening on the LAN side, and stops it when the test ends. It
// skips the test when miniupnpd is not installed.
//
// miniupnpd refuses to map anything while its WAN address is private or
// reserved, and 198.18.0.0/15 and 100.64.0.0/10 both are. So, as a real
// router behind another NAT would, it learns its public address with
// STUN: a small STUN server (RFC 5389 with RFC 5780's CHANGE-REQUEST,
// which miniupnpd uses to check that nothing filters inbound) answers in
// the internet namespace, and since nothing there translates, the
// address it reports is the router's WAN address itself.
//
// miniupnpd writes its rules into table inet miniupnpd (chains miniupnpd,
// prerouting_miniupnpd and postrouting_miniupnpd), which this creates
// with the hooks and jumps that nft_init.sh in the package would.
func (h *Home) StartMiniUPnPd(t testing.TB, o MiniUPnPdOptions) *MiniUPnPd {
	t.Helper()
	bin, err := exec.LookPath("miniupnpd")
	if err != nil {
		bin = "/usr/sbin/miniupnpd"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("skipped: needs miniupnpd (Debian package miniupnpd, nftables backend)")
		}
	}
	stunPort := h.startSTUN(t)
	nftApply(t, h.Router, `table inet miniupnpd {
	chain forward {
		type filter hook forward priority 0; policy accept;
		jump miniupnpd
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump postrouting_miniupnpd
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`)
	dir := t.TempDir()
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	conf := strings.Join([]string{
		"ext_ifname=" + HomeRouterWANIf,
		"listening_ip=" + HomeRouterLANIf,
		"enable_upnp=" + yn(o.UPnP),
		"enable_natpmp=" + yn(o.NATPMP),
		"ext_perform_stun=yes",
		"ext_stun_host=" + h.InternetWAN.String(),
		fmt.Sprintf("ext_stun_port=%d", stunPort),
		"secure_mode=yes",
		"system_uptime=yes",
		"ipv6_disable=yes",
		"uuid=6eabd40a-f36c-40ba-a914-15107cbe3" + fmt.Sprintf("%03d", counter.Add(1)%1000),
		"lease_file=" + filepath.Join(dir, "leases"),
		"upnp_table_name=miniupnpd",
		"upnp_nat_table_name=miniupnpd",
		"min_lifetime=2",
		"allow 1024-65535 192.168.77.0/24 1024-65535",
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")
	cf := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &MiniUPnPd{Log: filepath.Join(dir, "miniupnpd.log")}
	lf, err := os.Create(m.Log)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = h.Router.Command(bin, "-f", cf, "-d", "-P", filepath.Join(dir, "pid"))
	m.cmd.Stdout, m.cmd.Stderr = lf, lf
	if err := m.cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start miniupnpd: %v", err)
	}
	exited := make(chan struct{})
	go func() { m.cmd.Wait(); lf.Close(); close(exited) }()
	t.Cleanup(func() {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			m.cmd.Process.Kill()
			<-exited
		}
		h.Router.Try("nft", "delete", "table", "inet", "miniupnpd")
	})
	ready := "HTTP listening on port"
	if o.NATPMP {
		ready = "Listening for NAT-PMP/PCP traffic"
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(m.Log)
		if strings.Contains(string(b), ready) {
			if !strings.Contains(string(b), "Port forwarding is now enabled") {
				t.Fatalf("miniupnpd did not enable port forwarding (STUN failed?):\n%s", b)
			}
			return m
		}
		select {
		case <-exited:
			t.Fatalf("miniupnpd exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("miniupnpd not ready after 10 s:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Output returns what miniupnpd has logged so far (for failure messages).
func (m *MiniUPnPd) Output() string {
	b, _ := os.ReadFile(m.Log)
	return string(b)
}

// startSTUN serves STUN binding requests in the internet namespace on
// InternetWAN and InternetPhone, each on ports p and p+1, answering from
// the address and port a CHANGE-REQUEST asks for. It returns p.
func (h *Home) startSTUN(t testing.TB) int {
	t.Helper()
	const port = 3478
	ips := []netip.Addr{h.InternetWAN, h.InternetPhone}
	var conns [2][2]*net.UDPConn
	err := h.Internet.Run(func() error {
		for i, ip := range ips {
			for j := range 2 {
				c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port+j))))
				if err != nil {
					return err
				}
				conns[i][j] = c
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("STUN server: %v", err)
	}
	for i := range 2 {
		for j := range 2 {
			c := conns[i][j]
			t.Cleanup(func() { c.Close() })
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := c.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					ci, cj, resp, ok := stunAnswer(buf[:n], from)
					if !ok {
						continue
					}
					conns[i^ci][j^cj].WriteToUDPAddrPort(resp, from)
				}
			}()
		}
	}
	return port
}

// stunAnswer answers a binding request from "from" with its address as
// MAPPED-ADDRESS and XOR-MAPPED-ADDRESS; ci and cj are 1 when the request's
// CHANGE-REQUEST asks for another address and port.
func stunAnswer(req []byte, from netip.AddrPort) (ci, cj int, resp []byte, ok bool) {
	const cookie = 0x2112a442
	if len(req) < 20 || binary.BigEndian.Uint16(req) != 0x0001 || !from.Addr().Unmap().Is4() {
		return 0, 0, nil, false
	}
	for off := 20; off+4 <= len(req); {
		typ := binary.BigEndian.Uint16(req[off:])
		l := int(binary.BigEndian.Uint16(req[off+2:]))
		if typ == 0x0003 && l == 4 && off+8 <= len(req) {
			f := req[off+7]
			if f&0x04 != 0 {
				ci = 1
			}
			if f&0x02 != 0 {
				cj = 1
			}
		}
		off += 4 + (l+3)&^3
	}
	a := from.Addr().Unmap().As4()
	p := from.Port()
	resp = make([]byte, 20, 44)
	binary.BigEndian.PutUint16(resp, 0x0101)
	copy(resp[4:20], req[4:20])
	resp = append(resp, 0x00, 0x01, 0, 8, 0, 1, byte(p>>8), byte(p))
	resp = append(resp, a[:]...)
	xp := p ^ uint16(cookie>>16)
	resp = append(resp, 0x00, 0x20, 0, 8, 0, 1, byte(xp>>8), byte(xp))
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], cookie)
	for k := range 4 {
		resp = append(resp, a[k]^c[k])
	}
	binary.BigEndian.PutUint16(resp[2:], uint16(len(resp)-20))
	return ci, cj, resp, true
}
