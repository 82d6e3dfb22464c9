package dns

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	mdns "github.com/miekg/dns"
)

// TestValidateRecordHostile: every hostile or malformed input is refused
// with ErrInvalid, the field at fault, and a reason a person can act on.
func TestValidateRecordHostile(t *testing.T) {
	long := strings.Repeat("é", 2000) // 4 KB of Unicode
	for _, tc := range []struct {
		r      Record
		field  string
		reason string // a substring of the message
	}{
		{Record{Name: "$(reboot)", Type: "A", Value: "10.77.0.9"}, "name", `contains '$'`},
		{Record{Name: "a;rm -rf", Type: "A", Value: "10.77.0.9"}, "name", `contains ';'`},
		{Record{Name: "../etc/passwd", Type: "A", Value: "10.77.0.9"}, "name", `contains '/'`},
		{Record{Name: "..", Type: "A", Value: "10.77.0.9"}, "name", "empty label"},
		{Record{Name: "a/b", Type: "A", Value: "10.77.0.9"}, "name", `contains '/'`},
		{Record{Name: "nul\x00", Type: "A", Value: "10.77.0.9"}, "name", "NUL"},
		{Record{Name: "new\nline", Type: "A", Value: "10.77.0.9"}, "name", "line break"},
		{Record{Name: "tab\tx", Type: "A", Value: "10.77.0.9"}, "name", "control character"},
		{Record{Name: "two words", Type: "A", Value: "10.77.0.9"}, "name", "space"},
		{Record{Name: long, Type: "A", Value: "10.77.0.9"}, "name", "4000 bytes long"},
		{Record{Name: "café", Type: "A", Value: "10.77.0.9"}, "name", "punycode"},
		{Record{Name: "\xff", Type: "A", Value: "10.77.0.9"}, "name", "UTF-8"},
		{Record{Name: "*", Type: "A", Value: "10.77.0.9"}, "name", "wildcards"},
		{Record{Name: "-alice", Type: "A", Value: "10.77.0.9"}, "name", "starts or ends with '-'"},
		{Record{Name: strings.Repeat("a", 64), Type: "A", Value: "10.77.0.9"}, "name", "label of 64 bytes"},
		{Record{Name: strings.Repeat("abcdefgh.", 28)[:251], Type: "A", Value: "10.77.0.9"}, "name", "with the domain"},
		{Record{Name: "alice.example.com.", Type: "A", Value: "10.77.0.9"}, "name", "outside the cell's domain"},
		{Record{Name: "a..b", Type: "A", Value: "10.77.0.9"}, "name", "empty label"},
		{Record{Name: "alice", Type: "NS", Value: "ns"}, "type", "not supported"},
		{Record{Name: "alice", Type: "SOA", Value: "x"}, "type", "makes SOA and NS itself"},
		{Record{Name: "alice", Type: "", Value: "x"}, "type", "not supported"},
		{Record{Name: "@", Type: "CNAME", Value: "files"}, "type", "apex"},
		{Record{Name: "home.example.org.", Type: "CNAME", Value: "files"}, "type", "apex"},
		{Record{Name: "www", Type: "CNAME", Value: "www"}, "value", "its own name"},
		{Record{Name: "www", Type: "CNAME", Value: "$(id).example.com"}, "value", `contains '$'`},
		{Record{Name: "alice", Type: "A", Value: "10.77.0"}, "value", "not an IP address"},
		{Record{Name: "alice", Type: "A", Value: "10.77.0.256"}, "value", "not an IP address"},
		{Record{Name: "alice", Type: "A", Value: "fd77::2"}, "value", "not an IPv4 address"},
		{Record{Name: "alice", Type: "A", Value: "0.0.0.0"}, "value", "not a host's address"},
		{Record{Name: "alice", Type: "A", Value: "224.0.0.1"}, "value", "not a host's address"},
		{Record{Name: "alice", Type: "A", Value: "10.77.0.2; rm"}, "value", "not an IP address"},
		{Record{Name: "alice", Type: "AAAA", Value: "10.77.0.2"}, "value", "not an IPv6 address"},
		{Record{Name: "alice", Type: "AAAA", Value: "::ffff:10.77.0.2"}, "value", "not an IPv6 address"},
		{Record{Name: "alice", Type: "AAAA", Value: "fe80::1%eth0"}, "value", "zone"},
		{Record{Name: "alice", Type: "A", Value: ""}, "value", "empty"},
		{Record{Name: "alice", Type: "TXT", Value: "a\x00b"}, "value", "control character"},
		{Record{Name: "alice", Type: "TXT", Value: "line\nbreak"}, "value", "control character"},
		{Record{Name: "alice", Type: "TXT", Value: long}, "value", "4000 bytes long"},
		{Record{Name: "alice", Type: "TXT", Value: "\xff\xfe"}, "value", "UTF-8"},
		{Record{Name: "@", Type: "MX", Value: "mail"}, "value", `"preference host"`},
		{Record{Name: "@", Type: "MX", Value: "99999 mail"}, "value", "0 to 65535"},
		{Record{Name: "@", Type: "MX", Value: "10 ../mail"}, "value", `contains '/'`},
		{Record{Name: "@", Type: "MX", Value: "10 .mail"}, "value", "empty label"},
		{Record{Name: "_sip._tcp", Type: "SRV", Value: "10 5 sip"}, "value", "priority weight port target"},
		{Record{Name: "_sip._tcp", Type: "SRV", Value: "10 5 70000 sip"}, "value", "port"},
		{Record{Name: "10.77.0.9", Type: "PTR", Value: "a b"}, "value", "space"},
		{Record{Name: "fe80::1%eth0", Type: "PTR", Value: "printer"}, "name", "zone"},
		{Record{Name: "alice", Type: "A", Value: "10.77.0.2", TTL: 86401}, "ttl", "one day"},
		{Record{Name: "alice", Type: "A", Value: "10.77.0.2", TTL: 1 << 31}, "ttl", "one day"},
	} {
		err := ValidateRecord(domain, tc.r)
		var ie *InvalidError
		switch {
		case !errors.Is(err, ErrInvalid) || !errors.As(err, &ie):
			t.Errorf("%+v: err = %v, want an *InvalidError wrapping ErrInvalid", tc.r, err)
		case ie.Field != tc.field || !strings.Contains(err.Error(), tc.reason):
			t.Errorf("%+v:\n got field %s, %q\nwant field %s, containing %q", tc.r, ie.Field, err, tc.field, tc.reason)
		case len(err.Error()) > 300 || strings.ContainsAny(err.Error(), "\x00\n"):
			t.Errorf("%+v: message %q carries the raw input", tc.r, err)
		}
	}
}

