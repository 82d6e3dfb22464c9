package system_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/front"
	"github.com/pic-cell/cell/netstack/nstest"
)

// The ACME test's world: the "internet" namespace has the public CA (Caddy's
// acme_server, testdata/acmeserver, with a DNS server that says the cell's
// domain is the cell's uplink address); the "cell" namespace has the front
// (netstack/front with a test signer in the vault's place) on 443 and 80.
const (
	acmeInetAddr = "198.18.0.1"
	acmeCellAddr = "198.18.0.2"
	acmeDomain   = "home.example.org"
	acmeTunnel   = "10.77.0.1"
	acmeIssuerCN = "Test ACME Intermediate" // the CA's intermediate signs the leaves
	vaultCN      = "Test Cell CA"
	acmeChildEnv = "PIC_ACME_FRONT_CHILD"
)

// TestFrontACME: the cell's domain gets its certificate from the public CA by
// HTTP-01 when the name points at the cell, the addresses get the vault's;
// renewing gets a new one from the CA; with the CA down, renewing falls back
// to the vault's certificate.
//
// The front runs in a child process (this test binary again, under
// ip netns exec) so that all of Caddy's sockets, the ACME client's included,
// are in the cell's namespace; the test talks to it over a unix socket.
func TestFrontACME(t *testing.T) {
	if os.Getenv(acmeChildEnv) != "" {
		acmeFrontChild(t)
		return
	}
	nstest.RequireRoot(t)
	inet, cellNS := nstest.NewNS(t, "inet"), nstest.NewNS(t, "cell")
	nstest.Veth(t, inet, "to-cell", acmeInetAddr+"/24", cellNS, "wan0", acmeCellAddr+"/24")

	dir := t.TempDir()
	bin := filepath.Join(dir, "acmeserver")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	build.Dir = filepath.Join("testdata", "acmeserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the ACME server: %v\n%s", err, out)
	}

	// The public CA.
	caStore := filepath.Join(dir, "acme-ca")
	var caLog syncBuffer
	ca := exec.Command("ip", "netns", "exec", inet.Name, bin, "-addr", acmeInetAddr, "-storage", caStore, "-hosts", acmeDomain+"="+acmeCellAddr)
	ca.Stdout, ca.Stderr = &caLog, &caLog
	if err := ca.Start(); err != nil {
		t.Fatal(err)
	}
	caDone := make(chan error, 1)
	go func() { caDone <- ca.Wait() }()
	stopCA := func() {
		if ca.ProcessState == nil {
			ca.Process.Signal(syscall.SIGTERM)
			select {
			case <-caDone:
			case <-time.After(10 * time.Second):
				ca.Process.Kill()
				<-caDone
			}
		}
	}
	t.Cleanup(func() {
		stopCA()
		if t.Failed() {
			t.Logf("ACME server's log:\n%s", caLog.String())
		}
	})
	rootFile := filepath.Join(caStore, "pki", "authorities", "local", "root.crt")
	directory := "https://" + acmeInetAddr + "/acme/local/directory"
	waitFor(t, 30*time.Second, "the ACME server's directory", func() error {
		root, err := os.ReadFile(rootFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(root)
		c, err := inet.Dial(acmeInetAddr+":443", 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: acmeInetAddr})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			return err
		}
		fmt.Fprintf(tc, "GET /acme/local/directory HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", acmeInetAddr)
		b, _ := io.ReadAll(tc)
		if !strings.Contains(string(b), "newOrder") {
			return fmt.Errorf("the directory: %q", b)
		}
		return nil
	})
	acmeRoot, _ := os.ReadFile(rootFile)
	acmePool := x509.NewCertPool()
	acmePool.AppendCertsFromPEM(acmeRoot)

	// The front, in the cell's namespace: a child process; stopFront ends it.
	var control string
	var stopFront func()
	startFront := func(name string) {
		control = filepath.Join(dir, name+".sock")
		var childLog syncBuffer
		child := exec.Command("ip", "netns", "exec", cellNS.Name, os.Args[0], "-test.run=^TestFrontACME$", "-test.v", "-test.timeout=10m")
		child.Env = append(os.Environ(), acmeChildEnv+"=1", "PIC_ACME_DIRECTORY="+directory, "PIC_ACME_ROOT="+rootFile,
			"PIC_ACME_STORAGE="+filepath.Join(dir, name), "PIC_ACME_CONTROL="+control)
		child.Stdout, child.Stderr = &childLog, &childLog
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		stopFront = func() {
			once.Do(func() {
				child.Process.Signal(syscall.SIGTERM)
				child.Wait()
				if t.Failed() {
					t.Logf("the front's (%s) log:\n%s", name, childLog.String())
				}
			})
		}
		t.Cleanup(stopFront)
	}
	startFront("front1")
	ctl := &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", control)
		}}}
	certs := func() map[string]front.CertStatus {
		resp, err := ctl.Get("http://front/certs")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var list []front.CertStatus
		json.NewDecoder(resp.Body).Decode(&list)
		out := map[string]front.CertStatus{}
		for _, c := range list {
			out[c.Name] = c
		}
		return out
	}
	renew := func() error {
		resp, err := ctl.Post("http://front/renew", "", nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return errors.New(string(b))
		}
		return nil
	}
	waitCerts := func() map[string]front.CertStatus {
		waitFor(t, 90*time.Second, "every certificate", func() error {
			cs := certs()
			for _, n := range []string{acmeDomain, acmeCellAddr, acmeTunnel} {
				if cs[n].NotAfter.IsZero() {
					return fmt.Errorf("none for %s yet: %+v", n, cs)
				}
			}
			return nil
		})
		return certs()
	}
	// served is the certificate the front serves for name, seen from the internet.
	served := func(name string) *x509.Certificate {
		t.Helper()
		c, err := inet.Dial(acmeCellAddr+":443", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS to %s as %s: %v", acmeCellAddr, name, err)
		}
		return tc.ConnectionState().PeerCertificates[0]
	}

	cs := waitCerts()
	if cs[acmeDomain].Issuer != acmeIssuerCN || cs[acmeDomain].LastError != "" {
		t.Errorf("the domain's certificate status: %+v, want issued by %s", cs[acmeDomain], acmeIssuerCN)
	}
	for _, a := range []string{acmeCellAddr, acmeTunnel} {
		if cs[a].Issuer != vaultCN {
			t.Errorf("%s: %+v, want the vault's", a, cs[a])
		}
	}
	first := served(acmeDomain)
	if _, err := first.Verify(x509.VerifyOptions{DNSName: acmeDomain, Roots: acmePool, Intermediates: intermediates(t, inet)}); err != nil {
		t.Errorf("the domain's certificate does not verify to the ACME CA's root: %v (issuer %s)", err, first.Issuer)
	}
	if first.Issuer.CommonName != acmeIssuerCN {
		t.Errorf("the domain is served a certificate by %q", first.Issuer.CommonName)
	}

	// cert-renew: a new certificate from the CA.
	if err := renew(); err != nil {
		t.Fatalf("renew: %v", err)
	}
	second := served(acmeDomain)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || second.Issuer.CommonName != acmeIssuerCN {
		t.Errorf("after renew: serial %v (was %v), issuer %q", second.SerialNumber, first.SerialNumber, second.Issuer.CommonName)
	}
	t.Logf("issued by %s: serial %x, renewed: %x", acmeIssuerCN, first.SerialNumber, second.SerialNumber)

	// The CA down. Renewing succeeds (through the vault), but a still valid
	// certificate from the CA stays the one served: certmagic serves the most
	// recently issued of its issuers' certificates, and the vault backdates
	// its own (as cell/vault does), so the vault's wins only once the CA's
	// nears its end, when it would have been renewed. A front that has none
	// from the CA gets the vault's at once.
	stopCA()
	if err := renew(); err != nil {
		t.Fatalf("renew with the CA down: %v", err)
	}
	if third := served(acmeDomain); third.Issuer.CommonName != acmeIssuerCN {
		t.Errorf("with the CA down, renewing replaced a valid certificate from the CA by %q's", third.Issuer.CommonName)
	}
	stopFront()
	startFront("front2")
	cs = waitCerts()
	for _, n := range []string{acmeDomain, acmeCellAddr, acmeTunnel} {
		if cs[n].Issuer != vaultCN {
			t.Errorf("a new front with the CA down: %s is %+v, want the vault's", n, cs[n])
		}
	}
	if got := served(acmeDomain); got.Issuer.CommonName != vaultCN {
		t.Errorf("a new front with the CA down serves the domain a certificate by %q, want the vault's", got.Issuer.CommonName)
	}
}

