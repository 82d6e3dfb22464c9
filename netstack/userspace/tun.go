/* SPDX-License-Identifier: MIT
 *
 * The stack set-up and the tun.Device endpoint below are adapted from
 * golang.zx2c4.com/wireguard/tun/netstack (tun.go), which keeps gVisor's
 * stack to itself:
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 *
 * Permission is hereby granted, free of charge, to any person obtaining a
 * copy of this software and associated documentation files (the "Software"),
 * to deal in the Software without restriction, including without limitation
 * the rights to use, copy, modify, merge, publish, distribute, sublicense,
 * and/or sell copies of the Software, and to permit persons to whom the
 * Software is furnished to do so, subject to the following conditions:
 *
 * The above copyright notice and this permission notice shall be included in
 * all copies or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 * IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 * FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 * AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
 * FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
 * DEALINGS IN THE SOFTWARE.
 */

package userspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const nicID = 1

// outQueue is the number of packets gVisor may queue towards WireGuard
// before it drops (TCP then backs off as on any congested link).
const outQueue = 4096

// batch is the most packets one Read hands to WireGuard.
const batch = 128

// Stack is gVisor's network stack behind a WireGuard device in netstack
// mode. Its methods are safe for concurrent use.
type Stack struct {
	log    *slog.Logger
	stack  *stack.Stack
	ep     *channel.Endpoint
	mtu    int
	own    []netip.Addr
	limits Limits
	events chan tun.Event

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	policy   atomic.Pointer[compiled]
	policyMu sync.Mutex // serializes SetPolicy
	// dial opens flows' host sockets: net.Dialer's (tests redirect it).
	dial  func(ctx context.Context, network, address string) (net.Conn, error)
	conns conntrack
	flows flowTable

	// hostPing is false when the host refused an unprivileged ICMP socket
	// (tests set it to force local answers); pingSlots bounds host pings.
	hostPing     atomic.Bool
	pingSlots    chan struct{}
	pingLocalLog sync.Once

	gros sync.Pool // of *gro.GRO, one per concurrent Write

	hostMu sync.Mutex
	host   hostAddrs

	mu      sync.Mutex // guards closed, wg.Add and closers
	closed  bool
	wg      sync.WaitGroup // every goroutine the package starts
	closers map[io.Closer]struct{}
	done    chan struct{} // closed when Close has finished
}

// New builds the stack and returns it with the tun.Device to give
// device.NewDevice. Closing the tun.Device (the WireGuard device does on its
// Close) closes the stack.
func New(opts Options) (*Stack, tun.Device, error) {
	if len(opts.Addresses) == 0 {
		return nil, nil, errors.New("userspace: no addresses")
	}
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Stack{
		log:     opts.Logger.With("component", "userspace"),
		mtu:     opts.MTU,
		limits:  opts.Limits.withDefaults(),
		events:  make(chan tun.Event, 10),
		closers: map[io.Closer]struct{}{},
		done:    make(chan struct{}),
		flows:   flowTable{perSource: map[flowCount]int{}, all: map[*flow]struct{}{}},
	}
	s.hostPing.Store(true)
	s.dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	s.pingSlots = make(chan struct{}, s.limits.Pings)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.policy.Store(&compiled{})
	s.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol6, icmp.NewProtocol4},
		// Not HandleLocal: with it, a promiscuous NIC takes every source
		// address for its own and drops the packet as a martian.
	})
	fail := func(what string, err tcpip.Error) (*Stack, tun.Device, error) {
		s.stack.Close()
		s.stack.Wait()
		return nil, nil, fmt.Errorf("userspace: %s: %v", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true) // off by default
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("TCP SACK", err)
	}
	// Buffers as tailscale sizes them: room for a fast path's
	// bandwidth-delay product, grown by receive buffer moderation.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: 8 << 20}
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return fail("TCP receive buffer", err)
	}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: 6 << 20}
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); err != nil {
		return fail("TCP send buffer", err)
	}
	s.ep = channel.New(outQueue, uint32(opts.MTU), "")
	// WireGuard authenticated every packet (see inject).
	s.ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	if err := s.stack.CreateNIC(nicID, s.ep); err != nil {
		return fail("CreateNIC", err)
	}
	for _, a := range opts.Addresses {
		a = a.Unmap()
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail(fmt.Sprintf("address %v", a), err)
		}
		s.own = append(s.own, a)
	}
	// Accept packets to any address (promiscuous), let the forwarders'
	// endpoints answer from them (spoofing), and route everything back
	// out of the one NIC, towards WireGuard.
	if err := s.stack.SetPromiscuousMode(nicID, true); err != nil {
		return fail("promiscuous mode", err)
	}
	if err := s.stack.SetSpoofing(nicID, true); err != nil {
		return fail("spoofing", err)
	}
	s.stack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	s.gros.New = func() any {
		g := &gro.GRO{Dispatcher: injector{s.ep}}
		g.Init(true)
		return g
	}
	tcpFwd := tcp.NewForwarder(s.stack, 0, s.limits.TCPDialing, s.acceptTCP)
	udpFwd := udp.NewForwarder(s.stack, s.acceptUDP)
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	s.events <- tun.EventUp
	return s, (*tunDevice)(s), nil
}

