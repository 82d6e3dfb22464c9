package httpapi

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/pic-cell/cell/cell/outside"
	"github.com/pic-cell/cell/netstack/probe"
	"github.com/pic-cell/cell/storage"
)

func init() {
	for k, v := range map[string]routeCase{
		"GET /api/network":               {path: "/api/network"},
		"GET /api/network/ddns":          {path: "/api/network/ddns"},
		"PUT /api/network/ddns":          {path: "/api/network/ddns", body: map[string]any{"provider": "off"}},
		"POST /api/network/ddns/refresh": {path: "/api/network/ddns/refresh"},
		"POST /api/network/test":         {path: "/api/network/test", body: map[string]any{"kind": "ping", "target": "169.254.1.1"}},
		"GET /api/ntp":                   {path: "/api/ntp"},
		"GET /api/ntp/status":            {path: "/api/ntp/status"},
	} {
		routeCases[k] = v
	}
}

// testOutside gives the cell a resolver that knows two names and asks no
// server, and a prober that resolves through it: nothing leaves the machine.
func testOutside() outside.Options {
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "dyn.example.net":
			return []netip.Addr{netip.MustParseAddr("198.18.7.7")}, nil
		case "lan.example.net":
			return []netip.Addr{netip.MustParseAddr("192.168.1.20")}, nil
		}
		return nil, errors.New("no such host")
	}
	return outside.Options{Resolve: resolve, Tester: probe.New(probe.Options{Resolver: resolve})}
}

const tsigSecret = "c2VjcmV0LXRzaWcta2V5LW9mLTMyLWJ5dGVzLWxvbmc=" // 32 bytes

func TestNetworkEndpoint(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	a.must(201, "POST", "/api/peers", map[string]any{"name": "alice"})
	a.must(200, "GET", "/api/peers/alice/config", nil)
	var st outside.Status
	a.must(200, "GET", "/api/network", nil).json(t, &st)
	if st.Endpoint.Endpoint != "home.example.org:51820" || st.Endpoint.Source != "domain" {
		t.Errorf("endpoint = %+v, want the domain and wg_port", st.Endpoint)
	}
	if len(st.Endpoint.Warnings) != 1 || !strings.Contains(st.Endpoint.Warnings[0], "does not resolve") {
		t.Errorf("an endpoint that does not resolve: warnings %q", st.Endpoint.Warnings)
	}
	if len(st.ResendConfigs) != 0 {
		t.Errorf("resend before any change: %v", st.ResendConfigs)
	}
	// A private address as the endpoint is said plainly.
	a.must(200, "PUT", "/api/config", map[string]any{"network": map[string]any{"endpoint": "lan.example.net"}})
	a.must(200, "GET", "/api/network", nil).json(t, &st)
	if st.Endpoint.Source != "setting" || len(st.Endpoint.Warnings) != 1 || !strings.Contains(st.Endpoint.Warnings[0], "private address") {
		t.Errorf("a private endpoint: %+v", st.Endpoint)
	}
	// The change leaves alice's config naming the old endpoint.
	if len(st.ResendConfigs) != 1 || st.ResendConfigs[0] != "alice" {
		t.Errorf("resend after the change = %v, want [alice]", st.ResendConfigs)
	}
	var peer struct {
		ConfigOutdated bool `json:"config_outdated"`
	}
	a.must(200, "GET", "/api/peers/alice", nil).json(t, &peer)
	if !peer.ConfigOutdated {
		t.Error("alice's config is not marked outdated after the endpoint changed")
	}
	a.must(200, "PUT", "/api/config", map[string]any{"network": map[string]any{"endpoint": "dyn.example.net:4500"}})
	cfg := a.must(200, "GET", "/api/peers/alice/config", nil)
	if !strings.Contains(string(cfg.body), "Endpoint = dyn.example.net:4500\n") {
		t.Errorf("the config does not name the new endpoint:\n%s", cfg.body)
	}
	a.must(200, "GET", "/api/network", nil).json(t, &st)
	if len(st.ResendConfigs) != 0 {
		t.Errorf("resend after alice got her new config = %v", st.ResendConfigs)
	}
	if len(st.Endpoint.ResolvesTo) != 1 || st.Endpoint.ResolvesTo[0] != "198.18.7.7" || len(st.Endpoint.Warnings) != 0 {
		t.Errorf("a public endpoint: %+v", st.Endpoint)
	}
	// Bad endpoints: a 400 that says what is wrong, nothing stored.
	for _, bad := range append([]string{"dyn.example.net:0", "dyn.example.net:70000", "[198.18.7.7]:1", "http://x", "fe80::1%eth0"}, hostile[:7]...) {
		r := a.do("PUT", "/api/config", map[string]any{"network": map[string]any{"endpoint": bad}})
		if r.status != 400 || !strings.Contains(string(r.body), "endpoint") || strings.Contains(string(r.body), "outside.") {
			t.Errorf("endpoint %q: %d %s", bad, r.status, r.body)
		}
	}
	var doc struct {
		Network struct {
			Endpoint string `json:"endpoint"`
		} `json:"network"`
	}
	a.must(200, "GET", "/api/config", nil).json(t, &doc)
	if doc.Network.Endpoint != "dyn.example.net:4500" {
		t.Errorf("after refusals the endpoint is %q", doc.Network.Endpoint)
	}
}

