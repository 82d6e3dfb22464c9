package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
)

// testCA is a cell's CA: a root and a server certificate for 127.0.0.1 it signed.
type testCA struct {
	root    *x509.Certificate
	rootPEM []byte
	leaf    tls.Certificate // with the chain up to the root, as the cell's front sends it
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	lkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ltmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cell"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	lder, err := x509.CreateCertificate(rand.Reader, ltmpl, root, &lkey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{root: root, rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		leaf: tls.Certificate{Certificate: [][]byte{lder, der}, PrivateKey: lkey}}
}

// testCell is a cell's front: HTTPS with a certificate of ca, and /ca.crt on
// plain HTTP.
type testCell struct {
	https, http *httptest.Server
	ca          *testCA
}

func newTestCell(t *testing.T, name string, h http.Handler) *testCell {
	t.Helper()
	ca := newTestCA(t, name)
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/health" {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(`{"ok":true,"state":"ok"}`))
		})
	}
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf}}
	s.StartTLS()
	t.Cleanup(s.Close)
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ca.crt" {
			http.Redirect(w, r, "https://"+r.Host+r.URL.Path, http.StatusMovedPermanently)
			return
		}
		w.Write(ca.rootPEM)
	}))
	t.Cleanup(p.Close)
	return &testCell{https: s, http: p, ca: ca}
}

func (tc *testCell) fingerprint() string { return client.Fingerprint(tc.ca.root.Raw) }

// trustArgs are the arguments of cellctl trust for the cell.
func (tc *testCell) trustArgs(extra ...string) []string {
	return append([]string{"trust", "-device", tc.https.URL, "-ca-url", tc.http.URL + "/ca.crt"}, extra...)
}

// isolated makes the per-user configuration directory a temporary one.
func isolated(t *testing.T) string {
	d := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", d)
	t.Setenv("HOME", d)
	return filepath.Join(d, "pic-cell", "127.0.0.1.ca.pem")
}

func run(stdin string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	c := &CLI{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb}
	err := c.Run(args)
	return out.String() + errb.String(), err
}

// TestTrustThenStatus: trust fetches the CA over plain HTTP, shows its
// fingerprint, keeps it (0600) once it matches; status then reaches the cell
// over HTTPS with it.
func TestTrustThenStatus(t *testing.T) {
	file := isolated(t)
	tc := newTestCell(t, "cell A CA", nil)

	// Before trust: the cell's certificate is not trusted, and the message
	// says what to do.
	_, err := run("", "status", "-device", tc.https.URL)
	if err == nil || !strings.Contains(err.Error(), "cellctl trust -device") {
		t.Fatalf("status before trust: %v", err)
	}
	t.Logf("status before trust: %v", err)

	out, err := run("", tc.trustArgs("-fingerprint", strings.ToLower(tc.fingerprint()))...)
	if err != nil {
		t.Fatalf("trust: %v\n%s", err, out)
	}
	if !strings.Contains(out, tc.fingerprint()) {
		t.Errorf("trust did not show the fingerprint: %s", out)
	}
	t.Logf("trust:\n%s", out)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(file)); di.Mode().Perm() != 0o700 {
		t.Errorf("CA directory mode %v, want 0700", di.Mode().Perm())
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), "SHA-256 fingerprint: "+tc.fingerprint()) || !bytes.Contains(b, tc.ca.rootPEM) {
		t.Errorf("CA file:\n%s", b)
	}

	out, err = run("", "status", "-device", tc.https.URL)
	if err != nil || !strings.Contains(out, `"state": "ok"`) {
		t.Fatalf("status after trust: %v\n%s", err, out)
	}

	// -connect dials elsewhere and checks the certificate against the
	// device's name (as for cellctl vm run's forwards).
	caA := filepath.Join(t.TempDir(), "a.pem")
	os.WriteFile(caA, tc.ca.rootPEM, 0o644)
	out, err = run("", "status", "-device", "https://localhost:1", "-ca", caA, "-connect", tc.https.Listener.Addr().String())
	if err != nil || !strings.Contains(out, `"state": "ok"`) {
		t.Fatalf("status -connect: %v\n%s", err, out)
	}

	// Asked interactively: yes keeps it, anything else does not.
	os.Remove(file)
	if out, err := run("n\n", tc.trustArgs()...); err == nil || !strings.Contains(out, "Is it the same?") {
		t.Errorf("trust answered no: %v\n%s", err, out)
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("a CA not confirmed was kept")
	}
	if out, err := run("y\n", tc.trustArgs()...); err != nil {
		t.Errorf("trust answered yes: %v\n%s", err, out)
	}
	if _, err := run("", "ca", "fetch", "-device", tc.https.URL, "-ca-url", tc.http.URL+"/ca.crt", "-yes"); err != nil {
		t.Errorf("ca fetch -yes: %v", err)
	}
}

