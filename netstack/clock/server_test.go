package clock

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/beevik/ntp"
)

// serve starts s on a loopback UDP socket and returns its port.
func serve(t testing.TB, s *Server) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(pc) }()
	t.Cleanup(func() {
		pc.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after Close: %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after its socket was closed")
		}
	})
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func synced(lastSync time.Time) func() Status {
	return func() Status {
		return Status{Synchronised: true, Stratum: 2, Offset: 3 * time.Millisecond, RTT: 20 * time.Millisecond,
			LastSync: lastSync, Address: "198.18.0.1"}
	}
}

const threeHours = 3 * time.Hour

func TestServeRealClient(t *testing.T) {
	skew := func() time.Time { return time.Now().Add(threeHours) }
	port := serve(t, &Server{Now: skew, State: synced(skew().Add(-time.Minute)), Log: quiet})
	r, err := ntp.QueryWithOptions("127.0.0.1", ntp.QueryOptions{Port: port, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("a real SNTP client's query: %v", err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("the client refuses a synchronised server's reply: %v", err)
	}
	// The client sees our +3 h: it is the server's Now, not the host's clock.
	if d := r.ClockOffset - threeHours; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("client sees offset %v, want 3h ± 50 ms", r.ClockOffset)
	}
	if d := r.Time.Sub(time.Now().Add(threeHours)); d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("server time %v is %v from the server's Now", r.Time, d)
	}
	if r.Stratum != 3 || r.Leap != ntp.LeapNoWarning {
		t.Errorf("stratum %d leap %d, want 3 (upstream 2 + 1) and 0", r.Stratum, r.Leap)
	}
	if want := binary.BigEndian.Uint32(netip.MustParseAddr("198.18.0.1").AsSlice()); r.ReferenceID != want {
		t.Errorf("reference ID %08x, want the upstream's address %08x", r.ReferenceID, want)
	}
	if d := r.RootDelay - 20*time.Millisecond; d < -100*time.Microsecond || d > 100*time.Microsecond {
		t.Errorf("root delay %v, want the upstream round trip 20 ms", r.RootDelay)
	}
	if r.RootDispersion < 13*time.Millisecond || r.RootDispersion > 20*time.Millisecond {
		t.Errorf("root dispersion %v, want 3 ms + 10 ms + 60 s × 15 ppm ≈ 13.9 ms", r.RootDispersion)
	}
	if d := r.Time.Sub(r.ReferenceTime); d < 59*time.Second || d > 61*time.Second {
		t.Errorf("reference time %v before the answer, want the last sync's minute", d)
	}
}

