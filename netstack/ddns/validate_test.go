package ddns

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// secret32 is a valid key secret; every error below is checked not to
// contain it.
var secret32 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789ABCDEF"))

func goodRFC2136() RFC2136 {
	return RFC2136{Server: "198.18.0.53", Zone: "example.org.", Name: "home.example.org", KeyName: "cell-key", Secret: secret32}
}

func goodDynDNS2() DynDNS2 {
	return DynDNS2{URL: "https://members.example.net/nic/update", Hostname: "home.example.net", Username: "alice", Password: "s3cr3t-Pa55word", UserAgent: "pic-cell/test"}
}

var unicode4K = strings.Repeat("é", 2048)

func TestRFC2136Validate(t *testing.T) {
	good := goodRFC2136()
	if err := good.Validate(); err != nil {
		t.Fatalf("a good configuration is refused: %v", err)
	}
	for _, ok := range []func(*RFC2136){
		func(r *RFC2136) { r.Server = "198.18.0.53:5353" },
		func(r *RFC2136) { r.Server = "ns1.example.org" },
		func(r *RFC2136) { r.Server = "ns1.example.org:53" },
		func(r *RFC2136) { r.Server = "2001:db8::53" },
		func(r *RFC2136) { r.Server = "[2001:db8::53]:53" },
		func(r *RFC2136) { r.Name = "example.org." }, // the apex
		func(r *RFC2136) { r.Algorithm = "HMAC-SHA512." },
		func(r *RFC2136) { r.Algorithm = "hmac-sha1" },
		func(r *RFC2136) { r.KeyName = "_ddns.example.org." },
	} {
		r := good
		ok(&r)
		if err := r.Validate(); err != nil {
			t.Errorf("%v: refused: %v", r, err)
		}
	}

	bad := map[string]func(*RFC2136){
		"server command":     func(r *RFC2136) { r.Server = "$(reboot)" },
		"server semicolon":   func(r *RFC2136) { r.Server = "ns1.example.org;reboot" },
		"server port":        func(r *RFC2136) { r.Server = "ns1.example.org:99999" },
		"server port text":   func(r *RFC2136) { r.Server = "ns1.example.org:dns" },
		"server empty":       func(r *RFC2136) { r.Server = "" },
		"server path":        func(r *RFC2136) { r.Server = "../etc/passwd" },
		"zone space":         func(r *RFC2136) { r.Zone = "example org" },
		"zone unicode 4K":    func(r *RFC2136) { r.Zone = unicode4K },
		"name command":       func(r *RFC2136) { r.Name = "$(reboot).example.org" },
		"name semicolon":     func(r *RFC2136) { r.Name = "home;rm.example.org" },
		"name dots":          func(r *RFC2136) { r.Name = "../home.example.org" },
		"name NUL":           func(r *RFC2136) { r.Name = "home\x00.example.org" },
		"name newline":       func(r *RFC2136) { r.Name = "home\n.example.org" },
		"name unicode 4K":    func(r *RFC2136) { r.Name = unicode4K + ".example.org" },
		"name long label":    func(r *RFC2136) { r.Name = strings.Repeat("a", 64) + ".example.org" },
		"name outside zone":  func(r *RFC2136) { r.Name = "home.example.com" },
		"name underscore":    func(r *RFC2136) { r.Name = "ho_me.example.org" },
		"key name space":     func(r *RFC2136) { r.KeyName = "cell key" },
		"key name empty":     func(r *RFC2136) { r.KeyName = "" },
		"key name unicode":   func(r *RFC2136) { r.KeyName = unicode4K },
		"algorithm md5":      func(r *RFC2136) { r.Algorithm = "hmac-md5" },
		"algorithm command":  func(r *RFC2136) { r.Algorithm = "$(reboot)" },
		"secret bad base64":  func(r *RFC2136) { r.Secret = secret32[:10] + "!!" + secret32[12:] },
		"secret not padded":  func(r *RFC2136) { r.Secret = strings.TrimRight(secret32, "=") },
		"secret too short":   func(r *RFC2136) { r.Secret = base64.StdEncoding.EncodeToString([]byte("short-secret")) },
		"secret too long":    func(r *RFC2136) { r.Secret = base64.StdEncoding.EncodeToString(make([]byte, 129)) },
		"secret empty":       func(r *RFC2136) { r.Secret = "" },
		"secret newline":     func(r *RFC2136) { r.Secret = secret32 + "\n" },
		"negative TTL":       func(r *RFC2136) { r.TTL = -time.Second },
		"timeout of an hour": func(r *RFC2136) { r.Timeout = time.Hour },
	}
	for name, mutate := range bad {
		r := good
		mutate(&r)
		err := r.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		checkPlain(t, name, err.Error(), r.Secret, secret32)
		// Update refuses it the same way, without a network.
		uerr := r.Update(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.7")})
		if !errors.Is(uerr, ErrRefused) {
			t.Errorf("%s: Update gives %v, not a refusal", name, uerr)
		}
	}
}

func TestDynDNS2Validate(t *testing.T) {
	good := goodDynDNS2()
	if err := good.Validate(); err != nil {
		t.Fatalf("a good configuration is refused: %v", err)
	}
	for _, ok := range []func(*DynDNS2){
		func(d *DynDNS2) { d.URL = "https://dynupdate.no-ip.com/nic/update?system=dyndns" },
		func(d *DynDNS2) { d.URL = "https://198.18.0.80:8443/nic/update" },
		func(d *DynDNS2) { d.UserAgent = "" },
		func(d *DynDNS2) { d.Username = "alice@example.org" },
	} {
		d := good
		ok(&d)
		if err := d.Validate(); err != nil {
			t.Errorf("%v: refused: %v", d, err)
		}
	}
	bad := map[string]func(*DynDNS2){
		"http URL":          func(d *DynDNS2) { d.URL = "http://members.example.net/nic/update" },
		"URL with userinfo": func(d *DynDNS2) { d.URL = "https://alice:" + d.Password + "@members.example.net/nic/update" },
		"URL fragment":      func(d *DynDNS2) { d.URL = "https://members.example.net/nic/update#x" },
		"URL no host":       func(d *DynDNS2) { d.URL = "https:///nic/update" },
		"URL command host":  func(d *DynDNS2) { d.URL = "https://$(reboot)/nic/update" },
		"URL newline":       func(d *DynDNS2) { d.URL = "https://members.example.net/nic/update\nHost: evil" },
		"URL not a URL":     func(d *DynDNS2) { d.URL = "../etc/passwd" },
		"URL unicode 4K":    func(d *DynDNS2) { d.URL = "https://" + unicode4K },
		"URL file":          func(d *DynDNS2) { d.URL = "file:///etc/passwd" },
		"hostname command":  func(d *DynDNS2) { d.Hostname = "$(reboot)" },
		"hostname semi":     func(d *DynDNS2) { d.Hostname = "home;reboot" },
		"hostname dots":     func(d *DynDNS2) { d.Hostname = "../home" },
		"hostname NUL":      func(d *DynDNS2) { d.Hostname = "home\x00" },
		"hostname newline":  func(d *DynDNS2) { d.Hostname = "home\nx" },
		"hostname 4K":       func(d *DynDNS2) { d.Hostname = unicode4K },
		"username empty":    func(d *DynDNS2) { d.Username = "" },
		"username newline":  func(d *DynDNS2) { d.Username = "alice\nBob" },
		"username colon":    func(d *DynDNS2) { d.Username = "alice:x" },
		"password empty":    func(d *DynDNS2) { d.Password = "" },
		"password newline":  func(d *DynDNS2) { d.Password = "s3cr3t-Pa55word\r\nX-Evil: 1" },
		"password unicode":  func(d *DynDNS2) { d.Password = "s3cr3t-Pa55word" + unicode4K },
		"agent newline":     func(d *DynDNS2) { d.UserAgent = "pic\r\nX-Evil: 1" },
	}
	for name, mutate := range bad {
		d := good
		mutate(&d)
		err := d.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		checkPlain(t, name, err.Error(), d.Password, good.Password)
		uerr := d.Update(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.7")})
		if !errors.Is(uerr, ErrRefused) {
			t.Errorf("%s: Update gives %v, not a refusal", name, uerr)
		}
	}
}

// checkPlain fails t when msg contains a secret, a control character or
// anything a shell would act on, or is long.
func checkPlain(t *testing.T, name, msg string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(msg, s) {
			t.Errorf("%s: the error contains the secret: %s", name, msg)
		}
		if len(s) >= 12 && strings.Contains(msg, s[:12]) {
			t.Errorf("%s: the error contains part of the secret: %s", name, msg)
		}
	}
	if strings.ContainsAny(msg, "\x00\n\r") || strings.Contains(msg, "$(") || len(msg) > 300 {
		t.Errorf("%s: the error is not plain: %q", name, msg)
	}
	if strings.Contains(msg, "*ddns.") || strings.Contains(msg, "netip.") {
		t.Errorf("%s: the error names Go types: %s", name, msg)
	}
}

// TestNoSecretInStrings: the updaters print without their secrets,
// whatever the verb.
func TestNoSecretInStrings(t *testing.T) {
	r, d := goodRFC2136(), goodDynDNS2()
	for _, s := range []string{
		fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s", r, r, r, r), fmt.Sprintf("%v %+v %#v", &r, &r, &r),
	} {
		if strings.Contains(s, secret32) {
			t.Errorf("the TSIG secret is printed: %s", s)
		}
		if !strings.Contains(s, "home.example.org") {
			t.Errorf("the description misses the name: %s", s)
		}
	}
	for _, s := range []string{
		fmt.Sprint(d), fmt.Sprintf("%v %+v %#v %s", d, d, d, d), fmt.Sprintf("%v %+v %#v", &d, &d, &d),
	} {
		if strings.Contains(s, d.Password) {
			t.Errorf("the password is printed: %s", s)
		}
	}
}

func TestSplitAddrs(t *testing.T) {
	a := netip.MustParseAddr
	for _, c := range []struct {
		in     []netip.Addr
		v4, v6 string
		bad    bool
	}{
		{in: []netip.Addr{a("198.51.100.7")}, v4: "198.51.100.7"},
		{in: []netip.Addr{a("2001:db8::7"), a("::ffff:198.51.100.7")}, v4: "198.51.100.7", v6: "2001:db8::7"},
		{in: []netip.Addr{a("198.51.100.7"), a("198.51.100.7")}, v4: "198.51.100.7"},
		{in: []netip.Addr{a("198.51.100.7"), a("198.51.100.8")}, bad: true},
		{in: []netip.Addr{a("2001:db8::7"), a("2001:db8::8")}, bad: true},
		{in: []netip.Addr{a("fe80::1%eth0")}, bad: true},
		{in: nil, bad: true},
		{in: []netip.Addr{{}}, bad: true},
	} {
		v4, v6, err := splitAddrs(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%v: accepted", c.in)
			}
			continue
		}
		if err != nil || (v4.IsValid() && v4.String() != c.v4) || (v6.IsValid() && v6.String() != c.v6) || v4.IsValid() != (c.v4 != "") || v6.IsValid() != (c.v6 != "") {
			t.Errorf("%v: %v %v %v, want %s %s", c.in, v4, v6, err, c.v4, c.v6)
		}
	}
}

