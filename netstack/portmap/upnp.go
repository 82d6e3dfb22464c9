package portmap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/httpu"
	"github.com/huin/goupnp/soap"
	"github.com/huin/goupnp/ssdp"
)

// igd is what the three WAN connection services have in common
// (WANIPConnection:1 and :2, WANPPPConnection:1).
type igd interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string, internalPort uint16, internalClient string, enabled bool, description string, leaseDuration uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

var (
	_ igd = (*internetgateway2.WANIPConnection1)(nil)
	_ igd = (*internetgateway2.WANIPConnection2)(nil)
	_ igd = (*internetgateway2.WANPPPConnection1)(nil)
)

// upnp is a UPnP IGD client for one WAN connection service of the gateway.
type upnp struct {
	svc     igd
	service string // its URN, for logs
	local   netip.Addr
}

// Description names the cell's mappings in the router's list.
const Description = "Personal Internet Cell WireGuard"

func (c *upnp) Protocol() Protocol { return UPnP }

func (c *upnp) String() string { return "upnp " + c.service }

func (c *upnp) ExternalAddr(ctx context.Context) (netip.Addr, error) {
	s, err := c.svc.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, upnpError("ask the public address", err)
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("upnp: the router reports no usable public address (%q)", s)
	}
	return a.Unmap(), nil
}

func (c *upnp) Map(ctx context.Context, internal netip.AddrPort, external uint16, lifetime time.Duration) (Mapping, error) {
	if !internal.Addr().IsValid() {
		internal = netip.AddrPortFrom(c.local, internal.Port())
	}
	secs := seconds(lifetime)
	err := c.svc.AddPortMappingCtx(ctx, "", external, "UDP", internal.Port(), internal.Addr().String(), true, Description, secs)
	var se *soap.SOAPFaultError
	if err != nil && secs != 0 && errors.As(err, &se) && strings.Contains(string(se.Detail.Raw), "725") {
		// 725 OnlyPermanentLeasesSupported: IGDv1 routers that know no
		// lease; the mapping lasts until the Keeper deletes it.
		secs = 0
		err = c.svc.AddPortMappingCtx(ctx, "", external, "UDP", internal.Port(), internal.Addr().String(), true, Description, 0)
	}
	if err != nil {
		return Mapping{}, upnpError("map the port", err)
	}
	ext, err := c.ExternalAddr(ctx)
	if err != nil {
		return Mapping{}, err
	}
	return newMapping(UPnP, internal, netip.AddrPortFrom(ext, external), secs), nil
}

func (c *upnp) Unmap(ctx context.Context, m Mapping) error {
	if err := c.svc.DeletePortMappingCtx(ctx, "", m.External.Port(), "UDP"); err != nil {
		return upnpError("delete the mapping", err)
	}
	return nil
}

func upnpError(what string, err error) error {
	var se *soap.SOAPFaultError
	if errors.As(err, &se) {
		return fmt.Errorf("upnp: the router refused to %s: %s %s", what, se.FaultString, strings.TrimSpace(stripTags(string(se.Detail.Raw))))
	}
	return fmt.Errorf("upnp: cannot %s: %w", what, err)
}

