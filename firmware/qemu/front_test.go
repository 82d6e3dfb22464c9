package qemu_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/images/oci"
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
	cfg.Settings.Containerd = shipped.Settings.Containerd
	start := time.Now()
	img := f.imageWithServices(cfg)
	if fi, err := os.Stat(img); err == nil {
		t.Logf("image built in %s (%d MiB, sparse)", time.Since(start).Round(100*time.Millisecond), fi.Size()>>20)
	}

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

	// The admin app answers at / over HTTPS, its modules beside it, as
	// Chromium loads them (ui/browsertest drives the pages themselves).
	tlsc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: v.ca, ServerName: guestAddr}}}
	for path, want := range map[string]string{"/": `<script type="module" src="/js/app.js">`, "/peers": `<main id="main"`, "/js/app.js": "hashchange"} {
		res, err := tlsc.Get(fmt.Sprintf("https://127.0.0.1:%d%s", v.tlsPort, path))
		if err != nil {
			t.Fatalf("GET %s through the front: %v", path, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), want) || res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s through the front: %d, CSP %q, %.100q", path, res.StatusCode, res.Header.Get("Content-Security-Policy"), b)
		}
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

	// containerd, which config.json's image carries, runs under the init: the
	// init writes to the console when containerd's API first answers on its
	// socket (an HTTP/2 SETTINGS frame back, what a gRPC client gets first),
	// and containerd's resident memory 15 s later.
	t.Run("containerd", func(t *testing.T) {
		if shipped.Settings.Containerd != nil && !*shipped.Settings.Containerd {
			t.Skip("config.json switches containerd off")
		}
		var after, rss string
		err := waitFor(90*time.Second, func() error {
			s := v.serial.String()
			if strings.Contains(s, `msg="containerd does not answer"`) {
				return errors.New("the init says containerd does not answer")
			}
			after = logField(s, `msg="containerd answers"`, "after")
			rss = logField(s, `msg="containerd idle"`, "rss_kib")
			if after == "" || rss == "" {
				return fmt.Errorf("no console lines from the init that containerd answers (%q) and idles (%q)", after, rss)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s := v.serial.String(); strings.Contains(s, `msg=containerd err=`) {
			t.Errorf("the init could not prepare containerd: %s", logLine(s, `msg=containerd err=`))
		}
		// The cell reached it on the socket config.json names (-containerd):
		// its services part has a supervisor, which it gets only then.
		st, err := a.Status(ctx)
		a.ok("GET /api/status", err)
		if p := st.Parts["services"]; p.State != "ok" {
			t.Errorf("the services part %+v, want ok: the cell has no containerd", p)
		}
		kib, _ := strconv.Atoi(rss)
		if kib <= 0 || kib > 200<<10 {
			t.Errorf("containerd's idle RSS %q KiB, want between 0 and 200 MiB", rss)
		}
		t.Logf("containerd answered on %s %s after the init started its services; idle RSS %d KiB",
			"/run/containerd/containerd.sock", after, kib)
		// What the kernel offers the services' limits. gokrazy's amd64 kernel
		// has no memory controller (CONFIG_MEMCG is off), so a service's
		// memory limit is not enforced on it: logged here, where it shows,
		// not failed on, since the kernel is not ours to change.
		s := v.serial.String()
		switch line := logLine(s, "cgroup controllers"); {
		case line == "":
			t.Error("the init logged no cgroup controllers")
		case strings.Contains(line, "lacks"):
			t.Logf("KERNEL LIMITATION: %s", line)
		default:
			t.Logf("cgroup: %s", line)
		}
	})
	t.Run("files", func(t *testing.T) { testFilesOnTheImage(t, v, a) })
}

// imageWithServices is f.image with the first-party services' OCI archives
// bundled, as `cellctl image build` bundles images/out.
func (f *fixture) imageWithServices(cfg *image.Config) string {
	f.t.Helper()
	built, err := oci.BuildFirstParty(context.Background(), moduleRoot(f.t), f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	var archives []string
	for _, r := range built {
		archives = append(archives, r.Archive)
	}
	p := filepath.Join(f.dir, "cell-"+cfg.Version+".img")
	if err := image.Build(context.Background(), cfg, image.Options{Dir: moduleRoot(f.t), SetupCode: f.code, Images: archives}, p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// testFilesOnTheImage installs the files service on the booted image from
// the archive bundled in its root (the guest reaches no registry: nothing is
// pulled), and a peer's credentials store and read a file through the front
// at https://files.<domain>/.
func testFilesOnTheImage(t *testing.T, v *testVM, a *api) {
	_, err := a.CreatePeer(context.Background(), client.NewPeer{Name: "phone"})
	a.ok("POST /api/peers", err)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: v.ca, ServerName: "files.home.example.org"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", v.tlsPort))
		}}}
	useFiles(t, a.Client, "phone", hc, "hello from the phone\n")
}

// useFiles installs files, waits until it runs, and has peer's credentials
// (as the cell hands them out) PUT body and GET it back at
// https://files.home.example.org/ through hc.
func useFiles(t *testing.T, c *client.Client, peer string, hc *http.Client, body string) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	if _, err := c.InstallService(ctx, "files"); err != nil {
		t.Fatalf("POST /api/store/install: %v", err)
	}
	if err := waitFor(4*time.Minute, func() error {
		st, err := c.ServiceStatus(ctx, "files")
		if err == nil && st.State != "running" {
			err = fmt.Errorf("%+v", st)
		}
		return err
	}); err != nil {
		t.Fatalf("files never ran on the image: %v", err)
	}
	t.Logf("files installed from the bundled archive and running after %s", time.Since(start).Round(100*time.Millisecond))
	creds, err := c.PeerServiceCredentials(ctx, peer)
	if err != nil || len(creds) != 1 || creds[0].URL != "https://files.home.example.org/" {
		t.Fatalf("%s's credentials: %+v %v", peer, creds, err)
	}
	do := func(method, body string) (int, string, error) {
		req, _ := http.NewRequest(method, creds[0].URL+"from-"+peer+".txt", strings.NewReader(body))
		req.SetBasicAuth(creds[0].Username, string(creds[0].Password))
		res, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), nil
	}
	// The front gets the site's certificate from the vault in the background.
	if err := waitFor(90*time.Second, func() error {
		if code, got, err := do("PUT", body); err != nil || (code != 201 && code != 204) {
			return fmt.Errorf("PUT: %d %q %v", code, got, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code, got, err := do("GET", ""); err != nil || code != 200 || got != body {
		t.Errorf("GET: %d %q %v", code, got, err)
	}
}

// logLine is the first console line that contains marker.
func logLine(console, marker string) string {
	for _, line := range strings.Split(console, "\n") {
		if strings.Contains(line, marker) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// logField is key's value in the first console line (slog's text format) that
// contains marker, or "".
func logField(console, marker, key string) string {
	for _, f := range strings.Fields(logLine(console, marker)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
