package vault

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
)

// plainNameRe is a common name that is not a DNS name or an address: a person's
// or a device's name ("Alice Laptop"), nothing a shell or a path would read.
var plainNameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9 ._-]*[A-Za-z0-9])?$`)

// maxCommonName is X.509's upper bound for a common name (ub-common-name).
const maxCommonName = 64

// checkCommonName returns the common name as the certificate will hold it.
func checkCommonName(s string) (string, error) {
	if s == "" {
		return "", fault.Invalid("invalid_common_name", "common_name is required: the device's or service's name, such as nas.home.example.org or Alice Laptop")
	}
	if len(s) > maxCommonName {
		return "", fault.Invalid("invalid_common_name", "common_name must be at most %d characters (got %d bytes)", maxCommonName, len(s))
	}
	if a, ok := parseAddr(s); ok {
		return a.String(), nil
	}
	if validDNSName(strings.ToLower(s)) || plainNameRe.MatchString(s) {
		return s, nil
	}
	return "", fault.Invalid("invalid_common_name", "common_name must be a DNS name, an IP address, or a plain name of letters, digits, spaces, '.', '_' and '-' (got %s)", names.Quote(s))
}

// isName reports whether a common name is also a SAN: a DNS name or an address.
func isName(cn string) bool {
	_, ok := parseAddr(cn)
	return ok || validDNSName(strings.ToLower(cn))
}

func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validDNSName accepts a lower-case host name, optionally a wildcard ("*." and a
// name of two labels or more), whose last label is not all digits.
func validDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		if !strings.Contains(rest, ".") {
			return false
		}
		s = rest
	}
	if !names.ValidDomain(s) {
		return false
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// parseSANs checks and splits subject alternative names into DNS names
// (lower-cased) and addresses, dropping duplicates.
func parseSANs(field string, in []string) (dnsNames []string, ips []net.IP, err error) {
	if len(in) > 4*MaxSANs {
		return nil, nil, fault.Invalid("too_many_sans", "%s takes at most %d names (got %d)", field, MaxSANs, len(in))
	}
	seen := map[string]bool{}
	for _, s := range in {
		if a, ok := parseAddr(s); ok {
			if !seen[a.String()] {
				seen[a.String()] = true
				ips = append(ips, net.IP(a.AsSlice()))
			}
			continue
		}
		l := strings.ToLower(s)
		if !validDNSName(l) {
			return nil, nil, fault.Invalid("invalid_san", "%s: %s is neither a DNS name (such as nas.home.example.org or *.home.example.org) nor an IP address", field, names.Quote(s))
		}
		if !seen[l] {
			seen[l] = true
			dnsNames = append(dnsNames, l)
		}
	}
	if len(seen) > MaxSANs {
		return nil, nil, fault.Invalid("too_many_sans", "a certificate holds at most %d names (got %d, the common name counted when it is a name)", MaxSANs, len(seen))
	}
	return dnsNames, ips, nil
}

// checkPublicKey accepts the keys a TLS server may hold.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k != nil && (k.Curve == elliptic.P256() || k.Curve == elliptic.P384() || k.Curve == elliptic.P521()) {
			return nil
		}
	case *rsa.PublicKey:
		if k != nil && k.N != nil && k.N.BitLen() >= 2048 {
			return nil
		}
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return nil
		}
	}
	return fault.Invalid("invalid_public_key", "the key must be ECDSA (P-256, P-384, P-521), RSA of 2048 bits or more, or ed25519")
}