func TestNetworkDDNS(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	var v outside.DDNSView
	a.must(200, "GET", "/api/network/ddns", nil).json(t, &v)
	if v.Provider != "off" || v.SecretSet || v.State != "off" {
		t.Errorf("before any setting: %+v", v)
	}
	a.must(409, "POST", "/api/network/ddns/refresh", nil)
	good := map[string]any{"provider": "rfc2136", "hostname": "home.example.org", "server": "198.18.5.53", "zone": "example.org",
		"key_name": "cell-key", "algorithm": "hmac-sha256", "secret": tsigSecret, "interval_minutes": 60}
	r := a.must(200, "PUT", "/api/network/ddns", good)
	if strings.Contains(string(r.body), tsigSecret) {
		t.Fatalf("the secret is echoed: %s", r.body)
	}
	r.json(t, &v)
	if v.Provider != "rfc2136" || !v.SecretSet || v.KeyName != "cell-key" {
		t.Errorf("after the change: %+v", v)
	}
	if got, err := e.db.Vault.Get(outside.SecretName); err != nil || string(got) != tsigSecret {
		t.Errorf("the vault holds %q, %v", got, err)
	}
	for _, path := range []string{"/api/network/ddns", "/api/config", "/api/network", "/api/audit?limit=100"} {
		if body := a.must(200, "GET", path, nil).body; strings.Contains(string(body), tsigSecret) {
			t.Errorf("%s shows the secret", path)
		}
	}
	// Bad input: a clear 400, nothing stored, and the secret never in it.
	with := func(k string, val any) map[string]any {
		m := map[string]any{}
		for k, v := range good {
			m[k] = v
		}
		m[k] = val
		return m
	}
	cases := []map[string]any{
		with("provider", "ftp"), with("hostname", "$(reboot)"), with("hostname", "a;b"), with("hostname", strings.Repeat("é", 2048)),
		with("key_name", "../etc"), with("key_name", "a\x00b"), with("algorithm", "hmac-md5"), with("secret", "not base64!"),
		with("secret", "c2hvcnQ="), with("server", "198.18.5.53:99999"), with("server", "a\nb"), with("interval_minutes", 1),
		with("unknown", true),
		{"provider": "dyndns2", "hostname": "home.example.org", "url": "http://members.example.net/nic/update", "username": "u", "secret": "pw-secret-1"},
		{"provider": "dyndns2", "hostname": "home.example.org", "url": "https://u:p@members.example.net/nic/update", "username": "u", "secret": "pw-secret-1"},
		{"provider": "dyndns2", "hostname": "home.example.org", "url": "https://members.example.net/nic/update", "username": "u", "secret": ""},
	}
	for _, c := range cases {
		r := a.do("PUT", "/api/network/ddns", c)
		if r.status != 400 || !strings.Contains(string(r.body), `"message"`) {
			t.Errorf("%v: %d %s, want 400", c, r.status, r.body)
		}
		for _, s := range []string{tsigSecret, "pw-secret-1", "c2hvcnQ=", "not base64!"} {
			if strings.Contains(string(r.body), s) {
				t.Errorf("%v: the answer repeats a secret: %s", c, r.body)
			}
		}
	}
	a.must(200, "GET", "/api/network/ddns", nil).json(t, &v)
	if v.Provider != "rfc2136" || v.Server != "198.18.5.53" {
		t.Errorf("a refused change was stored: %+v", v)
	}
	if got, _ := e.db.Vault.Get(outside.SecretName); string(got) != tsigSecret {
		t.Error("a refused change replaced the secret")
	}
	// Off deletes the secret.
	a.must(200, "PUT", "/api/network/ddns", map[string]any{"provider": "off"})
	if _, err := e.db.Vault.Get(outside.SecretName); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the secret is still in the vault after off: %v", err)
	}
	entries, _, _ := e.cell.Audit.Query(storage.Filter{Action: "network.ddns_update", Limit: 100})
	if len(entries) < 2 {
		t.Errorf("the changes were not audited: %d entries", len(entries))
	}
}

func TestNetworkTestRefusals(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	for _, c := range []map[string]any{
		{"kind": "ping", "target": "169.254.1.1"}, {"kind": "ping", "target": "224.0.0.1"}, {"kind": "ping", "target": "127.0.0.1"},
		{"kind": "http", "target": "file:///etc/passwd"}, {"kind": "http", "target": "http://user:pw@198.18.0.1/"},
		{"kind": "port", "target": "198.18.0.1:0"}, {"kind": "port", "target": "198.18.0.1:70000"}, {"kind": "dns", "target": "$(reboot)"},
		{"kind": "ping", "target": "a\nb"}, {"kind": "reboot", "target": "198.18.0.1"}, {"kind": "ping", "target": strings.Repeat("é", 2048)},
		{"kind": "ping", "target": "198.18.0.1", "extra": 1},
	} {
		r := a.do("POST", "/api/network/test", c)
		if r.status != 400 || strings.Contains(string(r.body), "probe.") {
			t.Errorf("%v: %d %s, want a plain 400", c, r.status, r.body)
		}
	}
	// The reachability test needs an echo service.
	if r := a.do("POST", "/api/network/test", map[string]any{"kind": "reachability"}); r.status != 409 || !strings.Contains(string(r.body), "echo_url") {
		t.Errorf("reachability without an echo service: %d %s", r.status, r.body)
	}
	var ntp struct {
		Servers []string `json:"servers"`
		Kernel  struct {
			Status int `json:"status"`
		} `json:"kernel"`
	}
	a.must(200, "GET", "/api/ntp", nil).json(t, &ntp)
	if len(ntp.Servers) == 0 {
		t.Errorf("ntp status has no servers: %+v", ntp)
	}
}
