// Package names holds the checks of the names people give things (peers, users,
// the cell and its domain, interfaces) and the one way a user's value is quoted
// back in an error message. Every capability uses these, so a name that is valid
// in one place is valid in all.
package names

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/pic-cell/cell/cell/fault"
)

var (
	labelRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ifaceRe  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	userRe   = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,31}$`)
	domainRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidLabel reports whether s is a DNS label of 1–63 of a-z, 0-9 and '-', not
// starting or ending with '-'.
func ValidLabel(s string) bool { return labelRe.MatchString(s) }

// ValidDomain reports whether s is a DNS name of lower-case labels, at most 253 bytes.
func ValidDomain(s string) bool { return len(s) <= 253 && domainRe.MatchString(s) }

// ValidInterface reports whether s can be a Linux interface name.
func ValidInterface(s string) bool { return ifaceRe.MatchString(s) }

// CheckLabel refuses a field that is not a DNS label, with code invalid_<field>.
func CheckLabel(field, s string) error {
	if !ValidLabel(s) {
		return fault.Invalid("invalid_"+field, "%s must be a DNS label: 1–63 of a-z, 0-9 and '-', not starting or ending with '-' (got %s)", field, Quote(s))
	}
	return nil
}

// CheckUsername refuses a username outside 1–32 of a-z, 0-9, '.', '_', '-'.
func CheckUsername(s string) error {
	if !userRe.MatchString(s) {
		return fault.Invalid("invalid_username", "username must be 1–32 of a-z, 0-9, '.', '_' and '-', starting with a letter (got %s)", Quote(s))
	}
	return nil
}

// Quote quotes a user's value for an error message, cut to a readable length.
func Quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// MinPasswordLen and MaxPasswordLen bound every password the cell accepts.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 1024
)

// CheckPassword refuses a password outside the length bounds or with a NUL.
func CheckPassword(field, pw string) error {
	if len(pw) < MinPasswordLen {
		return fault.Invalid("weak_password", "%s must be at least %d characters", field, MinPasswordLen)
	}
	if len(pw) > MaxPasswordLen {
		return fault.Invalid("invalid_password", "%s must be at most %d bytes", field, MaxPasswordLen)
	}
	if strings.ContainsRune(pw, 0) {
		return fault.Invalid("invalid_password", "%s must not contain a NUL character", field)
	}
	return nil
}

// ValidHostPort reports whether s is a DNS name or an IP address, optionally
// with :port (IPv6 in brackets then): a server's address in the config.
func ValidHostPort(s string) bool {
	if len(s) > 260 {
		return false
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return false
		}
		if a, err := netip.ParseAddr(h); err == nil {
			return a.Zone() == "" && a.Is6() == strings.HasPrefix(s, "[")
		}
		host = h
	}
	return ValidDomain(host)
}
