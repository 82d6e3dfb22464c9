// Command acmeserver is the system tests' public ACME CA: Caddy's
// acme_server (HTTP-01 only) on ADDR:443 with its own CA, and a DNS server on
// ADDR:53 that answers A queries from -hosts. The process resolves every name
// through that server (net.DefaultResolver): acme_server's "resolvers"
// option is for DNS-01's TXT lookups only, HTTP-01 dials with the default
// resolver, and an ACME CA validates names, never addresses. Tests build it
// (its own module: the cell's go.mod lacks acme_server's dependencies) and
// run it inside the "internet" namespace; it stops on SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"

	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki/acmeserver"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
)

func main() {
	addr := flag.String("addr", "", "the address to listen on (443 and 53)")
	storage := flag.String("storage", "", "Caddy's storage: the CA's root is at pki/authorities/local/root.crt")
	hosts := flag.String("hosts", "", "name=ipv4,... answered by the DNS server")
	flag.Parse()

	table := map[string]net.IP{}
	for _, h := range strings.Split(*hosts, ",") {
		if name, ip, ok := strings.Cut(h, "="); ok {
			table[dns.Fqdn(strings.ToLower(name))] = net.ParseIP(ip)
		}
	}
	dns.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			ip := table[strings.ToLower(q.Name)]
			switch {
			case ip == nil:
				m.Rcode = dns.RcodeNameError
			case q.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: ip.To4()})
			}
		}
		w.WriteMsg(m)
	})
	dnsAddr := net.JoinHostPort(*addr, "53")
	*net.DefaultResolver = net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	udp := &dns.Server{Addr: net.JoinHostPort(*addr, "53"), Net: "udp"}
	go func() { log.Fatal(udp.ListenAndServe()) }()
	tcp := &dns.Server{Addr: net.JoinHostPort(*addr, "53"), Net: "tcp"}
	go func() { log.Fatal(tcp.ListenAndServe()) }()

	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": *storage},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{
				"name": "Test ACME CA", "root_common_name": "Test ACME Root", "intermediate_common_name": "Test ACME Intermediate", "install_trust": false}}},
			"tls": map[string]any{
				"certificates": map[string]any{"automate": []string{*addr}},
				"automation":   map[string]any{"policies": []any{map[string]any{"subjects": []string{*addr}, "issuers": []any{map[string]any{"module": "internal"}}}}},
			},
			"http": map[string]any{"servers": map[string]any{"acme": map[string]any{
				"listen":                  []string{net.JoinHostPort(*addr, "443")},
				"automatic_https":         map[string]any{"disable": true},
				"tls_connection_policies": []any{map[string]any{}},
				"routes": []any{map[string]any{"handle": []any{map[string]any{
					"handler": "acme_server", "ca": "local", "lifetime": "1h",
					"challenges": []string{"http-01"},
				}}}},
			}}},
		},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, false); err != nil {
		log.Fatal(err)
	}
	log.Print("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	caddy.Stop()
}
