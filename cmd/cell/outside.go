package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/outside"
	"github.com/pic-cell/cell/netstack/clock"
	"github.com/pic-cell/cell/netstack/echo"
	"github.com/pic-cell/cell/netstack/portmap"
	"github.com/pic-cell/cell/netstack/probe"
	"github.com/pic-cell/cell/netstack/uplink"
)

// portMapOn reads -port-map: "on", "off", or "auto" (on in tun mode, the
// appliance's; off in netstack mode, where a developer's laptop should not ask
// the home router to forward a port to it unasked).
func portMapOn(flag, mode string) (bool, error) {
	switch flag {
	case "on":
		return true, nil
	case "off":
		return false, nil
	case "auto", "":
		return mode == "tun", nil
	}
	return false, fmt.Errorf("-port-map must be auto, on or off, not %q", flag)
}

// outsideParts are the kernel and daemon parts of cell/outside: the uplink
// (rtnetlink), the port mapper (the home router), the diagnostics and the
// reachability test's echo client.
func outsideParts(wan string, mapPorts bool, listen string, book *logs.Book) outside.Options {
	log := book.Logger("network")
	client := &http.Client{Timeout: 15 * time.Second}
	o := outside.Options{
		WAN:         wan,
		ReadUplink:  uplink.Read,
		WatchUplink: func(ctx context.Context) <-chan struct{} { return uplink.Watch(ctx, log) },
		Tester:      probe.New(probe.Options{Forbidden: ownAPI(listen)}),
		Echo: outside.Echo{Ask: func(ctx context.Context, url, target string, nonce [16]byte) error {
			return echo.Ask(ctx, client, url, target, nonce)
		}},
	}
	if mapPorts {
		o.NewPortMapper = func(port uint16) outside.PortMapper {
			return portmap.NewKeeper(portmap.KeeperOptions{Port: port, Log: book.Logger("network").With("part", "portmap")})
		}
	}
	return o
}

// ownAPI refuses the API's own address and port to the diagnostics (and
// every address on the API's port when it listens on all of them).
func ownAPI(listen string) func(netip.AddrPort) bool {
	host, p, err := net.SplitHostPort(listen)
	port, perr := strconv.ParseUint(p, 10, 16)
	if err != nil || perr != nil {
		return nil
	}
	addr, aerr := netip.ParseAddr(host)
	return func(ap netip.AddrPort) bool {
		if ap.Port() != uint16(port) {
			return false
		}
		return aerr != nil || addr.IsUnspecified() || addr == ap.Addr()
	}
}

// timeServer is the SNTP server on the tunnel addresses; its state comes
// from the time capability once the cell exists.
type timeServer struct {
	state atomic.Pointer[func() clock.Status]
	srv   clock.Server
}

func newTimeServer(book *logs.Book) *timeServer {
	t := &timeServer{}
	t.srv = clock.Server{Log: book.Logger("ntp"), State: func() clock.Status {
		if f := t.state.Load(); f != nil {
			return (*f)()
		}
		return clock.Status{}
	}}
	return t
}

func (t *timeServer) setState(f func() clock.Status) { t.state.Store(&f) }
