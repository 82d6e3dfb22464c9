package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/netstack/front"
	"github.com/pic-cell/cell/storage"
)

// BenchmarkFrontStatus: an authenticated GET /api/status through the front
// (HTTPS, keep-alive, the real API behind its unix socket, in process),
// against Caddy answering a static response of the same size on the same
// listener and TLS settings, measured in the same run. front/static is the
// front's throughput as a share of the static one's (the target is 0.8 or more).
func BenchmarkFrontStatus(b *testing.B) {
	dir := b.TempDir()
	db, err := storage.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	book, err := logs.Open(logs.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer book.Close()
	c, err := cell.New(cell.Options{DB: db, Logs: book, HashMemoryKiB: 64})
	if err != nil {
		b.Fatal(err)
	}
	const code = "BENC-HFRO-NTCO-DE33"
	if err := c.Setup.SetCode(code); err != nil {
		b.Fatal(err)
	}
	handler := httpapi.New(httpapi.Deps{Version: cell.Version, Setup: c.Setup, Auth: c.Accounts, Settings: c.Settings,
		Health: c.Health, Audit: c.Audit, Logs: book, Vault: c.Vault}).Handler()
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ConnContext: httpapi.FrontConnContext}
	go srv.Serve(ln)
	defer srv.Close()
	f, err := front.New(front.Options{Signer: c.Vault})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	port := freeTCPPort(b)
	cfg := front.Config{HTTPS: []string{fmt.Sprintf("127.0.0.1:%d", port)}, Names: []string{"localhost"},
		Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, APISocket: sock, RootPEM: c.Vault.RootPEM(),
		StorageDir: filepath.Join(dir, "caddy")}
	if err := f.Set(cfg); err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.Vault.RootPEM())
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, MaxIdleConnsPerHost: 4}}
	base := fmt.Sprintf("https://localhost:%d", port)
	hc.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
	}
	do := func(method, path, body string) []byte {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("X-Setup-Code", code)
		var res *http.Response
		for i := 0; ; i++ { // the certificate is made in the background
			if res, err = hc.Do(req); err == nil || i == 100 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("%s %s: %d %s", method, path, res.StatusCode, raw)
		}
		return raw
	}
	for _, step := range []string{
		`{"step":"admin","data":{"username":"admin","password":"bench front password"}}`,
		`{"step":"cell","data":{"name":"home","domain":"home.example.org"}}`,
		`{"step":"network","data":{"wg_port":51820,"subnet_v4":"10.77.0.0/24"}}`,
	} {
		do("POST", "/api/setup/step", step)
	}
	do("POST", "/api/setup/complete", "")
	do("POST", "/api/auth/login", `{"username":"admin","password":"bench front password"}`)
	size := len(do("GET", "/api/status", ""))

	run := func(path string, n int) time.Duration {
		start := time.Now()
		for range n {
			do("GET", path, "")
		}
		return time.Since(start)
	}
	// The anchor: the same config with /api/status answered by Caddy itself.
	var doc map[string]any
	json.Unmarshal(f.JSON(), &doc)
	routes := doc["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)["https"].(map[string]any)["routes"].([]any)
	static := map[string]any{"match": []any{map[string]any{"path": []string{"/static"}}}, "terminal": true,
		"handle": []any{map[string]any{"handler": "static_response", "status_code": 200,
			"headers": map[string][]string{"Content-Type": {"application/json"}}, "body": strings.Repeat("x", size)}}}
	routes = append([]any{routes[0], static}, routes[1:]...)
	doc["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)["https"].(map[string]any)["routes"] = routes
	raw, _ := json.Marshal(doc)
	if err := caddy.Load(raw, false); err != nil {
		b.Fatal(err)
	}
	run("/api/status", 50) // warm both
	run("/static", 50)
	// The API alone, on its socket with the same session: what the front adds
	// is the difference.
	direct := &http.Client{Jar: jar, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	jar.SetCookies(mustParse("http://localhost/"), jar.Cookies(mustParse(base+"/")))
	runDirect := func(n int) time.Duration {
		start := time.Now()
		for range n {
			res, err := direct.Get("http://localhost/api/status")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Fatalf("direct /api/status: %d", res.StatusCode)
			}
		}
		return time.Since(start)
	}
	runDirect(50)
	b.ResetTimer()
	var viaFront, anchor, api time.Duration
	for range b.N {
		viaFront += run("/api/status", 200)
		anchor += run("/static", 200)
		api += runDirect(200)
	}
	b.StopTimer()
	b.ReportMetric(float64(api.Microseconds())/float64(b.N*200), "api-alone-µs/req")
	b.ReportMetric(float64(viaFront.Microseconds())/float64(b.N*200), "front-µs/req")
	b.ReportMetric(float64(anchor.Microseconds())/float64(b.N*200), "static-µs/req")
	b.ReportMetric(float64(anchor)/float64(viaFront), "front/static")
	b.ReportMetric(float64(size), "body-bytes")
}

// BenchmarkFrontRSS: the daemon's resident memory, idle 10 s after it
// serves, with the front minus without (the target is 40 MiB or less).
func BenchmarkFrontRSS(b *testing.B) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Skip("go is not on PATH")
	}
	bin := filepath.Join(b.TempDir(), "cell")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	rss := func(front bool) float64 {
		args := []string{"-data", b.TempDir(), "-listen", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(b))}
		if front {
			args = append(args, "-front", fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d", freeTCPPort(b), freeTCPPort(b)))
		}
		cmd := exec.Command(bin, args...)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !listenRe.MatchString(sc.Text()) {
		}
		go io.Copy(io.Discard, stderr)
		time.Sleep(10 * time.Second)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			b.Skipf("no /proc: %v", err)
		}
		for _, line := range bytes.Split(status, []byte("\n")) {
			if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
		b.Fatal("no VmRSS")
		return 0
	}
	var with, without float64
	for range b.N {
		without += rss(false)
		with += rss(true)
	}
	b.ReportMetric(without/float64(b.N), "without-MiB")
	b.ReportMetric(with/float64(b.N), "with-MiB")
	b.ReportMetric((with-without)/float64(b.N), "front-MiB")
	b.ReportMetric(0, "ns/op")
}

func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
