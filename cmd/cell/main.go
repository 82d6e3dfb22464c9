// Command cell is the cell's daemon: it opens the database, starts every part of the
// cell and serves the API until SIGTERM or SIGINT, then lets in-flight requests finish
// and closes the database.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/storage"
	"github.com/pic-cell/cell/ui"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
}

// flags are the daemon's settings; each is also read from CELL_<NAME> (upper case,
// '-' as '_'), and a flag on the command line wins over the environment.
type flags struct {
	data     string
	listen   string
	front    string // the front's listeners, "https[,http]" ("": none; front.go)
	logLevel string
	wgMode   string // tun|netstack (network.go)
	wan      string
	// setupCodeFile holds the wizard's one-time setup code ("": DATA/setup-code; setupcode.go).
	setupCodeFile string
	// containerd is its socket ("": the default one if it is there; "none": no services);
	// images the folder of the bundled OCI archives (services.go).
	containerd string
	images     string
	cgroup     string // the cgroup the containers get theirs under
	// portMap says whether the cell may ask the home router for its port
	// (auto|on|off, outside.go); timeCheck whether it checks its clock
	// against the config's NTP servers.
	portMap   string
	timeCheck bool
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("cell", flag.ContinueOnError)
	fs.StringVar(&f.data, "data", "./var", "the directory that holds all state (cell.db, identity, logs)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:3000", "the API's address")
	fs.StringVar(&f.front, "front", "", "the front's (Caddy's) listeners, HTTPS then plain HTTP: \":443,:80\" on the appliance; empty: no front")
	fs.StringVar(&f.logLevel, "log-level", "info", "the starting log level of every component: debug, info, warn, error")
	fs.StringVar(&f.wgMode, "wg-mode", "netstack", "WireGuard: tun (a TUN device, nftables and routes; needs root) or netstack (userspace, leaves the host alone)")
	fs.StringVar(&f.wan, "wan", "", "the WAN interface peers reach the internet through (default: the config's wan_interface, else the default route's)")
	fs.StringVar(&f.containerd, "containerd", "", "containerd's socket, for the service containers (default: "+DefaultContainerd+" when it exists; none: no services)")
	fs.StringVar(&f.cgroup, "cgroup-parent", "/pic", "the cgroup under which each service container gets its own (<parent>/<id>)")
	fs.StringVar(&f.images, "images", "", "the folder of the services' OCI archives (default: "+DefaultImages+" when it exists, else ./images/out)")
	fs.StringVar(&f.portMap, "port-map", "auto", "ask the home router to forward the WireGuard port (UPnP, NAT-PMP, PCP) when the config allows: on, off, or auto (on in tun mode)")
	fs.BoolVar(&f.timeCheck, "time-check", true, "check the clock against the config's NTP servers (false: the ntp part reports the kernel's word alone)")
	fs.StringVar(&f.setupCodeFile, "setup-code-file", "", "the file with the setup code the wizard asks for until setup is complete (default: DATA/setup-code, made with a new code if absent)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		env := "CELL_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !set[fl.Name] && err == nil {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return f, err
}

// ownTCPPorts are the TCP ports the daemon listens on: the API's and the
// front's. No port forward may take one (cell/peers).
func ownTCPPorts(listen string, fp *frontPart) []int {
	addrs := []string{listen}
	if fp != nil {
		addrs = append(addrs, fp.listeners()...)
	}
	ports := []int{}
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				ports = append(ports, n)
			}
		}
	}
	return ports
}

