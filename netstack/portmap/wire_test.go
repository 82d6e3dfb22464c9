package portmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPCPMapRequestEncoding(t *testing.T) {
	nonce := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	b := pcpRequest(pcpOpMap, 7200, netip.MustParseAddr("192.168.77.2"), &pcpMap{Nonce: nonce, Protocol: protoUDP, Internal: 51820, External: 51821})
	want := []byte{
		2, 1, 0, 0, // version 2, R=0 opcode MAP, reserved
		0, 0, 0x1c, 0x20, // lifetime 7200
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 77, 2, // client IPv4-mapped
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, // nonce
		17, 0, 0, 0, // UDP, reserved
		0xca, 0x6c, 0xca, 0x6d, // internal 51820, suggested external 51821
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, // no preferred external address (::ffff:0.0.0.0)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("MAP request\n got % x\nwant % x", b, want)
	}
	a := pcpRequest(pcpOpAnnounce, 0, netip.MustParseAddr("192.168.77.2"), nil)
	if len(a) != 24 || a[0] != 2 || a[1] != 0 || binary.BigEndian.Uint32(a[4:]) != 0 {
		t.Errorf("ANNOUNCE request = % x, want a bare 24-byte header", a)
	}
}

// pcpResponseBytes is a server's MAP answer, built by hand from §7.2 and
// §11.1 so that the decoder is checked against the RFC, not against itself.
func pcpResponseBytes(result uint8, lifetime uint32, m pcpMap) []byte {
	b := make([]byte, 60)
	b[0], b[1], b[3] = 2, 0x80|1, result
	binary.BigEndian.PutUint32(b[4:], lifetime)
	binary.BigEndian.PutUint32(b[8:], 12345) // epoch
	copy(b[24:], m.Nonce[:])
	b[36] = m.Protocol
	binary.BigEndian.PutUint16(b[40:], m.Internal)
	binary.BigEndian.PutUint16(b[42:], m.External)
	a := m.ExtAddr.As16()
	copy(b[44:], a[:])
	return b
}

func TestPCPResponseRoundTrip(t *testing.T) {
	m := pcpMap{Nonce: pcpNonce(netip.MustParseAddrPort("192.168.77.2:51820")), Protocol: protoUDP, Internal: 51820, External: 40000, ExtAddr: netip.MustParseAddr("198.18.4.2")}
	r, err := parsePCP(pcpResponseBytes(0, 3600, m))
	if err != nil {
		t.Fatal(err)
	}
	if r.Op != pcpOpMap || r.Lifetime != 3600 || r.Epoch != 12345 || r.Map != m {
		t.Errorf("decoded %+v, want op MAP, lifetime 3600, epoch 12345, map %+v", r, m)
	}
	if !r.Map.ExtAddr.Is4() {
		t.Errorf("external address %v: want it unmapped to IPv4", r.Map.ExtAddr)
	}
	// The request the client would send carries the same fields back.
	req := pcpRequest(pcpOpMap, 3600, netip.MustParseAddr("192.168.77.2"), &m)
	if !bytes.Equal(req[24:60], pcpResponseBytes(0, 3600, m)[24:60]) {
		t.Errorf("MAP fields differ between request and response encodings")
	}
}

func TestPCPNonceStable(t *testing.T) {
	a, b := netip.MustParseAddrPort("192.168.77.2:51820"), netip.MustParseAddrPort("192.168.77.3:51820")
	if pcpNonce(a) != pcpNonce(a) {
		t.Error("the nonce of one internal address changes: renewals and deletion would be refused")
	}
	if pcpNonce(a) == pcpNonce(b) {
		t.Error("two internal addresses share a nonce")
	}
}

