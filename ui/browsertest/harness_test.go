// Package browsertest drives Debian's Chromium (headless, through chromedp)
// against a real cell daemon and its front: the app of package ui as a
// person uses it, over HTTPS with the vault's certificate and under the
// front's Content-Security-Policy. It owns only tests and their test data
// (axe-core, vendored from the npm registry).
//
// Every test starts its own daemon (userspace mode, no root) and its own
// browser with a fresh profile, fails on any console error, uncaught
// exception or CSP violation, and keeps its screenshots as test output
// ($TEST_ARTIFACTS/<test>/, else the system's temp folder/pic-ui-screens/<test>/).
package browsertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/pic-cell/cell/httpapi/client"
)

const chromiumPath = "/usr/bin/chromium"

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain removes the daemon binary and the image archives the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	images.Remove()
	os.Exit(code)
}

// daemonBinary builds cmd/cell once per test binary.
func daemonBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cell-ui-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "cell")
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", binPath, "github.com/pic-cell/cell/cmd/cell").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// needChromium skips the test when Debian's Chromium is not installed, and
// in -short runs (each test starts a daemon and a browser).
func needChromium(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the browser tests start a cell daemon and Chromium")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("Debian's Chromium is not installed (%s: %v); apt-get install chromium", chromiumPath, err)
	}
}

// syncBuffer is the daemon's log, written by exec's copier and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cell is a running daemon with its front on loopback ports.
type cell struct {
	t                testing.TB
	data             string
	https, http, api int
	caPEM            []byte
	ca               *x509.CertPool
	// spki are the base64 SHA-256 hashes of the front's leaf and of the CA's
	// public keys: Chromium accepts the front's certificate by them
	// (--ignore-certificate-errors-spki-list) and no other.
	spki []string
	log  *syncBuffer
	// name is the TLS server name the API clients ask the front for
	// ("": 127.0.0.1, which the front has a certificate for on loopback).
	name string
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// startCell runs the daemon in userspace mode (no root, no containerd) and
// waits until its front serves the app over HTTPS.
func startCell(t testing.TB) *cell {
	t.Helper()
	bin := daemonBinary(t)
	c := &cell{t: t, data: t.TempDir(), https: freeTCPPort(t), http: freeTCPPort(t), api: freeTCPPort(t), log: &syncBuffer{}}
	cmd := exec.Command(bin, "-data", c.data, "-listen", fmt.Sprintf("127.0.0.1:%d", c.api),
		"-front", fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d", c.https, c.http),
		"-wg-mode", "netstack", "-containerd", "none")
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
			t.Logf("daemon log:\n%s", tail(c.log.String(), 80))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	wait := func(what string, ok func() bool) {
		for !ok() {
			select {
			case <-done:
				t.Fatalf("the daemon exited while waiting for %s:\n%s", what, tail(c.log.String(), 80))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon did not serve %s within 60 s:\n%s", what, tail(c.log.String(), 80))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The CA over plain HTTP, as a phone fetches it.
	wait("/ca.crt", func() bool {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ca.crt", c.http))
		if err != nil {
			return false
		}
		defer res.Body.Close()
		c.caPEM, _ = io.ReadAll(res.Body)
		c.ca = x509.NewCertPool()
		return res.StatusCode == 200 && c.ca.AppendCertsFromPEM(c.caPEM)
	})
	// Caddy gets its certificate from the vault in the background: until then
	// a handshake fails.
	var leaf *x509.Certificate
	wait("HTTPS", func() bool {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.https), &tls.Config{RootCAs: c.ca, ServerName: "127.0.0.1"})
		if err != nil {
			return false
		}
		defer conn.Close()
		leaf = conn.ConnectionState().PeerCertificates[0]
		return true
	})
	block := c.caPEM
	for {
		cert, rest, ok := nextCert(block)
		if !ok {
			break
		}
		c.spki = append(c.spki, spkiHash(cert))
		block = rest
	}
	c.spki = append(c.spki, spkiHash(leaf))
	return c
}

func nextCert(pemBytes []byte) (*x509.Certificate, []byte, bool) {
	for {
		block, rest := pem.Decode(pemBytes)
		if block == nil {
			return nil, nil, false
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil && block.Type == "CERTIFICATE" {
			return cert, rest, true
		}
		pemBytes = rest
	}
}

func spkiHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// url is the app's address through the front.
func (c *cell) url(path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", c.https, path)
}

// setupCode is the wizard's one-time code, as the person reads it from the card.
func (c *cell) setupCode() string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.data, "setup-code"))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// client is an API client through the front, trusting only the vault's CA.
func (c *cell) client() *client.Client {
	return client.New(c.url(""), client.WithHTTPClient(c.httpClient()))
}

// httpClient is a plain HTTPS client of the front, trusting only the vault's CA.
func (c *cell) httpClient() *http.Client {
	name := c.name
	if name == "" {
		name = "127.0.0.1"
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.ca, ServerName: name}}}
}