// stripTags keeps the text of a SOAP fault's detail (the UPnP error code
// and description) without its XML.
func stripTags(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '<':
			in = true
			b.WriteByte(' ')
		case r == '>':
			in = false
		case !in:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// The search targets: the IGD device types v1 and v2.
var igdTargets = []string{
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
}

// discoverUPnP searches with SSDP from local and returns a client for each
// WAN connection service of the gateway's IGD, v2 before v1.
func discoverUPnP(ctx context.Context, gateway, local netip.Addr) ([]Client, error) {
	if !local.IsValid() {
		return nil, errors.New("upnp: no local address to search from")
	}
	// SSDP answers arrive within the MX seconds the search names (1, the
	// least); the search reads until its deadline, so that is bounded here
	// and the rest of ctx is left for fetching the device description.
	sctx, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	defer cancel()
	var (
		mu   sync.Mutex
		locs = map[string]*url.URL{}
		errs []error
		wg   sync.WaitGroup
	)
	// The search goes to the SSDP group and, the same, to the gateway itself:
	// the group's answers come from the gateway's own address, which a
	// stateful firewall on the cell (tun mode's input chain) does not take
	// for a reply and drops; the gateway's answer to a datagram sent to it is
	// one. miniupnpd and most IGDs answer a search sent straight to them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		found, err := unicastSearch(sctx, gateway, local)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		for _, loc := range found {
			if h, err := netip.ParseAddr(loc.Hostname()); err == nil && h.Unmap() == gateway {
				locs[loc.String()] = loc
			}
		}
	}()
	for _, st := range igdTargets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc, err := httpu.NewHTTPUClientAddr(local.String())
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer hc.Close()
			resps, err := ssdp.RawSearch(sctx, hc, st, 2)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for _, r := range resps {
				loc, err := r.Location()
				if err != nil {
					continue
				}
				// Only the gateway can forward the gateway's port.
				if h, err := netip.ParseAddr(loc.Hostname()); err != nil || h.Unmap() != gateway {
					continue
				}
				locs[loc.String()] = loc
			}
		}()
	}
	wg.Wait()
	if len(locs) == 0 {
		if len(errs) > 0 {
			return nil, fmt.Errorf("upnp: search: %w", errors.Join(errs...))
		}
		return nil, fmt.Errorf("upnp: no internet gateway device at %s answered", gateway)
	}
	var out []Client
	seen := map[string]bool{}
	for _, loc := range locs {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		root, err := goupnp.DeviceByURLCtx(dctx, loc)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add := func(svc igd, urn string, endpoint string) {
			if seen[endpoint] {
				return
			}
			seen[endpoint] = true
			out = append(out, &upnp{svc: svc, service: urn, local: local})
		}
		if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
			for _, c := range cs {
				add(c, internetgateway2.URN_WANIPConnection_2, c.Service.ControlURL.Str)
			}
		}
		if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
			for _, c := range cs {
				add(c, internetgateway2.URN_WANIPConnection_1, c.Service.ControlURL.Str)
			}
		}
		if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
			for _, c := range cs {
				add(c, internetgateway2.URN_WANPPPConnection_1, c.Service.ControlURL.Str)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("upnp: the gateway's device has no WAN connection service: %w", errors.Join(errs...))
	}
	return out, nil
}

// searchResend is how often unicastSearch sends its searches again while
// no answer has come.
var searchResend = 300 * time.Millisecond

// unicastSearch sends one SSDP M-SEARCH for each IGD type to the gateway's
// port 1900 from one socket, again every searchResend until an answer
// comes, and reads the answers' LOCATIONs until ctx ends.
//
// The resending is for a firewall that comes up while the search is out:
// conntrack runs in a network namespace only once a ruleset uses it, so
// a search sent just before the cell's first nftables table is loaded
// leaves no conntrack entry, and the router's answer (which miniupnpd
// delays by up to the MX second) then arrives as a new flow and is dropped.
// The same search sent again from the same socket makes the entry, and
// every answer from the gateway's port 1900 matches it.
func unicastSearch(ctx context.Context, gateway, local netip.Addr) ([]*url.URL, error) {
	var d net.Dialer
	if local.IsValid() {
		d.LocalAddr = &net.UDPAddr{IP: local.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "udp4", netip.AddrPortFrom(gateway, 1900).String())
	if err != nil {
		return nil, fmt.Errorf("upnp: search at the gateway: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	search := func() error {
		for _, st := range igdTargets {
			req := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: " + st + "\r\n\r\n"
			if _, err := conn.Write([]byte(req)); err != nil {
				return fmt.Errorf("upnp: search at the gateway: %w", err)
			}
		}
		return nil
	}
	if err := search(); err != nil {
		return nil, err
	}
	answered := make(chan struct{})
	var once sync.Once
	resent := make(chan struct{})
	go func() {
		defer close(resent)
		t := time.NewTicker(searchResend)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-answered:
				return
			case <-t.C:
				if search() != nil {
					return // the reading loop sees the socket's error
				}
			}
		}
	}()
	defer func() { once.Do(func() { close(answered) }); <-resent }()
	var out []*url.URL
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return out, nil
			}
			return out, fmt.Errorf("upnp: search at the gateway: %w", err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:n])), nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if loc, err := resp.Location(); err == nil && (loc.Scheme == "http" || loc.Scheme == "https") {
			out = append(out, loc)
			once.Do(func() { close(answered) })
		}
	}
}
