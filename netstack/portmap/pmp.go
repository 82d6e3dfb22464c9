package portmap

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// exchange sends req to the gateway's port 5351 from local (any address
// when local is invalid) and returns the first answer accept takes. It
// retransmits as RFC 6886 §3.1 says (250 ms, doubling, 9 times at most),
// until ctx ends.
// The socket is connected, so only the gateway's answers are read.
func exchange(ctx context.Context, gateway, local netip.Addr, req []byte, accept func([]byte) bool) (b []byte, from netip.Addr, err error) {
	var laddr *net.UDPAddr
	if local.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	c, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gateway, pmpPort)))
	if err != nil {
		return nil, from, fmt.Errorf("cannot reach the router at %s: %w", gateway, err)
	}
	defer c.Close()
	from = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 1100) // PCP's maximum message size
	wait := 250 * time.Millisecond
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil || try == 9 {
			return nil, from, fmt.Errorf("no answer from the router at %s:%d", gateway, pmpPort)
		}
		if _, err := c.Write(req); err != nil {
			// ICMP port unreachable from an earlier try shows up here.
			if errors.Is(err, syscall.ECONNREFUSED) {
				return nil, from, fmt.Errorf("the router at %s does not listen on port %d", gateway, pmpPort)
			}
			return nil, from, fmt.Errorf("send to the router at %s: %w", gateway, err)
		}
		deadline := time.Now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		c.SetReadDeadline(deadline)
		if ctx.Err() != nil { // ended just before: AfterFunc's deadline was overwritten
			c.SetReadDeadline(time.Unix(1, 0))
		}
		for {
			n, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					return nil, from, fmt.Errorf("the router at %s does not listen on port %d", gateway, pmpPort)
				}
				return nil, from, fmt.Errorf("read from the router at %s: %w", gateway, err)
			}
			if accept(buf[:n]) {
				return append([]byte(nil), buf[:n]...), from, nil
			}
		}
		wait *= 2
	}
}

// natpmp is a NAT-PMP client for one gateway.
type natpmp struct{ gateway, local netip.Addr }

// NewNATPMP returns a NAT-PMP client for the router at gateway, sending
// from local (the cell's address on the uplink; invalid: any).
func NewNATPMP(gateway, local netip.Addr) Client { return &natpmp{gateway, local} }

func (c *natpmp) Protocol() Protocol { return NATPMP }

