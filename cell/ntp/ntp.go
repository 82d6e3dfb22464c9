// Package ntp is the cell's time as a capability: whether its clock is right
// (GET /api/ntp, the ntp part of /api/status) and the time it serves its peers.
//
// The clock itself is set by another program: on the appliance gokrazy's ntp
// client (once an hour from the gokrazy pool, with settimeofday, which leaves
// the kernel's "unsynchronised" flag set), on a development host its own
// daemon. So the cell does not trust the kernel's flag alone: a monitor
// (netstack/clock) asks the configured servers for the time now and then
// without setting anything, and the clock counts as synchronised when a recent
// answer agreed within half a second (or, with no answer, when the kernel says
// so). The kernel's own state (adjtimex) is shown beside it.
//
// The cell serves time (SNTP, UDP 123) on its tunnel addresses, so that a
// device behind a strict exit, or one that may reach nothing but the cell,
// still gets the time: the daemon opens the sockets (cmd/cell) and this
// capability says what they answer (Serving: synchronised or not, the
// upstream's stratum). A cell whose clock is not synchronised says so in its
// answers (leap indicator "alarm"), so clients do not take a wrong time.
//
// The config's "ntp" section names the servers (default: the gokrazy pool, as
// the appliance's own client uses).
package ntp

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/netstack/clock"
	"github.com/pic-cell/cell/storage"
)

// Section is the config's "ntp" section.
type Section struct {
	// Servers are asked for the time (host or host:port); 1 to 8.
	Servers []string `json:"servers"`
}

// ConfigSection registers the section.
func ConfigSection() config.Section {
	return config.Section{Name: "ntp", New: func() any { return &Section{Servers: append([]string(nil), clock.DefaultServers...)} },
		Validate: func(v any) error { return v.(*Section).Validate() }}
}

// Validate checks the section.
func (s Section) Validate() error {
	if len(s.Servers) < 1 || len(s.Servers) > 8 {
		return fault.Invalid("invalid_servers", "ntp.servers takes 1 to 8 servers (got %d)", len(s.Servers))
	}
	for _, srv := range s.Servers {
		if !names.ValidHostPort(srv) {
			return fault.Invalid("invalid_server", "ntp.servers: %s is not a server's name or address (such as pool.ntp.org or 198.18.0.123:123)", names.Quote(srv))
		}
	}
	return nil
}

// Settings reads the config document.
type Settings interface {
	Config() (config.Doc, error)
}

// Options are what the root hands the capability.
type Options struct {
	Settings Settings
	DB       *storage.DB // to hear of config changes; optional
	Log      *slog.Logger
	Now      func() time.Time
	// Query and Kernel replace the real SNTP query and adjtimex (tests).
	Query  func(ctx context.Context, server string) (clock.Sample, error)
	Kernel func() (clock.Kernel, error)
	// Interval between checks; zero: clock.DefaultInterval.
	Interval time.Duration
}

// NTP is the capability.
type NTP struct {
	o    Options
	kick chan struct{}

	mu      sync.Mutex
	monitor *clock.Monitor
	servers []string
}

// New returns the capability; Run starts the monitor.
func New(o Options) *NTP {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	n := &NTP{o: o, kick: make(chan struct{}, 1)}
	if o.DB != nil {
		o.DB.OnCommit(func(c storage.Change) {
			if c.Kind == storage.ChangeConfig {
				select {
				case n.kick <- struct{}{}:
				default:
				}
			}
		})
	}
	return n
}

// servers are the configured servers (the defaults before setup).
func (n *NTP) serversNow() []string {
	// A copy: decoding into a slice reuses its array, which would overwrite
	// the package's defaults with the configured servers.
	s := Section{Servers: append([]string(nil), clock.DefaultServers...)}
	if n.o.Settings != nil {
		if doc, err := n.o.Settings.Config(); err == nil {
			doc.Decode("ntp", &s)
		}
	}
	return s.Servers
}

