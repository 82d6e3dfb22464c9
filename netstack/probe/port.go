package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

func (p *Prober) tcpPort(ctx context.Context, q parsed, res *Result) error {
	addrs, why, err := p.resolve(ctx, q.host, q.port)
	if err != nil || why != "" {
		res.Detail = why
		return err
	}
	ap := netip.AddrPortFrom(addrs[0], q.port)
	res.Address = ap.String()
	start := time.Now()
	c, err := p.dial(ctx, "tcp", ap.String())
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return unwrapInvalid(err)
		}
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			res.Detail = fmt.Sprintf("closed: %s refused the connection", ap)
		case ctx.Err() != nil || isTimeout(err):
			res.Detail = fmt.Sprintf("no answer from %s: filtered, or the host is down", ap)
		default:
			res.Detail = fmt.Sprintf("%s: %s", ap, plain(err))
		}
		return nil
	}
	res.RTT = time.Since(start)
	c.Close()
	res.OK = true
	res.Detail = fmt.Sprintf("open: connected to %s in %s", ap, ms(res.RTT))
	return nil
}

// udpProbe is what a UDP port test sends: one line break, harmless to the
// text protocols that read it at all.
var udpProbe = []byte("\n")

func (p *Prober) udpPort(ctx context.Context, q parsed, res *Result) error {
	addrs, why, err := p.resolve(ctx, q.host, q.port)
	if err != nil || why != "" {
		res.Detail = why
		return err
	}
	ap := netip.AddrPortFrom(addrs[0], q.port)
	res.Address = ap.String()
	c, err := p.dial(ctx, "udp", ap.String())
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return unwrapInvalid(err)
		}
		res.Detail = fmt.Sprintf("%s: %s", ap, plain(err))
		return nil
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	buf := make([]byte, 1500)
	for try := 0; try < 2 && ctx.Err() == nil; try++ {
		if _, err := c.Write(udpProbe); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				res.Detail = fmt.Sprintf("closed: %s answered port unreachable", ap)
				return nil
			}
			res.Detail = fmt.Sprintf("%s: %s", ap, plain(err))
			return nil
		}
		wait := time.Now().Add(time.Second)
		if try == 1 {
			wait = time.Now().Add(p.o.Timeout)
		}
		if d, ok := ctx.Deadline(); ok && d.Before(wait) {
			wait = d
		}
		c.SetReadDeadline(wait)
		n, err := c.Read(buf)
		if err == nil {
			res.RTT = time.Since(start)
			res.OK = true
			res.Detail = fmt.Sprintf("open: %s answered (%d bytes) in %s", ap, n, ms(res.RTT))
			return nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			res.Detail = fmt.Sprintf("closed: %s answered port unreachable", ap)
			return nil
		}
		if !isTimeout(err) && ctx.Err() == nil {
			res.Detail = fmt.Sprintf("%s: %s", ap, plain(err))
			return nil
		}
	}
	res.Detail = fmt.Sprintf("no answer from %s: open or filtered (a UDP service need not answer a stray datagram)", ap)
	return nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
