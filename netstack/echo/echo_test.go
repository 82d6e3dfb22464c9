package echo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPayload(t *testing.T) {
	nonce := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	p := Payload(nonce)
	if len(p) != 148 || !bytes.Equal(p[:4], []byte{0xf0, 'p', 'i', 'c'}) || !bytes.Equal(p[4:20], nonce[:]) || !bytes.Equal(p[20:], make([]byte, 128)) {
		t.Fatalf("Payload = % x", p)
	}
	if got, ok := ParsePayload(p); !ok || got != nonce {
		t.Errorf("ParsePayload(Payload(n)) = %x, %v; want %x", got, ok, nonce)
	}
	bad := func(name string, b []byte) {
		if _, ok := ParsePayload(b); ok {
			t.Errorf("ParsePayload accepted %s", name)
		}
	}
	bad("nil", nil)
	bad("short", p[:147])
	bad("long", append(bytes.Clone(p), 0))
	wg := bytes.Clone(p)
	copy(wg, []byte{1, 0, 0, 0}) // a WireGuard handshake initiation
	bad("a WireGuard message", wg)
	tail := bytes.Clone(p)
	tail[100] = 'x'
	bad("data after the nonce", tail)
}

// sink is a UDP socket on loopback that records what arrives.
func sink(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func received(c *net.UDPConn, within time.Duration) ([]byte, bool) {
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(within))
	n, err := c.Read(buf)
	return buf[:n], err == nil
}

func post(t *testing.T, url, body string) (int, response) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("response is not JSON: %v", err)
	}
	return resp.StatusCode, r
}

func TestHandlerAndAsk(t *testing.T) {
	c, to := sink(t)
	loopback := func(ap netip.AddrPort) bool { return ap.Addr().IsLoopback() }
	srv := httptest.NewServer(&Handler{Allow: loopback})
	defer srv.Close()

	nonce := [16]byte{0xaa, 0xbb}
	if err := Ask(context.Background(), nil, srv.URL, to.String(), nonce); err != nil {
		t.Fatal(err)
	}
	b, ok := received(c, 2*time.Second)
	if got, valid := ParsePayload(b); !ok || !valid || got != nonce {
		t.Fatalf("received % x (%v), want the payload of nonce %x", b, ok, nonce)
	}

	// The documented response.
	code, r := post(t, srv.URL, `{"target":"`+to.String()+`","payload":"`+base64.StdEncoding.EncodeToString(Payload(nonce))+`"}`)
	from, err := netip.ParseAddrPort(r.From)
	if code != 200 || !r.Sent || err != nil || !from.Addr().IsLoopback() || from.Port() == 0 {
		t.Errorf("answer = %d %+v, want 200 sent from a loopback address and port", code, r)
	}
	received(c, 2*time.Second)

	// A name resolves.
	port := to.Port()
	if err := Ask(context.Background(), nil, srv.URL, "localhost:"+itoa(port), nonce); err != nil {
		t.Errorf("Ask(localhost): %v", err)
	} else if _, ok := received(c, 2*time.Second); !ok {
		t.Error("nothing arrived for a target given by name")
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestHandlerRefuses(t *testing.T) {
	c, to := sink(t)
	srv := httptest.NewServer(&Handler{}) // public addresses only
	defer srv.Close()
	good := base64.StdEncoding.EncodeToString(Payload([16]byte{1}))
	wgShaped := make([]byte, 148)
	wgShaped[0] = 1
	tooLong := `{"target":"198.18.0.2:51820","payload":"` + strings.Repeat("A", 5000) + `"}`

	for _, tc := range []struct {
		name, body, want string
	}{
		{"loopback", `{"target":"` + to.String() + `","payload":"` + good + `"}`, "loopback address"},
		{"private", `{"target":"192.168.77.2:51820","payload":"` + good + `"}`, "private address"},
		{"cgnat", `{"target":"100.64.0.9:51820","payload":"` + good + `"}`, "cgnat address"},
		{"link-local v6", `{"target":"[fe80::1%25eth0]:51820","payload":"` + good + `"}`, "zone"},
		{"localhost by name", `{"target":"localhost:` + itoa(to.Port()) + `","payload":"` + good + `"}`, "public"},
		{"no marker", `{"target":"` + to.String() + `","payload":"` + base64.StdEncoding.EncodeToString(wgShaped) + `"}`, "not a reachability payload"},
		{"no marker to a public address", `{"target":"198.18.0.2:51820","payload":"` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"}`, "not a reachability payload"},
		{"not base64", `{"target":"198.18.0.2:51820","payload":"%%%"}`, "not base64"},
		{"port 0", `{"target":"198.18.0.2:0","payload":"` + good + `"}`, "1 to 65535"},
		{"port too big", `{"target":"198.18.0.2:70000","payload":"` + good + `"}`, "1 to 65535"},
		{"no port", `{"target":"198.18.0.2","payload":"` + good + `"}`, "<ip or name>:<port>"},
		{"hostile name", `{"target":"a b;rm -rf:51820","payload":"` + good + `"}`, "neither an address nor a DNS name"},
		{"unknown field", `{"target":"198.18.0.2:51820","payload":"` + good + `","count":1000}`, "JSON"},
		{"too long", tooLong, "4 KiB"},
		{"not JSON", `target=1.2.3.4`, "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := post(t, srv.URL, tc.body)
			if code != http.StatusBadRequest || r.Sent || !strings.Contains(r.Error, tc.want) {
				t.Errorf("answer = %d %+v, want 400 with an error about %q", code, r, tc.want)
			}
		})
	}
	if b, ok := received(c, 300*time.Millisecond); ok {
		t.Errorf("a refused request sent % x", b)
	}

	// GET is not the protocol.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET = %d, want 405", resp.StatusCode)
	}

	// Ask reports the service's reason.
	err = Ask(context.Background(), nil, srv.URL, "192.168.77.2:51820", [16]byte{})
	if err == nil || !strings.Contains(err.Error(), "private address") {
		t.Errorf("Ask(private) = %v, want the service's refusal", err)
	}
	// And a service that does not speak the protocol.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hi</html>")) }))
	defer other.Close()
	if err := Ask(context.Background(), nil, other.URL, "198.18.0.2:51820", [16]byte{}); err == nil || !strings.Contains(err.Error(), "not the echo protocol") {
		t.Errorf("Ask(an HTML page) = %v, want 'not the echo protocol'", err)
	}
	if err := Ask(context.Background(), nil, "http://127.0.0.1:1/", "198.18.0.2:51820", [16]byte{}); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("Ask(nothing listening) = %v", err)
	}
}
