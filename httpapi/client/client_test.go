package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/outside"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/storage"
)

// These tests run the client against the real API over a real cell (database in
// a temporary directory), built the way httpapi's own tests build theirs.

const adminPassword = "client-admin-pass-91b3e"

// setupCode is the test cell's setup code (the daemon reads it from a file).
const setupCode = "CLNT-SETU-PCOD-E234-5672-ABCD-EFGH"

// cellServer is a real cell behind the real API, with the CSRF and setup code
// headers of every change it received.
type cellServer struct {
	*httptest.Server
	mu         sync.Mutex
	csrfs      map[string]string // "METHOD path" → X-CSRF-Token
	setupCodes map[string]string // "METHOD path" → X-Setup-Code
}

func newCell(t *testing.T) *cellServer {
	t.Helper()
	dir := t.TempDir()
	db, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	book, err := logs.Open(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The endpoint check resolves no name: nothing leaves the machine.
	noDNS := func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }
	c, err := cell.New(cell.Options{DB: db, Logs: book, HashMemoryKiB: 64, Outside: outside.Options{Resolve: noDNS}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Setup.SetCode(setupCode); err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Deps{Version: cell.Version, Setup: c.Setup, Auth: c.Accounts, Settings: c.Settings, Health: c.Health, Audit: c.Audit, Logs: book, Peers: c.Peers, Routing: c.Peers,
		Network: c.Outside, Time: c.NTP}).With(httpapi.SystemRoutes(nil))
	h := api.Handler()
	s := &cellServer{csrfs: map[string]string{}, setupCodes: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			s.mu.Lock()
			s.csrfs[r.Method+" "+r.URL.Path] = r.Header.Get("X-CSRF-Token")
			s.setupCodes[r.Method+" "+r.URL.Path] = r.Header.Get("X-Setup-Code")
			s.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.Close()
		db.Close()
		book.Close()
	})
	return s
}

func (s *cellServer) csrf(method, path string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.csrfs[method+" "+path]
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// setUp runs the wizard through the client, with the setup code.
func setUp(t *testing.T, ctx context.Context, c *client.Client) {
	t.Helper()
	c.UseSetupCode(setupCode)
	st, err := c.SetupStatus(ctx)
	if err != nil || st.Complete || st.Step != "admin" {
		t.Fatalf("setup status before: %+v, %v", st, err)
	}
	steps := []struct {
		name string
		data any
	}{
		{"admin", map[string]any{"username": "admin", "password": adminPassword}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
		{"network", map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24"}},
	}
	for _, s := range steps {
		if _, err := c.SetupStep(ctx, s.name, s.data); err != nil {
			t.Fatalf("setup step %s: %v", s.name, err)
		}
	}
	if st, err := c.CompleteSetup(ctx); err != nil || !st.Complete {
		t.Fatalf("complete setup: %+v, %v", st, err)
	}
}

func TestLoginCSRFAndLogout(t *testing.T) {
	s := newCell(t)
	ctx := ctxOf(t)
	c := client.New(s.URL + "/")
	setUp(t, ctx, c)

	h, err := c.Health(ctx)
	if err != nil || !h.SetupComplete {
		t.Fatalf("health: %+v, %v", h, err)
	}
	if _, err := c.Status(ctx); !client.IsCode(err, "not_logged_in") || !client.IsStatus(err, 401) {
		t.Fatalf("status before login: %v, want 401 not_logged_in", err)
	}
	err = c.Login(ctx, "admin", "not the password")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "bad_credentials" {
		t.Fatalf("login with a wrong password: %#v", err)
	}
	if strings.Contains(err.Error(), "not the password") {
		t.Errorf("the error names the password: %v", err)
	}
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}
	if me, err := c.Me(ctx); err != nil || me.Username != "admin" || me.Role != "admin" {
		t.Fatalf("me: %+v, %v", me, err)
	}

	// A change carries the token fetched at login; the cell takes it.
	cfg, err := c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "renamed"}})
	if err != nil || cfg.Cell.Name != "renamed" || cfg.Cell.Domain != "home.example.org" {
		t.Fatalf("patch config: %+v, %v", cfg, err)
	}
	tok := s.csrf("PUT", "/api/config")
	if tok == "" {
		t.Fatal("PUT /api/config was sent without X-CSRF-Token")
	}
	if got := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(got, tok) {
		t.Errorf("the client prints its CSRF token: %s", got)
	}
	if st, err := c.Status(ctx); err != nil || st.Parts["storage"].State != "ok" {
		t.Errorf("status: %+v, %v", st, err)
	}

	// Logout ends the session: the same client is refused, and sends no token.
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Config(ctx); !client.IsCode(err, "not_logged_in") {
		t.Errorf("config after logout: %v, want not_logged_in", err)
	}
	if _, err := c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "again"}}); !client.IsStatus(err, 401) {
		t.Errorf("change after logout: %v, want 401", err)
	}
	if got := s.csrf("PUT", "/api/config"); got != "" {
		t.Errorf("a change after logout carried the old token %q", got)
	}
}

