package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/pic-cell/cell/cell/fault"
)

func TestEndpoint(t *testing.T) {
	c := Cell{Name: "home", Domain: "home.example.org"}
	for _, tc := range []struct{ in, want string }{
		{"", "home.example.org:51820"},
		{"dyn.example.net", "dyn.example.net:51820"},
		{"dyn.example.net:4500", "dyn.example.net:4500"},
		{"198.51.100.7", "198.51.100.7:51820"},
		{"198.51.100.7:65535", "198.51.100.7:65535"},
		{"2001:db8::7", "[2001:db8::7]:51820"},
		{"[2001:db8::7]:4500", "[2001:db8::7]:4500"},
	} {
		n := Network{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: "fd00:77::/64", WANInterface: "auto", Endpoint: tc.in}
		if err := n.Validate(); err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := EndpointOf(c, n).String(); got != tc.want {
			t.Errorf("%q: endpoint %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestEndpointRefusesBadInput(t *testing.T) {
	for _, in := range []string{
		"home.example.org:0", "home.example.org:65536", "home.example.org:99999999999", "home.example.org:-1",
		"home.example.org:+80", "home.example.org:080", "home.example.org:", ":51820", "[2001:db8::7]", "[198.51.100.7]:1",
		"fe80::1%eth0", "$(reboot)", "a;b", "../etc", "a\x00b", "a\nb", "host name", strings.Repeat("é", 4096),
		"http://home.example.org", "user@home.example.org",
	} {
		n := Network{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: "fd00:77::/64", WANInterface: "auto", Endpoint: in}
		err := n.Validate()
		if !errors.Is(err, fault.ErrInvalid) {
			t.Errorf("%q: %v, want invalid", in, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "endpoint") || strings.Contains(msg, "\n") || strings.Contains(msg, "\x00") {
			t.Errorf("%q: message %q does not say what is wrong plainly", in, msg)
		}
	}
}
