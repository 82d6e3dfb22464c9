// Package ddns keeps the cell's public DNS name pointing at the home's
// public addresses: phones away from home dial that name, and the home's
// address changes whenever the ISP pleases.
//
// # One interface, two protocols
//
// An Updater points one name at at most one IPv4 and one IPv6 address.
// Two real protocols implement it, because between them they cover nearly
// every provider a person may have:
//
//   - RFC2136 is a DNS dynamic update (RFC 2136) signed with a TSIG key
//     (RFC 8945). It is what a person running their own zone on BIND, Knot
//     or PowerDNS (or a provider exposing those) gives the cell: a primary
//     server, a zone, a key name and a base64 secret, as in a BIND key file.
//   - DynDNS2 is the dyndns2 HTTP protocol (Dyn, No-IP, most commercial
//     providers and routers): a GET with the hostname and address, basic
//     authentication, and a one-word answer.
//
// Both check their configuration with Validate before any use: names are
// plain ASCII DNS names (an internationalized name is given in its xn--
// form), so nothing a person types (spaces, "$(", ";", NUL, newlines,
// kilobytes of unicode) reaches a DNS message, a URL or a log as anything
// but a rejected value. Validation errors say what is wrong in plain words
// and never repeat a secret; they do not repeat the rejected value either,
// which may be long or hostile. Update validates again and fails with
// ErrRefused on settings that do not pass: retrying cannot fix them, a
// person must. The addresses given to Update must be at most one per
// family; more is an ordinary (transient) error, as the Keeper never sends
// them.
//
// # Errors
//
// An Updater's error is one of three kinds, which decide what the Keeper
// does next:
//
//   - ErrAuth: the provider refused the credentials (TSIG BADKEY, BADSIG,
//     BADTIME, a NOTAUTH or REFUSED answer; dyndns2 "badauth" or HTTP 401).
//   - ErrRefused: the provider says not to try again until a person acts
//     (dyndns2 "abuse", "nohost", "notfqdn", "badagent", "!donator",
//     "numhost", "!yours"; an RFC 2136 NOTZONE, or a NOTAUTH that comes
//     signed, without a TSIG error: the key is fine, the server is just
//     not the primary of that zone).
//   - anything else is transient (timeouts, network errors, dyndns2 "911"
//     and "dnserr", HTTP 5xx, SERVFAIL): worth trying again later.
//
// Retrying after ErrAuth or ErrRefused can only make things worse (dyndns2
// providers block clients that keep sending bad credentials), so the
// Keeper stops until Refresh says a person has acted, or until a new
// configuration makes a new Keeper.
//
// # RFC 2136 choices
//
// The update is one message, so the zone never holds half of it: delete
// the name's A and AAAA record sets, then add one A and/or one AAAA. A
// family that is not given is deleted rather than left alone: a stale AAAA
// from a previous ISP would send dual-stack phones to an address that is no
// longer the home's. The message goes over TCP, which a forged answer
// cannot easily be slipped into and which has no size limit to trip over
// as the TSIG record grows the message; the server's port is 53 when the
// configuration names none, like every DNS tool. The algorithms offered are
// hmac-sha256 (the default, what "tsig-keygen" makes), hmac-sha224,
// hmac-sha384, hmac-sha512 and hmac-sha1 (RFC 8945 still requires servers to
// support it and older setups use it; HMAC-SHA1 is not broken the way SHA1
// signatures are); hmac-md5 is not (the DNS library dropped it, and it
// should not be used). A secret must decode to 16 to 128 bytes: shorter is
// too weak to trust, longer than any key tool makes. The answer must carry a
// valid signature of the same key; one that does not is not believed, even
// when it says the update succeeded.
//
// # dyndns2 choices
//
// The URL must be https: the request carries the account's password.
// Redirects are followed only to https. myip carries the IPv4 address,
// then the IPv6 one, comma-separated, as the providers that take both
// accept. Only the first line of the answer is read (we send one hostname,
// so there is one answer), at most 4 KB of body at all; "good" and "nochg"
// are success. The text of an unknown answer is shown, cut short and
// without control characters (and with the password blanked should a
// provider echo it).
//
// # The Keeper
//
// Keeper runs an Updater the way the providers want to be used: an update
// when the public addresses change (Set), a re-send at Interval even if
// nothing changed (default 24 h: it repairs a zone someone edited and keeps
// providers that expire idle hostnames, after 30 days for No-IP, happy,
// while staying far from the repeated "nochg" updates that get a client
// blocked as abusive), and exponential back-off with jitter after a
// transient failure (30 s doubling up to 30 min by default; jitter keeps a
// fleet of cells from hammering a provider in step after an outage). A new
// address during back-off is sent at once, but the failure count stays, so
// an address that flaps while the provider is down does not make a tight
// loop. After ErrAuth or ErrRefused it waits for Refresh. An empty Set (no
// public address known right now) changes nothing: the record keeps the
// last address rather than vanishing while detection is down. Every failed
// attempt is logged once at Warn in plain words; attempts are never closer
// than MinBackoff apart unless the addresses change or Refresh is called.
package ddns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"
)

