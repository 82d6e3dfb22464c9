package ddns

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// RFC2136 is a dynamic update (RFC 2136) signed with TSIG (RFC 8945), what
// BIND, Knot and PowerDNS speak.
type RFC2136 struct {
	Server    string        // host[:port] of the zone's primary; port 53 when absent
	Zone      string        // the zone the name is in, e.g. "example.org."
	Name      string        // the cell's public name, e.g. "home.example.org"
	TTL       time.Duration // the records' TTL; 0 means 60 s
	KeyName   string        // the TSIG key's name
	Algorithm string        // "hmac-sha256" (when empty), "hmac-sha224", "hmac-sha384", "hmac-sha512" or "hmac-sha1"
	Secret    string        // the key's secret, base64 as in a BIND key file; never printed
	Timeout   time.Duration // for the whole exchange; 0 means 5 s
}

// algorithms are the TSIG algorithms offered, by the names BIND's key
// files use.
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// String describes the updater without its secret.
func (r RFC2136) String() string {
	return fmt.Sprintf("RFC 2136 update of %s in zone %s at %s with key %s (%s)", r.Name, r.Zone, r.Server, r.KeyName, r.algorithm())
}

// GoString is String, so that %#v does not print the secret either.
func (r RFC2136) GoString() string { return r.String() }

func (r *RFC2136) algorithm() string {
	a := strings.TrimSuffix(strings.ToLower(r.Algorithm), ".")
	if a == "" {
		return "hmac-sha256"
	}
	return a
}

// Validate checks the configuration; its errors say which field is wrong
// and never contain the secret.
func (r *RFC2136) Validate() error {
	if _, err := r.server(); err != nil {
		return err
	}
	if err := checkName("the zone", r.Zone, true); err != nil {
		return err
	}
	if err := checkName("the name", r.Name, false); err != nil {
		return err
	}
	if !dns.IsSubDomain(dns.CanonicalName(r.Zone), dns.CanonicalName(r.Name)) {
		return errors.New("the name is not inside the zone")
	}
	if r.TTL < 0 || r.TTL > 24*time.Hour {
		return errors.New("the TTL must be between 0 (the default, 60 s) and 24 hours")
	}
	if r.Timeout < 0 || r.Timeout > 5*time.Minute {
		return errors.New("the timeout must be between 0 (the default, 5 s) and 5 minutes")
	}
	if err := checkName("the key name", r.KeyName, true); err != nil {
		return err
	}
	if _, ok := algorithms[r.algorithm()]; !ok {
		return errors.New("the key algorithm must be one of hmac-sha256, hmac-sha224, hmac-sha384, hmac-sha512 or hmac-sha1")
	}
	if r.Secret == "" {
		return errors.New("the key secret is empty")
	}
	if !printable(r.Secret) || strings.Contains(r.Secret, " ") {
		return errors.New("the key secret must be base64 text without spaces or line breaks")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(r.Secret)
	if err != nil {
		return errors.New("the key secret is not valid base64 (copy it as it is in the key file, between the quotes)")
	}
	if len(raw) < 16 || len(raw) > 128 {
		return fmt.Errorf("the key secret is %d bytes long; it must be 16 to 128 bytes (tsig-keygen makes 32)", len(raw))
	}
	return nil
}

// server is Server as host:port, port 53 when it has none.
func (r *RFC2136) server() (string, error) {
	s := r.Server
	if s == "" {
		return "", errors.New("the server is empty")
	}
	if a, err := netip.ParseAddr(s); err == nil { // an address, IPv6 without brackets included
		if a.Zone() != "" {
			return "", errors.New("the server's address must not have a zone")
		}
		return net.JoinHostPort(a.String(), "53"), nil
	}
	host, port := s, "53"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p != strconv.Itoa(n) {
			return "", errors.New("the server's port must be a number from 1 to 65535")
		}
	} else if strings.ContainsAny(s, "[]") || strings.Count(s, ":") > 0 {
		return "", errors.New("the server must be a host name or address, optionally followed by :port (an IPv6 address with a port in brackets)")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", errors.New("the server's address must not have a zone")
		}
		return net.JoinHostPort(a.String(), port), nil
	}
	if err := checkName("the server's host name", host, false); err != nil {
		return "", err
	}
	return net.JoinHostPort(host, port), nil
}

