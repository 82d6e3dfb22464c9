package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// network builds the kernel side of the cell from -wg-mode and -wan: in tun
// mode a TUN device with the UAPI socket, nftables and rtnetlink (root); in
// netstack mode only a userspace device, and the host is left alone.
func network(mode, wan, listen string, book *logs.Book) (reconcile.Network, error) {
	wgLog := book.Logger("wireguard")
	switch mode {
	case "netstack":
		return reconcile.Network{Mode: mode, Interface: "wg0", Open: func(addrs []netip.Addr) (wireguard.Device, error) {
			return wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: addrs, Logger: wgLog})
		}}, nil
	case "tun":
	default:
		return reconcile.Network{}, fmt.Errorf("-wg-mode must be tun or netstack, not %q", mode)
	}
	fw, err := firewall.New(firewall.Options{Logger: book.Logger("firewall")})
	if err != nil {
		return reconcile.Network{}, err
	}
	l, err := links.New(links.Options{Logger: book.Logger("links")})
	if err != nil {
		fw.Close()
		return reconcile.Network{}, err
	}
	n := reconcile.Network{Mode: mode, Interface: "wg0", Firewall: fw, Links: l, WAN: wan, DefaultWAN: l.DefaultRouteInterface, LANOf: l.LANPrefixes,
		LocalUDP: []uint16{53}, LocalTCP: []uint16{53}}
	if _, p, err := net.SplitHostPort(listen); err == nil {
		if port, err := strconv.ParseUint(p, 10, 16); err == nil {
			n.LocalTCP = append(n.LocalTCP, uint16(port))
		}
	}
	n.Open = func(addrs []netip.Addr) (wireguard.Device, error) {
		return wireguard.Open(wireguard.Options{Mode: wireguard.ModeTUN, Name: "wg0", UAPI: true, Logger: wgLog})
	}
	return n, nil
}