// TestTrustFingerprintMismatch: a CA whose fingerprint is not the one the
// person gave is not kept.
func TestTrustFingerprintMismatch(t *testing.T) {
	file := isolated(t)
	tc := newTestCell(t, "cell A CA", nil)
	other := newTestCA(t, "someone else")
	_, err := run("y\n", tc.trustArgs("-fingerprint", client.Fingerprint(other.root.Raw))...)
	if err == nil || !strings.Contains(err.Error(), "fingerprint mismatch") || !strings.Contains(err.Error(), tc.fingerprint()) {
		t.Fatalf("trust with a wrong fingerprint: %v", err)
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("a CA with the wrong fingerprint was kept")
	}
}

// TestAnotherCellsCARefused: a cell at the trusted address whose certificate
// comes from another CA is refused, by status and by update push, with both
// fingerprints; -ca overrides the kept CA.
func TestAnotherCellsCARefused(t *testing.T) {
	file := isolated(t)
	a := newTestCell(t, "cell A CA", nil)
	fc := &fakeCell{}
	b := newTestCell(t, "cell B CA", fc)
	if out, err := run("", a.trustArgs("-yes")...); err != nil {
		t.Fatalf("trust: %v\n%s", err, out)
	}
	// Cell B answers at the address (127.0.0.1) cell A's CA was trusted for.
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}

	_, err := run("", "status", "-device", b.https.URL)
	want := "presents a certificate authority with fingerprint " + b.fingerprint() + ", not the " + a.fingerprint() + " you trusted on "
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("status of another cell: %v\nwant %q", err, want)
	}
	t.Logf("status of another cell: %v", err)

	bundle := filepath.Join(t.TempDir(), "x.bundle")
	os.WriteFile(bundle, []byte("bundle"), 0o644)
	t.Setenv("CELL_PASSWORD", "pw")
	_, err = run("", "update", "push", "-device", b.https.URL, "-bundle", bundle, "-wait", "0")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("update push to another cell: %v", err)
	}
	if fc.received != 0 || fc.polls != 0 {
		t.Errorf("the other cell was asked something: %+v", fc)
	}

	// -ca names the CA to trust instead.
	caB := filepath.Join(t.TempDir(), "b.pem")
	os.WriteFile(caB, b.ca.rootPEM, 0o644)
	out, err := run("", "update", "push", "-device", b.https.URL, "-bundle", bundle, "-wait", "0", "-ca", caB)
	if err != nil || fc.received != len("bundle") || !fc.csrfOK {
		t.Fatalf("update push with -ca: %v (received %d)\n%s", err, fc.received, out)
	}
	// and with -ca of cell A, cell B is refused again.
	caA := filepath.Join(t.TempDir(), "a.pem")
	os.WriteFile(caA, a.ca.rootPEM, 0o644)
	if _, err := run("", "status", "-device", b.https.URL, "-ca", caA); err == nil || !strings.Contains(err.Error(), "you gave with -ca") {
		t.Errorf("status with -ca of another cell: %v", err)
	}
}

// TestPlainHTTPRefused: http:// goes only to this machine.
func TestPlainHTTPRefused(t *testing.T) {
	isolated(t)
	for _, args := range [][]string{
		{"status", "-device", "http://192.0.2.7"},
		{"status", "-url", "http://cell.example:3000"},
		{"update", "push", "-device", "http://192.0.2.7", "-bundle", "x"},
		{"trust", "-device", "http://192.0.2.7"},
	} {
		_, err := run("", args...)
		if err == nil || !strings.Contains(err.Error(), "refusing plain http://") || !strings.Contains(err.Error(), "use https://") {
			t.Errorf("%v: %v", args, err)
		}
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "127.1.2.3"} {
		if !loopback(h) {
			t.Errorf("%s is not loopback", h)
		}
	}
}
