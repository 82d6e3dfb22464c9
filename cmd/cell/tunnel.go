package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// tunnelServices are the cell's own services on its tunnel addresses: the DNS
// server in both modes, and in netstack mode the API too (in tun mode the
// kernel's API socket already answers on every address the firewall lets in).
// The reconcile loop calls listen once the device has its addresses.
type tunnelServices struct {
	dns     *dns.Server
	time    *timeServer // SNTP (UDP 123); nil: none
	apiPort uint16      // the API's port, served inside the stack in netstack mode
	log     *slog.Logger
	// api is the API's handler; set once it exists (the loop may open the
	// device before main has built it: until then the stack answers 503).
	api atomic.Pointer[http.Handler]
}

func (t *tunnelServices) setAPI(h http.Handler) { t.api.Store(&h) }

// attach gives n the DNS server and the tunnel listeners (none without a server).
func (t *tunnelServices) attach(n reconcile.Network) reconcile.Network {
	if t.dns != nil {
		n.DNS, n.Upstreams, n.Listen = t.dns, upstreams, t.listen
	}
	return n
}

func (t *tunnelServices) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := t.api.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "starting", http.StatusServiceUnavailable)
}

// upstreams are the uplink's resolvers, read at every rebuild (DHCP may have
// changed them).
func upstreams() []string {
	raw, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	return dns.ResolvConf(string(raw))
}

// listen opens DNS (UDP and TCP 53) and SNTP (UDP 123) on every tunnel
// address, and in netstack mode the API; the closer it returns closes them all.
func (t *tunnelServices) listen(dev wireguard.Device, addrs []netip.Addr) (io.Closer, error) {
	var us wireguard.Userspace
	if u, ok := dev.(interface{ Userspace() wireguard.Userspace }); ok {
		us = u.Userspace()
	}
	c := &closers{}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, 53)
		var pc net.PacketConn
		var ln net.Listener
		var err error
		if us != nil {
			if pc, err = us.ListenUDP(ap); err == nil {
				if ln, err = us.ListenTCP(ap); err != nil {
					pc.Close()
				}
			}
		} else {
			pc, ln, err = dns.ListenKernel(ap)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		c.add(pc, ln)
		if err := t.dns.Start(pc, ln); err != nil {
			c.Close()
			return nil, err
		}
		if t.time != nil {
			tp := netip.AddrPortFrom(a, 123)
			var tpc net.PacketConn
			if us != nil {
				tpc, err = us.ListenUDP(tp)
			} else {
				tpc, err = dns.ListenKernelUDP(tp)
			}
			if err != nil {
				c.Close()
				return nil, err
			}
			c.add(tpc)
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				if err := t.time.srv.Serve(tpc); err != nil {
					t.log.Debug("SNTP on the tunnel address stopped", "err", err)
				}
			}()
		}
		if us != nil && t.apiPort != 0 {
			aln, err := us.ListenTCP(netip.AddrPortFrom(a, t.apiPort))
			if err != nil {
				c.Close()
				return nil, err
			}
			srv := &http.Server{Handler: t, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
			c.add(srv)
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				if err := srv.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					t.log.Debug("API on the tunnel address stopped", "err", err)
				}
			}()
		}
	}
	t.log.Info("serving on the tunnel addresses", "addresses", addrs, "api_in_stack", us != nil && t.apiPort != 0)
	return c, nil
}

// closers closes what a listen opened, and waits for the API servers.
type closers struct {
	list []io.Closer
	wg   sync.WaitGroup
}

func (c *closers) add(cs ...io.Closer) { c.list = append(c.list, cs...) }

func (c *closers) Close() error {
	var errs []error
	for _, x := range c.list {
		errs = append(errs, x.Close())
	}
	c.wg.Wait()
	return errors.Join(errs...)
}
