package httpapi

import (
	"bytes"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pic-cell/cell/storage"
)

func init() {
	for k, v := range map[string]routeCase{
		"GET /api/peers":                            {path: "/api/peers"},
		"POST /api/peers":                           {path: "/api/peers", body: map[string]any{"name": "table-peer"}},
		"GET /api/peers/:name":                      {path: "/api/peers/nobody"},
		"PUT /api/peers/:name":                      {path: "/api/peers/nobody", body: map[string]any{"enabled": false}},
		"DELETE /api/peers/:name":                   {path: "/api/peers/nobody"},
		"GET /api/peers/:name/config":               {path: "/api/peers/nobody/config"},
		"GET /api/peers/:name/qr":                   {path: "/api/peers/nobody/qr"},
		"GET /api/peers/:name/service-credentials":  {path: "/api/peers/nobody/service-credentials"},
		"GET /api/peer/me":                          {path: "/api/peer/me"},
		"GET /api/peer/config":                      {path: "/api/peer/config"},
		"GET /api/peer/qr":                          {path: "/api/peer/qr"},
		"GET /api/peer/service-credentials":         {path: "/api/peer/service-credentials"},
		"GET /api/wireguard/status":                 {path: "/api/wireguard/status"},
		"GET /api/routing":                          {path: "/api/routing"},
		"PUT /api/routing/peers/:name":              {path: "/api/routing/peers/nobody", body: map[string]any{"peers": "allow"}},
		"GET /api/routing/forwards":                 {path: "/api/routing/forwards"},
		"POST /api/routing/forwards":                {path: "/api/routing/forwards", body: map[string]any{"proto": "tcp", "port": 8080, "peer": "nobody"}},
		"DELETE /api/routing/forwards/:proto/:port": {path: "/api/routing/forwards/tcp/8080"},
	} {
		routeCases[k] = v
	}
}

type createdPeer struct {
	Peer struct {
		Name, IPv4, IPv6 string
		PublicKey        string `json:"public_key"`
		KeySource        string `json:"key_source"`
		Route            string
		Enabled          bool
	}
	Username        string
	OneTimePassword string `json:"one_time_password"`
}