func TestPCPResultCodes(t *testing.T) {
	for code, want := range map[uint8]string{2: "not authorized", 7: "network failure", 8: "no resources", 11: "cannot provide", 200: "unknown result"} {
		_, err := parsePCP(pcpResponseBytes(code, 0, pcpMap{}))
		var re *ResultError
		if !errors.As(err, &re) || re.Code != int(code) || re.Protocol != PCP || !strings.Contains(err.Error(), want) {
			t.Errorf("result %d: err = %v, want a PCP ResultError saying %q", code, err, want)
		}
	}
	// A NAT-PMP-only router answers in its own version.
	_, err := parsePCP([]byte{0, 0x81, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	if !unsupportedVersion(err) {
		t.Errorf("version 0 answer: err = %v, want unsupported version", err)
	}
	if _, err := parsePCP(make([]byte, 10)); err == nil {
		t.Error("a 10-byte answer decoded")
	}
	req := pcpRequest(pcpOpMap, 1, netip.MustParseAddr("10.0.0.1"), &pcpMap{})
	if _, err := parsePCP(req); err == nil {
		t.Error("a request decoded as a response")
	}
}

func TestNATPMPEncoding(t *testing.T) {
	if got := pmpExternalRequest(); !bytes.Equal(got, []byte{0, 0}) {
		t.Errorf("address request % x", got)
	}
	want := []byte{0, 1, 0, 0, 0xca, 0x6c, 0xca, 0x6c, 0, 0, 0x1c, 0x20}
	if got := pmpMapRequest(51820, 51820, 7200); !bytes.Equal(got, want) {
		t.Errorf("map request\n got % x\nwant % x", got, want)
	}
	if got := pmpMapRequest(51820, 0, 0); binary.BigEndian.Uint16(got[6:]) != 0 || binary.BigEndian.Uint32(got[8:]) != 0 {
		t.Errorf("delete request % x: want external port and lifetime 0", got)
	}

	epoch, a, err := pmpExternalResponse([]byte{0, 128, 0, 0, 0, 0, 0, 9, 198, 18, 4, 2})
	if err != nil || epoch != 9 || a != netip.MustParseAddr("198.18.4.2") {
		t.Errorf("address answer: %d %v %v", epoch, a, err)
	}
	ans, err := pmpMapResponse([]byte{0, 129, 0, 0, 0, 0, 0, 9, 0xca, 0x6c, 0x9c, 0x40, 0, 0, 0x0e, 0x10})
	if err != nil || ans != (pmpMapAnswer{Epoch: 9, Internal: 51820, External: 40000, Lifetime: 3600}) {
		t.Errorf("map answer: %+v %v", ans, err)
	}
	_, _, err = pmpExternalResponse([]byte{0, 128, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0})
	var re *ResultError
	if !errors.As(err, &re) || re.Code != 3 || !strings.Contains(err.Error(), "network failure") {
		t.Errorf("result 3: %v, want network failure", err)
	}
	if _, err := pmpMapResponse([]byte{0, 128, 0, 0}); err == nil {
		t.Error("a short answer decoded")
	}
	if _, err := pmpMapResponse([]byte{0, 130, 0, 0, 0, 0, 0, 9, 0xca, 0x6c, 0x9c, 0x40, 0, 0, 0x0e, 0x10}); err == nil {
		t.Error("a TCP mapping answer accepted as UDP's")
	}
}

func TestCGNAT(t *testing.T) {
	for s, want := range map[string]bool{
		"100.64.0.1": true, "100.127.255.255": true, "100.63.255.255": false, "100.128.0.0": false,
		"198.18.4.2": false, "192.168.1.1": false, "::ffff:100.64.0.2": true, "2001:db8::1": false,
	} {
		if got := CGNAT(netip.MustParseAddr(s)); got != want {
			t.Errorf("CGNAT(%s) = %v, want %v", s, got, want)
		}
	}
	if CGNAT(netip.Addr{}) {
		t.Error("CGNAT(invalid) = true")
	}
}

func TestStripTags(t *testing.T) {
	got := stripTags(`<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError>`)
	if got != "718 ConflictInMappingEntry" {
		t.Errorf("stripTags = %q", got)
	}
}