// Update replaces the name's A and AAAA records with addrs in one signed
// update over TCP; a family absent from addrs loses its record.
func (r *RFC2136) Update(ctx context.Context, addrs []netip.Addr) error {
	if err := r.Validate(); err != nil {
		return refusedError("the RFC 2136 settings are not usable: %v", err)
	}
	v4, v6, err := splitAddrs(addrs)
	if err != nil {
		return err
	}
	server, _ := r.server()
	zone := dns.CanonicalName(r.Zone)
	name := dns.CanonicalName(r.Name)
	key := dns.CanonicalName(r.KeyName)
	ttl := uint32(60)
	if r.TTL > 0 {
		ttl = uint32((r.TTL + time.Second - 1) / time.Second)
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}

	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.RemoveRRset([]dns.RR{
		&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}},
		&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET}},
	})
	var add []dns.RR
	if v4.IsValid() {
		add = append(add, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: v4.AsSlice()})
	}
	if v6.IsValid() {
		add = append(add, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: v6.AsSlice()})
	}
	m.Insert(add)
	m.SetTsig(key, algorithms[r.algorithm()], 300, time.Now().Unix())

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &dns.Client{Net: "tcp", Timeout: timeout, TsigSecret: map[string]string{key: r.Secret}}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if resp != nil {
		if t := resp.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
			return authError("the DNS server %s did not accept the key %s: %s", server, strings.TrimSuffix(key, "."), tsigError(t.Error))
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNotAuth:
			if t := resp.IsTsig(); t != nil && t.MACSize > 0 {
				// Signed, with no TSIG error: the key is fine, the server
				// does not serve the zone (RFC 2136's NOTAUTH). The DNS
				// library does not verify a NOTAUTH's signature; a forged
				// one could only stop the updates, as any refusal can.
				return refusedError("the DNS server %s is not the primary of the zone %s (NOTAUTH): check the server and the zone", server, strings.TrimSuffix(zone, "."))
			}
			return authError("the DNS server %s refused the key %s (NOTAUTH): check the key name, secret and algorithm", server, strings.TrimSuffix(key, "."))
		case dns.RcodeRefused:
			return authError("the DNS server %s refused the update (REFUSED): the key may not be allowed to change %s", server, strings.TrimSuffix(name, "."))
		case dns.RcodeNotZone:
			return refusedError("the DNS server %s says %s is not in a zone it serves as %s (NOTZONE)", server, strings.TrimSuffix(name, "."), strings.TrimSuffix(zone, "."))
		default:
			if err == nil {
				return fmt.Errorf("the DNS server %s answered the update with %s", server, rcodeName(resp.Rcode))
			}
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrTime), errors.Is(err, dns.ErrKeyAlg):
			return fmt.Errorf("the answer of the DNS server %s is not signed by the key, so it is not believed: %v", server, err)
		case ctx.Err() != nil:
			return fmt.Errorf("no answer from the DNS server %s within %s", server, timeout)
		}
		return fmt.Errorf("cannot update at the DNS server %s: %v", server, plainNetError(err))
	}
	if resp.IsTsig() == nil {
		return fmt.Errorf("the answer of the DNS server %s is not signed, so it is not believed", server)
	}
	return nil
}

func tsigError(code uint16) string {
	switch code {
	case dns.RcodeBadSig:
		return "the signature is wrong (BADSIG): check the secret and algorithm"
	case dns.RcodeBadKey:
		return "it does not know the key (BADKEY): check the key name and algorithm"
	case dns.RcodeBadTime:
		return "the clocks differ by more than 5 minutes (BADTIME): check the cell's time"
	}
	return "TSIG error " + rcodeName(int(code))
}

func rcodeName(code int) string {
	if s, ok := dns.RcodeToString[code]; ok {
		return s
	}
	return "code " + strconv.Itoa(code)
}

// plainNetError drops the Go operation prefix ("dial tcp 1.2.3.4:53: ")
// the server is named in the message already.
func plainNetError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