func (c *natpmp) ExternalAddr(ctx context.Context) (netip.Addr, error) {
	b, _, err := exchange(ctx, c.gateway, c.local, pmpExternalRequest(), func(b []byte) bool {
		return len(b) >= 2 && b[1] == 128+pmpOpExternal
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("natpmp: %w", err)
	}
	_, a, err := pmpExternalResponse(b)
	if err != nil {
		return netip.Addr{}, prefix(NATPMP, err)
	}
	return a, nil
}

func (c *natpmp) mapPort(ctx context.Context, internal, external uint16, lifetime uint32) (pmpMapAnswer, netip.Addr, error) {
	b, from, err := exchange(ctx, c.gateway, c.local, pmpMapRequest(internal, external, lifetime), func(b []byte) bool {
		return len(b) >= 2 && b[1] == 128+pmpOpMapUDP
	})
	if err != nil {
		return pmpMapAnswer{}, from, fmt.Errorf("natpmp: %w", err)
	}
	a, err := pmpMapResponse(b)
	return a, from, prefix(NATPMP, err)
}

func (c *natpmp) Map(ctx context.Context, internal netip.AddrPort, external uint16, lifetime time.Duration) (Mapping, error) {
	secs := seconds(lifetime)
	if secs == 0 {
		secs = 1 // lifetime 0 deletes in NAT-PMP
	}
	a, from, err := c.mapPort(ctx, internal.Port(), external, secs)
	if err != nil {
		return Mapping{}, err
	}
	if internal.Addr().IsValid() && internal.Addr() != from {
		// NAT-PMP maps the sender's address; say so rather than report a
		// mapping to an address that did not ask.
		return Mapping{}, fmt.Errorf("natpmp: asked from %s, not %s", from, internal.Addr())
	}
	ext, err := c.ExternalAddr(ctx)
	if err != nil {
		return Mapping{}, err
	}
	return newMapping(NATPMP, netip.AddrPortFrom(from, a.Internal), netip.AddrPortFrom(ext, a.External), a.Lifetime), nil
}

func (c *natpmp) Unmap(ctx context.Context, m Mapping) error {
	_, _, err := c.mapPort(ctx, m.Internal.Port(), 0, 0)
	return err
}

// pcp is a PCP client for one gateway.
type pcp struct {
	gateway, local netip.Addr
	mu             sync.Mutex
	ext            netip.Addr // from the last mapping
}

// NewPCP returns a PCP client for the router at gateway, sending from local
// (the cell's address on the uplink; invalid: any).
func NewPCP(gateway, local netip.Addr) Client { return &pcp{gateway: gateway, local: local} }

func (c *pcp) Protocol() Protocol { return PCP }

// nonceKey makes PCP nonces: a mapping must be renewed and deleted with
// the nonce that created it (RFC 6887 §11.2), and deriving it from the
// internal address and port under a per-process key gives every client of
// this process, including one made after a re-discovery, the same nonce
// without keeping state, while another host cannot guess it.
var nonceKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

func pcpNonce(internal netip.AddrPort) (n [12]byte) {
	h := hmac.New(sha256.New, nonceKey)
	h.Write([]byte(internal.String()))
	copy(n[:], h.Sum(nil))
	return n
}

// announce asks the router whether it speaks PCP (ANNOUNCE, §14.1).
func (c *pcp) announce(ctx context.Context) error {
	b, _, err := exchange(ctx, c.gateway, c.local, pcpRequest(pcpOpAnnounce, 0, c.local, nil), func(b []byte) bool {
		// A NAT-PMP-only router answers in its own version, briefly.
		return (len(b) >= 4 && b[0] != pcpVersion) || (len(b) >= 24 && b[1] == 0x80|pcpOpAnnounce)
	})
	if err != nil {
		return fmt.Errorf("pcp: %w", err)
	}
	_, err = parsePCP(b)
	return err
}

func (c *pcp) do(ctx context.Context, internal netip.AddrPort, external uint16, lifetime uint32) (pcpResponse, netip.Addr, error) {
	m := &pcpMap{Nonce: pcpNonce(internal), Protocol: protoUDP, Internal: internal.Port(), External: external}
	client := internal.Addr()
	if !client.IsValid() {
		client = c.local
	}
	b, from, err := exchange(ctx, c.gateway, client, pcpRequest(pcpOpMap, lifetime, client, m), func(b []byte) bool {
		if len(b) >= 4 && b[0] != pcpVersion {
			return true // a NAT-PMP-only router's "unsupported version"
		}
		if len(b) < 24 {
			return false
		}
		if b[3] != 0 {
			return b[1] == 0x80|pcpOpMap
		}
		return b[1] == 0x80|pcpOpMap && len(b) >= 36 && [12]byte(b[24:36]) == m.Nonce
	})
	if err != nil {
		return pcpResponse{}, from, fmt.Errorf("pcp: %w", err)
	}
	r, err := parsePCP(b)
	return r, from, err
}

func (c *pcp) Map(ctx context.Context, internal netip.AddrPort, external uint16, lifetime time.Duration) (Mapping, error) {
	secs := seconds(lifetime)
	if secs == 0 {
		secs = 1 // lifetime 0 deletes in PCP
	}
	r, from, err := c.do(ctx, internal, external, secs)
	if err != nil {
		return Mapping{}, err
	}
	c.mu.Lock()
	c.ext = r.Map.ExtAddr
	c.mu.Unlock()
	if !internal.Addr().IsValid() {
		internal = netip.AddrPortFrom(from, internal.Port())
	}
	return newMapping(PCP, internal, netip.AddrPortFrom(r.Map.ExtAddr, r.Map.External), r.Lifetime), nil
}

func (c *pcp) Unmap(ctx context.Context, m Mapping) error {
	_, _, err := c.do(ctx, m.Internal, 0, 0)
	return err
}

// ExternalAddr is the address of the last mapping: PCP has no request for
// the external address alone.
func (c *pcp) ExternalAddr(ctx context.Context) (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ext.IsValid() {
		return c.ext, errors.New("pcp: the router reports its public address only with a mapping")
	}
	return c.ext, nil
}

func newMapping(p Protocol, internal, external netip.AddrPort, lifetime uint32) Mapping {
	m := Mapping{Protocol: p, Internal: internal, External: external, Lifetime: time.Duration(lifetime) * time.Second}
	if lifetime > 0 {
		m.Expires = time.Now().Add(m.Lifetime)
	}
	return m
}

func seconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}

func prefix(p Protocol, err error) error {
	if err == nil {
		return nil
	}
	var re *ResultError
	if errors.As(err, &re) {
		return err
	}
	return fmt.Errorf("%s: %w", p, err)
}

// rebinder is a client that can be made again for a new uplink without a
// discovery: the Keeper tries the protocol that worked before first.
type rebinder interface {
	rebind(gateway, local netip.Addr) Client
}

func (c *natpmp) rebind(gateway, local netip.Addr) Client { return &natpmp{gateway, local} }
func (c *pcp) rebind(gateway, local netip.Addr) Client    { return &pcp{gateway: gateway, local: local} }
