// Package echo is the reachability test's outside half: a small HTTP
// service that, asked by a cell, sends one WireGuard-shaped UDP datagram to
// the cell's public endpoint, so the cell can tell whether its port forward
// works. It is the one test a person can run from inside the home that says
// what a phone on mobile data would see.
//
// # The protocol
//
// The cell asks with
//
//	POST <echo URL>
//	Content-Type: application/json
//
//	{"target":"<ip or name>:<port>","payload":"<base64 of 148 bytes>"}
//
// target is the cell's public endpoint: an IPv4 address, an IPv6 address in
// brackets, or a DNS name, then the UDP port ("198.18.0.2:51820",
// "[2001:2::2]:51820", "cell.example.net:51820"). payload is standard base64
// (RFC 4648 section 4, with padding) of exactly the bytes Payload makes.
// The request body is at most 4 KiB.
//
// The service checks the request and then sends payload as one UDP datagram,
// from a fresh socket on its own address, to target. It answers
//
//	200 {"sent":true,"from":"<its address>:<port>"}
//
// with the address and port the datagram left from, or
//
//	400 {"error":"<why, for a person>"}
//
// when the request is not as above, and sends nothing then. A 502 with the
// same error shape means the datagram could not be sent (no route). A name
// is resolved by the service; the datagram goes to the first of its
// addresses that is allowed.
//
// # The payload
//
// 148 bytes, the size of a WireGuard handshake initiation, so that it
// crosses the same NAT, firewall and MTU as a phone's first packet:
//
//	offset 0   4 bytes  marker 0xf0 'p' 'i' 'c'
//	offset 4  16 bytes  nonce, random, chosen by the cell for each test
//	offset 20 128 bytes zero
//
// WireGuard's messages start with their type, 1 to 4, then three zero bytes,
// so the marker never collides with one; a WireGuard implementation that
// is not the cell drops it as a message of unknown type. The cell takes it
// out of its WireGuard socket's receive path (see package wireguard) and
// remembers the nonce; the nonce tells one test's datagram from another's
// and from anyone else's.
//
// # Not a reflector
//
// A service that sends UDP wherever it is told could be abused. This one
// sends only the fixed payload above (the nonce is the only free part, and
// the rest must be zeros), only one datagram per request, a request is
// larger than the datagram (no amplification), and by default only to public
// addresses (in the sense of uplink.Classify: not loopback, private, CGNAT,
// link-local, multicast, documentation or reserved ranges). Handler.Allow
// replaces the last rule, for tests and for an operator who runs the service
// inside a private network.
package echo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pic-cell/cell/netstack/uplink"
)

// Size is the payload's length: a WireGuard handshake initiation's.
const Size = 148

// Marker starts every payload.
var Marker = [4]byte{0xf0, 'p', 'i', 'c'}

// maxRequest bounds a request's and a response's body.
const maxRequest = 4 << 10

// Payload is the datagram the echo service sends for nonce.
func Payload(nonce [16]byte) []byte {
	b := make([]byte, Size)
	copy(b, Marker[:])
	copy(b[4:], nonce[:])
	return b
}

// ParsePayload reports the nonce of b when b is exactly a payload: the
// size, the marker, and zeros after the nonce.
func ParsePayload(b []byte) (nonce [16]byte, ok bool) {
	if len(b) != Size || [4]byte(b[:4]) != Marker {
		return nonce, false
	}
	for _, c := range b[20:] {
		if c != 0 {
			return nonce, false
		}
	}
	return [16]byte(b[4:20]), true
}

// request and response are the protocol's JSON bodies.
type request struct {
	Target  string `json:"target"`
	Payload string `json:"payload"`
}

type response struct {
	Sent  bool   `json:"sent,omitempty"`
	From  string `json:"from,omitempty"`
	Error string `json:"error,omitempty"`
}

// Handler is the echo service.
type Handler struct {
	// Allow says whether a datagram may go to an address; nil allows
	// public addresses only.
	Allow func(netip.AddrPort) bool
	Log   *slog.Logger // optional
	// Resolver resolves names in targets; optional (net.DefaultResolver).
	Resolver *net.Resolver
}

