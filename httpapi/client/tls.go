package client

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// WithTLSConfig makes the Client's HTTPS use a clone of cfg. The Client's
// transport (http.DefaultTransport's settings, proxies from the environment
// included, or the *http.Transport given by WithTransport or WithHTTPClient) is
// cloned and gets cfg, whatever the order of the options; a transport that is
// not an *http.Transport cannot take it, and every call then fails saying so.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) { c.tls = cfg.Clone() }
}

// WithRootCAs makes pool the only roots the Client trusts for the cell's
// certificate (instead of the system's).
func WithRootCAs(pool *x509.CertPool) Option {
	return func(c *Client) {
		if c.tls == nil {
			c.tls = &tls.Config{}
		}
		c.tls.RootCAs = pool
	}
}

// WithPinnedCA makes ca (the cell's CA root, as its /ca.crt serves it) the only
// root the Client trusts, and checks on every connection that the chain the
// cell presented verifies up to exactly that certificate (its SHA-256, as
// Fingerprint gives it). A cell whose certificate chains to another CA, such as
// another cell's, is refused with a *CAMismatchError.
func WithPinnedCA(ca *x509.Certificate) Option {
	return func(c *Client) {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		if c.tls == nil {
			c.tls = &tls.Config{}
		}
		c.tls.RootCAs = pool
		c.pin = ca
	}
}

// Fingerprint is the SHA-256 of der (a certificate), upper-case hex pairs
// joined by colons: what the cell's vault shows as sha256_fingerprint and
// `openssl x509 -fingerprint -sha256` prints.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	var b strings.Builder
	for i, x := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", x)
	}
	return b.String()
}

// SameFingerprint reports whether a and b are the same SHA-256 fingerprint as
// people write them: case, colons, spaces and a "SHA256:" or "sha256=" prefix
// do not matter.
func SameFingerprint(a, b string) bool {
	na, nb := normFingerprint(a), normFingerprint(b)
	return na != "" && na == nb
}

func normFingerprint(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	for _, p := range []string{"SHA256:", "SHA-256:", "SHA256=", "SHA-256="} {
		s = strings.TrimPrefix(s, p)
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'A' && r <= 'F':
			return r
		case r == ':' || r == ' ' || r == '-' || r == '\t':
			return -1
		}
		return '?' // not a fingerprint: never equal to one
	}, s)
}

// CAMismatchError is a cell whose certificate does not chain to the CA the
// Client pinned (WithPinnedCA).
type CAMismatchError struct {
	Host   string // the cell's host, as in the base URL
	Pinned string // the pinned CA's fingerprint
	// Presented is the fingerprint of the CA root the cell sent with its
	// certificate; "" if it sent none (then Issuer names the CA).
	Presented string
	Issuer    string // the common name of the CA that signed the cell's certificate
	Err       error  // the verification's error
}

func (e *CAMismatchError) Error() string {
	got := "a certificate authority that is not the pinned one (issuer " + fmt.Sprintf("%q", e.Issuer) + ")"
	if e.Presented != "" {
		got = "a certificate authority with fingerprint " + e.Presented
	}
	return fmt.Sprintf("the cell at %s presents %s, not the pinned %s", e.Host, got, e.Pinned)
}

func (e *CAMismatchError) Unwrap() error { return e.Err }

// applyTLS gives the transport the Client's TLS configuration (New calls it
// after every option).
func (c *Client) applyTLS() {
	if c.tls == nil {
		return
	}
	cfg := c.tls.Clone()
	if c.pin != nil {
		want := Fingerprint(c.pin.Raw)
		host := c.host()
		verified := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			// The roots are the pinned CA alone; still, say no to any chain
			// that does not end in it.
			for _, chain := range cs.VerifiedChains {
				if root := chain[len(chain)-1]; Fingerprint(root.Raw) != want {
					return c.mismatch(host, cs.PeerCertificates, errors.New("the verified chain does not end in the pinned CA"))
				}
			}
			if verified != nil {
				return verified(cs)
			}
			return nil
		}
	}
	var t *http.Transport
	switch rt := c.hc.Transport.(type) {
	case nil:
		t = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		t = rt.Clone()
	default:
		c.err = fmt.Errorf("client: WithTLSConfig needs an *http.Transport, not a %T", rt)
		return
	}
	t.TLSClientConfig = cfg
	hc := *c.hc
	hc.Transport = t
	c.hc = &hc
}

func (c *Client) host() string {
	if u, err := url.Parse(c.base); err == nil {
		return u.Hostname()
	}
	return c.base
}

func (c *Client) mismatch(host string, presented []*x509.Certificate, err error) *CAMismatchError {
	e := &CAMismatchError{Host: host, Pinned: Fingerprint(c.pin.Raw), Err: err}
	if n := len(presented); n > 0 {
		last := presented[n-1]
		e.Issuer = last.Issuer.CommonName
		// The cell's front sends its chain up to the root: the last
		// certificate, if self-signed, is the CA it answers for.
		if last.IsCA && last.CheckSignatureFrom(last) == nil {
			e.Presented = Fingerprint(last.Raw)
		}
	}
	return e
}

// tlsError makes a failed verification against the pinned CA a
// *CAMismatchError; other errors are returned as they are.
func (c *Client) tlsError(err error) error {
	if c.pin == nil || err == nil {
		return err
	}
	var m *CAMismatchError
	if errors.As(err, &m) {
		return m
	}
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	if errors.As(err, &cve) && errors.As(cve.Err, &ua) {
		return c.mismatch(c.host(), cve.UnverifiedCertificates, err)
	}
	return err
}
