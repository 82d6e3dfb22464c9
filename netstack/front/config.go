package front

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is what the front serves and where.
type Config struct {
	// HTTPS are the TLS listeners ("":443", "127.0.0.1:8443"); at least one.
	HTTPS []string
	// HTTP are the plain listeners (":80"): they redirect to https, serve
	// /ca.crt and answer ACME's HTTP-01 challenges. Empty: none.
	HTTP []string
	// Names are the cell's DNS names (its domain; "localhost" on a
	// development host) and Addresses its own addresses (the uplink's, the
	// tunnel's): each gets a certificate.
	Names     []string
	Addresses []netip.Addr
	// APISocket is the absolute path of the API's unix socket, which
	// /api/* and /health are proxied to.
	APISocket string
	// RootPEM is the CA's root certificate, served at /ca.crt.
	RootPEM []byte
	// StorageDir holds Caddy's certificates and keys (DATA/caddy).
	StorageDir string
	// CertTTL is the lifetime of the vault's certificates (0: the vault's default).
	CertTTL time.Duration
	// ACME, when set, asks a public CA first for the names it lists (HTTP-01
	// on the HTTP listener, so one must be on port 80); the vault's issuer
	// stays the fallback.
	ACME *ACME
	// Sites are the service containers the front proxies to: a request for
	// https://<Host>/ goes to Upstream (plain HTTP on the services bridge).
	// Each Host gets a certificate like the names.
	Sites []Site
}

// Site is one service behind the front.
type Site struct {
	Host     string         // "files.home.example.org"
	Upstream netip.AddrPort // the container's address and HTTP port
}

// ACME is a public CA the front tries first for public names.
type ACME struct {
	Names     []string // the public names to ask it for (a subset of Config.Names)
	Email     string   // optional
	Directory string   // "" is Let's Encrypt's production directory
	// RootsPEM are roots to trust for the CA's directory besides the
	// system's (a private ACME CA's, a test CA's). Set writes them to
	// StorageDir/acme-roots.pem, which the config names.
	RootsPEM []byte
}

// acmeRootsFile is where Set writes ACME.RootsPEM.
func (c Config) acmeRootsFile() string { return filepath.Join(c.StorageDir, "acme-roots.pem") }