// TestValidateRecordAccepts: ordinary records, and TXT holding text that
// would be hostile as a name (it is data, never interpreted).
func TestValidateRecordAccepts(t *testing.T) {
	for _, r := range []Record{
		{Name: "alice-phone", Type: "A", Value: "10.77.0.2"},
		{Name: "Alice-Phone", Type: "aaaa", Value: "fd77::2"},
		{Name: "", Type: "A", Value: "10.77.0.1"},
		{Name: "@", Type: "AAAA", Value: "2001:db8::1"},
		{Name: "files.home.example.org", Type: "A", Value: "10.77.0.1"},
		{Name: "files.home.example.org.", Type: "A", Value: "10.77.0.1", TTL: 86400},
		{Name: "www", Type: "CNAME", Value: "files"},
		{Name: "ext", Type: "CNAME", Value: "example.com."},
		{Name: "@", Type: "TXT", Value: "v=DKIM1; k=rsa; p=MIGfMA0G"},
		{Name: "note", Type: "TXT", Value: "$(reboot) ../etc é"},
		{Name: "note", Type: "TXT", Value: strings.Repeat("x", 2048)},
		{Name: "@", Type: "MX", Value: "10 mail"},
		{Name: "_sip._tcp", Type: "SRV", Value: "10 5 5060 sip"},
		{Name: "_none._tcp", Type: "SRV", Value: "0 0 0 ."},
		{Name: "10.77.0.9", Type: "PTR", Value: "printer"},
		{Name: "fd77::9", Type: "PTR", Value: "printer.home.example.org."},
		{Name: "9.0.77.10.in-addr.arpa.", Type: "PTR", Value: "printer"},
		{Name: "_http._tcp", Type: "PTR", Value: "printer._http._tcp"},
	} {
		if err := ValidateRecord(domain, r); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if err := ValidateRecord("$(x).org", Record{Name: "a", Type: "A", Value: "10.0.0.1"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a hostile domain: %v", err)
	}
}

// TestLongTXTSplit: a long TXT value goes out as strings of at most 255
// bytes, cut between characters, and reads back whole.
func TestLongTXTSplit(t *testing.T) {
	v := strings.Repeat("ab\\é", 500)[:2000]
	for !strings.HasSuffix(v, "b") {
		v = v[:len(v)-1]
	}
	c, err := compile(domain+".", Record{Name: "t", Type: "TXT", Value: v})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, err := mdns.PackRR(c.rr, b, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	// The rdata follows the owner name and 10 bytes of type, class, TTL
	// and length: <len><bytes>, again and again.
	var got []byte
	for off := len("t."+domain+".") + 1 + 10; off < n; {
		l := int(b[off])
		chunk := b[off+1 : off+1+l]
		if l > 255 || !utf8.Valid(chunk) {
			t.Errorf("a string of %d bytes, valid UTF-8 %v", l, utf8.Valid(chunk))
		}
		got = append(got, chunk...)
		off += 1 + l
	}
	if string(got) != v {
		t.Errorf("TXT on the wire differs: %d bytes, want %d", len(got), len(v))
	}
}

func TestValidateUpstream(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // canonical form, or "error: reason"
	}{
		{"198.18.0.53", "198.18.0.53:53"},
		{"198.18.0.53:5353", "198.18.0.53:5353"},
		{"2001:db8::1", "[2001:db8::1]:53"},
		{"[2001:db8::1]:53", "[2001:db8::1]:53"},
		{"udp://198.18.0.53", "198.18.0.53:53"},
		{"tls://1.1.1.1", "tls://1.1.1.1:853"},
		{"TLS://dns.example@1.1.1.1:853", "tls://dns.example@1.1.1.1:853"},
		{"tls://cloudflare-dns.com@[2606:4700:4700::1111]", "tls://cloudflare-dns.com@[2606:4700:4700::1111]:853"},
		{"", "error: empty"},
		{"resolver.example", "error: not an address"},
		{"resolver.example:53", "error: not an IP address"},
		{"198.18.0.53:0", "error: port"},
		{"198.18.0.53:99999", "error: port"},
		{"198.18.0.53:dns", "error: port"},
		{"https://1.1.1.1/dns-query", "error: unknown scheme"},
		{"tls://$(reboot)@1.1.1.1", "error: TLS name contains '$'"},
		{"dns.example@1.1.1.1", "error: tls:// only"},
		{"0.0.0.0", "error: not a host's address"},
		{"fe80::1%eth0", "error: zone"},
		{"1.1.1.1; rm -rf /", "error: space"},
		{"1.1.1.1\n", "error: control character"},
		{strings.Repeat("9", 4000), "error: 4000 bytes"},
	} {
		u, err := ParseUpstream(tc.in)
		got := u.String()
		if err != nil {
			got = "error: " + err.Error()
			if !errors.Is(err, ErrInvalid) || ValidateUpstream(tc.in) == nil {
				t.Errorf("%q: %v does not wrap ErrInvalid", tc.in, err)
			}
		}
		if got != tc.want && !(strings.HasPrefix(tc.want, "error: ") && strings.HasPrefix(got, "error: ") && strings.Contains(got, strings.TrimPrefix(tc.want, "error: "))) {
			t.Errorf("ParseUpstream(%q) = %s, want %s", tc.in, got, tc.want)
		}
		if err == nil {
			if again, err := ParseUpstream(got); err != nil || again != u {
				t.Errorf("%q: canonical %q does not parse back (%v)", tc.in, got, err)
			}
		}
	}
}