// Addresses reports the cell's own tunnel addresses.
func (s *Stack) Addresses() []netip.Addr { return slices.Clone(s.own) }

func (s *Stack) isOwn(a netip.Addr) bool { return slices.Contains(s.own, a) }

// goTracked runs f on a goroutine that Close waits for; it reports false,
// without running f, once Close has begun.
func (s *Stack) goTracked(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// enter registers the calling goroutine (one gVisor started) with Close's
// wait; exit must follow. It reports false once Close has begun.
func (s *Stack) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Stack) exit() { s.wg.Done() }

// track makes Close close c (a socket, a listener); untrack forgets it. track
// reports false, after closing c, once Close has begun.
func (s *Stack) track(c io.Closer) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return false
	}
	s.closers[c] = struct{}{}
	s.mu.Unlock()
	return true
}

func (s *Stack) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.closers, c)
	s.mu.Unlock()
}

// Close tears the stack down and returns once every goroutine the package
// started has ended: listeners and flows are closed, pings abandoned.
// Calling it again does nothing. The WireGuard device calls it.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()

	s.cancel()
	for c := range closers {
		c.Close()
	}
	s.stack.Close() // aborts every endpoint; readers and writers return
	s.wg.Wait()
	s.stack.Wait()
	s.ep.Close()
	close(s.events)
	close(s.done)
	return nil
}

// tunDevice is the Stack as the tun.Device WireGuard reads and writes.
type tunDevice Stack

var _ tun.Device = (*tunDevice)(nil)

func (t *tunDevice) Name() (string, error)    { return "userspace", nil }
func (t *tunDevice) File() *os.File           { return nil }
func (t *tunDevice) Events() <-chan tun.Event { return t.events }
func (t *tunDevice) MTU() (int, error)        { return t.mtu, nil }
func (t *tunDevice) BatchSize() int           { return batch }
func (t *tunDevice) Close() error             { return (*Stack)(t).Close() }

// Read hands WireGuard what gVisor (and the shim) sent: it blocks for the
// first packet and takes whatever else is queued, up to len(bufs).
func (t *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := t.ep.ReadContext(t.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for {
		size := 0
		dst := bufs[n][offset:]
		for _, sl := range pkt.AsSlices() {
			size += copy(dst[size:], sl)
		}
		fits := pkt.Size() <= len(dst)
		pkt.DecRef()
		if fits { // a packet larger than the buffer cannot be sent whole
			sizes[n] = size
			n++
		}
		if n == len(bufs) {
			break
		}
		if pkt = t.ep.Read(); pkt == nil {
			break
		}
	}
	return n, nil
}

// Write takes the packets WireGuard decrypted. WireGuard calls it
// concurrently, once per peer, with up to a batch of packets each.
func (t *tunDevice) Write(bufs [][]byte, offset int) (int, error) {
	s := (*Stack)(t)
	if s.ctx.Err() != nil {
		return 0, os.ErrClosed
	}
	g := s.gros.Get().(*gro.GRO)
	for _, b := range bufs {
		if p := b[offset:]; len(p) > 0 {
			s.inbound(p, g)
		}
	}
	g.Flush()
	s.gros.Put(g)
	return len(bufs), nil
}

// inject hands a packet to gVisor through g, which coalesces consecutive
// segments of a TCP flow (generic receive offload) so that gVisor's TCP
// handles a few large segments per batch instead of many small ones. The
// checksums are taken as valid: WireGuard authenticated the packet, so
// nothing changed it on the way, and a peer that lies about its own
// checksums harms only its own flows.
func (s *Stack) inject(p []byte, v6 bool, g *gro.GRO) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	if v6 {
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	}
	pkt.RXChecksumValidated = true
	g.Enqueue(pkt)
	pkt.DecRef()
}

// injector delivers what GRO releases to gVisor.
type injector struct{ ep *channel.Endpoint }

func (i injector) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	i.ep.InjectInbound(proto, pkt)
}

func (injector) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// sendOut queues a packet for WireGuard, past gVisor: routed peer-to-peer
// packets and echo replies. It copies p.
func (s *Stack) sendOut(p []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	var l stack.PacketBufferList
	l.PushBack(pkt)
	s.ep.WritePackets(l) // takes its own reference; drops when full
	pkt.DecRef()
}
