package clock

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// DefaultServers are the NTP servers gokrazy's own client sets the clock
// from: the Monitor measures against the same ones.
var DefaultServers = []string{
	"0.gokrazy.pool.ntp.org",
	"1.gokrazy.pool.ntp.org",
	"2.gokrazy.pool.ntp.org",
	"3.gokrazy.pool.ntp.org",
}

// DefaultInterval is how often the Monitor measures.
const DefaultInterval = 15 * time.Minute

// MaxOffset is the largest offset of a fresh sample with which the clock
// still counts as synchronised.
const MaxOffset = 500 * time.Millisecond

// MonitorOptions configure a Monitor; zero values get the defaults.
type MonitorOptions struct {
	Servers  []string      // host or host:port; default DefaultServers
	Interval time.Duration // default DefaultInterval; after a failed round sooner, with back-off
	// Query asks one server; nil is the real SNTP Query.
	Query  func(ctx context.Context, server string) (Sample, error)
	Kernel func() (Kernel, error) // nil: ReadKernel
	Now    func() time.Time       // nil: time.Now
	Log    *slog.Logger           // nil: slog.Default()
}

// Status is what the cell says about its clock.
type Status struct {
	// Synchronised: a good sample younger than twice the interval had an
	// offset under MaxOffset; without such a sample, the kernel says so.
	Synchronised bool
	Offset       time.Duration // of the last good sample
	RTT          time.Duration // of the last good sample
	LastSync     time.Time     // when the last good sample arrived; zero: never
	Server       string        // the server of the last good sample
	Address      string        // the address that answered it
	Stratum      uint8         // the server's stratum in it
	Servers      []string
	Kernel       Kernel
	Error        string // the last failure in plain words; empty after a good round
}

// Monitor measures the clock's offset against NTP servers at an interval.
// It never sets the clock.
type Monitor struct {
	o     MonitorOptions
	after func(time.Duration) <-chan time.Time // time.After; tests record the delays

	mu       sync.Mutex
	last     Sample
	have     bool
	err      string
	failures int
}

// NewMonitor makes a Monitor; it measures once Run is called.
func NewMonitor(o MonitorOptions) *Monitor {
	if len(o.Servers) == 0 {
		o.Servers = DefaultServers
	}
	o.Servers = slices.Clone(o.Servers)
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Query == nil {
		o.Query = Query
	}
	if o.Kernel == nil {
		o.Kernel = ReadKernel
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Monitor{o: o, after: time.After}
}

// Run measures at once and then at the interval (sooner after a failure)
// until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	for {
		m.Round(ctx)
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		d := retryDelay(m.o.Interval, m.failures)
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-m.after(d):
		}
	}
}

// retryDelay is the wait after a round given the number of rounds failed
// in a row: the interval after a good one, else a sixteenth of it doubling
// with each failure, up to the interval.
func retryDelay(interval time.Duration, failures int) time.Duration {
	if failures == 0 {
		return interval
	}
	d := interval / 16
	for i := 1; i < failures && d < interval; i++ {
		d *= 2
	}
	return min(d, interval)
}

// Round asks the servers in order until one gives a good answer, and
// records it or the failure. Run calls it; an API's "check now" may too.
func (m *Monitor) Round(ctx context.Context) {
	var errs []string
	for _, srv := range m.o.Servers {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := m.o.Query(qctx, srv)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		s.Server, s.Time = srv, m.o.Now()
		m.mu.Lock()
		m.last, m.have, m.err, m.failures = s, true, "", 0
		m.mu.Unlock()
		m.o.Log.Debug("clock measured", "server", srv, "offset", s.Offset, "rtt", s.RTT, "stratum", s.Stratum)
		if abs(s.Offset) >= MaxOffset {
			m.o.Log.Warn("the clock is off", "server", srv, "offset", s.Offset)
		}
		return
	}
	msg := "no time server answered: " + joinErrs(errs)
	m.mu.Lock()
	m.err = msg
	m.failures++
	m.mu.Unlock()
	m.o.Log.Warn("clock not measured", "error", msg)
}

func joinErrs(errs []string) string {
	if len(errs) == 0 {
		return "no servers configured"
	}
	out := errs[0]
	for _, e := range errs[1:] {
		out += "; " + e
	}
	return out
}

// Status is the clock's state now: the last sample and the kernel's word,
// read afresh.
func (m *Monitor) Status() Status {
	k, kerr := m.o.Kernel()
	now := m.o.Now()
	m.mu.Lock()
	last, have, errText := m.last, m.have, m.err
	m.mu.Unlock()
	st := Status{Servers: slices.Clone(m.o.Servers), Kernel: k, Error: errText}
	if kerr != nil && st.Error == "" {
		st.Error = kerr.Error()
	}
	fresh := false
	if have {
		st.Offset, st.RTT, st.LastSync, st.Server, st.Stratum = last.Offset, last.RTT, last.Time, last.Server, last.Stratum
		if last.Address.IsValid() {
			st.Address = last.Address.String()
		}
		age := now.Sub(last.Time)
		fresh = age >= -time.Minute && age < 2*m.o.Interval
	}
	if fresh {
		st.Synchronised = abs(last.Offset) < MaxOffset
	} else {
		st.Synchronised = kerr == nil && k.Synchronised
	}
	return st
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