func TestPeersRoutingAndAudit(t *testing.T) {
	s := newCell(t)
	ctx := ctxOf(t)
	c := client.New(s.URL, client.WithTimeout(30*time.Second))
	setUp(t, ctx, c)
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}

	created, err := c.CreatePeer(ctx, client.NewPeer{Name: "laptop", Description: "work", Route: "split"})
	if err != nil {
		t.Fatalf("create peer: %v", err)
	}
	if created.Peer.Name != "laptop" || !created.Peer.IPv4.IsValid() || !created.Peer.Enabled || created.Peer.Route != "split" || created.OneTimePassword == "" {
		t.Fatalf("created peer: %+v", created.Peer)
	}
	if got := fmt.Sprintf("%v %+v %s", created, created, created.OneTimePassword); strings.Contains(got, string(created.OneTimePassword)) {
		t.Errorf("a printed CreatedPeer shows its one-time password: %s", got)
	}
	if _, err := c.CreatePeer(ctx, client.NewPeer{Name: "laptop"}); !client.IsStatus(err, 409) {
		t.Errorf("second peer of the same name: %v, want 409", err)
	}
	ps, err := c.Peers(ctx)
	if err != nil || len(ps) != 1 || ps[0].IPv4 != created.Peer.IPv4 {
		t.Fatalf("peers: %+v, %v", ps, err)
	}
	p, err := c.UpdatePeer(ctx, "laptop", client.PeerChange{Enabled: new(false)})
	if err != nil || p.Enabled || p.Description != "work" || p.Route != "split" {
		t.Fatalf("update peer: %+v, %v", p, err)
	}
	conf, err := c.PeerConfig(ctx, "laptop")
	if err != nil || !strings.Contains(conf, "[Interface]") || !strings.Contains(conf, created.Peer.IPv4.String()) {
		t.Fatalf("peer config: %q, %v", conf, err)
	}
	png, err := c.PeerQR(ctx, "laptop", "")
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("peer QR: %d bytes, %v", len(png), err)
	}
	if creds, err := c.PeerServiceCredentials(ctx, "laptop"); err != nil || len(creds) != 0 {
		t.Errorf("service credentials: %+v, %v", creds, err)
	}
	if wg, err := c.WireGuardStatus(ctx); err != nil || wg.Port != 51820 {
		t.Errorf("wireguard status: %+v, %v", wg, err)
	}
	if h, err := c.WireGuardHistory(ctx, ""); err != nil || h.IntervalSeconds != 60 || len(h.Peers) != 1 || h.Peers[0].Name != "laptop" {
		t.Errorf("wireguard history: %+v, %v", h, err)
	}
	if _, err := c.WireGuardHistory(ctx, "nobody"); !client.IsCode(err, "peer_not_found") {
		t.Errorf("wireguard history of nobody: %v", err)
	}

	// The peer's one-time password: once, and only to choose its own.
	pc := client.New(s.URL, client.WithTimeout(30*time.Second))
	if err := pc.Login(ctx, "laptop", string(created.OneTimePassword)); err != nil {
		t.Fatalf("peer login: %v", err)
	}
	if me, err := pc.Me(ctx); err != nil || !me.MustChangePassword {
		t.Errorf("peer me: %+v, %v", me, err)
	}
	if _, err := pc.MyPeerConfig(ctx); !client.IsCode(err, "password_change_required") || !client.IsStatus(err, 403) {
		t.Errorf("peer config before choosing a password: %v", err)
	}
	if err := client.New(s.URL).Login(ctx, "laptop", string(created.OneTimePassword)); !client.IsStatus(err, 401) {
		t.Errorf("second login with the one-time password: %v", err)
	}
	if err := pc.ChangePassword(ctx, string(created.OneTimePassword), "laptop's own password"); err != nil {
		t.Fatalf("change password: %v", err)
	}
	if _, err := pc.MyPeerConfig(ctx); err != nil {
		t.Errorf("peer config after choosing a password: %v", err)
	}
	otp, err := c.ResetOneTimePassword(ctx, "laptop")
	if err != nil || len(otp) != 26 || fmt.Sprint(otp) != "[redacted]" {
		t.Errorf("one-time reset: %v", err)
	}
	if accts, err := c.Users(ctx); err != nil || len(accts) != 2 || accts[1].OneTimePasswordState != "unused" {
		t.Errorf("users after the reset: %+v, %v", accts, err)
	}

	pol, err := c.SetPeerRouting(ctx, "laptop", client.PolicyChange{Peers: new("allow")})
	if err != nil || pol.Name != "laptop" || pol.Peers != "allow" || pol.Internet == "" {
		t.Fatalf("set peer routing: %+v, %v", pol, err)
	}
	fw, err := c.AddForward(ctx, client.NewForward{Proto: "tcp", Port: 8080, Peer: "laptop", ToPort: 80})
	if err != nil || fw.Port != 8080 || fw.ToPort != 80 || fw.Peer != "laptop" {
		t.Fatalf("add forward: %+v, %v", fw, err)
	}
	if r, err := c.Routing(ctx); err != nil || len(r.Forwards) != 1 || len(r.Peers) != 1 || r.Peers[0].Peers != "allow" {
		t.Errorf("routing: %+v, %v", r, err)
	}
	if err := c.DeleteForward(ctx, "tcp", 8080); err != nil {
		t.Fatal(err)
	}
	if fs, err := c.Forwards(ctx); err != nil || len(fs) != 0 {
		t.Errorf("forwards after delete: %+v, %v", fs, err)
	}
	if err := c.DeletePeer(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}

	page, err := c.Audit(ctx, client.AuditQuery{TargetType: "peer", Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range page.Entries {
		seen = append(seen, e.Action+" "+e.TargetID+" "+e.Result)
	}
	for _, want := range []string{"peer.create laptop ok", "peer.create laptop name_taken", "peer.update laptop ok", "routing.peer_policy laptop ok", "peer.delete laptop ok"} {
		if !strings.Contains(strings.Join(seen, "\n"), want) {
			t.Errorf("audit lacks %q: %q", want, seen)
		}
	}
	if page.Total != len(page.Entries) {
		t.Errorf("audit total %d, entries %d", page.Total, len(page.Entries))
	}
	v, err := c.AuditVerify(ctx)
	if err != nil || !v.OK || v.PublicKey == "" || v.Entries == 0 {
		t.Fatalf("audit verify: %+v, %v", v, err)
	}
	csv, err := c.AuditExport(ctx, "csv")
	if err != nil || !bytes.HasPrefix(csv, []byte(strings.Join(storage.CSVHeader, ",")+"\n")) {
		t.Fatalf("audit export: %.80q, %v", csv, err)
	}
	js, err := c.AuditExport(ctx, "json")
	if err != nil || !bytes.HasPrefix(js, []byte(`{"checkpoint"`)) && !bytes.HasPrefix(js, []byte(`{"entries"`)) {
		t.Fatalf("audit export json: %.80q, %v", js, err)
	}

	if lv, err := c.SetLogLevels(ctx, map[string]string{"api": "debug"}); err != nil || lv["api"] != "DEBUG" && lv["api"] != "debug" {
		t.Errorf("set log levels: %v, %v", lv, err)
	}
	if _, err := c.Logs(ctx, "api", 10); err != nil {
		t.Errorf("logs: %v", err)
	}
	info, err := c.SystemInfo(ctx)
	if err != nil || info.Version == "" || !strings.HasPrefix(info.Target, "host-") {
		t.Errorf("system info: %+v, %v", info, err)
	}
	// Without firmware the cell refuses updates; the refusal is typed.
	_, err = c.PushUpdate(ctx, strings.NewReader("not a bundle"), nil)
	if !client.IsCode(err, "no_firmware") || !client.IsStatus(err, 503) {
		t.Errorf("push update without firmware: %v, want 503 no_firmware", err)
	}
	if _, err := c.SystemUpdateStatus(ctx); !client.IsCode(err, "no_firmware") {
		t.Errorf("update status without firmware: %v, want no_firmware", err)
	}
}

func TestTypedErrors(t *testing.T) {
	s := newCell(t)
	ctx := ctxOf(t)
	c := client.New(s.URL)
	setUp(t, ctx, c)
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}
	_, err := c.Peer(ctx, "nobody")
	var ae *client.Error
	if !errors.As(err, &ae) {
		t.Fatalf("unknown peer: %T %v, want *client.Error", err, err)
	}
	if ae.Status != http.StatusNotFound || ae.Code != "peer_not_found" || ae.Message == "" || err.Error() != ae.Message {
		t.Errorf("unknown peer: %+v (Error() %q)", ae, err.Error())
	}
	if !client.IsCode(err, "peer_not_found") || client.IsCode(err, "not_found") || !client.IsStatus(err, 404) {
		t.Error("IsCode/IsStatus disagree with the error")
	}
	if !client.IsCode(fmt.Errorf("wrapped: %w", err), "peer_not_found") {
		t.Error("IsCode does not see through wrapping")
	}
	if client.IsCode(errors.New("peer_not_found"), "peer_not_found") {
		t.Error("IsCode matched an error that is not the API's")
	}
	if err := c.DeletePeer(ctx, "nobody"); !client.IsCode(err, "peer_not_found") {
		t.Errorf("delete unknown peer: %v", err)
	}
	// A connection that fails is not an API error.
	dead := client.New("http://127.0.0.1:1", client.WithTimeout(5*time.Second))
	if _, err := dead.Health(ctx); err == nil || errors.As(err, &ae) {
		t.Errorf("unreachable cell: %v, want a connection error", err)
	}
}

