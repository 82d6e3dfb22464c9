package uplink_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/netstack/uplink"
	"github.com/vishvananda/netns"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		addr, want string
	}{
		{"8.8.8.8", uplink.KindPublic},
		{"198.18.0.2", uplink.KindPublic}, // the tests' internet
		{"198.19.255.1", uplink.KindPublic},
		{"2001:2::2", uplink.KindPublic},
		{"2a01:4f8::1", uplink.KindPublic},
		{"::ffff:1.1.1.1", uplink.KindPublic},
		{"10.1.2.3", uplink.KindPrivate},
		{"172.16.0.1", uplink.KindPrivate},
		{"172.31.255.255", uplink.KindPrivate},
		{"192.168.77.2", uplink.KindPrivate},
		{"::ffff:192.168.1.1", uplink.KindPrivate},
		{"fd77::1", uplink.KindPrivate},
		{"100.64.0.1", uplink.KindCGNAT},
		{"100.127.255.254", uplink.KindCGNAT},
		{"127.0.0.1", uplink.KindLoopback},
		{"::1", uplink.KindLoopback},
		{"169.254.1.1", uplink.KindLinkLocal},
		{"fe80::1", uplink.KindLinkLocal},
		{"224.0.0.1", uplink.KindMulticast},
		{"ff02::1", uplink.KindMulticast},
		{"0.0.0.0", uplink.KindUnspecified},
		{"::", uplink.KindUnspecified},
		{"192.0.2.1", uplink.KindDocumentation},
		{"203.0.113.9", uplink.KindDocumentation},
		{"2001:db8::1", uplink.KindDocumentation},
		{"255.255.255.255", uplink.KindReserved},
		{"240.0.0.1", uplink.KindReserved},
		{"0.1.2.3", uplink.KindReserved},
		{"172.32.0.1", uplink.KindPublic},
		{"100.128.0.1", uplink.KindPublic},
	} {
		if got := uplink.Classify(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Classify(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := uplink.Classify(netip.Addr{}); got != uplink.KindInvalid {
		t.Errorf("Classify(zero) = %q, want %q", got, uplink.KindInvalid)
	}
}

func privateState() uplink.State {
	return uplink.State{
		Interface: "eth0", Gateway: netip.MustParseAddr("192.168.77.1"),
		Addrs:  []netip.Prefix{netip.MustParsePrefix("192.168.77.2/24"), netip.MustParsePrefix("2001:2::2/64")},
		Public: []netip.Addr{netip.MustParseAddr("2001:2::2")},
	}
}

func answer(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/?token=s3cret"
}

func router(a string, err error) func(context.Context) (netip.Addr, error) {
	return func(context.Context) (netip.Addr, error) {
		if err != nil {
			return netip.Addr{}, err
		}
		return netip.MustParseAddr(a), nil
	}
}

func TestDiscover(t *testing.T) {
	ctx := context.Background()
	v4, v6 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("2001:2::2")

	// A public uplink needs nobody else: the router and URL are not asked.
	st := uplink.State{Interface: "wan0", Addrs: []netip.Prefix{netip.PrefixFrom(v4, 24), netip.PrefixFrom(v6, 64)}, Public: []netip.Addr{v4, v6}}
	got := uplink.Discover(ctx, st, uplink.DiscoverOptions{URL: "http://127.0.0.1:1/", Router: func(context.Context) (netip.Addr, error) {
		t.Error("router asked although the uplink is public")
		return netip.Addr{}, errors.New("no")
	}})
	if got.Source != uplink.SourceUplink || !slices.Equal(got.Addrs, []netip.Addr{v4, v6}) || got.Error != "" || got.CGNAT {
		t.Errorf("public uplink: %+v, want both uplink addresses from uplink", got)
	}

	// Behind a home router that reports its address.
	got = uplink.Discover(ctx, privateState(), uplink.DiscoverOptions{Router: router("198.18.5.5", nil), URL: answer(t, "198.18.7.7\n")})
	if want := []netip.Addr{netip.MustParseAddr("198.18.5.5"), v6}; got.Source != uplink.SourceRouter || !slices.Equal(got.Addrs, want) || got.Error != "" {
		t.Errorf("router: %+v, want %v from router", got, want)
	}

	// No router: the URL.
	got = uplink.Discover(ctx, privateState(), uplink.DiscoverOptions{URL: answer(t, "198.18.7.7\n")})
	if want := []netip.Addr{netip.MustParseAddr("198.18.7.7"), v6}; got.Source != uplink.SourceURL || !slices.Equal(got.Addrs, want) || got.Error != "" {
		t.Errorf("url: %+v, want %v from url", got, want)
	}

	// A router that fails falls back to the URL.
	got = uplink.Discover(ctx, privateState(), uplink.DiscoverOptions{Router: router("", errors.New("no UPnP")), URL: answer(t, "198.18.7.7")})
	if got.Source != uplink.SourceURL || len(got.Addrs) != 2 || got.Addrs[0] != netip.MustParseAddr("198.18.7.7") {
		t.Errorf("failing router then url: %+v, want the url's address", got)
	}

	// CGNAT at the router: said plainly, even though the URL finds the
	// shared address.
	got = uplink.Discover(ctx, privateState(), uplink.DiscoverOptions{Router: router("100.64.3.4", nil), URL: answer(t, "198.18.7.7")})
	if !got.CGNAT || !strings.Contains(got.Error, "carrier-grade NAT") || !strings.Contains(got.Error, "relay") || got.Source != uplink.SourceURL {
		t.Errorf("cgnat router: %+v, want CGNAT said plainly", got)
	}
	// CGNAT on the uplink itself.
	cg := uplink.State{Interface: "wwan0", Addrs: []netip.Prefix{netip.MustParsePrefix("100.70.1.2/10")}}
	if got = uplink.Discover(ctx, cg, uplink.DiscoverOptions{}); !got.CGNAT || got.Source != "" || len(got.Addrs) != 0 || !strings.Contains(got.Error, "100.70.1.2") {
		t.Errorf("cgnat uplink: %+v, want CGNAT and no address", got)
	}

	// Nothing configured: the IPv6 address only, and why there is no IPv4.
	got = uplink.Discover(ctx, privateState(), uplink.DiscoverOptions{})
	if got.Source != uplink.SourceUplink || !slices.Equal(got.Addrs, []netip.Addr{v6}) || !strings.Contains(got.Error, "no address-discovery URL") {
		t.Errorf("nothing configured: %+v", got)
	}
}

func TestDiscoverBadAnswers(t *testing.T) {
	ctx := context.Background()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := strings.Repeat("1", 64<<10)
		for range 160 { // 10 MiB
			if _, err := fmt.Fprint(w, chunk); err != nil {
				return
			}
		}
	}))
	defer huge.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "198.18.7.7", http.StatusInternalServerError)
	}))
	defer failing.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()

	for _, tc := range []struct {
		name, url, want string
		timeout         time.Duration
	}{
		{"garbage", answer(t, "hello, world"), `"hello, world", not an address`, 0},
		{"html", answer(t, "<!doctype html><html><body>Your IP is 198.18.7.7</body></html>"), `Your IP is 19"…, not an address`, 0},
		{"empty", answer(t, ""), "nothing, not an address", 0},
		{"private", answer(t, "192.168.1.9"), "a private address", 0},
		{"huge", huge.URL, "more than 8 KiB", 0},
		{"status", failing.URL, "500 Internal Server Error", 0},
		{"slow", slow.URL, "did not answer", 300 * time.Millisecond},
		{"scheme", "ftp://example.net/ip", "must be an http or https URL", 0},
		{"refused", "http://127.0.0.1:1/ip", "did not answer", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got := uplink.Discover(ctx, privateState(), uplink.DiscoverOptions{URL: tc.url, Timeout: tc.timeout})
			if got.Source != uplink.SourceUplink || len(got.Addrs) != 1 || !got.Addrs[0].Is6() {
				t.Errorf("got %+v, want the IPv6 uplink address only", got)
			}
			if !strings.Contains(got.Error, tc.want) {
				t.Errorf("Error = %q, want it to contain %q", got.Error, tc.want)
			}
			if strings.Contains(got.Error, "s3cret") {
				t.Errorf("Error %q shows the URL's token", got.Error)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// world is a namespace with an uplink: wan0 (198.18.0.2/24, 2001:2::2/64)
// towards a "wan" namespace, and the default route through it.
func world(t *testing.T) (cell, wan *nstest.NS) {
	t.Helper()
	nstest.RequireRoot(t)
	wan, cell = nstest.NewNS(t, "wan"), nstest.NewNS(t, "cell")
	nstest.Veth(t, wan, "to-cell", "198.18.0.1/24", cell, "wan0", "198.18.0.2/24")
	cell.Exec(t, "ip", "addr", "add", "2001:2::2/64", "dev", "wan0", "nodad")
	cell.Exec(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	return cell, wan
}

func TestRead(t *testing.T) {
	cell, wan := world(t)
	read := func(iface string) (st uplink.State, err error) {
		if rerr := cell.Run(func() error { st, err = uplink.Read(iface); return nil }); rerr != nil {
			t.Fatal(rerr)
		}
		return st, err
	}
	st, err := read("")
	if err != nil {
		t.Fatal(err)
	}
	want := uplink.State{
		Interface: "wan0", Gateway: netip.MustParseAddr("198.18.0.1"),
		Addrs:  []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24"), netip.MustParsePrefix("2001:2::2/64")},
		Public: []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("2001:2::2")},
	}
	if !equal(st, want) {
		t.Errorf("Read() = %+v, want %+v (no link-local address)", st, want)
	}

	// Behind a home router: a LAN interface with a private address becomes
	// the uplink.
	nstest.Veth(t, wan, "to-lan", "192.168.77.1/24", cell, "lan0", "192.168.77.2/24")
	cell.Exec(t, "ip", "route", "replace", "default", "via", "192.168.77.1")
	st, err = read("")
	if err != nil {
		t.Fatal(err)
	}
	want = uplink.State{Interface: "lan0", Gateway: netip.MustParseAddr("192.168.77.1"), Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.77.2/24")}}
	if !equal(st, want) {
		t.Errorf("Read() behind a router = %+v, want %+v", st, want)
	}
	// A named interface that is not the default route's has no gateway.
	if st, err = read("wan0"); err != nil || st.Interface != "wan0" || st.Gateway.IsValid() || len(st.Public) != 2 {
		t.Errorf("Read(wan0) = %+v, %v; want wan0's public addresses and no gateway", st, err)
	}
	if _, err = read("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("Read(nosuch0) error = %v, want one naming the interface", err)
	}

	// Only an IPv6 default route: its interface, no IPv4 gateway.
	cell.Exec(t, "ip", "route", "del", "default")
	cell.Exec(t, "ip", "-6", "route", "add", "default", "via", "2001:2::1", "dev", "wan0")
	if st, err = read(""); err != nil || st.Interface != "wan0" || st.Gateway.IsValid() {
		t.Errorf("Read() with an IPv6 default only = %+v, %v; want wan0 without an IPv4 gateway", st, err)
	}
	cell.Exec(t, "ip", "-6", "route", "del", "default")
	if _, err = read(""); !errors.Is(err, uplink.ErrNoUplink) {
		t.Errorf("Read() without a default route: %v, want ErrNoUplink", err)
	}
}

func equal(a, b uplink.State) bool {
	return a.Interface == b.Interface && a.Gateway == b.Gateway && slices.Equal(a.Addrs, b.Addrs) && slices.Equal(a.Public, b.Public)
}

func TestWatchNS(t *testing.T) {
	cell, wan := world(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := uplink.WatchNS(ctx, netns.NsHandle(cell.Fd()), nil)

	// quiet waits until no notification came for a while, so that the
	// next one is caused by the next step.
	quiet := func() {
		t.Helper()
		for {
			select {
			case <-ch:
			case <-time.After(2 * uplink.Debounce):
				return
			}
		}
	}
	expect := func(what string, args ...string) {
		t.Helper()
		quiet()
		start := time.Now()
		cell.Exec(t, args...)
		select {
		case <-ch:
			t.Logf("%s: heard after %v", what, time.Since(start).Round(time.Millisecond))
		case <-time.After(time.Second):
			t.Errorf("%s: no notification within 1 s", what)
		}
	}
	// The subscription is open once a first change is heard.
	expect("address added", "ip", "addr", "add", "198.18.0.3/24", "dev", "wan0")
	expect("address removed", "ip", "addr", "del", "198.18.0.3/24", "dev", "wan0")
	expect("IPv6 address added", "ip", "addr", "add", "2001:2::3/64", "dev", "wan0", "nodad")
	nstest.Veth(t, wan, "to-lan", "192.168.77.1/24", cell, "lan0", "192.168.77.2/24")
	expect("default route changed", "ip", "route", "replace", "default", "via", "192.168.77.1")
	expect("default route removed", "ip", "route", "del", "default")
	expect("IPv6 default route added", "ip", "-6", "route", "add", "default", "via", "2001:2::1", "dev", "wan0")
	expect("link down", "ip", "link", "set", "lan0", "down")

	// A route that is not a default route changes nothing.
	quiet()
	cell.Exec(t, "ip", "route", "add", "10.77.0.0/16", "via", "198.18.0.1")
	select {
	case <-ch:
		t.Error("notified for a route that is not a default route")
	case <-time.After(3 * uplink.Debounce):
	}

	// A burst is one notification.
	quiet()
	for i := range 5 {
		cell.Exec(t, "ip", "addr", "add", fmt.Sprintf("198.18.0.%d/24", 10+i), "dev", "wan0")
	}
	n := 0
	for timeout := time.After(4 * uplink.Debounce); ; {
		select {
		case <-ch:
			n++
			continue
		case <-timeout:
		}
		break
	}
	if n < 1 || n > 2 { // two when the burst straddles a window
		t.Errorf("a burst of 5 changes gave %d notifications, want 1 (or 2)", n)
	}

	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(2 * time.Second):
		t.Error("channel not closed after the context ended")
	}
}
