package clock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestReadKernel(t *testing.T) {
	k, err := ReadKernel()
	if err != nil {
		t.Fatalf("ReadKernel: %v", err)
	}
	if k.MaxError < 0 || k.EstError < 0 {
		t.Errorf("negative error estimates: %+v", k)
	}
	if k.MaxError > time.Hour {
		t.Errorf("maximum error %v: the kernel caps it at 16 s", k.MaxError)
	}
	if k.Synchronised && k.Status&unix.STA_UNSYNC != 0 {
		t.Errorf("synchronised with STA_UNSYNC set: %+v", k)
	}
	t.Logf("this host's kernel clock: %+v", k)
}

func TestKernelFrom(t *testing.T) {
	tx := unix.Timex{Offset: 1500, Maxerror: 2000, Esterror: 30, Status: 0}
	k := kernelFrom(&tx, unix.TIME_OK)
	if !k.Synchronised || k.Offset != 1500*time.Microsecond || k.MaxError != 2*time.Millisecond || k.EstError != 30*time.Microsecond {
		t.Errorf("microsecond state: %+v", k)
	}
	tx.Status = unix.STA_NANO
	if k := kernelFrom(&tx, unix.TIME_OK); k.Offset != 1500*time.Nanosecond {
		t.Errorf("STA_NANO offset %v, want 1.5µs", k.Offset)
	}
	if k := kernelFrom(&tx, unix.TIME_ERROR); k.Synchronised {
		t.Error("TIME_ERROR counted as synchronised")
	}
	tx.Status = unix.STA_UNSYNC
	if k := kernelFrom(&tx, unix.TIME_OK); k.Synchronised || k.Status != unix.STA_UNSYNC {
		t.Errorf("STA_UNSYNC: %+v", k)
	}
}

func TestNTPTimestamps(t *testing.T) {
	for _, s := range []string{"1999-12-31T23:59:59.123456789Z", "2026-11-28T21:00:00.5Z", "2036-02-07T06:28:16Z", "2040-01-01T00:00:00.000001Z"} {
		tm, _ := time.Parse(time.RFC3339Nano, s)
		got := fromNTP(toNTP(tm))
		if d := got.Sub(tm); d < -time.Nanosecond || d > time.Nanosecond {
			t.Errorf("%s came back as %s", tm, got)
		}
	}
	if got := fromShortNTP(shortNTP(1500 * time.Millisecond)); got != 1500*time.Millisecond {
		t.Errorf("short format: %v", got)
	}
	if shortNTP(-time.Second) != 0 || shortNTP(100000*time.Hour) != 0xffffffff {
		t.Error("short format does not saturate")
	}
}

// fakeClock is a settable Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fakeServers answer a fake Query by name.
type fakeServers struct {
	mu      sync.Mutex
	answers map[string]func() (Sample, error)
	asked   []string
}

func (f *fakeServers) Query(ctx context.Context, server string) (Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, server)
	if a := f.answers[server]; a != nil {
		return a()
	}
	return Sample{}, fmt.Errorf("time server %s: no answer in time", server)
}