func TestPeersLifecycle(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	var cp createdPeer
	a.must(201, "POST", "/api/peers", map[string]any{"name": "alice-phone", "description": "Alice's phone"}).json(t, &cp)
	if cp.Peer.IPv4 != "10.77.0.2" || cp.Peer.KeySource != "cell" || cp.Peer.Route != "full" || !cp.Peer.Enabled || cp.OneTimePassword == "" || cp.Username != "alice-phone" {
		t.Fatalf("created = %+v", cp)
	}
	if r := a.do("POST", "/api/peers", map[string]any{"name": "alice-phone"}); r.status != 409 || r.code() != "name_taken" {
		t.Errorf("duplicate name: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/api/peers", map[string]any{"name": "admin"}); r.status != 409 {
		t.Errorf("peer named like the admin account: %d %s", r.status, r.body)
	}

	// The config: a wg-quick file with the peer's private key, addresses, the
	// cell's DNS, key, PSK, endpoint and full route.
	cfg := string(a.must(200, "GET", "/api/peers/alice-phone/config", nil).body)
	for _, want := range []string{"[Interface]\nPrivateKey = ", "Address = 10.77.0.2/32, fd", "DNS = 10.77.0.1, fd",
		"[Peer]\nPublicKey = ", "PresharedKey = ", "Endpoint = home.example.org:51820\n", "AllowedIPs = 0.0.0.0/0, ::/0\n", "PersistentKeepalive = 25\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	// No private key in listings.
	for _, p := range []string{"/api/peers", "/api/peers/alice-phone", "/api/wireguard/status", "/api/routing"} {
		body := string(a.must(200, "GET", p, nil).body)
		priv := strings.TrimSpace(strings.SplitN(strings.SplitN(cfg, "PrivateKey = ", 2)[1], "\n", 2)[0])
		psk := strings.TrimSpace(strings.SplitN(strings.SplitN(cfg, "PresharedKey = ", 2)[1], "\n", 2)[0])
		if strings.Contains(body, priv) || strings.Contains(body, psk) {
			t.Errorf("GET %s shows a secret", p)
		}
	}

	// Split route.
	a.must(200, "PUT", "/api/peers/alice-phone", map[string]any{"route": "split"})
	cfg = string(a.must(200, "GET", "/api/peers/alice-phone/config", nil).body)
	if !strings.Contains(cfg, "AllowedIPs = 10.77.0.0/24, fd") {
		t.Errorf("split config:\n%s", cfg)
	}

	// QR: PNG by default, SVG on request, and (with a real decoder) the text.
	png := a.must(200, "GET", "/api/peers/alice-phone/qr", nil)
	if png.header.Get("Content-Type") != "image/png" || !bytes.HasPrefix(png.body, []byte("\x89PNG")) {
		t.Errorf("qr: %s %q", png.header.Get("Content-Type"), png.body[:8])
	}
	if svg := a.must(200, "GET", "/api/peers/alice-phone/qr?format=svg", nil); !strings.HasPrefix(string(svg.body), "<svg") {
		t.Errorf("svg qr: %.40s", svg.body)
	}
	if r := a.do("GET", "/api/peers/alice-phone/qr?format=gif", nil); r.status != 400 {
		t.Errorf("qr format gif: %d", r.status)
	}
	if zbar, err := exec.LookPath("zbarimg"); err == nil {
		f := filepath.Join(t.TempDir(), "qr.png")
		os.WriteFile(f, png.body, 0o644)
		out, err := exec.Command(zbar, "--raw", "-q", "-Sbinary", f).Output()
		if err != nil {
			t.Fatalf("zbarimg: %v", err)
		}
		if string(out) != cfg {
			t.Errorf("QR decodes to\n%q\nwant the config\n%q", out, cfg)
		}
	} else {
		t.Log("zbarimg not installed: the QR content is checked only by the namespace test")
	}

	// The peer's own login reaches its own things and nothing else.
	p := e.firstLogin("alice-phone", cp.OneTimePassword)
	var me struct{ Name string }
	p.must(200, "GET", "/api/peer/me", nil).json(t, &me)
	if me.Name != "alice-phone" {
		t.Errorf("peer/me = %+v", me)
	}
	if got := string(p.must(200, "GET", "/api/peer/config", nil).body); got != cfg {
		t.Errorf("peer's own config differs from the admin's")
	}
	p.must(200, "GET", "/api/peer/qr", nil)
	p.must(200, "GET", "/api/peer/service-credentials", nil)
	for _, path := range []string{"/api/peers", "/api/peers/alice-phone/config", "/api/wireguard/status", "/api/routing", "/api/config"} {
		if r := p.do("GET", path, nil); r.status != 403 {
			t.Errorf("peer login GET %s: %d, want 403", path, r.status)
		}
	}
	if r := a.do("GET", "/api/peer/me", nil); r.status != 403 {
		t.Errorf("admin GET /api/peer/me: %d, want 403", r.status)
	}

	// Policy and forwards.
	var pol struct{ Internet, LAN, Peers string }
	a.must(200, "PUT", "/api/routing/peers/alice-phone", map[string]any{"peers": "allow", "internet": "deny"}).json(t, &pol)
	if pol.Peers != "allow" || pol.Internet != "deny" || pol.LAN != "allow" {
		t.Errorf("policy = %+v", pol)
	}
	if r := a.do("PUT", "/api/routing/peers/alice-phone", map[string]any{"peers": "maybe"}); r.status != 400 {
		t.Errorf("policy maybe: %d", r.status)
	}
	a.must(201, "POST", "/api/routing/forwards", map[string]any{"proto": "tcp", "port": 8080, "peer": "alice-phone", "to_port": 80})
	for _, bad := range []map[string]any{
		{"proto": "tcp", "port": 8080, "peer": "alice-phone"},  // taken: 409
		{"proto": "udp", "port": 51820, "peer": "alice-phone"}, // the WireGuard port: 409
		{"proto": "tcp", "port": 443, "peer": "alice-phone"},   // the cell's web: 409
	} {
		if r := a.do("POST", "/api/routing/forwards", bad); r.status != 409 {
			t.Errorf("forward %v: %d %s", bad, r.status, r.body)
		}
	}
	for _, bad := range []map[string]any{
		{"proto": "icmp", "port": 1, "peer": "alice-phone"}, {"proto": "tcp", "port": 0, "peer": "alice-phone"},
		{"proto": "tcp", "port": 70000, "peer": "alice-phone"}, {"proto": "tcp", "port": 81, "peer": "nobody"},
		{"proto": "tcp", "port": 82, "peer": "alice-phone", "to_port": -1},
	} {
		if r := a.do("POST", "/api/routing/forwards", bad); r.status != 400 {
			t.Errorf("forward %v: %d %s", bad, r.status, r.body)
		}
	}
	var rv struct {
		Forwards []storage.Forward
		Peers    []struct{ Name, Peers string }
	}
	a.must(200, "GET", "/api/routing", nil).json(t, &rv)
	if r := a.do("DELETE", "/api/routing/forwards/tcp/9999", nil); r.status != 404 {
		t.Errorf("delete a missing forward: %d", r.status)
	}
	if r := a.do("DELETE", "/api/routing/forwards/gre/1", nil); r.status != 400 {
		t.Errorf("delete a gre forward: %d", r.status)
	}
	if len(rv.Forwards) != 1 || rv.Forwards[0].ToPort != 80 || len(rv.Peers) != 1 || rv.Peers[0].Peers != "allow" {
		t.Errorf("routing = %+v", rv)
	}

	// Delete takes everything: the peer, its login (the session dies), its forward.
	a.must(200, "DELETE", "/api/peers/alice-phone", nil)
	if r := p.do("GET", "/api/peer/me", nil); r.status != 401 {
		t.Errorf("deleted peer's session: %d, want 401", r.status)
	}
	if r := e.client().do("POST", "/api/auth/login", map[string]string{"username": "alice-phone", "password": cp.OneTimePassword}); r.status != 401 {
		t.Errorf("deleted peer's login: %d", r.status)
	}
	a.must(200, "GET", "/api/routing", nil).json(t, &rv)
	if len(rv.Forwards) != 0 || len(rv.Peers) != 0 {
		t.Errorf("routing after delete = %+v", rv)
	}
	if r := a.do("DELETE", "/api/peers/alice-phone", nil); r.status != 404 {
		t.Errorf("second delete: %d", r.status)
	}
	// The audit log has the create, the delete and the refused duplicate.
	var aud struct {
		Entries []struct {
			Action   string `json:"action"`
			TargetID string `json:"target_id"`
			Result   string `json:"result"`
		} `json:"entries"`
	}
	a.must(200, "GET", "/api/audit?target_type=peer&limit=100", nil).json(t, &aud)
	seen := map[string]bool{}
	for _, en := range aud.Entries {
		seen[en.Action+" "+en.TargetID+" "+en.Result] = true
	}
	for _, want := range []string{"peer.create alice-phone ok", "peer.create alice-phone name_taken", "peer.delete alice-phone ok", "peer.delete alice-phone peer_not_found"} {
		if !seen[want] {
			t.Errorf("audit lacks %q: %v", want, seen)
		}
	}
}

func TestPeersBadInput(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	for _, h := range append(hostile, "-lead", "trail-", "UPPER", "under_score", strings.Repeat("a", 64)) {
		if r := a.do("POST", "/api/peers", map[string]any{"name": h}); r.status != 400 {
			t.Errorf("name %q: %d %s", h, r.status, r.body)
		}
		if h != "" {
			for _, path := range []string{"/api/peers/", "/api/routing/peers/"} {
				method := "GET"
				var body any
				if path == "/api/routing/peers/" {
					method, body = "PUT", map[string]any{"peers": "allow"}
				}
				if r := a.do(method, path+url.PathEscape(h), body); r.status != 404 && r.status != 400 {
					t.Errorf("%s %s%q: %d", method, path, h, r.status)
				}
			}
		}
		for _, body := range []map[string]any{
			{"name": "ok", "public_key": h + "x"}, {"name": "ok", "route": h + "x"}, {"name": "ok", "description": h + "\x01"},
		} {
			if r := a.do("POST", "/api/peers", body); r.status != 400 {
				t.Errorf("create %v: %d %s", body, r.status, r.body)
			}
		}
		if r := a.do("POST", "/api/routing/forwards", map[string]any{"proto": h, "port": 1, "peer": "ok"}); r.status != 400 {
			t.Errorf("forward proto %q: %d", h, r.status)
		}
	}
	for _, key := range []string{"AAAA", "not base64!", strings.Repeat("A", 43) + "=", strings.Repeat("A", 44)} {
		if r := a.do("POST", "/api/peers", map[string]any{"name": "k", "public_key": key}); r.status != 400 {
			t.Errorf("public key %q: %d %s", key, r.status, r.body)
		}
	}
	// A user's own key: no private key in the config, a note where it goes.
	pub := "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	var cp createdPeer
	a.must(201, "POST", "/api/peers", map[string]any{"name": "byok", "public_key": pub}).json(t, &cp)
	if cp.Peer.KeySource != "user" || cp.Peer.PublicKey != pub {
		t.Errorf("byok = %+v", cp.Peer)
	}
	cfg := string(a.must(200, "GET", "/api/peers/byok/config", nil).body)
	if strings.Contains(cfg, "\nPrivateKey =") || !strings.Contains(cfg, "# PrivateKey") {
		t.Errorf("byok config:\n%s", cfg)
	}
	if r := a.do("POST", "/api/peers", map[string]any{"name": "byok2", "public_key": pub}); r.status != 409 {
		t.Errorf("second peer with the same key: %d", r.status)
	}
	if r := a.do("PUT", "/api/peers/byok", map[string]any{}); r.status != 400 {
		t.Errorf("empty change: %d", r.status)
	}
}

func TestPeersSubnetFull(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.must(200, "POST", "/api/setup/step", map[string]any{"step": "admin", "data": map[string]any{"username": "admin", "password": adminPassword}})
	c.must(200, "POST", "/api/setup/step", map[string]any{"step": "cell", "data": map[string]any{"name": "home", "domain": "home.example.org"}})
	c.must(200, "POST", "/api/setup/step", map[string]any{"step": "network", "data": map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/29"}})
	c.must(200, "POST", "/api/setup/complete", nil)
	a := e.login("admin", adminPassword)
	for _, n := range []string{"a", "b", "c", "d", "e"} { // .2 to .6
		a.must(201, "POST", "/api/peers", map[string]any{"name": n})
	}
	r := a.do("POST", "/api/peers", map[string]any{"name": "f"})
	if r.status != 409 || r.code() != "subnet_full" || !strings.Contains(string(r.body), "10.77.0.0/29") {
		t.Fatalf("full subnet: %d %s", r.status, r.body)
	}
	a.must(200, "DELETE", "/api/peers/c", nil)
	var cp createdPeer
	a.must(201, "POST", "/api/peers", map[string]any{"name": "f"}).json(t, &cp)
	if cp.Peer.IPv4 != "10.77.0.4" {
		t.Errorf("reused address = %s, want 10.77.0.4", cp.Peer.IPv4)
	}
}