// Updater points one name at the cell's public addresses (at most one
// IPv4, one IPv6).
type Updater interface {
	Update(ctx context.Context, addrs []netip.Addr) error
}

// ErrAuth says the provider refused the credentials; trying again with
// the same ones is pointless and may get the account blocked.
var ErrAuth = errors.New("the DNS provider refused the credentials")

// ErrRefused says the provider asks not to be tried again until a person
// has acted (a blocked account, a hostname it does not know, ...).
var ErrRefused = errors.New("the DNS provider refuses to update this name until its settings are fixed")

// providerError is an error of one of the kinds above with the provider's
// own words.
type providerError struct {
	kind error
	msg  string
}

func (e *providerError) Error() string { return e.msg }
func (e *providerError) Unwrap() error { return e.kind }

func authError(format string, a ...any) error {
	return &providerError{kind: ErrAuth, msg: fmt.Sprintf(format, a...)}
}

func refusedError(format string, a ...any) error {
	return &providerError{kind: ErrRefused, msg: fmt.Sprintf(format, a...)}
}

// splitAddrs checks that addrs hold at least one address and at most one
// of each family, and returns them (IPv4-mapped IPv6 counts as IPv4).
func splitAddrs(addrs []netip.Addr) (v4, v6 netip.Addr, err error) {
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid():
			return v4, v6, errors.New("an empty address cannot be published")
		case a.Zone() != "":
			return v4, v6, errors.New("an address with a zone (link-local) cannot be published")
		case a.Is4():
			if v4.IsValid() && v4 != a {
				return v4, v6, errors.New("a name can point at only one IPv4 address")
			}
			v4 = a
		default:
			if v6.IsValid() && v6 != a {
				return v4, v6, errors.New("a name can point at only one IPv6 address")
			}
			v6 = a
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return v4, v6, errors.New("no address to publish")
	}
	return v4, v6, nil
}

// normalize is addrs unmapped, without duplicates, IPv4 first: the form
// the Keeper compares.
func normalize(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// checkName checks that s is a DNS name of letters, digits, hyphens (and
// underscores where allowed), with or without the final dot; what names
// the field in the error.
func checkName(what, s string, underscore bool) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > 254 || (len(s) == 254 && !strings.HasSuffix(s, ".")) {
		return fmt.Errorf("%s is longer than a DNS name can be (253 characters)", what)
	}
	if s == "." {
		return fmt.Errorf("%s is the DNS root, not a name", what)
	}
	if strings.HasSuffix(s, ".") {
		s = s[:len(s)-1]
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return fmt.Errorf("%s has an empty part (two dots in a row, or a leading dot)", what)
		}
		if len(label) > 63 {
			return fmt.Errorf("%s has a part longer than 63 characters", what)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%s has a part that begins or ends with a hyphen", what)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			case c == '_' && underscore:
			default:
				return fmt.Errorf("%s may hold only letters, digits, hyphens and dots; %s is not allowed (write an internationalized name in its xn-- form)", what, describe(label[i:]))
			}
		}
	}
	return nil
}

// describe names the first character of s for an error, without printing
// anything a terminal or log would interpret.
func describe(s string) string {
	r, _ := utf8.DecodeRuneInString(s)
	switch {
	case r == ' ':
		return "a space"
	case r == utf8.RuneError:
		return "a byte that is not UTF-8"
	case r == 0:
		return "a NUL byte"
	case r == '\n' || r == '\r':
		return "a line break"
	case r < 0x20 || r == 0x7f:
		return "a control character"
	case r >= 0x80:
		return fmt.Sprintf("the non-ASCII character U+%04X", r)
	default:
		return fmt.Sprintf("%q", string(r))
	}
}

// printable reports whether s is non-empty printable ASCII (no control
// characters), as HTTP header values and account names must be.
func printable(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// clean makes a provider's text fit to show: printable ASCII, at most n
// bytes, with secret (when not empty) blanked.
func clean(s string, n int, secret string) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "***")
	}
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r >= 0x7f {
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}
