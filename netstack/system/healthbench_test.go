package system_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/netstack/nstest"
)

// builtMsg is the reconcile loop's line at the end of every full rebuild that
// succeeded; its time is when the last part was applied.
const builtMsg = "network built from the database"

// builds reads the daemon's log file and returns every successful full
// rebuild: when it ended and how many peers it applied. The file is read
// from outside the daemon, so watching for the end of a rebuild adds no load
// to the process being measured.
func builds(path string) ([]build, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []build
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), builtMsg) {
			continue
		}
		var l struct {
			Time  time.Time `json:"time"`
			Msg   string    `json:"msg"`
			Attrs struct {
				Peers int `json:"peers"`
			} `json:"attrs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		if l.Msg == builtMsg {
			out = append(out, build{end: l.Time, peers: l.Attrs.Peers})
		}
	}
	return out, sc.Err()
}

type build struct {
	end   time.Time
	peers int
}

// BenchmarkHealthDuringRebuild measures GET /health and GET /api/status
// against the daemon in TUN mode with 10,000 peers, idle and, alternately,
// while the reconcile loop runs full rebuilds back to back. Each rebuild is
// triggered by a PUT /api/config that moves network.wan_interface between two
// uplinks, so the firewall's structure changes and its whole table is
// replaced, the device is diffed against 10,000 peers and every peer's
// preshared key comes out of the vault. The health checks read the parts'
// last published result, so the target is p99(during)/p99(idle) <= 2,
// and every answer within 100 ms. The requests are paced so that each busy
// segment spans whole rebuilds rather than a slice of one.
//
// A rebuild's time is from the PUT being sent until the daemon logged the
// end of the rebuild (builtMsg), read from its log file: the PUT answers once
// the change is committed, before the loop applies it.
func BenchmarkHealthDuringRebuild(b *testing.B) {
	nstest.RequireRoot(b)
	// n requests of each endpoint, idle and during rebuilds, in rounds: idle
	// and busy segments alternate, so that load elsewhere on the machine falls
	// on both.
	const peers, n, rounds = 10000, 300, 3
	bin := daemonBinary(b)
	ns := nstest.NewNS(b, "healthbench")
	// Two uplinks: a rebuild that only re-sent the same structure would let
	// the firewall send nothing (NFT.Set diffs the elements), which is not
	// the full rebuild being measured.
	uplinks := []string{"up0", "up1"}
	for i, name := range uplinks {
		// A veth pair whose far end stays in the namespace: this kernel has
		// no dummy links, and the uplink only needs to exist with an address.
		ns.Exec(b, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
		ns.Exec(b, "ip", "addr", "add", fmt.Sprintf("192.168.%d.1/24", 50+i), "dev", name)
		ns.Exec(b, "ip", "link", "set", name+"p", "up")
		ns.Exec(b, "ip", "link", "set", name, "up")
	}
	data := b.TempDir()
	seedCell(b, data, peers)
	startDaemon(b, privateRun(ns, bin, "-data", data, "-listen", "127.0.0.1:3000", "-wg-mode", "tun", "-log-level", "warn")...)
	const base = "http://127.0.0.1:3000"
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) { return ns.Dial(addr, 5*time.Second) }
	ctx := context.Background()

	// The probes keep their connection, so that what is timed is the
	// daemon's answer, not a dial into the namespace per request.
	keepAlive := func() *client.Client {
		return client.New(base, client.WithTransport(&http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1}),
			client.WithTimeout(30*time.Second))
	}
	probe, status := keepAlive(), keepAlive()
	deadline := time.Now().Add(5 * time.Minute) // the daemon listens once the first build is done
	for {
		_, err := probe.Health(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the daemon never answered /health: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	admin := newAPI(b, base, dial)
	admin.login("admin", adminPW)
	admin.waitRunning()
	if err := status.Login(ctx, "admin", adminPW); err != nil {
		b.Fatal(err)
	}
	// The network component's info lines say when a rebuild ended; the rest
	// stays at warn, so the probes' own request lines are not written.
	_, err := admin.SetLogLevels(ctx, map[string]string{"network": "info"})
	admin.ok("set the network's log level", err)
	logFile := filepath.Join(data, "logs", "cell.log")

	// rebuild changes the WAN and waits for the loop to log the rebuild's end.
	next := 0
	rebuild := func() (time.Duration, error) {
		before, err := builds(logFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		wan := uplinks[next%2]
		next++
		start := time.Now()
		if _, err := admin.PatchConfig(ctx, map[string]any{"network": map[string]any{"wan_interface": wan}}); err != nil {
			return 0, fmt.Errorf("PUT /api/config: %w", err)
		}
		for limit := time.Now().Add(2 * time.Minute); time.Now().Before(limit); time.Sleep(5 * time.Millisecond) {
			got, err := builds(logFile)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return 0, err
			}
			if len(got) > len(before) {
				if got[len(before)].peers != peers {
					return 0, fmt.Errorf("the rebuild applied %d peers, want %d", got[len(before)].peers, peers)
				}
				return got[len(before)].end.Sub(start), nil
			}
		}
		return 0, fmt.Errorf("no %q line within 2 minutes of setting wan_interface to %s", builtMsg, wan)
	}
	// One rebuild before measuring: it proves the trigger works and sets the
	// pace, so that a round's busy segment spans about two rebuilds.
	warm, err := rebuild()
	if err != nil {
		b.Fatal(err)
	}
	every := max(2*time.Millisecond, 2*warm/(n/rounds))

	measure := func() (health, st []time.Duration) {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range n / rounds {
			<-tick.C
			start := time.Now()
			h, err := probe.Health(ctx)
			if err != nil {
				b.Fatalf("GET /health: %v", err)
			}
			health = append(health, time.Since(start))
			if !h.OK {
				b.Fatalf("GET /health: the cell says it is down: %+v", h)
			}
			start = time.Now()
			if _, err := status.Status(ctx); err != nil {
				b.Fatalf("GET /api/status: %v", err)
			}
			st = append(st, time.Since(start))
		}
		return health, st
	}

	var idleH, idleS, busyH, busyS []time.Duration
	var took []time.Duration // each rebuild that overlapped a busy segment
	for b.Loop() {
		for range rounds {
			h, s := measure()
			idleH, idleS = append(idleH, h...), append(idleS, s...)

			stop, done := make(chan struct{}), make(chan error, 1)
			type result struct {
				end time.Time
				d   time.Duration
			}
			var results []result
			go func() {
				for {
					select {
					case <-stop:
						done <- nil
						return
					default:
					}
					d, err := rebuild()
					if err != nil {
						done <- err
						return
					}
					results = append(results, result{time.Now(), d})
				}
			}()
			from := time.Now()
			h, s = measure()
			to := time.Now()
			close(stop)
			// The rebuild under way finishes before the next idle segment.
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			busyH, busyS = append(busyH, h...), append(busyS, s...)
			for _, r := range results {
				if r.end.After(from) && r.end.Add(-r.d).Before(to) {
					took = append(took, r.d)
				}
			}
		}
	}
	if len(took) < rounds {
		b.Fatalf("only %d rebuilds overlapped the measurement: it did not measure health during rebuilds", len(took))
	}
	pct := func(l []time.Duration, p int) time.Duration {
		l = slices.Clone(l)
		slices.Sort(l)
		return l[min(len(l)-1, len(l)*p/100)]
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) }
	b.ReportMetric(us(pct(idleH, 50)), "idle-p50-µs")
	b.ReportMetric(us(pct(idleH, 99)), "idle-p99-µs")
	b.ReportMetric(us(pct(busyH, 50)), "rebuild-p50-µs")
	b.ReportMetric(us(pct(busyH, 99)), "rebuild-p99-µs")
	b.ReportMetric(us(pct(busyH, 100)), "rebuild-max-µs")
	b.ReportMetric(us(pct(busyH, 99))/us(pct(idleH, 99)), "p99-rebuild/idle")
	b.ReportMetric(us(pct(idleS, 99)), "status-idle-p99-µs")
	b.ReportMetric(us(pct(busyS, 99)), "status-rebuild-p99-µs")
	b.ReportMetric(us(pct(busyS, 99))/us(pct(idleS, 99)), "status-p99-rebuild/idle")
	b.ReportMetric(float64(len(took))/float64(b.N), "rebuilds/op")
	b.ReportMetric(float64(pct(took, 50).Milliseconds()), "rebuild-ms")
	b.ReportMetric(float64(every.Milliseconds()), "pace-ms")
}
