// Package tlsconf is the "tls" section of the config document: whether the
// front asks a public CA (ACME, HTTP-01) for the certificate of the cell's
// domain before the vault's CA. It is off by default: a home cell's domain
// may not point at it, or its port 80 may not be reachable from the
// internet, and then the CA's challenge cannot succeed (the vault's
// certificate is served all the same, as the fallback).
//
//	"tls": {"acme": true, "acme_ca": "https://acme-v02.api.letsencrypt.org/directory", "email": "admin@example.org"}
package tlsconf

import (
	"crypto/x509"
	"encoding/pem"
	"net/mail"
	"net/url"
	"strings"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/cell/plan"
)

// Section is the "tls" section.
func Section() config.Section {
	return config.Section{Name: "tls", New: func() any { return &plan.TLSSection{} },
		Validate: func(v any) error { return Validate(*v.(*plan.TLSSection)) }}
}

// Validate checks the section: the CA's URL is https with a host, the email
// an address, the root PEM certificates.
func Validate(s plan.TLSSection) error {
	if s.ACMECA != "" {
		u, err := url.Parse(s.ACMECA)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || len(s.ACMECA) > 2048 {
			return fault.Invalid("invalid_acme_ca", "tls.acme_ca must be the https URL of an ACME directory (such as https://acme-v02.api.letsencrypt.org/directory), not %s", names.Quote(s.ACMECA))
		}
	}
	if s.Email != "" {
		a, err := mail.ParseAddress(s.Email)
		if err != nil || a.Address != s.Email || a.Name != "" || len(s.Email) > 254 || strings.ContainsAny(s.Email, " \t\r\n") {
			return fault.Invalid("invalid_email", "tls.email must be an email address such as admin@example.org (or empty), not %s", names.Quote(s.Email))
		}
		if at := strings.LastIndexByte(s.Email, '@'); at < 1 || !strings.Contains(s.Email[at+1:], ".") {
			return fault.Invalid("invalid_email", "tls.email must be an email address with a domain, such as admin@example.org, not %s", names.Quote(s.Email))
		}
	}
	if s.ACMECARoot != "" {
		rest, n := []byte(s.ACMECARoot), 0
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				return fault.Invalid("invalid_acme_ca_root", "tls.acme_ca_root holds a %s; only certificates (PEM) may be there", b.Type)
			}
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return fault.Invalid("invalid_acme_ca_root", "tls.acme_ca_root: a certificate does not parse: %v", err)
			}
			n++
		}
		if n == 0 || strings.TrimSpace(string(rest)) != "" {
			return fault.Invalid("invalid_acme_ca_root", "tls.acme_ca_root must be PEM certificates (-----BEGIN CERTIFICATE-----)")
		}
	}
	return nil
}