const (
	adminUser     = "admin"
	adminPassword = "browser-admin-pass-5c1e"
)

// setUp completes the wizard through the API (for the tests that are not
// about the wizard) and returns the admin's logged-in client.
func (c *cell) setUp() *client.Client {
	c.t.Helper()
	ctx := context.Background()
	api := c.client()
	api.UseSetupCode(c.setupCode())
	for _, step := range []struct {
		name string
		data map[string]any
	}{
		{"admin", map[string]any{"username": adminUser, "password": adminPassword}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
		{"network", map[string]any{"wg_port": freeUDPPort(c.t), "subnet_v4": "10.77.0.0/24"}},
	} {
		if _, err := api.SetupStep(ctx, step.name, step.data); err != nil {
			c.t.Fatalf("setup step %s: %v", step.name, err)
		}
	}
	if _, err := api.CompleteSetup(ctx); err != nil {
		c.t.Fatalf("complete setup: %v", err)
	}
	c.login(api, adminUser, adminPassword)
	return api
}

// login signs api in. Completing setup reloads the front, which may close
// a connection a client keeps alive, and Go does not resend a POST on it: a
// refusal from the API is final, a dropped connection is tried again.
func (c *cell) login(api *client.Client, user, password string) {
	c.t.Helper()
	for start := time.Now(); ; {
		err := api.Login(context.Background(), user, password)
		if err == nil {
			return
		}
		var refused *client.Error
		if errors.As(err, &refused) || time.Since(start) > 15*time.Second {
			c.t.Fatalf("login as %s: %v", user, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// browser is one headless Chromium with a fresh profile, one tab.
type browser struct {
	t     testing.TB
	ctx   context.Context
	base  string // the app's origin, https://127.0.0.1:<port>
	shots string
	nshot int

	mu       sync.Mutex
	problems []string // console errors, exceptions, CSP violations
	allowed  []*regexp.Regexp
	excused  []string // the problems allowed
}

// apiAnswer is the console's line for an API request the server refused
// (401 before login, the wizard's refusals, 503 no_firmware): the pages show
// those answers themselves; they are no error of the page.
var apiAnswer = regexp.MustCompile(`^Failed to load resource: the server responded with a status of (4\d\d|503)\b`)

// newBrowser starts Chromium trusting the cell's front by its keys' hashes
// (and the keys of extraSPKI: other test servers').
func newBrowser(t testing.TB, c *cell, extraSPKI ...string) *browser {
	t.Helper()
	return newBrowserAt(t, c.url(""), append(append([]string{}, c.spki...), extraSPKI...))
}

// newBrowserAt starts Chromium for the app at base, trusting only the
// certificates whose public keys hash to spki.
func newBrowserAt(t testing.TB, base string, spki []string, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	needChromium(t)
	b := &browser{t: t, base: base}
	b.shots = screenshotDir(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	if len(spki) > 0 {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(spki, ",")))
	}
	opts = append(opts, extra...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	b.ctx = ctx
	t.Cleanup(func() {
		cancelC()
		cancelA()
	})
	// Start the browser, and record CSP violations in the page as well (the
	// console shows them too). DevTools' script is not subject to the CSP.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sourceFile || "") + ":" + e.lineNumber));
window.__mousedowns = 0; document.addEventListener("mousedown", () => window.__mousedowns++, true);`,
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.ConsoleAPICalledTypeError || ev.Type == cdpruntime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					if len(a.Value) > 0 {
						args = append(args, string(a.Value))
					} else {
						args = append(args, a.Description)
					}
				}
				b.problem("console.%s: %s", ev.Type, strings.Join(args, " "))
			}
		case *cdpruntime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.problem("uncaught exception at %s:%d: %s", d.URL, d.LineNumber, msg)
		case *cdplog.EventEntryAdded:
			e := ev.Entry
			if e.Level != cdplog.EntryLevelError {
				return
			}
			if e.Source == cdplog.EntrySourceNetwork && strings.Contains(e.URL, "/api/") && apiAnswer.MatchString(e.Text) {
				return
			}
			b.problem("log (%s) %s: %s", e.Source, e.URL, e.Text)
		}
	}); err != nil {
		t.Fatalf("listening to chromium: %v", err)
	}
	t.Cleanup(func() {
		// The page's own record of CSP violations, if it is still there
		// (the console reports them too).
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		csp, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__csp || []`))
		cancel()
		for _, v := range csp {
			b.problem("Content Security Policy violation in the page: %s", v)
		}
		time.Sleep(100 * time.Millisecond) // the last events of the tab
		b.checkProblems()
	})
	return b
}

func (b *browser) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	for _, re := range b.allowed {
		if re.MatchString(msg) {
			b.excused = append(b.excused, msg)
			return
		}
	}
	b.problems = append(b.problems, msg)
}

