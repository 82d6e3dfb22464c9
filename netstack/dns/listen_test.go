package dns

import (
	"net/netip"
	"slices"
	"testing"
)

func TestResolvConf(t *testing.T) {
	got := ResolvConf("# dhcp\nsearch lan\nnameserver 198.18.0.53\nnameserver  2001:db8::53%eth0 \nnameserver 0.0.0.0\nnameserver nonsense\noptions edns0\n")
	want := []string{"198.18.0.53", "2001:db8::53"}
	if !slices.Equal(got, want) {
		t.Errorf("ResolvConf = %q, want %q", got, want)
	}
}

// The IPv6 tunnel address may not be usable yet (duplicate address detection)
// or not be on any interface at all when the cell starts serving: free binding
// takes it anyway.
func TestListenKernelFreeBind(t *testing.T) {
	ap := netip.MustParseAddrPort("[fd77:ffff::1]:0")
	pc, ln, err := ListenKernel(ap)
	if err != nil {
		t.Fatalf("binding an address no interface has: %v", err)
	}
	pc.Close()
	ln.Close()
}
