package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/plan"
	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/netstack/front"
)

// frontPart is the front as the daemon wires it: -front's listeners, the
// API's unix socket (DATA/run/api.sock, 0600: the front is its only client),
// Caddy's storage (DATA/caddy) and the vault's root, around the names and
// addresses the reconcile loop builds (reconcile.Front). nil: no front.
type frontPart struct {
	https, http string // listen addresses; http may be ""
	socket      string
	storage     string

	mu    sync.Mutex
	f     *front.Front
	root  []byte
	stops []func()
}

// newFrontPart reads -front: "https[,http]" ("": no front).
func newFrontPart(spec, data string) (*frontPart, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	parts := strings.Split(spec, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("-front %q: at most two listeners, HTTPS then plain HTTP", spec)
	}
	for _, p := range parts {
		if _, port, err := net.SplitHostPort(strings.TrimSpace(p)); err != nil || port == "" {
			return nil, fmt.Errorf("-front %q: %q is not host:port", spec, p)
		}
	}
	abs, err := filepath.Abs(data)
	if err != nil {
		return nil, err
	}
	fp := &frontPart{https: strings.TrimSpace(parts[0]), socket: filepath.Join(abs, "run", "api.sock"), storage: filepath.Join(abs, "caddy")}
	if len(parts) == 2 {
		fp.http = strings.TrimSpace(parts[1])
	}
	return fp, nil
}

// listeners are the front's listen addresses.
func (p *frontPart) listeners() []string {
	if p.http == "" {
		return []string{p.https}
	}
	return []string{p.https, p.http}
}

// ports are the front's ports, for the firewall.
func (p *frontPart) ports() []uint16 {
	var out []uint16
	for _, l := range p.listeners() {
		_, ps, _ := net.SplitHostPort(l)
		if n, err := strconv.ParseUint(ps, 10, 16); err == nil && !slices.Contains(out, uint16(n)) {
			out = append(out, uint16(n))
		}
	}
	return out
}

// loopback reports whether the front listens on loopback only (make run).
func (p *frontPart) loopback() bool {
	host, _, _ := net.SplitHostPort(p.https)
	ip, err := netip.ParseAddr(host)
	return host == "localhost" || err == nil && ip.IsLoopback()
}

// attach gives the loop the front, and in tun mode opens its ports: from
// the tunnel always, and from everywhere (the LAN, where the admin's
// browser is) unless it listens on loopback.
func (p *frontPart) attach(n *reconcile.Network) {
	if p == nil {
		return
	}
	n.Front = p
	n.HostAddrs = p.hostAddrs
	if p.loopback() {
		n.FrontNames = []string{"localhost"}
	}
	if n.Firewall != nil {
		n.LocalTCP = append(slices.Clip(n.LocalTCP), p.ports()...)
		if !p.loopback() {
			n.Firewall = openTCP{n.Firewall, p.ports()}
		}
	}
}

// hostAddrs are the addresses the front answers on besides the tunnel's: the
// one it listens on, else (all addresses) the uplink's, else every
// interface's but loopback, link-local and the tunnel's own.
func (p *frontPart) hostAddrs(wan string) []netip.Addr {
	host, _, _ := net.SplitHostPort(p.https)
	if host == "localhost" {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
		return []netip.Addr{ip.Unmap()}
	}
	var ifaces []net.Interface
	if wan != "" {
		if i, err := net.InterfaceByName(wan); err == nil {
			ifaces = []net.Interface{*i}
		}
	} else if all, err := net.Interfaces(); err == nil {
		for _, i := range all {
			if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 && i.Name != "wg0" {
				ifaces = append(ifaces, i)
			}
		}
	}
	var out []netip.Addr
	for _, i := range ifaces {
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr().Unmap()
			if ip.IsGlobalUnicast() && !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
	}
	return out
}

// Set is reconcile.Front: the loop's names and addresses with the daemon's settings.
func (p *frontPart) Set(pf plan.Front) error {
	p.mu.Lock()
	f, root := p.f, p.root
	p.mu.Unlock()
	if f == nil {
		return errors.New("the front is starting")
	}
	cfg := front.Config{HTTPS: []string{p.https}, Names: pf.Names, Addresses: pf.Addresses,
		APISocket: p.socket, RootPEM: root, StorageDir: p.storage}
	if p.http != "" {
		cfg.HTTP = []string{p.http}
	}
	if a := pf.ACME; a != nil {
		cfg.ACME = &front.ACME{Names: a.Names, Email: a.Email, Directory: a.Directory, RootsPEM: []byte(a.RootPEM)}
	}
	for _, s := range pf.Sites {
		cfg.Sites = append(cfg.Sites, front.Site{Host: s.Host, Upstream: s.Upstream})
	}
	return f.Set(cfg)
}

// start serves the API on its unix socket for the front, starts the front
// with the vault as its signer and has the loop configure it. The function it
// returns stops both (it may be called twice).
func (p *frontPart) start(c *cell.Cell, api http.Handler, log *slog.Logger) (func(), error) {
	if p == nil {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(p.socket), 0o700); err != nil {
		return nil, err
	}
	os.Remove(p.socket) // a socket left by a cell that was killed
	ln, err := net.Listen("unix", p.socket)
	if err != nil {
		return nil, fmt.Errorf("the API's socket for the front: %w", err)
	}
	if err := os.Chmod(p.socket, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{Handler: api, ConnContext: httpapi.FrontConnContext,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the API's socket for the front stopped", "err", err)
		}
	}()
	f, err := front.New(front.Options{Signer: c.Vault, Log: log})
	if err != nil {
		srv.Close()
		return nil, err
	}
	p.mu.Lock()
	p.f, p.root = f, c.Vault.RootPEM()
	p.mu.Unlock()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := f.Close(); err != nil {
				log.Error("stopping the front", "err", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
	}
	// The loop may have built before the front existed: build again.
	if c.Network != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Network.Rebuild(ctx); err != nil {
			log.Warn("the first build with the front", "err", err)
		}
	}
	return stop, nil
}

// Certificates and Renew are the caddy area's view of the front (httpapi.Caddy).
func (p *frontPart) front() *front.Front {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.f
}

// api is the caddy area's view of the front (nil without one).
func (p *frontPart) api() httpapi.Caddy {
	if p == nil {
		return nil
	}
	return frontAPI{p}
}

type frontAPI struct{ p *frontPart }

func (a frontAPI) Certificates() []httpapi.CertStatus {
	f := a.p.front()
	if f == nil {
		return nil
	}
	var out []httpapi.CertStatus
	for _, c := range f.Certificates() {
		st := httpapi.CertStatus{Name: c.Name, Issuer: c.Issuer, DaysLeft: c.DaysLeft, LastError: c.LastError}
		if !c.NotAfter.IsZero() {
			na := c.NotAfter
			st.NotAfter = &na
		}
		out = append(out, st)
	}
	return out
}

func (a frontAPI) Renew(ctx context.Context) error {
	f := a.p.front()
	if f == nil {
		return errors.New("the front is starting")
	}
	return f.Renew(ctx)
}
