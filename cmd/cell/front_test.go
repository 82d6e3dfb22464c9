package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
)

// frontDaemon runs bin with the API on apiPort and the front on loopback.
type frontDaemon struct {
	*daemon
	https, http, api int
	ca               *x509.CertPool
	caFile           string
}

func freeTCPPort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func startFrontDaemon(t *testing.T, bin, data string) *frontDaemon {
	t.Helper()
	fd := &frontDaemon{https: freeTCPPort(t), http: freeTCPPort(t), api: freeTCPPort(t)}
	d := &daemon{t: t, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "-data", data, "-listen", fmt.Sprintf("127.0.0.1:%d", fd.api),
		"-front", fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d", fd.https, fd.http))
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.mu.Unlock()
			if listenRe.MatchString(sc.Text()) {
				select {
				case serving <- struct{}{}:
				default:
				}
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case <-serving:
	case <-d.done:
		t.Fatalf("the daemon exited: %v\n%s", d.err, d.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("the daemon did not serve within 60 s\n%s", d.log())
	}
	d.url = fmt.Sprintf("http://127.0.0.1:%d", fd.api)
	fd.daemon = d
	// The CA, over plain HTTP, as a phone fetches it.
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ca.crt", fd.http))
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fd.ca = x509.NewCertPool()
	if res.StatusCode != 200 || !fd.ca.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("GET /ca.crt: %d %q", res.StatusCode, pemBytes)
	}
	fd.caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(fd.caFile, pemBytes, 0o644)
	return fd
}

// client is a client of the API through the front, from local address from
// (a loopback address of its own, so the API can tell it from the front).
func (fd *frontDaemon) client(serverName, from string) *client.Client {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: fd.ca, ServerName: serverName},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", fd.https))
		}}}
	return client.New(fmt.Sprintf("https://%s:%d", serverName, fd.https), client.WithHTTPClient(hc))
}

