package dns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// testCA makes a self-signed certificate for dns.test and 127.0.0.1.
func testCA(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dns.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"dns.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestDoT: tls:// upstreams are asked over TLS, verified against the name
// before '@' (or the IP address), on one kept connection; a certificate the
// cell does not trust is a failure, not an answer.
func TestDoT(t *testing.T) {
	cert, pool := testCA(t)
	up := &testUpstream{records: map[string][]mdns.RR{}, counts: map[string]int{}}
	rr, _ := mdns.NewRR("example.test. 60 IN A 198.18.0.80")
	up.records["example.test. A"] = []mdns.RR{rr}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: raw}
	srv := &mdns.Server{Listener: tls.NewListener(cl, &tls.Config{Certificates: []tls.Certificate{cert}}), Net: "tcp-tls", Handler: up}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	port := raw.Addr().(*net.TCPAddr).Port

	for i, u := range []string{"tls://dns.test@127.0.0.1:" + strconv.Itoa(port), "tls://127.0.0.1:" + strconv.Itoa(port)} {
		before := cl.n.Load()
		c := &cell{clock: newClock()}
		c.Server = New(Options{Logger: quiet(), Exchange: &Network{RootCAs: pool}})
		if err := c.Set(Config{Upstreams: []string{u}, Allowed: loopback, CacheSize: -1}); err != nil {
			t.Fatal(err)
		}
		pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
		if err := c.Start(pc, nil); err != nil {
			t.Fatal(err)
		}
		for q := range 3 {
			r := mustAsk(t, pc.LocalAddr().String(), "example.test.", mdns.TypeA)
			if got := rrs(r.Answer); got != "example.test. 60 IN A 198.18.0.80" {
				t.Errorf("%s query %d: %s", u, q, summary(r))
			}
		}
		c.Shutdown()
		if n := cl.n.Load() - before; n != 1 {
			t.Errorf("%s: 3 queries took %d TLS connections, want 1 (kept and reused)", u, n)
		}
		if got, want := up.count("tcp", "example.test.", "A"), 3*(i+1); got != want {
			t.Errorf("%s: the upstream has answered %d queries over TLS, want %d", u, got, want)
		}
	}

	// Not trusted: the system's roots do not know the test CA.
	c := startCell(t, Config{Upstreams: []string{"tls://dns.test@127.0.0.1:" + strconv.Itoa(port)}})
	if r := mustAsk(t, c.Addr, "example.test.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("untrusted certificate: %s, want SERVFAIL", summary(r))
	}
	if st := c.Stats().Upstreams[0]; !strings.Contains(st.Err, "certificate") {
		t.Errorf("untrusted certificate: upstream error %q, want it to say certificate", st.Err)
	}
	// The wrong name: the certificate is for dns.test.
	c2 := &cell{clock: newClock()}
	c2.Server = New(Options{Logger: quiet(), Exchange: &Network{RootCAs: pool}})
	defer c2.Shutdown()
	c2.Set(Config{Upstreams: []string{"tls://other.test@127.0.0.1:" + strconv.Itoa(port)}, Allowed: loopback})
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	c2.Start(pc, nil)
	if r := mustAsk(t, pc.LocalAddr().String(), "example.test.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("wrong TLS name: %s, want SERVFAIL", summary(r))
	}
}