func TestDoEscapeHatch(t *testing.T) {
	s := newCell(t)
	ctx := ctxOf(t)
	c := client.New(s.URL, client.WithHTTPClient(&http.Client{Timeout: 20 * time.Second}))
	setUp(t, ctx, c)
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}

	// A body the typed calls would never send, with the session's token.
	err := c.Do(ctx, "PUT", "/api/config", `{"cell": {"name": "x"`, nil)
	if !client.IsCode(err, "malformed_json") || !client.IsStatus(err, 400) {
		t.Errorf("malformed body: %v, want 400 malformed_json", err)
	}
	if s.csrf("PUT", "/api/config") == "" {
		t.Error("Do sent a change without the CSRF token")
	}
	err = c.Do(ctx, "PUT", "/api/config", client.Upload{Body: strings.NewReader(`{}`), ContentType: "text/plain"}, nil)
	if !client.IsStatus(err, http.StatusUnsupportedMediaType) {
		t.Errorf("text/plain body: %v, want 415", err)
	}
	// A body streamed from a reader; the whole answer in a Response.
	var res client.Response
	if err := c.Do(ctx, "PUT", "/api/config", strings.NewReader(`{"cell":{"name":"streamed"}}`), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || !strings.Contains(string(res.Body), `"name":"streamed"`) || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("response: %d %s %v", res.Status, res.Body, res.Header)
	}
	// Typed out, raw out.
	var cfg client.Config
	if err := c.Do(ctx, "GET", "/api/config", nil, &cfg); err != nil || cfg.Cell.Name != "streamed" {
		t.Errorf("GET /api/config into Config: %+v, %v", cfg, err)
	}
	var raw string
	if err := c.Do(ctx, "GET", "/health", nil, &raw); err != nil || !strings.Contains(raw, `"ok":true`) {
		t.Errorf("GET /health as text: %q, %v", raw, err)
	}
	// Paths and methods the API does not have.
	if err := c.Do(ctx, "GET", "/api/no-such-thing", nil, nil); !client.IsCode(err, "not_found") {
		t.Errorf("unknown path: %v", err)
	}
	if err := c.Do(ctx, "PATCH", "/api/config", map[string]any{}, nil); !client.IsCode(err, "method_not_allowed") {
		t.Errorf("PATCH /api/config: %v", err)
	}
}

