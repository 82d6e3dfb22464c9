package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The wire formats of NAT-PMP (RFC 6886 §3) and PCP's MAP (RFC 6887 §7,
// §11). Both run over UDP to the gateway's port 5351.

const (
	pmpPort = 5351

	pmpVersion = 0
	pcpVersion = 2

	pmpOpExternal = 0
	pmpOpMapUDP   = 1

	pcpOpAnnounce = 0
	pcpOpMap      = 1

	protoUDP = 17
)

// pmpResultText are NAT-PMP's result codes (RFC 6886 §3.5).
var pmpResultText = map[uint16]string{
	1: "unsupported version",
	2: "not authorized or refused (port mapping may be turned off on the router)",
	3: "network failure (the router has no public address yet)",
	4: "out of resources (the router has no mappings or ports left)",
	5: "unsupported opcode",
}

// pcpResultText are PCP's result codes (RFC 6887 §7.4).
var pcpResultText = map[uint8]string{
	1:  "unsupported version",
	2:  "not authorized (port mapping may be turned off on the router)",
	3:  "malformed request",
	4:  "unsupported opcode",
	5:  "unsupported option",
	6:  "malformed option",
	7:  "network failure (the router has no public address yet)",
	8:  "no resources",
	9:  "unsupported protocol",
	10: "user exceeded quota",
	11: "cannot provide the external port or address",
	12: "address mismatch (a NAT between the cell and the router)",
	13: "excessive remote peers",
}

// ResultError is a router's refusal, with its code.
type ResultError struct {
	Protocol Protocol
	Code     int
	Text     string
}

func (e *ResultError) Error() string {
	return fmt.Sprintf("%s: the router refused: %s (code %d)", e.Protocol, e.Text, e.Code)
}

func pmpResult(code uint16) error {
	if code == 0 {
		return nil
	}
	t, ok := pmpResultText[code]
	if !ok {
		t = "unknown result"
	}
	return &ResultError{Protocol: NATPMP, Code: int(code), Text: t}
}

func pcpResult(code uint8) error {
	if code == 0 {
		return nil
	}
	t, ok := pcpResultText[code]
	if !ok {
		t = "unknown result"
	}
	return &ResultError{Protocol: PCP, Code: int(code), Text: t}
}

var errShort = errors.New("answer too short")

// pmpExternalRequest is NAT-PMP's public address request.
func pmpExternalRequest() []byte { return []byte{pmpVersion, pmpOpExternal} }

// pmpExternalResponse decodes the answer to pmpExternalRequest.
func pmpExternalResponse(b []byte) (epoch uint32, addr netip.Addr, err error) {
	if len(b) < 12 {
		return 0, addr, errShort
	}
	if b[0] != pmpVersion || b[1] != 128+pmpOpExternal {
		return 0, addr, fmt.Errorf("not a NAT-PMP address answer (version %d, opcode %d)", b[0], b[1])
	}
	if err := pmpResult(binary.BigEndian.Uint16(b[2:])); err != nil {
		return 0, addr, err
	}
	return binary.BigEndian.Uint32(b[4:]), netip.AddrFrom4([4]byte(b[8:12])), nil
}

// pmpMapRequest asks for a UDP mapping; lifetime 0 and external 0 delete
// it (RFC 6886 §3.4).
func pmpMapRequest(internal, external uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:], internal)
	binary.BigEndian.PutUint16(b[6:], external)
	binary.BigEndian.PutUint32(b[8:], lifetime)
	return b
}

type pmpMapAnswer struct {
	Epoch              uint32
	Internal, External uint16
	Lifetime           uint32
}

func pmpMapResponse(b []byte) (pmpMapAnswer, error) {
	var a pmpMapAnswer
	if len(b) < 16 {
		return a, errShort
	}
	if b[0] != pmpVersion || b[1] != 128+pmpOpMapUDP {
		return a, fmt.Errorf("not a NAT-PMP UDP mapping answer (version %d, opcode %d)", b[0], b[1])
	}
	if err := pmpResult(binary.BigEndian.Uint16(b[2:])); err != nil {
		return a, err
	}
	a.Epoch = binary.BigEndian.Uint32(b[4:])
	a.Internal = binary.BigEndian.Uint16(b[8:])
	a.External = binary.BigEndian.Uint16(b[10:])
	a.Lifetime = binary.BigEndian.Uint32(b[12:])
	return a, nil
}

// pcpMap is the MAP opcode's fields (RFC 6887 §11.1), the same in request
// and response.
type pcpMap struct {
	Nonce    [12]byte
	Protocol uint8
	Internal uint16
	External uint16 // suggested (request) or assigned (response)
	ExtAddr  netip.Addr
}

// pcpRequest is a PCP request: the common header (§7.1) and, for MAP, the
// opcode's fields. client is the cell's address; an IPv4 address is
// written IPv4-mapped.
func pcpRequest(op uint8, lifetime uint32, client netip.Addr, m *pcpMap) []byte {
	n := 24
	if m != nil {
		n += 36
	}
	b := make([]byte, n)
	b[0], b[1] = pcpVersion, op&0x7f
	binary.BigEndian.PutUint32(b[4:], lifetime)
	a16 := client.As16() // IPv4 comes out IPv4-mapped (::ffff:a.b.c.d)
	copy(b[8:24], a16[:])
	if m != nil {
		putPCPMap(b[24:], m)
	}
	return b
}

func putPCPMap(b []byte, m *pcpMap) {
	copy(b[0:12], m.Nonce[:])
	b[12] = m.Protocol
	binary.BigEndian.PutUint16(b[16:], m.Internal)
	binary.BigEndian.PutUint16(b[18:], m.External)
	ext := m.ExtAddr
	if !ext.IsValid() {
		// "No preference" for an IPv4 mapping is ::ffff:0.0.0.0 (§11.1).
		ext = netip.IPv4Unspecified()
	}
	a := ext.As16()
	copy(b[20:36], a[:])
}

// pcpResponse is a decoded PCP response.
type pcpResponse struct {
	Op       uint8
	Result   uint8
	Lifetime uint32
	Epoch    uint32
	Map      pcpMap // when Op is MAP
}

// parsePCP decodes a PCP response (§7.2). A result other than success is
// returned as the response with a ResultError, so that callers can still
// see the opcode.
func parsePCP(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) >= 2 && b[0] != pcpVersion {
		// A NAT-PMP-only router answers a PCP request with its own
		// version and "unsupported version" (RFC 6887 §9).
		return r, &ResultError{Protocol: PCP, Code: 1, Text: fmt.Sprintf("unsupported version (the router speaks version %d)", b[0])}
	}
	if len(b) < 24 {
		return r, errShort
	}
	if b[1]&0x80 == 0 {
		return r, errors.New("a PCP request, not a response")
	}
	r.Op = b[1] & 0x7f
	r.Result = b[3]
	r.Lifetime = binary.BigEndian.Uint32(b[4:])
	r.Epoch = binary.BigEndian.Uint32(b[8:])
	if r.Op == pcpOpMap && r.Result == 0 {
		if len(b) < 60 {
			return r, errShort
		}
		m := b[24:60]
		copy(r.Map.Nonce[:], m[0:12])
		r.Map.Protocol = m[12]
		r.Map.Internal = binary.BigEndian.Uint16(m[16:])
		r.Map.External = binary.BigEndian.Uint16(m[18:])
		r.Map.ExtAddr = netip.AddrFrom16([16]byte(m[20:36])).Unmap()
	}
	return r, pcpResult(r.Result)
}
