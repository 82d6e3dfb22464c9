package front

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// testCA is a Signer over an in-memory root, as the vault signs.
type testCA struct {
	root *x509.Certificate
	key  *ecdsa.PrivateKey
	mu   sync.Mutex
	n    int
	ttl  time.Duration
}

func newTestCA(t testing.TB) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Cell CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &testCA{root: root, key: key}
}

func (ca *testCA) Issue(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) ([]byte, [][]byte, error) {
	ca.mu.Lock()
	ca.n++
	serial := int64(ca.n + 1)
	ca.ttl = ttl
	ca.mu.Unlock()
	if ttl == 0 {
		ttl = 12 * time.Hour
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-5 * time.Minute), NotAfter: time.Now().Add(ttl),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: dnsNames, IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, pub, ca.key)
	return der, [][]byte{ca.root.Raw}, err
}

func (ca *testCA) issued() int { ca.mu.Lock(); defer ca.mu.Unlock(); return ca.n }

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what BuildJSON makes now (run with -update if the change is meant):\n%s", p, got)
	}
}

const rootPEM = "-----BEGIN CERTIFICATE-----\nTESTROOT\n-----END CERTIFICATE-----\n"

func TestBuildJSONGolden(t *testing.T) {
	appliance := Config{HTTPS: []string{":443"}, HTTP: []string{":80"},
		Names:     []string{"home.example.org"},
		Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.20"), netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::1")},
		APISocket: "/perm/cell/run/api.sock", RootPEM: []byte(rootPEM), StorageDir: "/perm/cell/caddy",
		Sites: []Site{{Host: "files.home.example.org", Upstream: netip.MustParseAddrPort("10.77.250.2:8080")}}}
	raw, err := BuildJSON(appliance, "cell")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "appliance.json", raw)

	dev := Config{HTTPS: []string{"127.0.0.1:8443"}, HTTP: []string{"127.0.0.1:8080"},
		Names: []string{"localhost", "Home.Example.org."}, Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.77.0.1")},
		APISocket: "/home/dev/cell/var/run/api.sock", RootPEM: []byte(rootPEM), StorageDir: "/home/dev/cell/var/caddy",
		CertTTL: 7 * 24 * time.Hour, ACME: &ACME{Names: []string{"home.example.org", "not-a-subject.example"}, Email: "admin@example.org",
			Directory: "https://acme.example/directory", RootsPEM: []byte(rootPEM)}}
	raw, err = BuildJSON(dev, "cell")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "dev-acme.json", raw)
	again, _ := BuildJSON(dev, "cell")
	if !bytes.Equal(raw, again) {
		t.Error("BuildJSON is not deterministic")
	}

	for name, c := range map[string]Config{
		"no https":        {APISocket: "/s", RootPEM: []byte(rootPEM), StorageDir: "/d", Names: []string{"a"}},
		"relative socket": {HTTPS: []string{":443"}, APISocket: "var/api.sock", RootPEM: []byte(rootPEM), StorageDir: "/d", Names: []string{"a"}},
		"no root":         {HTTPS: []string{":443"}, APISocket: "/s", StorageDir: "/d", Names: []string{"a"}},
		"no names":        {HTTPS: []string{":443"}, APISocket: "/s", RootPEM: []byte(rootPEM), StorageDir: "/d"},
		"no port":         {HTTPS: []string{"127.0.0.1"}, APISocket: "/s", RootPEM: []byte(rootPEM), StorageDir: "/d", Names: []string{"a"}},
		"no storage":      {HTTPS: []string{":443"}, APISocket: "/s", RootPEM: []byte(rootPEM), Names: []string{"a"}},
		"site upstream":   {HTTPS: []string{":443"}, APISocket: "/s", RootPEM: []byte(rootPEM), StorageDir: "/d", Sites: []Site{{Host: "files.a"}}},
	} {
		if _, err := BuildJSON(c, "cell"); err == nil {
			t.Errorf("%s: BuildJSON accepted it", name)
		}
	}
}

