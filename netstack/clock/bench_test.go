package clock

import (
	"net"
	"testing"
	"time"
)

// BenchmarkServe: requests answered a second by Serve on a loopback UDP
// socket, one client waiting for each reply, as a ratio to a bare UDP echo
// loop on the same kind of socket measured in the same run.
func BenchmarkServe(b *testing.B) {
	echo := func(pc net.PacketConn) {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}
	rate := func(serve func(net.PacketConn), n int) float64 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer pc.Close()
		go serve(pc)
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		req, resp := request(4, 3, 48), make([]byte, 100)
		start := time.Now()
		for i := 0; i < n; i++ {
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Write(req)
			if _, err := c.Read(resp); err != nil {
				b.Fatalf("request %d: %v", i, err)
			}
		}
		return float64(n) / time.Since(start).Seconds()
	}
	anchor := rate(echo, 2000)
	// The limiter stays in the path, lifted so that one client is not
	// held to one request a second.
	s := &Server{State: synced(time.Now()), Log: quiet, burst: 1e12, rate: 1e12}
	b.ResetTimer()
	got := rate(func(pc net.PacketConn) { s.Serve(pc) }, b.N)
	b.StopTimer()
	b.ReportMetric(got, "replies/s")
	b.ReportMetric(got/anchor, "x-udp-echo")
}