// TestSetupCode: the wizard's changes are refused without the setup code (a
// *Error that says where the code is); UseSetupCode sends it on them and on no
// other request, and the code never shows in the Client's %v.
func TestSetupCode(t *testing.T) {
	s := newCell(t)
	ctx := ctxOf(t)
	c := client.New(s.URL)
	admin := map[string]any{"username": "admin", "password": adminPassword}
	_, err := c.SetupStep(ctx, "admin", admin)
	if !client.IsCode(err, "setup_code_required") || !client.IsStatus(err, 403) || !strings.Contains(err.Error(), "setup-code.txt") {
		t.Fatalf("step without the code: %v, want 403 setup_code_required naming setup-code.txt", err)
	}
	c.UseSetupCode("WRONG-CODE")
	if _, err := c.CompleteSetup(ctx); !client.IsCode(err, "wrong_setup_code") || strings.Contains(err.Error(), "WRONG-CODE") {
		t.Fatalf("complete with a wrong code: %v, want 403 wrong_setup_code", err)
	}
	if err := c.Do(ctx, "POST", "/api/setup/step", map[string]any{"step": "admin", "data": admin}, nil); !client.IsCode(err, "wrong_setup_code") {
		t.Fatalf("Do to /api/setup/step with a wrong code: %v", err)
	}
	setUp(t, ctx, c)
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "attic"}}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	for route, code := range s.setupCodes {
		want := ""
		if strings.HasPrefix(route, "POST /api/setup/") {
			want = setupCode
		}
		if code != want {
			t.Errorf("%s carried X-Setup-Code %q, want %q", route, code, want)
		}
	}
	s.mu.Unlock()
	if _, err := c.SetupStep(ctx, "admin", admin); !client.IsCode(err, "setup_complete") || !client.IsStatus(err, 409) {
		t.Fatalf("step after setup with the code: %v, want 409 setup_complete", err)
	}
	if got := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(got, setupCode) {
		t.Errorf("the client prints its setup code: %s", got)
	}
}