// Run checks the clock until ctx ends, with a new monitor whenever the
// servers change.
func (n *NTP) Run(ctx context.Context) {
	var stop context.CancelFunc
	var wg sync.WaitGroup
	defer func() {
		if stop != nil {
			stop()
		}
		wg.Wait()
	}()
	for {
		servers := n.serversNow()
		n.mu.Lock()
		same := n.monitor != nil && equal(servers, n.servers)
		n.mu.Unlock()
		if !same {
			if stop != nil {
				stop()
				wg.Wait()
			}
			m := clock.NewMonitor(clock.MonitorOptions{Servers: servers, Interval: n.o.Interval, Query: n.o.Query,
				Kernel: n.o.Kernel, Now: n.o.Now, Log: n.o.Log})
			n.mu.Lock()
			n.monitor, n.servers = m, servers
			n.mu.Unlock()
			mctx, cancel := context.WithCancel(ctx)
			stop = cancel
			wg.Add(1)
			go func() { defer wg.Done(); m.Run(mctx) }()
		}
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// State is the monitor's status (what the SNTP server answers from).
func (n *NTP) State() clock.Status {
	n.mu.Lock()
	m := n.monitor
	n.mu.Unlock()
	if m == nil {
		st := clock.Status{Servers: n.serversNow(), Error: "the clock has not been checked yet"}
		if k, err := n.kernel(); err == nil {
			st.Kernel, st.Synchronised = k, k.Synchronised
		}
		return st
	}
	return m.Status()
}

func (n *NTP) kernel() (clock.Kernel, error) {
	if n.o.Kernel != nil {
		return n.o.Kernel()
	}
	return clock.ReadKernel()
}

// View is GET /api/ntp.
type View struct {
	Synchronised bool       `json:"synchronised"`
	OffsetMS     float64    `json:"offset_ms"`
	RTTMS        float64    `json:"rtt_ms"`
	LastSync     *time.Time `json:"last_sync,omitempty"`
	Server       string     `json:"server,omitempty"`
	Address      string     `json:"address,omitempty"`
	Stratum      uint8      `json:"stratum,omitempty"`
	Servers      []string   `json:"servers"`
	Error        string     `json:"error,omitempty"`
	Kernel       KernelView `json:"kernel"`
	// Serving says the cell answers SNTP on its tunnel addresses (UDP 123).
	Serving bool      `json:"serving"`
	Time    time.Time `json:"time"` // the cell's clock now
}

// KernelView is the kernel clock's state (adjtimex).
type KernelView struct {
	Synchronised bool    `json:"synchronised"`
	OffsetMS     float64 `json:"offset_ms"`
	MaxErrorMS   float64 `json:"max_error_ms"`
	EstErrorMS   float64 `json:"est_error_ms"`
	Status       int     `json:"status"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Status is GET /api/ntp.
func (n *NTP) Status() View {
	st := n.State()
	v := View{Synchronised: st.Synchronised, OffsetMS: ms(st.Offset), RTTMS: ms(st.RTT), Server: st.Server, Address: st.Address,
		Stratum: st.Stratum, Servers: st.Servers, Error: st.Error, Serving: true, Time: n.o.Now().UTC(),
		Kernel: KernelView{Synchronised: st.Kernel.Synchronised, OffsetMS: ms(st.Kernel.Offset), MaxErrorMS: ms(st.Kernel.MaxError),
			EstErrorMS: ms(st.Kernel.EstError), Status: st.Kernel.Status}}
	if !st.LastSync.IsZero() {
		t := st.LastSync.UTC()
		v.LastSync = &t
	}
	if v.Servers == nil {
		v.Servers = []string{}
	}
	return v
}

// Check is the ntp part of /api/status.
func (n *NTP) Check(context.Context) storage.PartStatus {
	st := n.State()
	if st.Synchronised {
		return storage.PartStatus{State: storage.StateOK}
	}
	reason := "the clock is not synchronised"
	if st.Error != "" {
		reason += ": " + st.Error
	}
	return storage.PartStatus{State: storage.StateDegraded, Reason: reason}
}
