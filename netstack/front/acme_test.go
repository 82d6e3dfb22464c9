package front

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestACMEFallsBackToVault: with the ACME CA unreachable, the public name
// gets the vault's certificate all the same, and the other subjects never
// ask the ACME CA.
func TestACMEFallsBackToVault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy")
	}
	dir := t.TempDir()
	ca := newTestCA(t)
	f, err := New(Options{Signer: ca, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	httpsPort := freePort(t)
	cfg := Config{HTTPS: []string{net.JoinHostPort("127.0.0.1", itoa(httpsPort))}, HTTP: []string{net.JoinHostPort("127.0.0.1", itoa(freePort(t)))},
		Names: []string{"home.example.org"}, Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		APISocket: fakeAPI(t, dir), RootPEM: ca.pem(), StorageDir: filepath.Join(dir, "caddy"),
		// Nobody listens there: the directory cannot be fetched.
		ACME: &ACME{Names: []string{"home.example.org"}, Directory: "https://127.0.0.1:" + itoa(freePort(t)) + "/directory", RootsPEM: ca.pem()}}
	if err := f.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "caddy", "acme-roots.pem")); err != nil || string(b) != string(ca.pem()) {
		t.Errorf("the ACME roots file: %q %v", b, err)
	}
	r := &running{f: f, ca: ca, cfg: cfg}
	deadline := time.Now().Add(60 * time.Second)
	for {
		done := true
		for _, c := range f.Certificates() {
			done = done && !c.NotAfter.IsZero()
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificates within 60 s: %+v", f.Certificates())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range r.f.Certificates() {
		if c.Issuer != "Test Cell CA" {
			t.Errorf("%s: issued by %q, want the vault's CA", c.Name, c.Issuer)
		}
	}
	conn, err := tls.Dial("tcp", "127.0.0.1:"+itoa(httpsPort), &tls.Config{RootCAs: ca.pool(), ServerName: "home.example.org"})
	if err != nil {
		t.Fatalf("TLS to home.example.org: %v", err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].Issuer.CommonName; got != "Test Cell CA" {
		t.Errorf("home.example.org is served a certificate by %q", got)
	}
	conn.Close()
}