func TestNetworkAndTime(t *testing.T) {
	s := newCell(t)
	ctx := ctxOf(t)
	c := client.New(s.URL, client.WithTimeout(30*time.Second))
	setUp(t, ctx, c)
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PatchConfig(ctx, map[string]any{"network": map[string]any{"endpoint": "198.18.7.7:4500"}}); err != nil {
		t.Fatal(err)
	}
	n, err := c.Network(ctx)
	if err != nil || n.Endpoint.Endpoint != "198.18.7.7:4500" || n.Endpoint.Source != "setting" {
		t.Fatalf("network: %+v, %v", n.Endpoint, err)
	}
	secret := "c2VjcmV0LXRzaWcta2V5LW9mLTMyLWJ5dGVzLWxvbmc="
	d, err := c.SetDDNS(ctx, client.DDNSChange{Provider: "rfc2136", Hostname: "home.example.org", Server: "198.18.5.53",
		Zone: "example.org", KeyName: "cell", Secret: &secret})
	if err != nil || !d.SecretSet || d.Provider != "rfc2136" || d.IntervalMinutes != 1440 {
		t.Fatalf("set ddns: %+v, %v", d, err)
	}
	if d, err = c.DDNS(ctx); err != nil || d.KeyName != "cell" {
		t.Fatalf("ddns: %+v, %v", d, err)
	}
	if err := c.RefreshDDNS(ctx); err != nil {
		t.Errorf("refresh: %v", err)
	}
	// This cell has no prober: 503, saying so.
	if _, err := c.TestNetwork(ctx, client.NetworkTest{Kind: "ping", Target: "198.18.0.1"}); !client.IsStatus(err, 503) {
		t.Errorf("a test without a prober: %v, want 503", err)
	}
	ntp, err := c.NTP(ctx)
	if err != nil || len(ntp.Servers) == 0 || ntp.Time.IsZero() {
		t.Errorf("ntp: %+v, %v", ntp, err)
	}
}
