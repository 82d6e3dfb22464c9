package probe

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolvConf is where the system's DNS servers are.
const resolvConf = "/etc/resolv.conf"

func (p *Prober) dnsServers() []string {
	if p.o.DNSServer != nil {
		return p.o.DNSServer()
	}
	cfg, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range cfg.Servers {
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out
}

func (p *Prober) dnsQuery(ctx context.Context, q parsed, res *Result) error {
	servers := p.dnsServers()
	if q.srv != "" {
		servers = []string{q.srv}
	}
	if len(servers) == 0 {
		res.Detail = "no DNS server configured to ask"
		return nil
	}
	m := new(dns.Msg)
	m.SetQuestion(q.name, q.qtype)
	m.SetEdns0(1232, false)
	var failures []string
	for _, srv := range servers {
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		r, err := p.exchange(ctx, "udp", srv, m)
		if err == nil && r.Truncated {
			r, err = p.exchange(ctx, "tcp", srv, m)
		}
		if err != nil {
			failures = append(failures, srv+": "+plain(err))
			continue
		}
		res.Address = srv
		res.RTT = time.Since(start)
		typ := dns.TypeToString[q.qtype]
		for _, rr := range r.Answer {
			res.Answers = append(res.Answers, rdata(rr))
		}
		rcode := dns.RcodeToString[r.Rcode]
		switch {
		case r.Rcode == dns.RcodeNameError:
			res.Detail = fmt.Sprintf("%s from %s in %s: the name %s does not exist", rcode, srv, ms(res.RTT), q.name)
		case r.Rcode != dns.RcodeSuccess:
			res.Detail = fmt.Sprintf("%s from %s in %s: the server could not answer", rcode, srv, ms(res.RTT))
		case len(r.Answer) == 0:
			res.Detail = fmt.Sprintf("%s from %s in %s: %s has no %s records", rcode, srv, ms(res.RTT), q.name, typ)
		default:
			res.OK = true
			shown := res.Answers
			more := ""
			if len(shown) > 5 {
				shown, more = shown[:5], fmt.Sprintf(" and %d more", len(res.Answers)-5)
			}
			res.Detail = fmt.Sprintf("%s from %s in %s: %s%s", rcode, srv, ms(res.RTT), strings.Join(shown, ", "), more)
		}
		return nil
	}
	if len(failures) == 0 {
		failures = append(failures, "no answer in time")
	}
	res.Detail = "no DNS server answered: " + strings.Join(failures, "; ")
	return nil
}

// exchange sends m to srv over network through the prober's dialer.
func (p *Prober) exchange(ctx context.Context, network, srv string, m *dns.Msg) (*dns.Msg, error) {
	c, err := p.dial(ctx, network, srv)
	if err != nil {
		return nil, err
	}
	co := &dns.Conn{Conn: c}
	defer co.Close()
	client := &dns.Client{Net: network, Timeout: p.o.Timeout}
	r, _, err := client.ExchangeWithConnContext(ctx, m, co)
	return r, err
}

// rdata is a record without its header: "198.18.0.1", "10 mail.example.".
// A CNAME on the way says where it points: "CNAME target.example.".
func rdata(rr dns.RR) string {
	s := rr.String()
	h := rr.Header().String()
	out := strings.TrimSpace(strings.TrimPrefix(s, h))
	if rr.Header().Rrtype == dns.TypeCNAME {
		return "CNAME " + out
	}
	return out
}
