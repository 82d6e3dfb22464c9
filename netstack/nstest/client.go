package nstest

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pic-cell/cell/netstack/wireguard"
)

// Quick is a parsed wg-quick configuration file.
type Quick struct {
	PrivateKey wireguard.Key
	Addresses  []netip.Prefix
	DNS        []string
	MTU        int
	Peer       QuickPeer
}

// QuickPeer is the [Peer] section (the cell).
type QuickPeer struct {
	PublicKey           wireguard.Key
	PresharedKey        wireguard.Key
	Endpoint            string // host:port as written
	AllowedIPs          []netip.Prefix
	PersistentKeepalive int
}

// ParseQuick parses the text wg-quick reads, strictly: an unknown key or a
// malformed value is an error, as it would be for wg-quick.
func ParseQuick(text string) (Quick, error) {
	var q Quick
	section := ""
	peers := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			if section == "[Peer]" {
				peers++
			}
			if section != "[Interface]" && section != "[Peer]" {
				return q, fmt.Errorf("line %d: unknown section %s", n, line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return q, fmt.Errorf("line %d: no '=' in %q", n, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch section + k {
		case "[Interface]PrivateKey":
			q.PrivateKey, err = parseKey(v)
		case "[Interface]Address":
			q.Addresses, err = parsePrefixes(v)
		case "[Interface]DNS":
			for _, d := range strings.Split(v, ",") {
				q.DNS = append(q.DNS, strings.TrimSpace(d))
			}
		case "[Interface]MTU":
			q.MTU, err = strconv.Atoi(v)
		case "[Peer]PublicKey":
			q.Peer.PublicKey, err = parseKey(v)
		case "[Peer]PresharedKey":
			q.Peer.PresharedKey, err = parseKey(v)
		case "[Peer]Endpoint":
			q.Peer.Endpoint = v
		case "[Peer]AllowedIPs":
			q.Peer.AllowedIPs, err = parsePrefixes(v)
		case "[Peer]PersistentKeepalive":
			q.Peer.PersistentKeepalive, err = strconv.Atoi(v)
		default:
			return q, fmt.Errorf("line %d: unknown key %s in %s", n, k, section)
		}
		if err != nil {
			return q, fmt.Errorf("line %d: %s: %v", n, k, err)
		}
	}
	if peers != 1 {
		return q, fmt.Errorf("%d [Peer] sections, want 1", peers)
	}
	return q, sc.Err()
}

func parseKey(s string) (wireguard.Key, error) {
	var k wireguard.Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("not a base64 32-byte key")
	}
	copy(k[:], b)
	return k, nil
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Client is a real WireGuard client: its own wireguard-go device on a TUN
// interface inside its namespace, set up the way wg-quick would from a
// config file.
type Client struct {
	NS    *NS
	Dev   *wireguard.WG
	Quick Quick
}

// NewClient brings up wg0 in ns from the config text. resolve maps the
// endpoint's host (the cell's domain) to an address; nil means the host is
// an IP address already.
func NewClient(t testing.TB, ns *NS, config string, resolve func(host string) string) *Client {
	t.Helper()
	q, err := ParseQuick(config)
	if err != nil {
		t.Fatalf("client config: %v\n%s", err, config)
	}
	host, port, ok := strings.Cut(q.Peer.Endpoint, ":")
	if i := strings.LastIndexByte(q.Peer.Endpoint, ':'); i >= 0 {
		host, port, ok = strings.Trim(q.Peer.Endpoint[:i], "[]"), q.Peer.Endpoint[i+1:], true
	}
	if !ok {
		t.Fatalf("endpoint %q has no port", q.Peer.Endpoint)
	}
	if resolve != nil {
		host = resolve(host)
	}
	ep, err := netip.ParseAddrPort(netip.MustParseAddr(host).String() + ":" + port)
	if err != nil {
		t.Fatal(err)
	}
	if q.PrivateKey == (wireguard.Key{}) {
		t.Fatalf("client config has no private key")
	}
	c := &Client{NS: ns, Quick: q}
	err = ns.Run(func() error {
		d, err := wireguard.Open(wireguard.Options{Mode: wireguard.ModeTUN, Name: "wg0", MTU: q.MTU, Logger: quietLog})
		if err != nil {
			return err
		}
		c.Dev = d
		return d.Set(wireguard.Config{PrivateKey: q.PrivateKey, Peers: []wireguard.Peer{{
			PublicKey: q.Peer.PublicKey, PresharedKey: q.Peer.PresharedKey, Endpoint: ep,
			AllowedIPs: q.Peer.AllowedIPs, PersistentKeepalive: q.Peer.PersistentKeepalive,
		}}})
	})
	if err != nil {
		t.Fatalf("client device: %v", err)
	}
	t.Cleanup(func() { c.Dev.Close() })
	for _, a := range q.Addresses {
		args := []string{"ip", "addr", "add", a.String(), "dev", "wg0"}
		if a.Addr().Is6() {
			args = append(args, "nodad")
		}
		ns.Exec(t, args...)
	}
	ns.Exec(t, "ip", "link", "set", "wg0", "up")
	// wg-quick's routes: a default route becomes two halves (so the
	// physical default stays for the endpoint), plus a host route that
	// keeps the endpoint off the tunnel.
	gw := strings.Fields(ns.Exec(t, "ip", "-4", "route", "show", "default"))
	for i, f := range gw {
		if f == "via" && i+1 < len(gw) && ep.Addr().Is4() {
			ns.Exec(t, "ip", "route", "replace", ep.Addr().String()+"/32", "via", gw[i+1])
		}
	}
	for _, p := range q.Peer.AllowedIPs {
		if p.Bits() == 0 {
			halves := []string{"0.0.0.0/1", "128.0.0.0/1"}
			if p.Addr().Is6() {
				halves = []string{"::/1", "8000::/1"}
			}
			for _, h := range halves {
				ns.Exec(t, "ip", "route", "replace", h, "dev", "wg0")
			}
			continue
		}
		ns.Exec(t, "ip", "route", "replace", p.Masked().String(), "dev", "wg0")
	}
	return c
}

// quietLog keeps client devices to errors: their goroutines run outside the
// client's namespace and log harmless MTU lookups that fail there.
var quietLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