// ServeHTTP implements the protocol in the package documentation.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Log
	if log == nil {
		log = slog.Default()
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, response{Error: "POST a JSON request"})
		return
	}
	var req request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, response{Error: "the request is not the JSON {\"target\":..., \"payload\":...} of at most 4 KiB"})
		return
	}
	payload, err := base64.StdEncoding.DecodeString(req.Payload)
	if err != nil {
		reply(w, http.StatusBadRequest, response{Error: "payload is not base64"})
		return
	}
	if _, ok := ParsePayload(payload); !ok {
		reply(w, http.StatusBadRequest, response{Error: fmt.Sprintf("payload is not a reachability payload (%d bytes starting with f0 70 69 63, a nonce, then zeros)", Size)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	to, err := h.target(ctx, req.Target)
	if err != nil {
		reply(w, http.StatusBadRequest, response{Error: err.Error()})
		return
	}
	from, err := send(ctx, to, payload)
	if err != nil {
		log.Warn("echo: send failed", "to", to, "err", err)
		reply(w, http.StatusBadGateway, response{Error: fmt.Sprintf("could not send to %s: %v", to, err)})
		return
	}
	log.Info("echo: sent", "to", to, "from", from, "asked_by", r.RemoteAddr)
	reply(w, http.StatusOK, response{Sent: true, From: from.String()})
}

// target resolves and checks the request's target.
func (h *Handler) target(ctx context.Context, target string) (netip.AddrPort, error) {
	host, portText, err := net.SplitHostPort(target)
	if err != nil || host == "" {
		return netip.AddrPort{}, errors.New("target must be <ip or name>:<port> (an IPv6 address in brackets)")
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, errors.New("target's port must be a number from 1 to 65535")
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return netip.AddrPort{}, errors.New("target must not have a zone")
		}
		addrs = []netip.Addr{a}
	} else {
		if !validName(host) {
			return netip.AddrPort{}, errors.New("target's host is neither an address nor a DNS name")
		}
		res := h.Resolver
		if res == nil {
			res = net.DefaultResolver
		}
		if addrs, err = res.LookupNetIP(ctx, "ip", host); err != nil || len(addrs) == 0 {
			return netip.AddrPort{}, fmt.Errorf("target's name %s does not resolve", host)
		}
	}
	allow := h.Allow
	if allow == nil {
		allow = func(ap netip.AddrPort) bool { return uplink.Classify(ap.Addr()) == uplink.KindPublic }
	}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		if allow(ap) {
			return ap, nil
		}
	}
	if len(addrs) == 1 {
		return netip.AddrPort{}, fmt.Errorf("target %s is a %s address: only public addresses are tested", addrs[0].Unmap(), uplink.Classify(addrs[0]))
	}
	return netip.AddrPort{}, fmt.Errorf("none of the addresses of %s is public: only public addresses are tested", host)
}

// validName accepts a DNS name of letters, digits, hyphens and dots.
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// send sends one datagram from a fresh socket and reports where it left
// from.
func send(ctx context.Context, to netip.AddrPort, payload []byte) (netip.AddrPort, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", to.String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		return netip.AddrPort{}, err
	}
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}

func reply(w http.ResponseWriter, code int, r response) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(r)
}

// Ask asks the echo service at url to send a payload with nonce to target
// ("<ip or name>:<port>"). A nil error means the service sent it; whether it
// arrived is the receiver's to tell.
func Ask(ctx context.Context, c *http.Client, url string, target string, nonce [16]byte) error {
	if c == nil {
		c = http.DefaultClient
	}
	body, _ := json.Marshal(request{Target: target, Payload: base64.StdEncoding.EncodeToString(Payload(nonce))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("echo: the echo service's URL: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return fmt.Errorf("echo: the echo service did not answer: %v", err)
	}
	defer resp.Body.Close()
	var r response
	text, _ := io.ReadAll(io.LimitReader(resp.Body, maxRequest))
	jsonErr := json.Unmarshal(text, &r)
	switch {
	case resp.StatusCode == http.StatusOK && jsonErr == nil && r.Sent:
		return nil
	case jsonErr == nil && r.Error != "":
		msg := r.Error
		if len(msg) > 200 {
			msg = strings.ToValidUTF8(msg[:200], "") + "…"
		}
		return fmt.Errorf("echo: the echo service refused (%s): %s", resp.Status, msg)
	default:
		return fmt.Errorf("echo: the echo service answered %s, not the echo protocol", resp.Status)
	}
}