// TestFrontInFrontOfTheDaemon: the real daemon with its front on loopback
// ports: the wizard, a login and /api/status over HTTPS with the vault's CA
// (curl and openssl too); http:// redirects; the audit log sees the front's
// client, and a forged X-Forwarded-For sent to the API's own port changes
// nothing; the certificates' status and a renewal through the API.
func TestFrontInFrontOfTheDaemon(t *testing.T) {
	bin := buildDaemon(t)
	data := t.TempDir()
	fd := startFrontDaemon(t, bin, data)
	ctx := context.Background()

	c := fd.client("127.0.0.1", "127.0.0.2")
	// Caddy obtains its certificates in the background once its config is
	// loaded: until the vault has signed the first one, a handshake fails.
	for start := time.Now(); ; {
		_, err := c.Health(ctx)
		if err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("/health through the front: %v\n%s", err, fd.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	code, err := os.ReadFile(filepath.Join(data, "setup-code"))
	if err != nil {
		t.Fatal(err)
	}
	c.UseSetupCode(strings.TrimSpace(string(code)))
	for _, step := range []struct {
		name string
		data map[string]any
	}{
		{"admin", map[string]any{"username": "admin", "password": "front-admin-pass-81f2"}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
		{"network", map[string]any{"wg_port": freeUDPPort(t), "subnet_v4": "10.77.0.0/24"}},
	} {
		if _, err := c.SetupStep(ctx, step.name, step.data); err != nil {
			t.Fatalf("setup step %s through the front: %v", step.name, err)
		}
	}
	if _, err := c.CompleteSetup(ctx); err != nil {
		t.Fatalf("complete setup: %v\n%s", err, fd.log())
	}
	if err := c.Login(ctx, "admin", "front-admin-pass-81f2"); err != nil {
		t.Fatal(err)
	}
	// The domain's certificate comes with the rebuild that setup started.
	var st client.CaddyStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err = c.CaddyCertStatus(ctx)
		ok := err == nil && len(st.Certificates) > 0
		for _, cs := range st.Certificates {
			ok = ok && cs.NotAfter != nil
		}
		if ok && st.Certificates[0].Name == "home.example.org" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cert-status: %+v %v", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, cs := range st.Certificates {
		if !strings.HasPrefix(cs.Issuer, "Personal Internet Cell CA") || cs.DaysLeft < 28 || cs.LastError != "" {
			t.Errorf("certificate %+v: want the vault's, 30 days", cs)
		}
	}
	t.Logf("certificates: %+v", st.Certificates)

	status, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := status.Parts["caddy"]; p.State != "ok" {
		t.Errorf("the caddy part: %+v", p)
	}

	// curl, as the README says: the CA pinned, the name resolved to the front.
	if _, err := exec.LookPath("curl"); err == nil {
		jar := filepath.Join(t.TempDir(), "jar")
		base := fmt.Sprintf("https://home.example.org:%d", fd.https)
		resolve := fmt.Sprintf("home.example.org:%d:127.0.0.1", fd.https)
		out, err := exec.Command("curl", "-sS", "--cacert", fd.caFile, "--resolve", resolve, "-c", jar,
			"-H", "Content-Type: application/json", "-d", `{"username":"admin","password":"front-admin-pass-81f2"}`, base+"/api/auth/login").CombinedOutput()
		if err != nil {
			t.Fatalf("curl login: %v %s", err, out)
		}
		out, err = exec.Command("curl", "-sS", "-i", "--cacert", fd.caFile, "--resolve", resolve, "-b", jar, base+"/api/status").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "HTTP/2 200") || !strings.Contains(string(out), `"caddy"`) {
			t.Errorf("curl /api/status: %v\n%s", err, out)
		}
		for _, h := range []string{"strict-transport-security: max-age=31536000", "content-security-policy: default-src 'self'; frame-ancestors 'none'",
			"x-frame-options: DENY", "referrer-policy: no-referrer", "x-content-type-options: nosniff"} {
			if !strings.Contains(strings.ToLower(string(out)), strings.ToLower(h)) {
				t.Errorf("curl /api/status: no %q", h)
			}
		}
		out, _ = exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", fmt.Sprintf("http://127.0.0.1:%d/api/status", fd.http)).CombinedOutput()
		if want := fmt.Sprintf("308 https://127.0.0.1:%d/api/status", fd.https); string(out) != want {
			t.Errorf("curl http:// = %q, want %q", out, want)
		}
	} else {
		t.Log("no curl: the Go client's checks stand alone")
	}
	// openssl shows the chain up to the vault's root.
	if _, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command("openssl", "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", fd.https), "-servername", "home.example.org",
			"-showcerts", "-CAfile", fd.caFile, "-verify_return_error")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verify return code: 0 (ok)") || strings.Count(string(out), "BEGIN CERTIFICATE") != 2 ||
			!strings.Contains(string(out), "Personal Internet Cell CA") {
			t.Errorf("openssl s_client: %v\n%s", err, out)
		}
	}

	// The audit's source address: the front's client, and 127.0.0.1 for a
	// request straight to the API with a forged header.
	req, _ := http.NewRequest("POST", fd.url+"/api/auth/login", strings.NewReader(`{"username":"admin","password":"wrong wrong wrong"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	page, err := c.Audit(ctx, client.AuditQuery{Action: "auth.login"})
	if err != nil {
		t.Fatal(err)
	}
	var srcs []string
	for _, e := range page.Entries {
		srcs = append(srcs, e.SourceIP)
	}
	// Newest first: the forged one, curl's (from 127.0.0.1), the Go client's.
	if len(srcs) < 2 || srcs[0] != "127.0.0.1" || srcs[len(srcs)-1] != "127.0.0.2" {
		t.Errorf("audit source addresses %v: want 127.0.0.1 for the forged header, 127.0.0.2 for the client through the front", srcs)
	}

	// Renew now: new certificates, served at once.
	before := fd.serial(t, "home.example.org")
	if _, err := c.RenewCaddyCerts(ctx); err != nil {
		t.Fatal(err)
	}
	if after := fd.serial(t, "home.example.org"); after == before {
		t.Errorf("after cert-renew the front serves the same certificate (serial %s)", after)
	}

	// The API's socket is the owner's alone.
	if fi, err := os.Stat(filepath.Join(data, "run", "api.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("DATA/run/api.sock: %v %v, want mode 0600", fi, err)
	}
}

// serial is the serial of the certificate the front serves for name.
func (fd *frontDaemon) serial(t *testing.T, name string) string {
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", fd.https), &tls.Config{RootCAs: fd.ca, ServerName: name})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}
