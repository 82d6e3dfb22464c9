package clock

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// The NTP packet (RFC 5905 §7.3), the 48 bytes without extension fields.
const (
	packetLen = 48

	modeSymmetricActive = 1
	modeClient          = 3
	modeServer          = 4

	leapNone  = 0
	leapAlarm = 3

	stratumUnsync = 16
)

// ntpEpoch is the NTP era 0 epoch, 1900-01-01.
var ntpEpoch = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// toNTP is t as a 64-bit NTP timestamp (seconds since 1900 modulo 2^32, and
// a binary fraction).
func toNTP(t time.Time) uint64 {
	d := t.Sub(ntpEpoch) // saturates after 2192: fine for a time stamp
	sec := uint64(d / time.Second)
	frac := (uint64(d%time.Second) << 32) / uint64(time.Second)
	return sec<<32 | frac
}

// fromNTP is the time of an NTP timestamp. Seconds with the top bit clear
// are taken to be in era 1 (from 2036 on), as RFC 4330 §3 advises: that
// reads every timestamp between 1968 and 2104 right.
func fromNTP(v uint64) time.Time {
	sec, frac := v>>32, v&0xffffffff
	base := ntpEpoch
	if sec&0x80000000 == 0 {
		base = ntpEpoch.Add(time.Duration(1<<32) * time.Second)
	}
	ns := (frac*uint64(time.Second) + 1<<31) >> 32
	return base.Add(time.Duration(sec)*time.Second + time.Duration(ns))
}

// shortNTP is d in NTP short format (16.16 seconds), saturating.
func shortNTP(d time.Duration) uint32 {
	if d < 0 {
		d = 0
	}
	v := uint64(d) << 16 / uint64(time.Second)
	if v > 0xffffffff {
		v = 0xffffffff
	}
	return uint32(v)
}

func fromShortNTP(v uint32) time.Duration {
	return time.Duration(uint64(v) * uint64(time.Second) >> 16)
}

// Sample is one good answer of an NTP server.
type Sample struct {
	Server  string        // as configured (host or host:port)
	Address netip.Addr    // the address that answered
	Offset  time.Duration // add to the local clock to get the server's
	RTT     time.Duration
	Stratum uint8
	Time    time.Time // when the answer arrived, by the Monitor's Now
}

// Query asks server (host or host:port, port 123 by default) for its time
// with one SNTP client request and measures the local clock's offset
// against it. It never sets the clock. Replies from a server that is not
// synchronised itself, kiss-o'-death replies and replies that do not answer
// this very request are errors. Without a deadline in ctx it gives up after
// 5 seconds.
func Query(ctx context.Context, server string) (Sample, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	addr := server
	if _, _, err := net.SplitHostPort(server); err != nil {
		addr = net.JoinHostPort(server, "123")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return Sample{}, fmt.Errorf("time server %s: %v", server, plainNetError(err))
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	var req [packetLen]byte
	req[0] = 4<<3 | modeClient
	// A random transmit timestamp: the server echoes it as the origin, so
	// a reply can be matched to this request and a forged one refused,
	// and it does not reveal the local clock.
	rand.Read(req[40:48])
	t1 := time.Now()
	if _, err := c.Write(req[:]); err != nil {
		return Sample{}, fmt.Errorf("time server %s: %v", server, plainNetError(err))
	}
	var resp [512]byte
	for {
		n, err := c.Read(resp[:])
		if err != nil {
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return Sample{}, fmt.Errorf("time server %s: the query was cancelled", server)
			}
			return Sample{}, fmt.Errorf("time server %s: %v", server, plainNetError(err))
		}
		// t4 from the monotonic reading: a clock step during the query does
		// not distort it.
		t4 := t1.Add(time.Since(t1))
		if n < packetLen || resp[0]&7 != modeServer || [8]byte(resp[24:32]) != [8]byte(req[40:48]) {
			continue // not an answer to this request
		}
		s, err := parseReply(resp[:packetLen], t1, t4)
		if err != nil {
			return Sample{}, fmt.Errorf("time server %s: %v", server, err)
		}
		s.Server = server
		if ra, ok := c.RemoteAddr().(*net.UDPAddr); ok {
			s.Address = ra.AddrPort().Addr().Unmap()
		}
		return s, nil
	}
}

// parseReply checks a server reply to a request sent at t1 and received at
// t4 and computes the offset and round trip (RFC 5905 §8).
func parseReply(p []byte, t1, t4 time.Time) (Sample, error) {
	leap, stratum := p[0]>>6, p[1]
	if stratum == 0 {
		return Sample{}, fmt.Errorf("the server refused to answer (kiss code %q)", kissCode(p[12:16]))
	}
	if leap == leapAlarm || stratum >= stratumUnsync {
		return Sample{}, errors.New("the server's own clock is not synchronised")
	}
	xmt := binary.BigEndian.Uint64(p[40:48])
	if xmt == 0 {
		return Sample{}, errors.New("the server sent a reply without a time")
	}
	t2, t3 := fromNTP(binary.BigEndian.Uint64(p[32:40])), fromNTP(xmt)
	if t3.Before(t2) {
		return Sample{}, errors.New("the server's reply has its send time before its receive time")
	}
	if disp := fromShortNTP(binary.BigEndian.Uint32(p[4:8]))/2 + fromShortNTP(binary.BigEndian.Uint32(p[8:12])); disp > 16*time.Second {
		return Sample{}, errors.New("the server's own time is too uncertain (root distance over 16 s)")
	}
	rtt := t4.Sub(t1) - t3.Sub(t2)
	if rtt < 0 {
		rtt = 0
	}
	return Sample{
		Offset:  (t2.Sub(t1) + t3.Sub(t4)) / 2,
		RTT:     rtt,
		Stratum: stratum,
	}, nil
}

func kissCode(b []byte) string {
	for _, c := range b {
		if c != 0 && (c < 0x20 || c > 0x7e) {
			return fmt.Sprintf("%x", b)
		}
	}
	return string(bytes4Trim(b))
}

func bytes4Trim(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// plainNetError is err in words without Go's operation prefixes.
func plainNetError(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer in time"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return "the name " + de.Name + " does not exist"
		}
		return "cannot resolve " + de.Name + ": " + de.Err
	}
	return err.Error()
}
