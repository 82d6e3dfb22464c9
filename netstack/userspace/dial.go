/* SPDX-License-Identifier: MIT
 *
 * PingConn is adapted from golang.zx2c4.com/wireguard/tun/netstack (tun.go):
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 *
 * The permission notice is the one at the top of tun.go.
 */

package userspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// This file is the stack's outgoing side, for a device used as a client
// (tests, tools): connections that start inside gVisor and leave through
// WireGuard.

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}, proto
}

// DialContext connects from the stack through the tunnel, like
// net.Dialer.DialContext for "tcp", "tcp4", "tcp6", "udp", "udp4" and
// "udp6" with a numeric address (no name resolution).
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("userspace dials numeric addresses only: %w", err)}
	}
	fa, proto := fullAddr(ap)
	switch strings.TrimRight(network, "46") {
	case "tcp":
		return gonet.DialContextTCP(ctx, s.stack, fa, proto)
	case "udp":
		return gonet.DialUDP(s.stack, nil, &fa, proto)
	}
	return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
}

// PingConn is an ICMP echo socket of the stack (DialPingAddr).
type PingConn struct {
	laddr, raddr PingAddr
	wq           waiter.Queue
	ep           tcpip.Endpoint
	mu           sync.Mutex
	deadline     time.Time
	timer        *time.Timer
	closed       chan struct{}
	closeOnce    sync.Once
}

// PingAddr is the address of a PingConn.
type PingAddr struct{ addr netip.Addr }

func (a PingAddr) String() string { return a.addr.String() }

// Network is "ping4" or "ping6".
func (a PingAddr) Network() string {
	if a.addr.Is4() {
		return "ping4"
	}
	return "ping6"
}

// Addr is the IP address.
func (a PingAddr) Addr() netip.Addr { return a.addr }

// DialPingAddr opens an ICMP echo socket from laddr (optional) to raddr.
// Writes are ICMP messages (type, code, checksum, identifier, sequence,
// data); the stack fills in the identifier and, for IPv6, the checksum.
func (s *Stack) DialPingAddr(laddr, raddr netip.Addr) (*PingConn, error) {
	if !laddr.IsValid() && !raddr.IsValid() {
		return nil, errors.New("ping dial: invalid address")
	}
	v6 := laddr.Is6() || raddr.Is6()
	bind := laddr.IsValid()
	if !bind {
		if v6 {
			laddr = netip.IPv6Unspecified()
		} else {
			laddr = netip.IPv4Unspecified()
		}
	}
	tn, pn := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	if v6 {
		tn, pn = icmp.ProtocolNumber6, ipv6.ProtocolNumber
	}
	pc := &PingConn{laddr: PingAddr{laddr}, closed: make(chan struct{})}
	ep, err := s.stack.NewEndpoint(tn, pn, &pc.wq)
	if err != nil {
		return nil, fmt.Errorf("ping socket: endpoint: %s", err)
	}
	pc.ep = ep
	if bind {
		fa, _ := fullAddr(netip.AddrPortFrom(laddr, 0))
		if err := ep.Bind(fa); err != nil {
			ep.Close()
			return nil, fmt.Errorf("ping bind: %s", err)
		}
	}
	if raddr.IsValid() {
		pc.raddr = PingAddr{raddr}
		fa, _ := fullAddr(netip.AddrPortFrom(raddr, 0))
		if err := ep.Connect(fa); err != nil {
			ep.Close()
			return nil, fmt.Errorf("ping connect: %s", err)
		}
	}
	return pc, nil
}

func (pc *PingConn) LocalAddr() net.Addr  { return pc.laddr }
func (pc *PingConn) RemoteAddr() net.Addr { return pc.raddr }

// Close closes the socket; blocked reads return.
func (pc *PingConn) Close() error {
	pc.closeOnce.Do(func() {
		pc.SetReadDeadline(time.Time{})
		close(pc.closed)
		pc.ep.Close()
	})
	return nil
}

// SetDeadline sets the read deadline (writes never block).
func (pc *PingConn) SetDeadline(t time.Time) error { return pc.SetReadDeadline(t) }

// SetWriteDeadline does nothing: writes never block.
func (pc *PingConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline sets the time after which reads fail with
// os.ErrDeadlineExceeded; the zero time means none.
func (pc *PingConn) SetReadDeadline(t time.Time) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.timer != nil {
		pc.timer.Stop()
		pc.timer = nil
	}
	pc.deadline = t
	if !t.IsZero() {
		// Wake blocked readers when it passes.
		pc.timer = time.AfterFunc(time.Until(t), func() { pc.wq.Notify(waiter.EventIn) })
	}
	return nil
}

func (pc *PingConn) expired() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return !pc.deadline.IsZero() && !time.Now().Before(pc.deadline)
}

// WriteTo sends one ICMP message to addr.
func (pc *PingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	var na netip.Addr
	switch v := addr.(type) {
	case *PingAddr:
		na = v.addr
	case PingAddr:
		na = v.addr
	case *net.IPAddr:
		na, _ = netip.AddrFromSlice(v.IP)
	default:
		return 0, fmt.Errorf("ping write: wrong net.Addr type")
	}
	if na.Is4() != pc.laddr.addr.Is4() {
		return 0, fmt.Errorf("ping write: mismatched protocols")
	}
	rfa, _ := fullAddr(netip.AddrPortFrom(na, 0))
	n, err := pc.ep.Write(bytes.NewReader(p), tcpip.WriteOptions{To: &rfa})
	if err != nil {
		return int(n), fmt.Errorf("ping write: %s", err)
	}
	return int(n), nil
}

// Write sends one ICMP message to the connected address.
func (pc *PingConn) Write(p []byte) (int, error) { return pc.WriteTo(p, pc.raddr) }

// ReadFrom receives one ICMP message.
func (pc *PingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	e, ch := waiter.NewChannelEntry(waiter.EventIn)
	pc.wq.EventRegister(&e)
	defer pc.wq.EventUnregister(&e)
	for {
		w := tcpip.SliceWriter(p)
		res, err := pc.ep.Read(&w, tcpip.ReadOptions{NeedRemoteAddr: true})
		if err == nil {
			ra, _ := netip.AddrFromSlice(res.RemoteAddr.Addr.AsSlice())
			return res.Count, &PingAddr{ra}, nil
		}
		if _, ok := err.(*tcpip.ErrWouldBlock); !ok {
			return 0, nil, fmt.Errorf("ping read: %s", err)
		}
		select {
		case <-pc.closed:
			return 0, nil, net.ErrClosed
		default:
		}
		if pc.expired() {
			return 0, nil, os.ErrDeadlineExceeded
		}
		select {
		case <-ch:
		case <-pc.closed:
			return 0, nil, net.ErrClosed
		}
	}
}

// Read receives one ICMP message.
func (pc *PingConn) Read(p []byte) (int, error) {
	n, _, err := pc.ReadFrom(p)
	return n, err
}