func TestMonitorSynchronisedRules(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	offset := 100 * time.Millisecond
	fs := &fakeServers{answers: map[string]func() (Sample, error){
		"good.example": func() (Sample, error) { return Sample{Offset: offset, RTT: 20 * time.Millisecond, Stratum: 2}, nil },
	}}
	kernel := Kernel{Synchronised: false, Status: unix.STA_UNSYNC}
	m := NewMonitor(MonitorOptions{
		Servers:  []string{"dead.example", "good.example"},
		Interval: time.Minute,
		Query:    fs.Query,
		Kernel:   func() (Kernel, error) { return kernel, nil },
		Now:      clk.Now,
		Log:      quiet,
	})
	st := m.Status()
	if st.Synchronised || !st.LastSync.IsZero() {
		t.Fatalf("before any sample, with an unsynchronised kernel: %+v", st)
	}
	m.Round(context.Background())
	st = m.Status()
	if !st.Synchronised || st.Server != "good.example" || st.Offset != offset || st.Stratum != 2 || st.Error != "" || !st.LastSync.Equal(clk.Now()) {
		t.Fatalf("after a good sample of 100 ms (kernel unsynchronised, as gokrazy leaves it): %+v", st)
	}
	if strings.Join(fs.asked, ",") != "dead.example,good.example" {
		t.Errorf("asked %v, want the dead server and then the good one", fs.asked)
	}

	// A fresh sample with a large offset beats a kernel that claims
	// synchronisation.
	offset = 2 * time.Second
	kernel = Kernel{Synchronised: true}
	m.Round(context.Background())
	if st := m.Status(); st.Synchronised {
		t.Errorf("a fresh sample 2 s off, kernel synchronised: counted as synchronised: %+v", st)
	}
	offset = -499 * time.Millisecond
	kernel = Kernel{Status: unix.STA_UNSYNC}
	m.Round(context.Background())
	if st := m.Status(); !st.Synchronised {
		t.Errorf("a fresh sample -499 ms off not synchronised: %+v", st)
	}

	// A stale sample (two intervals old) no longer counts: the kernel decides.
	clk.Add(2*time.Minute + time.Second)
	if st := m.Status(); st.Synchronised {
		t.Errorf("stale sample, unsynchronised kernel: %+v", st)
	}
	kernel = Kernel{Synchronised: true}
	if st := m.Status(); !st.Synchronised || st.Offset != offset {
		t.Errorf("stale sample, synchronised kernel: %+v", st)
	}
}

func TestMonitorFailureText(t *testing.T) {
	fs := &fakeServers{answers: map[string]func() (Sample, error){
		"kod.example": func() (Sample, error) {
			return Sample{}, errors.New(`time server kod.example: the server refused to answer (kiss code "RATE")`)
		},
	}}
	m := NewMonitor(MonitorOptions{Servers: []string{"a.example", "kod.example"}, Query: fs.Query,
		Kernel: func() (Kernel, error) {
			return Kernel{}, errors.New("reading the kernel clock's state: operation not permitted")
		}, Log: quiet})
	m.Round(context.Background())
	st := m.Status()
	if st.Synchronised {
		t.Error("synchronised with no sample and an unreadable kernel")
	}
	for _, want := range []string{"no time server answered", "a.example: no answer in time", `kiss code "RATE"`} {
		if !strings.Contains(st.Error, want) {
			t.Errorf("error %q lacks %q", st.Error, want)
		}
	}
	if len(st.Servers) != 2 {
		t.Errorf("servers %v", st.Servers)
	}
}

func TestMonitorBackoff(t *testing.T) {
	const interval = 16 * time.Minute
	var mu sync.Mutex
	failUntil := 6 // rounds 1..6 fail, 7 and 8 succeed, then fail again
	round := 0
	query := func(ctx context.Context, server string) (Sample, error) {
		mu.Lock()
		defer mu.Unlock()
		if round > failUntil && round <= failUntil+2 {
			return Sample{Stratum: 2}, nil
		}
		return Sample{}, errors.New("no answer in time")
	}
	m := NewMonitor(MonitorOptions{Servers: []string{"one"}, Interval: interval, Query: query,
		Kernel: func() (Kernel, error) { return Kernel{}, nil }, Log: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var delays []time.Duration
	ready := make(chan time.Time, 1)
	m.after = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		delays = append(delays, d)
		round++
		if len(delays) == 10 {
			cancel()
		}
		mu.Unlock()
		ready <- time.Time{}
		return ready
	}
	mu.Lock()
	round = 1
	mu.Unlock()
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after its context")
	}
	want := []time.Duration{interval / 16, interval / 8, interval / 4, interval / 2, interval, interval, interval, interval, interval / 16, interval / 8}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Errorf("waits %v, want %v", delays, want)
	}
}

func TestRetryDelay(t *testing.T) {
	for f, want := range []time.Duration{15 * time.Minute, 56250 * time.Millisecond, 112500 * time.Millisecond, 225 * time.Second, 450 * time.Second, 900 * time.Second, 900 * time.Second} {
		if got := retryDelay(15*time.Minute, f); got != want {
			t.Errorf("after %d failures: %v, want %v", f, got, want)
		}
	}
	if got := retryDelay(15*time.Minute, 1000); got != 15*time.Minute {
		t.Errorf("after 1000 failures: %v", got)
	}
}
