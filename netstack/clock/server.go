package clock

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Server answers SNTP client requests with the cell's time (see the
// package documentation for what a reply says and which requests get none).
type Server struct {
	Now   func() time.Time // nil: time.Now
	State func() Status    // nil: never synchronised
	Log   *slog.Logger     // nil: slog.Default()

	// The per-source token bucket; zero: 8 at once, one a second. The
	// benchmark lifts it.
	burst float64
	rate  float64 // tokens a second

	mu      sync.Mutex
	sources map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time // monotonic
}

const (
	maxSources   = 4096
	defaultBurst = 8
	defaultRate  = 1
	// precision is the reply's clock precision, log2 seconds: 2^-20 s is
	// about a microsecond, what reading the clock costs.
	precision = -20
	// precisionByte is precision as the packet carries it (two's complement).
	precisionByte = 256 + precision
	// phi is RFC 5905's frequency tolerance, 15 ppm: how fast an
	// undisciplined clock's error may grow.
	phi = 15e-6
)

// Serve answers requests on pc until pc is closed; then it returns nil.
// A read deadline set on pc ends it with that error; a passing read error
// (an ICMP error queued on the socket) is skipped, and a hundred of them in
// a row end it.
func (s *Server) Serve(pc net.PacketConn) error {
	buf := make([]byte, 1500)
	var out [packetLen]byte
	failures := 0
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if failures++; failures >= 100 || errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("time server: reading requests: %v", err)
			}
			continue
		}
		failures = 0
		recv := s.now()
		if !s.reply(out[:], buf[:n], recv, from) {
			continue
		}
		if _, err := pc.WriteTo(out[:], from); err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// reply fills out with the answer to req received at recv from from, or
// says there is none.
func (s *Server) reply(out, req []byte, recv time.Time, from net.Addr) bool {
	if len(req) < packetLen {
		return false
	}
	vn, mode := req[0]>>3&7, req[0]&7
	if vn < 1 || vn > 4 || mode != modeClient {
		return false
	}
	src, ok := sourceOf(from)
	if !ok || !s.allow(src) {
		return false
	}
	var st Status
	if s.State != nil {
		st = s.State()
	}
	clear(out)
	out[2] = req[2] // poll, copied (RFC 4330 §5)
	out[3] = byte(precisionByte)
	copy(out[24:32], req[40:48]) // origin = the client's transmit
	if !st.Synchronised {
		out[0] = leapAlarm<<6 | vn<<3 | modeServer
		out[1] = stratumUnsync
		copy(out[12:16], "INIT")
		binary.BigEndian.PutUint64(out[32:40], toNTP(recv))
		binary.BigEndian.PutUint64(out[40:48], toNTP(s.now()))
		return true
	}
	out[0] = leapNone<<6 | vn<<3 | modeServer
	stratum := uint8(3)
	if st.Stratum >= 1 && st.Stratum < 15 {
		stratum = st.Stratum + 1
	} else if st.Stratum >= 15 {
		stratum = 15
	}
	out[1] = stratum
	ref := recv
	var delay, disp time.Duration
	if !st.LastSync.IsZero() {
		age := max(recv.Sub(st.LastSync), 0)
		ref = st.LastSync
		if ref.After(recv) {
			ref = recv
		}
		delay = st.RTT
		disp = abs(st.Offset) + st.RTT/2 + time.Duration(float64(age)*phi)
	} else {
		disp = st.Kernel.MaxError
	}
	binary.BigEndian.PutUint32(out[4:8], shortNTP(delay))
	binary.BigEndian.PutUint32(out[8:12], shortNTP(min(disp, 16*time.Second)))
	copy(out[12:16], refID(st.Address))
	binary.BigEndian.PutUint64(out[16:24], toNTP(ref))
	binary.BigEndian.PutUint64(out[32:40], toNTP(recv))
	binary.BigEndian.PutUint64(out[40:48], toNTP(s.now()))
	return true
}

// refID is the reference ID of an upstream at address a (RFC 5905 §7.3):
// its IPv4 address, or the first four bytes of the MD5 of its IPv6 one;
// zero when unknown.
func refID(a string) []byte {
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return make([]byte, 4)
	}
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return b[:]
	}
	b := ip.As16()
	h := md5.Sum(b[:])
	return h[:4]
}

func sourceOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return ap.Addr().Unmap(), ap.Port() != 0
	}
	return netip.Addr{}, false
}

// allow takes a token from src's bucket.
func (s *Server) allow(src netip.Addr) bool {
	burst, rate := s.burst, s.rate
	if burst == 0 {
		burst, rate = defaultBurst, defaultRate
	}
	now := time.Now() // the limiter runs on the monotonic clock, not on Now
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sources == nil {
		s.sources = make(map[netip.Addr]*bucket)
	}
	b := s.sources[src]
	if b == nil {
		if len(s.sources) >= maxSources {
			s.evict(now, burst, rate)
		}
		b = &bucket{tokens: burst, last: now}
		s.sources[src] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict makes room in a full table: sources whose buckets are full again
// are the same as unknown ones; if there are none, an arbitrary eighth
// of the sources goes.
func (s *Server) evict(now time.Time, burst, rate float64) {
	for a, b := range s.sources {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= burst {
			delete(s.sources, a)
		}
	}
	if len(s.sources) < maxSources {
		return
	}
	// Forget an eighth at once, so that a stream of new sources does not
	// cost a sweep each.
	for a := range s.sources {
		if len(s.sources) <= maxSources*7/8 {
			break
		}
		delete(s.sources, a)
	}
	s.log().Debug("time server forgot busy sources: table full")
}
