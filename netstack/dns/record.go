package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	mdns "github.com/miekg/dns"
)

// Record is one record of the cell's zone, as the rest of the cell writes it.
type Record struct {
	// Name is required. Relative to the zone's domain ("alice", "_sip._tcp",
	// "@" or "" for the apex), or absolute: ending in "." or in the domain
	// itself ("alice.home.example.org"). Absolute names outside the domain
	// are refused, except that a PTR record may be named by an IP address
	// ("10.77.0.5") or its reverse name (…in-addr.arpa., …ip6.arpa.).
	Name string
	// Type is required: A, AAAA, CNAME, TXT, MX, SRV or PTR (any case).
	Type string
	// Value is required, in the type's presentation form:
	//   A "10.77.0.2"; AAAA "fd77::2"; CNAME and PTR a name;
	//   TXT free text (UTF-8, no control characters, at most 2048 bytes);
	//   MX "10 mail"; SRV "10 5 5060 sip" (priority weight port target).
	// A target name without a dot is relative to the domain ("mail"); one
	// with a dot is absolute ("mail.example.com"), trailing dot or not.
	Value string
	// TTL in seconds: 0 means DefaultTTL, at most MaxTTL.
	TTL uint32
}

// Zone is the cell's whole zone. Set makes the server answer exactly it.
type Zone struct {
	// Domain is the cell's domain, "home.example.org"; optional: empty means
	// no zone, every name is forwarded (and Records must be empty).
	Domain string
	// Records is the whole zone: apex A/AAAA, <peer>.<domain>,
	// <service>.<domain>, custom records. The server adds SOA and NS at the
	// apex itself, and derives PTR records from A and AAAA (see the package
	// doc).
	Records []Record
	// Serial is the SOA serial; 0 lets the server count: it starts at the
	// Unix time of the first Set and goes up by one at every change.
	Serial uint32
}

// Record limits.
const (
	DefaultTTL = 300   // seconds, for a Record with TTL 0
	MaxTTL     = 86400 // one day
	maxTXT     = 2048  // bytes of a TXT value
	maxName    = 253   // bytes of a name, without the final dot
)

// ErrInvalid is wrapped by every error about a bad record, domain, upstream
// or prefix: the caller maps it to 400.
var ErrInvalid = errors.New("invalid")

// InvalidError says which field of the input is wrong and why, in words a
// person can act on. It wraps ErrInvalid.
type InvalidError struct {
	Field  string // "name", "type", "value", "ttl", "domain", "upstream", "allowed"
	Value  string // the offending input, as given
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("dns: %s %s: %s", e.Field, quote(e.Value), e.Reason)
}

