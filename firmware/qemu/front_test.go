package qemu_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
	"github.com/pic-cell/cell/httpapi/client"
)

// TestFrontOnTheImage: the image with config.json's cell. Its front answers
// HTTPS on the guest's 443 with a certificate of the cell's own CA, which
// http://…/ca.crt hands out; plain HTTP redirects to https; the API answers
// only on the guest's loopback (nothing on its 3000 from outside); once set
// up, the certificates cover the domain and the tunnel addresses, the caddy
// part is ok, and the audit log names the client the front saw.
func TestFrontOnTheImage(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	shipped, err := image.LoadConfig(filepath.Join(moduleRoot(t), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.cellConfig("1.0.0")
	cfg.Packages = shipped.Packages
	cfg.Settings.HealthURL = shipped.Settings.HealthURL
	img := f.image(cfg)

	apiPort, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	v := bootCell(t, img, true, qemu.Forward{Proto: "tcp", HostPort: apiPort, GuestPort: 3000})
	boot := v.waitHealth(4 * time.Minute)
	t.Logf("/health over HTTPS answered %s after QEMU started (%s)", boot.Round(100*time.Millisecond), qemu.KVMReason())
	ctx := context.Background()

	// The certificate: for the guest's address, signed by the root /ca.crt gave.
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", v.tlsPort), &tls.Config{RootCAs: v.ca, ServerName: guestAddr})
	if err != nil {
		t.Fatalf("TLS to the front with the CA from /ca.crt pinned: %v", err)
	}
	chain := conn.ConnectionState().VerifiedChains[0]
	conn.Close()
	if len(chain) != 2 || !strings.HasPrefix(chain[1].Subject.CommonName, "Personal Internet Cell CA") {
		t.Errorf("the chain %v, want the leaf and the cell's root", chain)
	}

	// Plain HTTP: a redirect to https, with the security headers.
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noFollow.Get(v.url("/api/status"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 308 || !strings.HasPrefix(res.Header.Get("Location"), "https://") || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("http://…/api/status: %d Location %q headers %v", res.StatusCode, res.Header.Get("Location"), res.Header)
	}

	// Nothing answers on the guest's 3000 from outside: the API is on its loopback.
	res, err = (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/health", apiPort))
	if err == nil {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Errorf("the guest's port 3000 answered from outside: %d %s", res.StatusCode, b)
	}

	a := newAPI(t, v)
	a.setupAndLogin(f.code)
	var st client.CaddyStatus
	if err := waitFor(60*time.Second, func() error {
		st, err = a.CaddyCertStatus(ctx)
		if err != nil {
			return err
		}
		want := map[string]bool{"home.example.org": false, guestAddr: false, "10.77.0.1": false}
		for _, c := range st.Certificates {
			if _, ok := want[c.Name]; ok && c.NotAfter != nil && c.LastError == "" {
				want[c.Name] = true
			}
		}
		for n, ok := range want {
			if !ok {
				return fmt.Errorf("no certificate for %s yet: %+v", n, st.Certificates)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("GET /api/caddy/cert-status: %v", err)
	}
	for _, c := range st.Certificates {
		t.Logf("certificate %s: issuer %q, %d days left", c.Name, c.Issuer, c.DaysLeft)
	}
	status, err := a.Status(ctx)
	a.ok("GET /api/status", err)
	if p := status.Parts["caddy"]; p.State != "ok" {
		t.Errorf("the caddy part: %+v", p)
	}
	// The audit's source address is the front's client as the guest saw it
	// (slirp's 10.0.2.2), never the front itself.
	entries := a.audit("auth.login")
	if len(entries) == 0 || entries[0].SourceIP != "10.0.2.2" {
		t.Errorf("the login's audit entries %+v, want source 10.0.2.2", entries)
	}
}