func run(args []string) error {
	f, err := parseFlags(args)
	if err != nil {
		return err
	}
	level, err := logs.ParseLevel(f.logLevel)
	if err != nil {
		return err
	}
	book, err := logs.Open(logs.Options{Dir: filepath.Join(f.data, "logs"), Echo: os.Stderr, Level: level})
	if err != nil {
		return err
	}
	defer book.Close()
	for _, c := range []string{"api", "storage", "audit", "cell", "network", "dns", "ntp", "services"} {
		book.Level(c) // listed by GET /api/logs/verbosity from the start
	}
	slog := book.Logger("cell")

	db, err := storage.Open(f.data)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return err
	}
	v, _ := db.SchemaVersion()
	book.Logger("storage").Info("database open", "path", db.Path(), "schema", v)

	// The DNS server lives as long as run: it answers on the tunnel
	// addresses, which the reconcile loop opens for it once it builds them.
	resolver := dns.New(dns.Options{Logger: book.Logger("dns")})
	defer resolver.Shutdown()
	mapPorts, err := portMapOn(f.portMap, f.wgMode)
	if err != nil {
		return err
	}
	ts := &tunnelServices{dns: resolver, time: newTimeServer(book), log: book.Logger("network")}
	fp, err := newFrontPart(f.front, f.data)
	if err != nil {
		return err
	}
	netw, err := network(f.wgMode, f.wan, f.listen, book, ts, fp)
	if err != nil {
		return err
	}
	data, err := filepath.Abs(f.data)
	if err != nil {
		return err
	}
	rt := connectRuntime(containerdSocket(f.containerd), f.cgroup, book.Logger("services"))
	if rt != nil {
		defer rt.Close()
	}
	svcRuntime := attachServices(&netw, rt, data, imagesDir(f.images), book) // before netw is copied
	c, err := cell.New(cell.Options{DB: db, Logs: book, Network: netw, OwnTCPPorts: ownTCPPorts(f.listen, fp),
		Runtime: svcRuntime, DataDir: data, Outside: outsideParts(f.wan, mapPorts, f.listen, book), TimeChecks: f.timeCheck})
	if err != nil {
		return err
	}
	ts.time.setState(c.NTP.State) // what the SNTP server on the tunnel answers
	// First contact: the wizard's changes need the setup code (setupcode.go).
	if err := setupGate(c.Setup, f.setupCodeFile, f.data, slog); err != nil {
		return err
	}
	// The loops run until c.Close, which the deferred calls reach after the
	// API has drained and before the database closes.
	c.Start(context.Background())
	defer c.Close()
	// The firmware's update outcomes are audited until run returns (before the
	// database closes).
	fwCtx, fwStop := context.WithCancel(context.Background())
	defer fwStop()
	api := httpapi.New(httpapi.Deps{Version: cell.Version, Setup: c.Setup, Auth: c.Accounts, Settings: c.Settings,
		Health: c.Health, Audit: c.Audit, Logs: book, Peers: c.Peers, Routing: c.Peers, DNS: c.DNS, Vault: c.Vault, Caddy: fp.api(),
		Services: c.Services, Network: c.Outside, Time: c.NTP}).
		With(httpapi.SystemRoutes(firmware(fwCtx, c, book.Logger("firmware"))))
	api.Space = db.CheckSpace // a nearly full data partition refuses changes (507)
	api.UI = ui.Handler()     // the admin and the peer portal, at /
	handler := api.Handler()
	ts.setAPI(handler)
	// The front (front.go): the API's socket, then Caddy, which the loop
	// configures; it stops before the API drains.
	stopFront, err := fp.start(c, handler, book.Logger("front"))
	if err != nil {
		return err
	}
	defer stopFront()
	// The first build of the network from the database, before the API answers:
	// a part that fails leaves the cell degraded (the health says why), never down.
	settleCtx, settleStop := context.WithTimeout(context.Background(), 2*time.Minute)
	if err := c.Settle(settleCtx); err != nil {
		slog.Error("network: starting degraded", "err", err)
	}
	settleStop()

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	ln = limitPerSource(ln, MaxConnsPerSource, book.Logger("api"))
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// The outer bound; each route sets its body's own (httpapi.DefaultBodyTime,
		// LargeBodyTime for the update bundle).
		ReadTimeout:    httpapi.LargeBodyTime,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	slog.Info("serving", "listen", ln.Addr().String(), "version", cell.Version)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop() // a second SIGTERM or Ctrl-C now ends the process at once
	slog.Info("shutting down: letting requests finish")
	stopFront()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("shutdown", "err", err)
	}
	c.Close()
	slog.Info("stopped")
	return nil
}