func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, value, format string, args ...any) error {
	return &InvalidError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// quote shows at most 40 characters of s, escaped, so that a hostile input
// can neither flood nor break a log line or an error message.
func quote(s string) string {
	if utf8.RuneCountInString(s) > 40 {
		r := []rune(s)
		return strconv.Quote(string(r[:40])) + "…"
	}
	return strconv.Quote(s)
}

// ValidateRecord reports whether r is a record the zone of domain can hold.
// The error wraps ErrInvalid and is an *InvalidError.
func ValidateRecord(domain string, r Record) error {
	d, err := canonicalDomain(domain)
	if err != nil {
		return err
	}
	if d == "" {
		return invalid("domain", domain, "a record needs the zone's domain")
	}
	_, err = compile(d, r)
	return err
}

// canonicalDomain returns domain lowercased with a final dot, "" for "".
func canonicalDomain(domain string) (string, error) {
	if domain == "" {
		return "", nil
	}
	d := strings.TrimSuffix(domain, ".")
	if err := checkName(d); err != nil {
		return "", invalid("domain", domain, "%s", err)
	}
	d = strings.ToLower(d) + "."
	if d == "arpa." || strings.HasSuffix(d, ".arpa.") && d != "home.arpa." && !strings.HasSuffix(d, ".home.arpa.") {
		return "", invalid("domain", domain, "the reverse-lookup tree (.arpa) cannot be the cell's domain; home.arpa can")
	}
	return d, nil
}

// nameError is a reason without the field, for checkName's callers to wrap.
type nameError string

func (e nameError) Error() string { return string(e) }

// checkName checks a name without its final dot: LDH labels, '_' allowed
// (for _sip._tcp), at most 63 bytes a label and 253 a name.
func checkName(n string) error {
	if n == "" {
		return nameError("is empty")
	}
	if len(n) > maxName {
		return nameError(fmt.Sprintf("is %d bytes long; a name has at most %d", len(n), maxName))
	}
	for i := 0; i < len(n); {
		r, size := utf8.DecodeRuneInString(n[i:])
		switch {
		case r == 0:
			return nameError("contains a NUL byte")
		case r == '\n' || r == '\r':
			return nameError("contains a line break")
		case r == '*':
			return nameError("wildcards (*) are not supported: name each host")
		case r == utf8.RuneError && size == 1:
			return nameError("is not valid UTF-8")
		case r >= utf8.RuneSelf:
			return nameError(fmt.Sprintf("contains %q: write international names in punycode (xn--…)", r))
		case r < ' ' || r == 0x7f:
			return nameError(fmt.Sprintf("contains the control character %q", r))
		case r == ' ':
			return nameError("contains a space")
		case !(r == '.' || r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'):
			return nameError(fmt.Sprintf("contains %q: a name has only letters, digits, '-', '_' and dots", r))
		}
		i += size
	}
	for _, l := range strings.Split(n, ".") {
		switch {
		case l == "":
			return nameError("has an empty label (a leading dot or \"..\")")
		case len(l) > 63:
			return nameError(fmt.Sprintf("has a label of %d bytes; at most 63", len(l)))
		case l[0] == '-' || l[len(l)-1] == '-':
			return nameError(fmt.Sprintf("label %q starts or ends with '-'", l))
		}
	}
	return nil
}

// ownerName resolves a record's Name against domain (canonical) into a
// lowercase FQDN inside the zone.
func ownerName(domain, name string) (string, error) {
	if name == "" || name == "@" {
		return domain, nil
	}
	abs := strings.HasSuffix(name, ".")
	n := strings.TrimSuffix(name, ".")
	if err := checkName(n); err != nil {
		return "", invalid("name", name, "%s", err)
	}
	n = strings.ToLower(n)
	bare := strings.TrimSuffix(domain, ".")
	switch {
	case n == bare || strings.HasSuffix(n, "."+bare):
		abs = true
	case abs:
		return "", invalid("name", name, "is outside the cell's domain %s", bare)
	}
	fq := n + "."
	if !abs {
		fq = n + "." + domain
	}
	if len(fq)-1 > maxName {
		return "", invalid("name", name, "is %d bytes long with the domain; a name has at most %d", len(fq)-1, maxName)
	}
	return fq, nil
}

// targetName resolves a target (CNAME, PTR, MX, SRV): one label is relative
// to domain, more than one is absolute.
func targetName(domain, v string) (string, error) {
	if v == "@" {
		return domain, nil
	}
	n := strings.TrimSuffix(v, ".")
	if err := checkName(n); err != nil {
		return "", invalid("value", v, "target name %s", err)
	}
	n = strings.ToLower(n)
	if !strings.Contains(n, ".") && !strings.HasSuffix(v, ".") {
		n += "." + strings.TrimSuffix(domain, ".")
		if len(n) > maxName {
			return "", invalid("value", v, "target is %d bytes long with the domain; at most %d", len(n), maxName)
		}
	}
	return n + ".", nil
}

// rec is a validated record, ready to serve.
type rec struct {
	owner string  // lowercase FQDN
	rr    mdns.RR // owner and TTL set
	ptr   mdns.RR // for A and AAAA: the derived PTR record; else nil
}

var types = map[string]uint16{
	"A": mdns.TypeA, "AAAA": mdns.TypeAAAA, "CNAME": mdns.TypeCNAME, "TXT": mdns.TypeTXT,
	"MX": mdns.TypeMX, "SRV": mdns.TypeSRV, "PTR": mdns.TypePTR,
}

// compile validates r against domain (canonical, non-empty) and builds its
// resource record.
func compile(domain string, r Record) (rec, error) {
	typ, ok := types[strings.ToUpper(r.Type)]
	if !ok {
		return rec{}, invalid("type", r.Type, "is not supported: use A, AAAA, CNAME, TXT, MX, SRV or PTR (the server makes SOA and NS itself)")
	}
	if r.TTL > MaxTTL {
		return rec{}, invalid("ttl", strconv.FormatUint(uint64(r.TTL), 10), "is more than %d seconds (one day)", MaxTTL)
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	var owner string
	var err error
	if typ == mdns.TypePTR {
		owner, err = reverseOwner(r.Name)
	}
	if owner == "" && err == nil {
		owner, err = ownerName(domain, r.Name)
	}
	if err != nil {
		return rec{}, err
	}
	hdr := mdns.RR_Header{Name: owner, Rrtype: typ, Class: mdns.ClassINET, Ttl: ttl}
	out := rec{owner: owner}
	v := r.Value
	if v == "" {
		return rec{}, invalid("value", v, "is empty")
	}
	switch typ {
	case mdns.TypeA, mdns.TypeAAAA:
		a, err := netip.ParseAddr(v)
		switch {
		case err != nil:
			return rec{}, invalid("value", v, "is not an IP address")
		case typ == mdns.TypeA && !a.Is4():
			return rec{}, invalid("value", v, "is not an IPv4 address (an A record holds one; IPv6 goes in AAAA)")
		case typ == mdns.TypeAAAA && (!a.Is6() || a.Is4In6()):
			return rec{}, invalid("value", v, "is not an IPv6 address (an AAAA record holds one; IPv4 goes in A)")
		case a.Zone() != "":
			return rec{}, invalid("value", v, "has a zone (%%%s); DNS carries none", a.Zone())
		case a.IsUnspecified() || a.IsMulticast():
			return rec{}, invalid("value", v, "is not a host's address")
		}
		if typ == mdns.TypeA {
			out.rr = &mdns.A{Hdr: hdr, A: a.AsSlice()}
		} else {
			out.rr = &mdns.AAAA{Hdr: hdr, AAAA: a.AsSlice()}
		}
		rev, _ := mdns.ReverseAddr(a.String())
		out.ptr = &mdns.PTR{Hdr: mdns.RR_Header{Name: rev, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: ttl}, Ptr: owner}
	case mdns.TypeCNAME:
		if owner == domain {
			return rec{}, invalid("type", r.Type, "a CNAME cannot be at the zone's apex: it would hide the SOA and NS records")
		}
		t, err := targetName(domain, v)
		if err != nil {
			return rec{}, err
		}
		if t == owner {
			return rec{}, invalid("value", v, "a CNAME cannot point at its own name")
		}
		out.rr = &mdns.CNAME{Hdr: hdr, Target: t}
	case mdns.TypePTR:
		t, err := targetName(domain, v)
		if err != nil {
			return rec{}, err
		}
		out.rr = &mdns.PTR{Hdr: hdr, Ptr: t}
	case mdns.TypeTXT:
		txt, err := txtStrings(v)
		if err != nil {
			return rec{}, err
		}
		out.rr = &mdns.TXT{Hdr: hdr, Txt: txt}
	case mdns.TypeMX:
		f := strings.Fields(v)
		if len(f) != 2 {
			return rec{}, invalid("value", v, "an MX value is \"preference host\", e.g. \"10 mail\"")
		}
		pref, err := strconv.ParseUint(f[0], 10, 16)
		if err != nil {
			return rec{}, invalid("value", v, "preference %s is not a number from 0 to 65535", quote(f[0]))
		}
		t, err := targetName(domain, f[1])
		if err != nil {
			return rec{}, err
		}
		out.rr = &mdns.MX{Hdr: hdr, Preference: uint16(pref), Mx: t}
	case mdns.TypeSRV:
		f := strings.Fields(v)
		if len(f) != 4 {
			return rec{}, invalid("value", v, "an SRV value is \"priority weight port target\", e.g. \"10 5 5060 sip\"")
		}
		var n [3]uint16
		for i, what := range []string{"priority", "weight", "port"} {
			x, err := strconv.ParseUint(f[i], 10, 16)
			if err != nil {
				return rec{}, invalid("value", v, "%s %s is not a number from 0 to 65535", what, quote(f[i]))
			}
			n[i] = uint16(x)
		}
		t := "."
		if f[3] != "." { // "." means: no such service here (RFC 2782)
			if t, err = targetName(domain, f[3]); err != nil {
				return rec{}, err
			}
		}
		out.rr = &mdns.SRV{Hdr: hdr, Priority: n[0], Weight: n[1], Port: n[2], Target: t}
	}
	return out, nil
}

// reverseOwner returns the reverse name a PTR record is named by (an IP
// address or an .arpa name), or "" when its name is an ordinary one.
func reverseOwner(name string) (string, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		if a.Zone() != "" {
			return "", invalid("name", name, "has a zone (%%%s); DNS carries none", a.Zone())
		}
		rev, _ := mdns.ReverseAddr(a.Unmap().String())
		return rev, nil
	}
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if !strings.HasSuffix(n, ".in-addr.arpa") && !strings.HasSuffix(n, ".ip6.arpa") {
		return "", nil
	}
	if err := checkName(n); err != nil {
		return "", invalid("name", name, "%s", err)
	}
	return n + ".", nil
}

// txtStrings splits a TXT value into strings of at most 255 bytes (at rune
// boundaries), escaped the way miekg/dns packs them.
func txtStrings(v string) ([]string, error) {
	if len(v) > maxTXT {
		return nil, invalid("value", v, "is %d bytes long; a TXT value has at most %d", len(v), maxTXT)
	}
	if !utf8.ValidString(v) {
		return nil, invalid("value", v, "is not valid UTF-8")
	}
	for _, r := range v {
		if r < ' ' || r == 0x7f {
			return nil, invalid("value", v, "contains the control character %q", r)
		}
	}
	var out []string
	for len(v) > 0 {
		n := min(len(v), 255)
		for n < len(v) && !utf8.RuneStart(v[n]) {
			n--
		}
		out = append(out, strings.ReplaceAll(v[:n], `\`, `\\`))
		v = v[n:]
	}
	return out, nil
}