// allow lets a console message through that the test provokes on purpose.
func (b *browser) allow(re string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allowed = append(b.allowed, regexp.MustCompile(re))
}

// seen are the allowed messages matching re that came.
func (b *browser) seen(re string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.excused {
		if regexp.MustCompile(re).MatchString(m) {
			out = append(out, m)
		}
	}
	return out
}

// checkProblems fails the test on any console error seen so far.
func (b *browser) checkProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("browser: %s", p)
	}
	b.problems = nil
}

// run runs steps with a time limit, failing the test with a screenshot and
// the page's text.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.try(20*time.Second, steps...); err != nil {
		b.fail(what, err)
	}
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	b.shot("failed-" + strings.NewReplacer(" ", "-", "/", "-", "\"", "").Replace(what))
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	b.t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
}

func (b *browser) try(limit time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// eval evaluates a JavaScript expression in the page (as DevTools, so the
// page's CSP does not apply) and decodes its value.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.fail("evaluate "+firstLine(expr), err)
	}
	return v
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// waitFor evaluates expr until it is true, for up to limit. It polls from Go:
// chromedp's Poll compiles the predicate with new Function in the page,
// which the app's CSP (no 'unsafe-eval') forbids.
func (b *browser) waitFor(what, expr string, limit time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(limit)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			if last == nil {
				last = fmt.Errorf("still false after %s", limit)
			}
			b.fail(what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshotDir is where a test keeps its screenshots.
func screenshotDir(t testing.TB) string {
	root := os.Getenv("TEST_ARTIFACTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "pic-ui-screens")
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shot saves a full-page screenshot and returns its path.
func (b *browser) shot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.nshot++
	p := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.nshot, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
	return p
}

// open navigates to a route of the app ("#/peers") and waits for its page.
func (b *browser) open(route string) {
	b.t.Helper()
	b.run("open "+route, chromedp.Navigate(b.base+"/"+route))
	b.rendered()
}

// rendered waits until the router has mounted a page (main no longer holds
// only its "Loading…" line).
func (b *browser) rendered() {
	b.t.Helper()
	b.waitFor("a page rendered", `(() => { const m = document.querySelector("main"); return !!m && m.children.length > 0 && !m.querySelector(":scope > p.loading"); })()`, 20*time.Second)
}

// findJS is a JavaScript function body that returns the id of the first
// element of a NodeList-returning expression for which match(el) holds,
// giving it an id if it has none, or "".
func findJS(list, match string) string {
	return fmt.Sprintf(`(() => {
  const norm = (s) => (s || "").replace(/\s+/g, " ").trim().replace(/[:*]$/, "").trim().toLowerCase();
  for (const el of %s) {
    if (!(%s)) continue;
    if (!el.id) el.id = "bt-" + Math.random().toString(36).slice(2);
    return el.id;
  }
  return "";
})()`, list, match)
}

// labelled finds the form control a visible label names (its text, ignoring
// case and a trailing colon or asterisk), as a person finds it.
func (b *browser) labelled(label string) chromedp.ID {
	b.t.Helper()
	expr := findJS(`Array.from(document.querySelectorAll("label")).map((l) => l.control && [l, l.control]).filter(Boolean).map(([l, c]) => (c.__label = l, c))`,
		fmt.Sprintf(`norm(el.__label.textContent) === %q.toLowerCase() && el.offsetParent !== null`, label))
	b.waitFor("a field labelled "+label, expr+` !== ""`, 20*time.Second)
	return chromedp.ID(eval[string](b, expr))
}

// control finds a visible, enabled button or link by its accessible name.
func (b *browser) control(name string) chromedp.ID {
	b.t.Helper()
	expr := findJS(`document.querySelectorAll("button, a[href], input[type=submit]")`,
		fmt.Sprintf(`norm(el.getAttribute("aria-label") || el.textContent || el.value) === %q.toLowerCase() && !el.disabled && el.offsetParent !== null`, name))
	b.waitFor("a button named "+name, expr+` !== ""`, 20*time.Second)
	return chromedp.ID(eval[string](b, expr))
}

// fill types text into the control labelled label.
func (b *browser) fill(label, text string) {
	b.t.Helper()
	id := b.labelled(label)
	b.run("fill "+label, chromedp.Clear(id), chromedp.SendKeys(id, text))
}

// click clicks the button or link named name.
func (b *browser) click(name string) {
	b.t.Helper()
	b.run("click "+name, chromedp.Click(b.control(name)))
}

// waitText waits until the page shows s.
func (b *browser) waitText(s string) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("the page to show %q", s), fmt.Sprintf(`document.body.innerText.includes(%q)`, s), 20*time.Second)
}

// cspViolations are the violations the page recorded.
func (b *browser) cspViolations() []string {
	return eval[[]string](b, `window.__csp || []`)
}