// intermediates are the chain the front sends for the domain, above the leaf.
func intermediates(t *testing.T, inet *nstest.NS) *x509.CertPool {
	c, err := inet.Dial(acmeCellAddr+":443", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: acmeDomain, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, ic := range tc.ConnectionState().PeerCertificates[1:] {
		pool.AddCert(ic)
	}
	return pool
}

func waitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// acmeFrontChild is the front's process: it runs in the cell's namespace
// until SIGTERM, serving its certificates' status and renew on the control socket.
func acmeFrontChild(t *testing.T) {
	signer := newVaultCA(t)
	root, err := os.ReadFile(os.Getenv("PIC_ACME_ROOT"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := front.New(front.Options{Signer: signer, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	storage := os.Getenv("PIC_ACME_STORAGE")
	cfg := front.Config{HTTPS: []string{":443"}, HTTP: []string{":80"},
		Names:     []string{acmeDomain},
		Addresses: []netip.Addr{netip.MustParseAddr(acmeCellAddr), netip.MustParseAddr(acmeTunnel)},
		APISocket: filepath.Join(storage, "api.sock"), RootPEM: signer.pem(), StorageDir: storage,
		ACME: &front.ACME{Names: []string{acmeDomain}, Directory: os.Getenv("PIC_ACME_DIRECTORY"), RootsPEM: root}}
	if err := f.Set(cfg); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", os.Getenv("PIC_ACME_CONTROL"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(f.Certificates()) })
	mux.HandleFunc("POST /renew", func(w http.ResponseWriter, r *http.Request) {
		if err := f.Renew(r.Context()); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case <-time.After(9 * time.Minute):
	}
}

// vaultCA signs as the vault does, under a root named "Test Cell CA".
type vaultCA struct {
	root *x509.Certificate
	key  *ecdsa.PrivateKey
	mu   sync.Mutex
	n    int64
}

func newVaultCA(t *testing.T) *vaultCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: vaultCN},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &vaultCA{root: root, key: key, n: 1}
}

func (ca *vaultCA) Issue(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) ([]byte, [][]byte, error) {
	ca.mu.Lock()
	ca.n++
	serial := ca.n
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

func (ca *vaultCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
}