// Subjects are the names and addresses a certificate is made for, in order.
func (c Config) Subjects() []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, n := range c.Names {
		add(strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	for _, site := range c.Sites {
		add(strings.ToLower(strings.TrimSuffix(site.Host, ".")))
	}
	for _, a := range c.Addresses {
		if a.IsValid() && !a.IsUnspecified() {
			add(a.Unmap().WithZone("").String())
		}
	}
	return out
}

// acmeSubjects are the subjects a public CA is asked for first.
func (c Config) acmeSubjects() []string {
	if c.ACME == nil {
		return nil
	}
	subjects := c.Subjects()
	var out []string
	for _, n := range c.ACME.Names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if slices.Contains(subjects, n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Security headers of every answer (HSTS only over TLS).
var securityHeaders = map[string][]string{
	"Content-Security-Policy": {"default-src 'self'; frame-ancestors 'none'"},
	"X-Frame-Options":         {"DENY"},
	"Referrer-Policy":         {"no-referrer"},
	"X-Content-Type-Options":  {"nosniff"},
}

// HSTS is the Strict-Transport-Security of every answer over TLS.
const HSTS = "max-age=31536000"

// issuerModule and the other module names, as Caddy's JSON names them.
const (
	issuerModule = "pic_vault"
	eventsModule = "pic_front"
	logModule    = "pic_front"
)

// BuildJSON is Caddy's JSON config for cfg; name is the front's registry key
// (the modules find the front's signer and logger by it). It is pure: the
// same cfg gives the same bytes, which Set compares to skip a reload.
func BuildJSON(cfg Config, name string) ([]byte, error) {
	if len(cfg.HTTPS) == 0 {
		return nil, fmt.Errorf("front: no HTTPS listener")
	}
	if !filepath.IsAbs(cfg.APISocket) {
		return nil, fmt.Errorf("front: the API socket %q is not an absolute path", cfg.APISocket)
	}
	if cfg.StorageDir == "" {
		return nil, fmt.Errorf("front: no storage directory")
	}
	if len(cfg.RootPEM) == 0 {
		return nil, fmt.Errorf("front: no CA root to serve at /ca.crt")
	}
	subjects := cfg.Subjects()
	if len(subjects) == 0 {
		return nil, fmt.Errorf("front: no name or address to make a certificate for")
	}
	httpsPort, err := portOf(cfg.HTTPS[0])
	if err != nil {
		return nil, err
	}
	for _, l := range append(slices.Clone(cfg.HTTPS), cfg.HTTP...) {
		if _, err := portOf(l); err != nil {
			return nil, err
		}
	}
	headers := func(tls bool) map[string]any {
		set := map[string][]string{}
		for k, v := range securityHeaders {
			set[k] = v
		}
		if tls {
			set["Strict-Transport-Security"] = []string{HSTS}
		}
		return map[string]any{"handler": "headers", "response": map[string]any{"set": set, "deferred": true}}
	}
	caRoute := map[string]any{
		"match": []any{map[string]any{"method": []string{"GET", "HEAD"}, "path": []string{"/ca.crt"}}},
		"handle": []any{map[string]any{"handler": "static_response", "status_code": 200,
			"headers": map[string][]string{"Content-Type": {"application/x-pem-file"}, "Content-Disposition": {`attachment; filename="ca.crt"`}},
			"body":    string(cfg.RootPEM)}},
		"terminal": true,
	}
	apiRoute := map[string]any{
		"match": []any{map[string]any{"path": []string{"/api/*", "/api", "/health"}}},
		"handle": []any{map[string]any{"handler": "reverse_proxy",
			"upstreams": []any{map[string]any{"dial": "unix/" + cfg.APISocket}}}},
		"terminal": true,
	}
	// A service's site: every path of its host goes to its container, the
	// request body streamed (WebDAV uploads are large: no buffering, no size
	// cap here; the service enforces its quota) and the answer flushed as it
	// comes. The front is the only way in: the firewall drops everything else
	// towards the bridge.
	var siteRoutes []any
	for _, site := range cfg.Sites {
		if !site.Upstream.IsValid() || site.Host == "" {
			return nil, fmt.Errorf("front: site %q has no upstream", site.Host)
		}
		siteRoutes = append(siteRoutes, map[string]any{
			"match": []any{map[string]any{"host": []string{strings.ToLower(strings.TrimSuffix(site.Host, "."))}}},
			"handle": []any{map[string]any{"handler": "reverse_proxy", "flush_interval": -1,
				"upstreams": []any{map[string]any{"dial": site.Upstream.String()}}}},
			"terminal": true,
		})
	}
	// Everything else is the admin app, which the API's listener serves
	// (package ui) beside the API: compressed, since a phone on a slow
	// uplink loads it.
	uiRoute := map[string]any{
		"handle": []any{
			map[string]any{"handler": "encode", "encodings": map[string]any{"gzip": map[string]any{}}, "minimum_length": 512},
			map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": "unix/" + cfg.APISocket}}},
		},
	}
	servers := map[string]any{
		"https": map[string]any{
			"listen":                  cfg.HTTPS,
			"protocols":               []string{"h1", "h2"},
			"read_header_timeout":     "10s",
			"idle_timeout":            "2m",
			"max_header_bytes":        64 << 10,
			"automatic_https":         map[string]any{"disable": true},
			"tls_connection_policies": []any{map[string]any{}},
			"routes":                  append(append([]any{map[string]any{"handle": []any{headers(true)}}}, siteRoutes...), caRoute, apiRoute, uiRoute),
		},
	}
	location := "https://{http.request.host}{http.request.uri}"
	if httpsPort != 443 {
		location = "https://{http.request.host}:" + strconv.Itoa(httpsPort) + "{http.request.uri}"
	}
	httpPort := 80
	if len(cfg.HTTP) > 0 {
		httpPort, _ = portOf(cfg.HTTP[0])
		servers["http"] = map[string]any{
			"listen":              cfg.HTTP,
			"protocols":           []string{"h1"},
			"read_header_timeout": "10s",
			"idle_timeout":        "2m",
			"max_header_bytes":    64 << 10,
			"automatic_https":     map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{headers(false)}}, caRoute,
				map[string]any{"handle": []any{map[string]any{"handler": "static_response", "status_code": 308,
					"headers": map[string][]string{"Location": {location}}}}}},
		}
	}
	vault := func(policy string) map[string]any {
		v := map[string]any{"module": issuerModule, "front": name, "policy": policy}
		if cfg.CertTTL > 0 {
			v["ttl"] = cfg.CertTTL.String()
		}
		return v
	}
	var policies []any
	if public := cfg.acmeSubjects(); len(public) > 0 {
		acme := map[string]any{"module": "acme", "challenges": map[string]any{
			"tls-alpn": map[string]any{"disabled": true}}}
		if cfg.ACME.Email != "" {
			acme["email"] = cfg.ACME.Email
		}
		if cfg.ACME.Directory != "" {
			acme["ca"] = cfg.ACME.Directory
		}
		if len(cfg.ACME.RootsPEM) > 0 {
			acme["trusted_roots_pem_files"] = []string{cfg.acmeRootsFile()}
		}
		policies = append(policies, map[string]any{"subjects": public, "issuers": []any{acme, vault("acme")},
			"disable_ocsp_stapling": true, "key_type": "p256"})
	}
	// Caddy takes a name's first policy and refuses a name in two.
	var rest []string
	for _, s := range subjects {
		if !slices.Contains(cfg.acmeSubjects(), s) {
			rest = append(rest, s)
		}
	}
	if len(rest) > 0 {
		policies = append(policies, map[string]any{"subjects": rest, "issuers": []any{vault("vault")},
			"disable_ocsp_stapling": true, "key_type": "p256"})
	}
	doc := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"writer": map[string]any{"output": logModule, "front": name}}}},
		"storage": map[string]any{"module": "file_system", "root": cfg.StorageDir},
		"apps": map[string]any{
			"http": map[string]any{"http_port": httpPort, "https_port": httpsPort, "grace_period": "5s", "servers": servers},
			"tls": map[string]any{
				"certificates": map[string]any{"automate": subjects},
				"automation":   map[string]any{"policies": policies},
				// Cleaning writes an instance ID under $HOME; every name's
				// certificate is overwritten in place, so nothing piles up.
				"disable_storage_clean": true,
			},
			// Names that no public CA serves (addresses, localhost) make the
			// tls app set up Caddy's own CA, unused here: it must never
			// install its root into the host's trust store.
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"events": map[string]any{"subscriptions": []any{map[string]any{
				"events":   []string{"cert_obtained", "cert_failed"},
				"handlers": []any{map[string]any{"handler": eventsModule, "front": name}}}}},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// portOf is the port of a listen address ("host:port", ":port").
func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("front: listen address %q: %w", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("front: listen address %q has no port", addr)
	}
	return int(n), nil
}