func TestServeUnsynchronised(t *testing.T) {
	port := serve(t, &Server{State: func() Status { return Status{Synchronised: false, Stratum: 2} }, Log: quiet})
	r, err := ntp.QueryWithOptions("127.0.0.1", ntp.QueryOptions{Port: port, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if r.Leap != ntp.LeapNotInSync || r.Stratum != 16 {
		t.Errorf("unsynchronised: leap %d stratum %d, want 3 and 16", r.Leap, r.Stratum)
	}
	if err := r.Validate(); err == nil {
		t.Error("the client accepts an unsynchronised server's time")
	}
	// Our own client refuses it too.
	if _, err := Query(context.Background(), net.JoinHostPort("127.0.0.1", itoa(port))); err == nil {
		t.Error("Query accepts an unsynchronised server's time")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// request is a client request of version v and mode m with transmit stamp 42.
func request(v, m byte, size int) []byte {
	b := make([]byte, size)
	if size > 0 {
		b[0] = v<<3 | m
	}
	if size >= 48 {
		binary.BigEndian.PutUint64(b[40:48], 42)
	}
	return b
}

// replies counts the answers arriving on c within d.
func replies(c net.Conn, d time.Duration) (n int, sizes []int) {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	for {
		m, err := c.Read(buf)
		if err != nil {
			return n, sizes
		}
		n++
		sizes = append(sizes, m)
	}
}

func TestServeDropsMalformed(t *testing.T) {
	port := serve(t, &Server{State: synced(time.Now()), Log: quiet})
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, p := range map[string][]byte{
		"empty":             {},
		"one byte":          {0x23},
		"47 bytes":          request(4, 3, 47),
		"symmetric active":  request(4, 1, 48),
		"server mode":       request(4, 4, 48),
		"broadcast mode":    request(4, 5, 48),
		"control mode":      request(2, 6, 48),
		"version 0":         request(0, 3, 48),
		"version 5":         request(5, 3, 48),
		"version 7 garbage": {0xff, 0xff, 0xff, 0xff},
	} {
		for i := 0; i < 3; i++ {
			if _, err := c.Write(p); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	if n, _ := replies(c, 300*time.Millisecond); n != 0 {
		t.Fatalf("%d replies to malformed packets", n)
	}
	// The same source still gets an answer to a good request, of 48 bytes
	// even when the request is longer (extension fields), never more than
	// it sent.
	c.Write(request(3, 3, 200))
	c.Write(request(4, 3, 48))
	n, sizes := replies(c, time.Second)
	if n != 2 || sizes[0] != 48 || sizes[1] != 48 {
		t.Fatalf("good requests after malformed ones: %d replies of sizes %v, want 2 of 48", n, sizes)
	}
}

func TestServeVersionAndOrigin(t *testing.T) {
	port := serve(t, &Server{State: synced(time.Now()), Log: quiet})
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := request(3, 3, 48)
	req[2] = 6 // poll 64 s
	c.Write(req)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 100)
	n, err := c.Read(b)
	if err != nil || n != 48 {
		t.Fatalf("reply: %d bytes, %v", n, err)
	}
	if b[0]>>3&7 != 3 || b[0]&7 != 4 || b[2] != 6 || binary.BigEndian.Uint64(b[24:32]) != 42 {
		t.Errorf("reply header % x: want version 3, mode 4, poll 6, origin 42", b[:4])
	}
}

func TestServeRateLimit(t *testing.T) {
	port := serve(t, &Server{State: synced(time.Now()), Log: quiet})
	addr := net.JoinHostPort("127.0.0.1", itoa(port))
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 100; i++ {
		c.Write(request(4, 3, 48))
	}
	n, _ := replies(c, 700*time.Millisecond)
	if n < defaultBurst || n > defaultBurst+1 {
		t.Errorf("a flood of 100 requests from one source got %d replies, want the burst of %d (+1 refilled)", n, defaultBurst)
	}
	// Another source is not affected.
	other, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Write(request(4, 3, 48))
	if n, _ := replies(other, time.Second); n != 1 {
		t.Errorf("another source got %d replies during the flood, want 1", n)
	}
	// One more token a second: the flooding source gets one again.
	time.Sleep(1100 * time.Millisecond)
	c.Write(request(4, 3, 48))
	c.Write(request(4, 3, 48))
	if n, _ := replies(c, 500*time.Millisecond); n < 1 || n > 2 {
		t.Errorf("after a second's refill %d replies, want 1 (2 at most)", n)
	}
}

func TestRateLimitTableBounded(t *testing.T) {
	s := &Server{Log: quiet}
	base := netip.MustParseAddr("10.77.0.0").As4()
	for i := 0; i < 3*maxSources; i++ {
		a := base
		a[2], a[3] = byte(i>>8), byte(i)
		a[1] += byte(i >> 16)
		s.allow(netip.AddrFrom4(a))
		s.allow(netip.AddrFrom4(a)) // a busy source: its bucket is not full again
	}
	if n := len(s.sources); n > maxSources {
		t.Errorf("%d sources remembered, want at most %d", n, maxSources)
	}
}

// TestMonitorAgainstServer: the Monitor's real SNTP query against the real
// server.
func TestMonitorAgainstServer(t *testing.T) {
	skewed := serve(t, &Server{Now: func() time.Time { return time.Now().Add(threeHours) }, State: synced(time.Now().Add(threeHours)), Log: quiet})
	right := serve(t, &Server{State: synced(time.Now()), Log: quiet})

	s, err := Query(context.Background(), net.JoinHostPort("127.0.0.1", itoa(skewed)))
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if d := s.Offset - threeHours; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("offset %v, want 3h ± 50 ms", s.Offset)
	}
	if s.Stratum != 3 || s.Address != netip.MustParseAddr("127.0.0.1") || s.RTT < 0 || s.RTT > time.Second {
		t.Errorf("sample %+v", s)
	}

	unsync := func() (Kernel, error) { return Kernel{}, nil }
	m := NewMonitor(MonitorOptions{Servers: []string{"127.0.0.1:" + itoa(skewed)}, Kernel: unsync, Log: quiet})
	m.Round(context.Background())
	if st := m.Status(); st.Synchronised || st.Offset < threeHours-time.Second || st.Error != "" || st.Stratum != 3 {
		t.Errorf("against a server 3 h ahead: %+v", st)
	}
	m = NewMonitor(MonitorOptions{Servers: []string{"127.0.0.1:1", "127.0.0.1:" + itoa(right)}, Kernel: unsync, Log: quiet})
	m.Round(context.Background())
	if st := m.Status(); !st.Synchronised || st.Server != "127.0.0.1:"+itoa(right) || st.Address != "127.0.0.1" {
		t.Errorf("against a closed port and a right server: %+v", st)
	}
	// A server that does not answer: the Round ends by the query's deadline.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Query(ctx, silent.LocalAddr().String())
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("a silent server: %v after %v", err, time.Since(start))
	}
	t.Logf("silent server: %v", err)
}