// freePort is a loopback port nobody listens on now.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fakeAPI serves the API's socket: it answers with the headers it got.
func fakeAPI(t testing.TB, dir string) string {
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Frame-Options", "DENY")
		io.WriteString(w, `{"path":"`+r.URL.Path+`","xff":"`+r.Header.Get("X-Forwarded-For")+`","proto":"`+r.Header.Get("X-Forwarded-Proto")+`","host":"`+r.Host+`"}`)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

type running struct {
	f                   *Front
	ca                  *testCA
	cfg                 Config
	httpsPort, httpPort int
	client              *http.Client
}

func startFront(t testing.TB, log *slog.Logger) *running {
	dir := t.TempDir()
	ca := newTestCA(t)
	r := &running{ca: ca, httpsPort: freePort(t), httpPort: freePort(t)}
	f, err := New(Options{Signer: ca, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	r.f = f
	t.Cleanup(func() { f.Close() })
	r.cfg = Config{HTTPS: []string{net.JoinHostPort("127.0.0.1", itoa(r.httpsPort))}, HTTP: []string{net.JoinHostPort("127.0.0.1", itoa(r.httpPort))},
		Names: []string{"home.example.org", "localhost"}, Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		APISocket: fakeAPI(t, dir), RootPEM: ca.pem(), StorageDir: filepath.Join(dir, "caddy")}
	if err := f.Set(r.cfg); err != nil {
		t.Fatal(err)
	}
	r.client = &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool(), ServerName: "home.example.org"},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				// Every name is the front on loopback (curl's --resolve).
				_, port, _ := net.SplitHostPort(addr)
				var d net.Dialer
				return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			}}}
	r.waitCerts(t)
	return r
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// waitCerts waits until every subject has a certificate.
func (r *running) waitCerts(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := ""
		for _, c := range r.f.Certificates() {
			if c.NotAfter.IsZero() {
				missing = c.Name
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s within 20 s: %+v", missing, r.f.Certificates())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *running) get(t testing.TB, url string) (*http.Response, string) {
	t.Helper()
	resp, err := r.client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestFrontServes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	r := startFront(t, slog.New(slog.DiscardHandler))
	https := "https://home.example.org:" + itoa(r.httpsPort)

	resp, body := r.get(t, https+"/api/status")
	if resp.StatusCode != 200 || !strings.Contains(body, `"path":"/api/status"`) {
		t.Fatalf("/api/status through the front: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(body, `"xff":"127.0.0.1"`) || !strings.Contains(body, `"proto":"https"`) || !strings.Contains(body, `"host":"home.example.org:`) {
		t.Errorf("what the API got: %s", body)
	}
	if got := resp.Header.Values("X-Frame-Options"); len(got) != 1 || got[0] != "DENY" {
		t.Errorf("X-Frame-Options %q: want one DENY (the front's set replaces the API's)", got)
	}
	for k, v := range map[string]string{"Strict-Transport-Security": HSTS, "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
		"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	// A forged X-Forwarded-For does not reach the API.
	req, _ := http.NewRequest("GET", https+"/health", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp2, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if !strings.Contains(string(b), `"xff":"127.0.0.1"`) {
		t.Errorf("a forged X-Forwarded-For reached the API: %s", b)
	}

	// The app's paths go to the API's listener too (it serves the UI).
	resp, body = r.get(t, https+"/peers/x")
	if resp.StatusCode != 200 || !strings.Contains(body, `"path":"/peers/x"`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("the UI's page: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	// Plain HTTP: a redirect to https, and the root.
	plain := "http://127.0.0.1:" + itoa(r.httpPort)
	resp, _ = r.get(t, plain+"/api/status?x=1")
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "https://127.0.0.1:"+itoa(r.httpsPort)+"/api/status?x=1" {
		t.Errorf("http:// answers %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.Header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS over plain HTTP")
	}
	resp, body = r.get(t, plain+"/ca.crt")
	if resp.StatusCode != 200 || body != string(r.ca.pem()) {
		t.Errorf("/ca.crt over http: %d %q", resp.StatusCode, body)
	}

	// The chain: the leaf for the name asked, signed by the root.
	conn, err := tls.Dial("tcp", "127.0.0.1:"+itoa(r.httpsPort), &tls.Config{RootCAs: r.ca.pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to 127.0.0.1 without SNI: %v", err)
	}
	st := conn.ConnectionState()
	conn.Close()
	if len(st.VerifiedChains) != 1 || len(st.VerifiedChains[0]) != 2 || !st.VerifiedChains[0][1].Equal(r.ca.root) {
		t.Errorf("chain to the root: %+v", st.VerifiedChains)
	}
	for _, c := range r.f.Certificates() {
		if c.Issuer != "Test Cell CA" || c.DaysLeft != 0 || c.LastError != "" {
			t.Errorf("certificate status %+v", c)
		}
	}

	// Idempotent: the same config does not reload.
	before := r.ca.issued()
	if err := r.f.Set(r.cfg); err != nil {
		t.Fatal(err)
	}
	// Renew now: new certificates, served at once.
	old := st.PeerCertificates[0].SerialNumber
	if err := r.f.Renew(context.Background()); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if r.ca.issued() != before+len(r.cfg.Subjects()) {
		t.Errorf("renewing signed %d certificates, want %d", r.ca.issued()-before, len(r.cfg.Subjects()))
	}
	conn, err = tls.Dial("tcp", "127.0.0.1:"+itoa(r.httpsPort), &tls.Config{RootCAs: r.ca.pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if conn.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(old) == 0 {
		t.Error("after renew the front still serves the old certificate")
	}
	conn.Close()
}
