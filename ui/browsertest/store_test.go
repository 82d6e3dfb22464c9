package browsertest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/images/oci"
	"github.com/pic-cell/cell/netstack/nstest"
)

// images are the first-party OCI archives, built once per test binary
// (removed by TestMain).
var images = oci.TempArchives{Module: "../.."}

// firstPartyImages is the archives' directory, built the first time.
func firstPartyImages(t testing.TB) string {
	t.Helper()
	dir, err := images.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// forward serves a loopback port of the host that leads to addr inside ns:
// Chromium, in the host's namespace, reaches the cell's front through it.
func forward(t testing.TB, ns *nstest.NS, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := ns.Dial(addr, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestInstallFilesFromTheStore: where containerd is there (root, tun mode,
// the cell in network namespaces of its own as netstack/system runs it),
// the admin installs files from the store page and watches it to running;
// the peer's portal then shows its files account as the API has it.
func TestInstallFilesFromTheStore(t *testing.T) {
	needChromium(t)
	if os.Geteuid() != 0 {
		t.Skip("installing a service needs root: containerd, runc, tun mode and network namespaces (netstack/system covers the API side)")
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "nsenter", "unshare", "ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("installing a service needs %s: %v", tool, err)
		}
	}
	top := nstest.NewTopology(t)
	archives := firstPartyImages(t)
	bin := daemonBinary(t)
	h := nstest.NewContainerdHost(t, top.Cell)
	c := &cell{t: t, data: t.TempDir(), log: &syncBuffer{}}
	args := h.Enter(bin, "-data", c.data, "-listen", "127.0.0.1:3000", "-wg-mode", "tun", "-front", ":443,:80",
		"-containerd", nstest.Socket, "-images", archives, "-cgroup-parent", h.Cgroup)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("daemon log:\n%s", tail(c.log.String(), 60))
		}
	})
	// The front answers at the cell's WAN address (and, after setup, its
	// domain), not at loopback.
	c.name = nstest.CellWAN
	c.https = forward(t, top.Cell, nstest.CellWAN+":443")
	c.http = forward(t, top.Cell, nstest.CellWAN+":80")
	// The CA over plain HTTP, then the front's certificate for 127.0.0.1.
	deadline := time.Now().Add(60 * time.Second)
	var leaf *x509.Certificate
	for {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ca.crt", c.http))
		if err == nil {
			c.caPEM, _ = io.ReadAll(res.Body)
			res.Body.Close()
			c.ca = x509.NewCertPool()
			if res.StatusCode == 200 && c.ca.AppendCertsFromPEM(c.caPEM) {
				conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.https), &tls.Config{RootCAs: c.ca, ServerName: c.name})
				if err == nil {
					conn.Close()
					break
				}
			}
		}
		select {
		case <-done:
			t.Fatalf("the daemon exited:\n%s", tail(c.log.String(), 60))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the front did not serve within 60 s:\n%s", tail(c.log.String(), 60))
		}
		time.Sleep(200 * time.Millisecond)
	}
	api := c.setUp()
	// Chromium goes to the cell by its domain (mapped to the forward), with
	// the certificate the vault issues for it once setup is done.
	const domain = "home.example.org"
	for {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.https), &tls.Config{RootCAs: c.ca, ServerName: domain})
		if err == nil {
			leaf = conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			break
		}
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatalf("no certificate for %s: %v", domain, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for rest := c.caPEM; ; {
		cert, r, ok := nextCert(rest)
		if !ok {
			break
		}
		c.spki, rest = append(c.spki, spkiHash(cert)), r
	}
	c.spki = append(c.spki, spkiHash(leaf))
	created, err := api.CreatePeer(t.Context(), client.NewPeer{Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowserAt(t, "https://"+domain, c.spki, chromedp.Flag("host-resolver-rules", fmt.Sprintf("MAP %s:443 127.0.0.1:%d", domain, c.https)))
	b.open("#/login")
	login(b, adminUser, adminPassword)
	b.gotoRoute("services")
	b.click("Install files")
	b.waitFor("files running", `/files is running|Files is running/i.test((document.getElementById("install-progress-files") || {}).innerText || "")`, 4*time.Minute)
	b.shot("files-running")
	st, err := api.ServiceStatus(t.Context(), "files")
	if err != nil || st.State != "running" {
		t.Fatalf("the API says files is %+v (%v)", st, err)
	}

	// The peer finds its files account in the portal.
	want, err := api.PeerServiceCredentials(t.Context(), "phone")
	if err != nil || len(want) != 1 {
		t.Fatalf("phone's credentials: %+v %v", want, err)
	}
	b.click("Sign out")
	b.waitFor("signed out", `location.hash.startsWith("#/login")`, 10*time.Second)
	b.rendered()
	login(b, "phone", string(created.OneTimePassword))
	changePassword(b, string(created.OneTimePassword), "phone-own-pass-71c2")
	b.waitFor("the credentials", `!!document.getElementById("cred-files")`, 20*time.Second)
	b.shot("portal-credentials")
	card := eval[string](b, `document.getElementById("cred-files").innerText`)
	for _, s := range []string{want[0].URL, want[0].Username, string(want[0].Password)} {
		if !strings.Contains(card, s) {
			t.Errorf("the portal's files card %q lacks %q", card, s)
		}
	}
}
