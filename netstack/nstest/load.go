package nstest

import (
	"io"
	"net"
	"testing"
	"time"
)

// Sink accepts TCP connections inside ns on addr and discards what they send,
// until the test ends: the far end of a throughput measurement.
func (ns *NS) Sink(tb testing.TB, addr string) {
	tb.Helper()
	var l net.Listener
	if err := ns.Run(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
}

// Throughput sends from ns to addr (a Sink) for d and returns bytes per second.
func (ns *NS) Throughput(tb testing.TB, addr string, d time.Duration) float64 {
	tb.Helper()
	c, err := ns.Dial(addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		m, err := c.Write(buf)
		n += int64(m)
		if err != nil {
			tb.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
