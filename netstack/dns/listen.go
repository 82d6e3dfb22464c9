package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenKernel opens the UDP and TCP sockets of ap in the kernel (tun mode).
// It binds with IP_FREEBIND: the tunnel's IPv6 address may still be in
// duplicate address detection when the cell starts serving, and the server
// must not wait for it.
func ListenKernel(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	lc := freebind(ap)
	pc, err := lc.ListenPacket(context.Background(), "udp", ap.String())
	if err != nil {
		return nil, nil, err
	}
	ln, err := lc.Listen(context.Background(), "tcp", ap.String())
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return pc, ln, nil
}

// ListenKernelUDP is ListenKernel's UDP half alone, for the cell's other
// UDP services on its tunnel addresses (SNTP).
func ListenKernelUDP(ap netip.AddrPort) (net.PacketConn, error) {
	lc := freebind(ap)
	return lc.ListenPacket(context.Background(), "udp", ap.String())
}

// freebind is a ListenConfig that may bind an address the interface does not
// have yet (the tunnel's, while the device comes up).
func freebind(ap netip.AddrPort) net.ListenConfig {
	return net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if ap.Addr().Is4() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
			}
		})
		return errors.Join(err, serr)
	}}
}

// ResolvConf reads the nameservers of a resolv.conf file's text (the
// uplink's resolvers: gokrazy's DHCP client writes them there).
func ResolvConf(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsUnspecified() {
				out = append(out, a.WithZone("").String())
			}
		}
	}
	return out
}
