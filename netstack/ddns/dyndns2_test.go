package ddns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// provider is a dyndns2 provider that checks each request against the
// protocol's documentation and answers what the test asks.
type provider struct {
	mu     sync.Mutex
	answer string // the body; "" answers "good <myip>"
	status int    // the HTTP status; 0 is 200
	wantIP string // the myip the request must carry
	calls  int
	bad    []string // what the requests got wrong
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	wrong := func(format string, a ...any) { p.bad = append(p.bad, fmt.Sprintf(format, a...)) }
	if r.Method != http.MethodGet {
		wrong("method %s, want GET", r.Method)
	}
	if r.URL.Path != "/nic/update" {
		wrong("path %q, want /nic/update", r.URL.Path)
	}
	q := r.URL.Query()
	if got := q["hostname"]; len(got) != 1 || got[0] != "home.example.net" {
		wrong("hostname %q, want [home.example.net]", got)
	}
	if got := q["myip"]; len(got) != 1 || got[0] != p.wantIP {
		wrong("myip %q, want [%s]", got, p.wantIP)
	}
	if got := q.Get("system"); got != "dyndns" {
		wrong("the URL's own query was lost: system=%q", got)
	}
	if u, pw, ok := r.BasicAuth(); !ok || u != "alice" || pw != "s3cr3t-Pa55word" {
		wrong("basic auth %v %q (password right: %v)", ok, u, pw == "s3cr3t-Pa55word")
	}
	if ua := r.UserAgent(); ua != "pic-cell/test" {
		wrong("User-Agent %q, want pic-cell/test", ua)
	}
	if p.status != 0 {
		w.WriteHeader(p.status)
	}
	if p.answer == "" {
		fmt.Fprintf(w, "good %s\n", p.wantIP)
		return
	}
	fmt.Fprint(w, p.answer)
}

func newProvider(t *testing.T) (*provider, *DynDNS2) {
	p := &provider{}
	srv := httptest.NewTLSServer(p)
	t.Cleanup(srv.Close)
	d := goodDynDNS2()
	d.URL = srv.URL + "/nic/update?system=dyndns"
	d.Client = srv.Client()
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, b := range p.bad {
			t.Errorf("the request broke the protocol: %s", b)
		}
	})
	return p, &d
}

func TestDynDNS2Answers(t *testing.T) {
	v4 := netip.MustParseAddr("198.51.100.7")
	v6 := netip.MustParseAddr("2001:db8::7")
	for _, c := range []struct {
		answer string
		status int
		addrs  []netip.Addr
		myip   string
		want   error // nil: success; errTransient: neither ErrAuth nor ErrRefused
	}{
		{answer: "", addrs: []netip.Addr{v4}, myip: "198.51.100.7"},
		{answer: "good 198.51.100.7,2001:db8::7", addrs: []netip.Addr{v6, v4}, myip: "198.51.100.7,2001:db8::7"},
		{answer: "nochg 198.51.100.7\n", addrs: []netip.Addr{v4}, myip: "198.51.100.7"},
		{answer: "good 2001:db8::7\r\n", addrs: []netip.Addr{v6}, myip: "2001:db8::7"},
		{answer: "badauth", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrAuth},
		{answer: "abuse\n", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrRefused},
		{answer: "nohost", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrRefused},
		{answer: "notfqdn", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrRefused},
		{answer: "badagent", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrRefused},
		{answer: "!donator", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrRefused},
		{answer: "numhost", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrRefused},
		{answer: "911", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: errTransient},
		{answer: "dnserr", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: errTransient},
		{answer: "what is this " + "s3cr3t-Pa55word\x1b[2J", addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: errTransient},
		{answer: "Unauthorized", status: 401, addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: ErrAuth},
		{answer: "oops", status: 503, addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: errTransient},
		{answer: "good 198.51.100.7", status: 500, addrs: []netip.Addr{v4}, myip: "198.51.100.7", want: errTransient},
	} {
		t.Run(fmt.Sprintf("%d %q", c.status, c.answer), func(t *testing.T) {
			p, d := newProvider(t)
			p.answer, p.status, p.wantIP = c.answer, c.status, c.myip
			err := d.Update(context.Background(), c.addrs)
			switch c.want {
			case nil:
				if err != nil {
					t.Fatalf("success answer taken as a failure: %v", err)
				}
			case errTransient:
				if err == nil || errors.Is(err, ErrAuth) || errors.Is(err, ErrRefused) {
					t.Fatalf("got %v, want a transient error", err)
				}
			default:
				if !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
				if errors.Is(err, ErrAuth) && errors.Is(err, ErrRefused) {
					t.Fatalf("%v is both kinds", err)
				}
			}
			if err != nil {
				checkPlain(t, c.answer, err.Error(), d.Password)
			}
			if p.calls != 1 {
				t.Fatalf("%d requests, want 1", p.calls)
			}
		})
	}
}

var errTransient = errors.New("transient")

// TestDynDNS2RefusesPlainRedirect: the password is not sent to a plain
// HTTP URL a provider (or whoever answers in its name) redirects to.
func TestDynDNS2RefusesPlainRedirect(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the plain HTTP server got a request (auth header present: %v)", r.Header.Get("Authorization") != "")
	}))
	defer plain.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/nic/update", http.StatusFound)
	}))
	defer tls.Close()
	d := goodDynDNS2()
	d.URL, d.Client = tls.URL+"/nic/update", tls.Client()
	err := d.Update(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.7")})
	if err == nil || !strings.Contains(err.Error(), "not https") {
		t.Fatalf("got %v, want a refused redirect", err)
	}
}

// TestDynDNS2Unreachable: a provider that is down is a transient error in
// plain words.
func TestDynDNS2Unreachable(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	d := goodDynDNS2()
	d.URL, d.Client = srv.URL+"/nic/update", srv.Client()
	srv.Close()
	err := d.Update(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.7")})
	if err == nil || errors.Is(err, ErrAuth) || errors.Is(err, ErrRefused) {
		t.Fatalf("got %v, want a transient error", err)
	}
	checkPlain(t, "unreachable", err.Error(), d.Password)
	if !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("the error does not say the provider cannot be reached: %v", err)
	}
}
