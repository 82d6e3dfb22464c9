package system_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/audit"
	"github.com/pic-cell/cell/cell/vault"
	"github.com/pic-cell/cell/images/accounts"
	"github.com/pic-cell/cell/images/oci"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/runtime/containerdtest"
	"github.com/pic-cell/cell/netstack/front"
	"github.com/pic-cell/cell/storage"
)

// getSize is the file the WebDAV benchmark reads.
const getSize = 100 << 20

// BenchmarkWebDAVGet100MB: a GET of a 100 MB file from an account's home in
// the real files container (the image `make images` builds, on a throwaway
// containerd), through the front (Caddy as the cell configures it, a Site
// for files.cell.test, HTTPS with a certificate from the cell's vault)
// against the same GET straight from the container's address, in the same
// run. x-direct is the front's throughput as a share of the direct one's
// (the target is 0.7 or more).
//
// The container joins the benchmark's own network namespace and listens on
// free loopback ports (its flags) rather than on the services bridge: the
// front is in this process, and a bridge would need an interface on the
// host. Both paths go over loopback; HTTP/1.1 with keep-alive on both.
func BenchmarkWebDAVGet100MB(b *testing.B) {
	d := containerdtest.Start(b)
	archives := firstPartyImages(b)
	ctx := context.Background()
	rt, err := runtime.NewWithOptions(d.Socket, slog.New(slog.DiscardHandler),
		runtime.Options{RuncRoot: d.RuncRoot, CgroupParent: d.CgroupParent})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	img, err := rt.Import(ctx, filepath.Join(archives, oci.FirstParty[0].ArchiveName()))
	if err != nil {
		b.Fatal(err)
	}

	// The service, as the cell runs it (its user, volume, read-only token,
	// the catalog's limits), on ports of its own.
	dir := b.TempDir()
	data, token := filepath.Join(dir, "data"), filepath.Join(dir, "admin-token")
	const adminToken = "bench-admin-token"
	if err := os.Mkdir(data, 0o750); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(token, []byte(adminToken+"\n"), 0o400); err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{data, token} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			b.Fatal(err)
		}
	}
	davPort, adminPort := freePort(b, "tcp"), freePort(b, "tcp")
	direct := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(davPort))
	spec := runtime.Spec{ID: "files", Image: img.Ref, User: "65534:65534",
		Args:  []string{"/files", "-listen", direct.String(), "-admin", "127.0.0.1:" + strconv.Itoa(adminPort)},
		NetNS: fmt.Sprintf("/proc/%d/ns/net", os.Getpid()),
		Mounts: []runtime.Mount{{Source: data, Target: "/data"},
			{Source: token, Target: "/run/pic/admin-token", ReadOnly: true}},
		MemoryBytes: 128 << 20, Pids: 64, LogPath: filepath.Join(dir, "files.log")}
	if err := rt.Ensure(ctx, spec); err != nil {
		b.Fatal(err)
	}
	defer rt.Remove(context.Background(), "files")
	if err := rt.Start(ctx, "files"); err != nil {
		b.Fatal(err)
	}
	plain := &http.Client{Timeout: time.Minute}
	benchPoll(b, 20*time.Second, "the files container's /healthz", func() error {
		res, err := plain.Get("http://" + direct.String() + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	})

	// An account and its 100 MB file.
	const user, password = "alice", "a long bench password for alice"
	if err := accounts.New("http://127.0.0.1:"+strconv.Itoa(adminPort), adminToken, plain).Put(ctx, user, password, 0); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, getSize)
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	_, _ = mrand.NewChaCha8(seed).Read(body)
	req, _ := http.NewRequest(http.MethodPut, "http://"+direct.String()+"/big.bin", bytes.NewReader(body))
	req.SetBasicAuth(user, password)
	res, err := plain.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusNoContent {
		b.Fatalf("PUT of the 100 MB file: %d", res.StatusCode)
	}
	body = nil

	// The front, with the cell's vault as its CA.
	v := benchVault(b, dir)
	f, err := front.New(front.Options{Signer: v, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	httpsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(b, "tcp")))
	cfg := front.Config{HTTPS: []string{httpsAddr}, Names: []string{"cell.test"},
		Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, APISocket: filepath.Join(dir, "api.sock"),
		RootPEM: v.RootPEM(), StorageDir: filepath.Join(dir, "caddy"),
		Sites: []front.Site{{Host: "files.cell.test", Upstream: direct}}}
	if err := f.Set(cfg); err != nil {
		b.Fatal(err)
	}
	benchPoll(b, 20*time.Second, "the front's certificates", func() error {
		for _, c := range f.Certificates() {
			if c.NotAfter.IsZero() {
				return fmt.Errorf("none for %s", c.Name)
			}
		}
		return nil
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(v.RootPEM())
	// HTTPS clients of files.cell.test at addr, trusting the vault.
	httpsTo := func(addr string) *http.Client {
		return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "files.cell.test"},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}}
	}
	viaFront := httpsTo(httpsAddr)

	get := func(hc *http.Client, url string) time.Duration {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth(user, password)
		t0 := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			b.Fatalf("GET %s: %v", url, err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		took := time.Since(t0)
		if err != nil || res.StatusCode != http.StatusOK || n != getSize {
			b.Fatalf("GET %s: %d, %d bytes, %v; want 200 and %d bytes", url, res.StatusCode, n, err, getSize)
		}
		return took
	}
	frontURL := "https://files.cell.test/big.bin"
	directURL := "http://" + direct.String() + "/big.bin"
	get(viaFront, frontURL) // warm both: connections, the password cache, page cache
	get(plain, directURL)

	// A diagnostic anchor: the same file served by Go's HTTPS server with a
	// certificate of the same vault, so the report can tell what TLS costs
	// on this machine (client and server on its two cores) from what the
	// proxying costs.
	tlsFile := httpsTo(tlsFileServer(b, v, filepath.Join(data, "homes", user)))
	fileGet := func() time.Duration { return get(tlsFile, frontURL) }
	fileGet()

	b.ResetTimer()
	var tFront, tDirect, tFile time.Duration
	for range b.N {
		tFront += get(viaFront, frontURL)
		tDirect += get(plain, directURL)
		tFile += fileGet()
	}
	b.StopTimer()

	mbps := func(d time.Duration) float64 { return float64(b.N) * getSize / (1 << 20) / d.Seconds() }
	b.ReportMetric(mbps(tFront), "front-MiB/s")
	b.ReportMetric(mbps(tDirect), "direct-MiB/s")
	b.ReportMetric(mbps(tFile), "go-tls-file-MiB/s")
	b.ReportMetric(float64(tDirect)/float64(tFront), "x-direct")
	b.ReportMetric(float64(tFile)/float64(tFront), "x-go-tls-file")
	b.ReportMetric(0, "ns/op")
	b.Logf("GET 100 MB: through the front %.0f MiB/s, direct %.0f MiB/s (x%.2f, target >= 0.7); Go's HTTPS file server %.0f MiB/s (the front x%.2f of it)",
		mbps(tFront), mbps(tDirect), float64(tDirect)/float64(tFront), mbps(tFile), float64(tFile)/float64(tFront))
}

// benchVault is the cell's vault (the front's CA) over a database in dir.
func benchVault(b *testing.B, dir string) *vault.Vault {
	b.Helper()
	db, err := storage.Open(filepath.Join(dir, "db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	log := slog.New(slog.DiscardHandler)
	al, err := audit.Open(db, log, time.Now, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(vault.Options{DB: db, Audit: al, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// benchPoll calls f until it succeeds; b fails after d (waitFor takes a
// *testing.T).
func benchPoll(b *testing.B, d time.Duration, what string, f func() error) {
	b.Helper()
	var err error
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	b.Fatalf("%s: not within %v: %v", what, d, err)
}

// tlsFileServer serves the files of dir over HTTPS (HTTP/1.1) on loopback
// with a certificate of v for files.cell.test, and returns its address.
func tlsFileServer(b *testing.B, v *vault.Vault, dir string) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, chain, err := v.Issue(key.Public(), []string{"files.cell.test"}, nil, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: append([][]byte{der}, chain...), PrivateKey: key}}})
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
