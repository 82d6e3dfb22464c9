package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestPinnedCA: a pinned CA is the only root trusted; a cell presenting
// another is refused with a *CAMismatchError naming both fingerprints.
func TestPinnedCA(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"ok":true,"state":"ok"}`)) }
	a := httptest.NewTLSServer(http.HandlerFunc(ok))
	defer a.Close()
	// httptest's servers share one certificate: b gets one of its own.
	b := httptest.NewUnstartedServer(http.HandlerFunc(ok))
	b.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	b.StartTLS()
	defer b.Close()
	ctx := context.Background()

	// The pin is applied whatever the order of the options.
	c := client.New(a.URL, client.WithPinnedCA(a.Certificate()), client.WithTransport(&http.Transport{}))
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("the pinned cell: %v", err)
	}
	c = client.New(b.URL, client.WithTransport(&http.Transport{}), client.WithPinnedCA(a.Certificate()))
	_, err := c.Health(ctx)
	var m *client.CAMismatchError
	if !errors.As(err, &m) {
		t.Fatalf("another CA: %v, want a *CAMismatchError", err)
	}
	if m.Pinned != client.Fingerprint(a.Certificate().Raw) || m.Presented != client.Fingerprint(b.Certificate().Raw) || m.Host != "127.0.0.1" {
		t.Errorf("mismatch %+v", m)
	}
	if !strings.Contains(err.Error(), "fingerprint "+m.Presented+", not the pinned "+m.Pinned) {
		t.Errorf("message %q", err)
	}

	// WithRootCAs alone: no pin, a plain verification error.
	c = client.New(b.URL, client.WithRootCAs(a.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs))
	if _, err := c.Health(ctx); err == nil || errors.As(err, &m) {
		t.Errorf("WithRootCAs of another CA: %v", err)
	}
	// WithTLSConfig needs an *http.Transport to put it in.
	c = client.New(a.URL, client.WithTransport(roundTripFunc(http.DefaultTransport.RoundTrip)), client.WithTLSConfig(&tls.Config{}))
	if _, err := c.Health(ctx); err == nil || !strings.Contains(err.Error(), "needs an *http.Transport") {
		t.Errorf("WithTLSConfig on another RoundTripper: %v", err)
	}
}

// selfSigned is a self-signed CA certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another cell"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestFingerprint(t *testing.T) {
	der := []byte("not a certificate, only bytes")
	sum := sha256.Sum256(der)
	fp := client.Fingerprint(der)
	if len(fp) != 32*3-1 || !strings.HasPrefix(fp, fmt.Sprintf("%02X:%02X:", sum[0], sum[1])) {
		t.Errorf("Fingerprint = %q", fp)
	}
	plain := strings.ToLower(strings.ReplaceAll(fp, ":", ""))
	for _, s := range []string{fp, plain, "SHA256:" + plain, " " + strings.ToLower(fp) + "\n"} {
		if !client.SameFingerprint(fp, s) {
			t.Errorf("%q is not the same as %q", s, fp)
		}
	}
	for _, s := range []string{"", fp[:len(fp)-1], fp + "0", "zz" + plain[2:]} {
		if client.SameFingerprint(fp, s) {
			t.Errorf("%q is the same as %q", s, fp)
		}
	}
}
