package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	maxBody      = 64 << 10
	maxRedirects = 5
	userAgent    = "pic-cell-diagnostics"
)

func (p *Prober) httpGet(ctx context.Context, q parsed, res *Result) error {
	// The transport dials on its own goroutines, which may outlive Do.
	var mu sync.Mutex
	var dialed, resolveFailure string
	seen := func() (string, string) { mu.Lock(); defer mu.Unlock(); return dialed, resolveFailure }
	tr := &http.Transport{
		Proxy:                  nil,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxBody,
		TLSHandshakeTimeout:    p.o.Timeout,
		ForceAttemptHTTP2:      true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, ps, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			port, _ := strconv.ParseUint(ps, 10, 16)
			addrs, why, err := p.resolve(ctx, host, uint16(port))
			if err != nil {
				return nil, err
			}
			if why != "" {
				mu.Lock()
				resolveFailure = why
				mu.Unlock()
				return nil, errors.New(why)
			}
			var last error
			for _, a := range addrs {
				ap := netip.AddrPortFrom(a, uint16(port)).String()
				mu.Lock()
				dialed = ap
				mu.Unlock()
				c, err := p.dial(ctx, network, ap)
				if err == nil {
					return c, nil
				}
				last = err
			}
			return nil, last
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			_, err := p.checkURL(req.URL.String())
			if err != nil {
				return invalid("the URL redirects to a forbidden place: %v", err)
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.url.String(), nil)
	if err != nil {
		return invalid("not a URL")
	}
	req.Header.Set("User-Agent", userAgent)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return unwrapInvalid(err)
		}
		var why string
		res.Address, why = seen()
		res.Detail = httpFailure(err)
		if why != "" {
			res.Detail = why
		}
		return nil
	}
	res.RTT = time.Since(start)
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	res.Address, _ = seen()
	res.Status = resp.StatusCode
	res.OK = resp.StatusCode < 400
	res.Detail = fmt.Sprintf("HTTP %s in %s", resp.Status, ms(res.RTT))
	if resp.Request != nil && resp.Request.URL.String() != q.url.String() {
		res.Detail += " from " + resp.Request.URL.Redacted() + " (redirected)"
	}
	return nil
}

// unwrapInvalid is the innermost plain-words refusal in err.
func unwrapInvalid(err error) error {
	var ie invalidError
	if errors.As(err, &ie) {
		return ie
	}
	return err
}

func httpFailure(err error) string {
	var ce *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return "the server's certificate is not signed by a known authority"
	case errors.As(err, &hn):
		return "the server's certificate is for another name: " + hn.Error()
	case errors.As(err, &inv):
		return "the server's certificate is not valid: " + inv.Error()
	case errors.As(err, &ce):
		return "the server's certificate is not valid"
	}
	var re tls.RecordHeaderError
	var ue *url.Error
	if errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "server gave HTTP response to HTTPS client") || errors.As(err, &re) {
		return "the server does not speak TLS (an http:// URL?)"
	}
	if ue != nil && !ue.Timeout() {
		return plain(ue.Err)
	}
	return plain(err)
}
