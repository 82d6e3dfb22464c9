package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/netstack/firewall"
	"github.com/pic-cell/cell/netstack/links"
	"github.com/pic-cell/cell/netstack/uplink"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// network builds the kernel side of the cell from -wg-mode and -wan: in tun
// mode a TUN device with the UAPI socket, nftables and rtnetlink (root); in
// netstack mode only a userspace device, and the host is left alone. Both serve
// DNS (and netstack mode the API) on the tunnel addresses through ts.
func network(mode, wan, listen string, book *logs.Book, ts *tunnelServices, fp *frontPart) (reconcile.Network, error) {
	wgLog := book.Logger("wireguard")
	switch mode {
	case "netstack":
		if _, p, err := net.SplitHostPort(listen); err == nil {
			if port, err := strconv.ParseUint(p, 10, 16); err == nil {
				ts.apiPort = uint16(port)
			}
		}
		n := reconcile.Network{Mode: mode, Interface: "wg0",
			Open: func(addrs []netip.Addr) (wireguard.Device, error) {
				return wireguard.Open(wireguard.Options{Mode: wireguard.ModeNetstack, Addresses: addrs, Logger: wgLog})
			}}
		fp.attach(&n)
		n.WatchUplink = watchUplink(book)
		return ts.attach(n), nil
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
		LocalUDP: []uint16{53, 123}, LocalTCP: []uint16{53}} // DNS, SNTP
	if host, p, err := net.SplitHostPort(listen); err == nil {
		if port, err := strconv.ParseUint(p, 10, 16); err == nil {
			n.LocalTCP = append(n.LocalTCP, uint16(port))
			n.Firewall = openAPI(fw, host, uint16(port))
		}
	}
	n.Open = func(addrs []netip.Addr) (wireguard.Device, error) {
		return wireguard.Open(wireguard.Options{Mode: wireguard.ModeTUN, Name: "wg0", UAPI: true, Logger: wgLog})
	}
	fp.attach(&n)
	n.WatchUplink = watchUplink(book)
	return ts.attach(n), nil
}

// watchUplink hears rtnetlink's address, route and link changes, for the
// loop to take a new uplink up at once.
func watchUplink(book *logs.Book) func(ctx context.Context) <-chan struct{} {
	log := book.Logger("network")
	return func(ctx context.Context) <-chan struct{} { return uplink.Watch(ctx, log) }
}

// openAPI returns fw, made to open the API's port from everywhere
// (firewall.Ruleset.WANTCP) unless the API listens on loopback only: on the
// appliance (-listen 0.0.0.0:80) the admin UI is for the LAN, which tun mode's
// input chain, dropping what it does not know, would otherwise shut out once
// the cell is set up. A development API on 127.0.0.1:3000 stays closed to all
// but lo and the tunnel. The wrapper is here because reconcile.Network has no
// field for such ports.
func openAPI(fw firewall.Firewall, host string, port uint16) firewall.Firewall {
	if ip, err := netip.ParseAddr(host); host == "localhost" || err == nil && ip.IsLoopback() {
		return fw
	}
	return openTCP{fw, []uint16{port}}
}

type openTCP struct {
	firewall.Firewall
	ports []uint16
}

func (f openTCP) Set(rs firewall.Ruleset) error {
	rs.WANTCP = append(slices.Clip(rs.WANTCP), f.ports...)
	return f.Firewall.Set(rs)
}