// TestRFC2136Answers: a small DNS server on loopback answers the update
// with each code, unsigned (as a server that did not check the key, or
// someone else, would); each maps as documented, and an unsigned success
// is not believed.
func TestRFC2136Answers(t *testing.T) {
	for _, c := range []struct {
		rcode int
		want  error
	}{
		{dns.RcodeSuccess, errTransient}, // unsigned: not believed
		{dns.RcodeServerFailure, errTransient},
		{dns.RcodeRefused, ErrAuth},
		{dns.RcodeNotAuth, ErrAuth},
		{dns.RcodeNotZone, ErrRefused},
	} {
		t.Run(dns.RcodeToString[c.rcode], func(t *testing.T) {
			gotc := make(chan *dns.Msg, 1)
			srv := &dns.Server{Addr: "127.0.0.1:0", Net: "tcp", MsgAcceptFunc: acceptAll, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
				gotc <- m
				r := new(dns.Msg)
				r.SetRcode(m, c.rcode)
				w.WriteMsg(r)
			})}
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go srv.ListenAndServe()
			<-started
			defer srv.Shutdown()
			r := goodRFC2136()
			r.Server = srv.Listener.Addr().String()
			r.Timeout = 2 * time.Second
			err := r.Update(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.7")})
			switch c.want {
			case errTransient:
				if err == nil || errors.Is(err, ErrAuth) || errors.Is(err, ErrRefused) {
					t.Fatalf("got %v, want a transient error", err)
				}
			default:
				if !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
			}
			checkPlain(t, "answer", err.Error(), secret32)
			var got *dns.Msg
			select {
			case got = <-gotc:
			default:
			}
			if got == nil || got.Opcode != dns.OpcodeUpdate || got.IsTsig() == nil || got.IsTsig().Hdr.Name != "cell-key." {
				t.Fatalf("the server got %v, want an update signed with cell-key.", got)
			}
			if len(got.Ns) != 3 || got.Ns[0].Header().Class != dns.ClassANY || got.Ns[2].Header().Ttl != 60 {
				t.Fatalf("the update is not delete A, delete AAAA, add A with TTL 60: %v", got.Ns)
			}
		})
	}
}

func acceptAll(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
