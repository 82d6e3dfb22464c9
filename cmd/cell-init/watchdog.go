package main

// The hardware watchdog. A board's watchdog (the Pi's bcm2835, a PC's
// i6300esb or TCO, QEMU's emulated i6300esb) resets the machine unless it is
// fed within its timeout. The init feeds it only while the cell is alive, so
// that a hung cell, a hung supervisor or a hung PID 1 ends in a reset, and a
// reset during a trial boot ends on the old root (the boot partition still
// names it until the commit; package firmware/update).
//
// Who feeds it. gokrazy.Boot starts a goroutine that opens /dev/watchdog and
// pings it every second for as long as PID 1 runs, whatever the cell does;
// with that, no hang would ever reset the box. The kernel lets one process
// hold /dev/watchdog open at a time, so startWatchdog opens it first, before
// gokrazy.Boot (mounting devtmpfs on /dev itself when the kernel has not:
// gokrazy's own mount then finds it mounted, which it accepts), and gokrazy's
// pinger gives up, saying on the console "disabling hardware watchdog, as it
// could not be opened: ... device or resource busy". From then on only the
// logic below feeds it.
//
// Arming. WDIOC_SETTIMEOUT asks for watchdogTimeout (60 s); a driver whose
// hardware cannot count that long refuses (the Pi's bcm2835 tops out near
// 15 s), and the request is halved until one is taken. The timeout the driver
// reports is the one used, and the device is fed every third of it (at most
// every watchdogCheck, 5 s), so one late feed never resets a live box.
//
// When it is fed. Every check (5 s, or a third of the timeout if shorter):
//
//   - During the boot grace period (watchdogGrace, 3 minutes from arming) it
//     is fed whatever happens: the kernel, gokrazy, the trial switch and the
//     cell's start (database opened and migrated before the daemon listens)
//     all happen in it.
//   - After it, the cell's health loop must run: the daemon's /health
//     (release.HealthURL) must answer at all, with any status, within the
//     check's deadline. A cell that answers 503 (degraded: a part is down) is
//     alive and is never reset; one that has not answered for watchdogStale
//     (2 minutes), or never answered by the end of the grace period, is hung.
//   - And the supervised services must be alive: each of the release's own
//     programs (those in /user: the cell, containerd, configured packages)
//     must have had a process, a child of PID 1, at some check within
//     watchdogStale. gokrazy restarts a program that exits one second later,
//     so a crashing program still shows up; only one that gokrazy stopped
//     supervising (it exited 0 or 125) or a supervisor that no longer starts
//     anything stays away that long. gokrazy's own helpers (/gokrazy/dhcp,
//     /gokrazy/ntp) are not watched: dhcp exits 125 by design after applying
//     a static configuration. The processes are read from /proc (the
//     executable behind /proc/<pid>/exe of PID 1's children), which needs
//     nothing from gokrazy's supervisor, whose state is not exported.
//   - The feeding is done by the loop that makes these checks, in PID 1: if
//     that loop hangs (a probe that never returns, a wedged runtime), nothing
//     feeds the device either.
//
// Once a check fails, feeding stops for good (a cell that answers again a
// moment later has still hung for two minutes): the init logs why on the
// console, and the hardware resets the box within the timeout. A hang is thus
// reset within watchdogStale plus the timeout (3 minutes), a cell that never
// comes up within the grace period plus the timeout (4 minutes).
//
// Never disarmed. The magic close (writing 'V' before closing) would stop the
// watchdog; it is never written, and the device is never closed: it stays
// open for the life of PID 1. At the trial switch the old init executes the
// new root's init, which closes the file (it is opened close-on-exec) without
// the magic character: the kernel then pings the device once and leaves it
// running ("watchdog did not stop!" on the console), and the new init opens
// it again at once. An orderly reboot (an update, gokrazy's reboot) leaves it
// armed too, so a shutdown that hangs is reset as well; a kexec'd kernel's
// driver re-initialises the device.
//
// No watchdog (no /dev/watchdog, or a driver that takes no timeout): the init
// says so and runs without one.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/release"
)

const (
	watchdogPath    = "/dev/watchdog"
	watchdogTimeout = 60 * time.Second
	watchdogGrace   = 3 * time.Minute
	watchdogStale   = 2 * time.Minute
	watchdogCheck   = 5 * time.Second
)

// watchdogDevice is what the init needs of the kernel's watchdog driver. It
// has no way to disarm the device on purpose: nothing here may stop it.
type watchdogDevice interface {
	// SetTimeout asks for a timeout (which also feeds the device) and
	// returns the one the driver took.
	SetTimeout(d time.Duration) (time.Duration, error)
	// Keepalive feeds the device.
	Keepalive() error
}

// kernelWatchdog is /dev/watchdog.
type kernelWatchdog struct {
	f        *os.File
	fd       int
	Identity string // the driver's name, e.g. "i6300ESB timer"
	// FiredLastBoot: the driver says the last reset was the watchdog's
	// (WDIOF_CARDRESET; the i6300esb says so, not every driver does).
	FiredLastBoot bool
}

// openKernelWatchdog opens path. Opening arms the device.
func openKernelWatchdog(path string) (*kernelWatchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	k := &kernelWatchdog{f: f, fd: int(f.Fd())}
	if info, err := unix.IoctlGetWatchdogInfo(k.fd); err == nil {
		k.Identity = string(bytes.TrimRight(info.Identity[:], "\x00"))
	}
	if status, err := unix.IoctlGetInt(k.fd, unix.WDIOC_GETBOOTSTATUS); err == nil {
		k.FiredLastBoot = status&unix.WDIOF_CARDRESET != 0
	}
	return k, nil
}

func (k *kernelWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	if err := unix.IoctlSetPointerInt(k.fd, unix.WDIOC_SETTIMEOUT, int(d/time.Second)); err != nil {
		return 0, err
	}
	secs, err := unix.IoctlGetInt(k.fd, unix.WDIOC_GETTIMEOUT)
	if err != nil || secs <= 0 {
		return d, nil
	}
	return time.Duration(secs) * time.Second, nil
}

func (k *kernelWatchdog) Keepalive() error { return unix.IoctlWatchdogKeepalive(k.fd) }

// armTimeout asks dev for want, halving the request while the driver refuses
// it as out of range, and returns the timeout the driver took.
func armTimeout(dev watchdogDevice, want time.Duration) (time.Duration, error) {
	var err error
	// Drivers count whole seconds.
	for secs := int(want / time.Second); secs >= 2; secs /= 2 {
		var got time.Duration
		got, err = dev.SetTimeout(time.Duration(secs) * time.Second)
		if err == nil {
			return got, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	return 0, fmt.Errorf("the watchdog takes no timeout of %s or less: %w", want, err)
}

// feedInterval is how often a device with timeout is checked and fed.
func feedInterval(timeout time.Duration) time.Duration {
	return min(watchdogCheck, timeout/3)
}

// startWatchdog arms the hardware watchdog and feeds it from a goroutine of
// PID 1 for as long as the cell lives (see the file comment). It must run
// before gokrazy.Boot, whose own pinger would otherwise take the device.
func startWatchdog() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "watchdog")
	// gokrazy.Boot mounts devtmpfs on /dev too and accepts finding it there.
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		logger.Error("no hardware watchdog: /dev could not be mounted", "err", err)
		return
	}
	dev, err := openKernelWatchdog(watchdogPath)
	if errors.Is(err, os.ErrNotExist) {
		logger.Info("no hardware watchdog on this machine")
		return
	}
	if err != nil {
		logger.Error("no hardware watchdog: it could not be opened", "err", err)
		return
	}
	timeout, err := armTimeout(dev, watchdogTimeout)
	if err != nil {
		// Opened and running at the driver's own timeout, which is unknown:
		// fed as often as ever, it still resets a hang.
		logger.Error("hardware watchdog: its timeout could not be set; feeding it every second", "err", err)
		timeout = 3 * time.Second
	}
	// The root is mounted before gokrazy.Boot, so its release can be read now.
	var healthURL string
	var watch []string
	rel, err := release.Load(release.Path)
	if err != nil {
		logger.Error("hardware watchdog: no release to watch; the device resets after the grace period", "err", err)
	} else {
		healthURL, watch = rel.HealthURL, watchedPrograms(rel)
	}
	f := &feeder{
		dev:     dev,
		probe:   newHealthProbe(healthURL).answer,
		procs:   func() (map[string]bool, error) { return supervisedPrograms("/proc") },
		watch:   watch,
		url:     healthURL,
		timeout: timeout, grace: watchdogGrace, stale: watchdogStale, every: feedInterval(timeout),
		log: logger,
	}
	logger.Info("hardware watchdog armed", "device", dev.Identity, "timeout", timeout, "feed_every", f.every,
		"grace", f.grace, "stale_after", f.stale, "health", healthURL, "services", strings.Join(watch, " "))
	if dev.FiredLastBoot {
		logger.Warn("hardware watchdog: the last boot ended in a reset by the watchdog")
	}
	go func() {
		f.run(context.Background())
		// Never reached in the init (its context never ends); should it be,
		// the file stays open: closing it could disarm a driver without magic
		// close.
		runtime.KeepAlive(dev.f)
		select {}
	}()
}

// watchedPrograms are the release's own programs (in /user), whose death
// stops the feeding; gokrazy's helpers may exit by design.
func watchedPrograms(rel *release.Release) []string {
	var out []string
	for _, s := range rel.Services {
		if strings.HasPrefix(s.Path, "/user/") {
			out = append(out, s.Path)
		}
	}
	return out
}

// feeder decides, check by check, whether the watchdog is fed.
type feeder struct {
	dev   watchdogDevice
	probe func(ctx context.Context) error // nil when the cell answered at all
	procs func() (map[string]bool, error) // executables with a running child of PID 1
	watch []string                        // programs that must keep a process
	url   string                          // for the log

	timeout, grace, stale, every time.Duration
	log                          *slog.Logger

	armed      time.Time
	answered   bool
	lastAnswer time.Time
	lastErr    error
	silent     bool // logged that answers stopped
	lastSeen   map[string]time.Time
	lastFed    time.Time
	stopped    string // why feeding stopped; "" while it goes on
}

// run checks and feeds every f.every until ctx ends. Once feeding has
// stopped it only waits for the reset.
func (f *feeder) run(ctx context.Context) {
	f.start(time.Now())
	tick := time.NewTicker(f.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !f.check(ctx, time.Now()) {
			<-ctx.Done()
			return
		}
	}
}

// start records the arming time (the grace period's start).
func (f *feeder) start(now time.Time) {
	f.armed, f.lastFed = now, now
	f.lastSeen = map[string]time.Time{}
	for _, p := range f.watch {
		f.lastSeen[p] = now
	}
}

// check observes the cell once, decides and feeds. It returns false once
// feeding has stopped.
func (f *feeder) check(ctx context.Context, now time.Time) bool {
	if f.stopped != "" {
		return false
	}
	f.observe(ctx, now)
	if why := f.verdict(now); why != "" {
		f.stopped = why
		f.log.Error("hardware watchdog: no longer fed; the device resets", "reason", why,
			"reset_within", f.timeout, "last_fed_ago", now.Sub(f.lastFed).Round(time.Millisecond))
		return false
	}
	if err := f.dev.Keepalive(); err != nil {
		// Logged only: the next check feeds again, and a device that keeps
		// refusing resets the box, which is what a broken one should do.
		f.log.Warn("hardware watchdog: feeding failed", "err", err)
		return true
	}
	f.lastFed = now
	return true
}

// observe asks /health and reads the process table.
func (f *feeder) observe(ctx context.Context, now time.Time) {
	pctx, cancel := context.WithTimeout(ctx, f.every)
	err := f.probe(pctx)
	cancel()
	switch {
	case err == nil:
		if f.silent {
			f.log.Info("hardware watchdog: the cell answers again", "health", f.url)
		} else if !f.answered {
			f.log.Info("hardware watchdog: the cell answers; it is watched", "health", f.url,
				"after_arming", now.Sub(f.armed).Round(time.Second))
		}
		f.answered, f.lastAnswer, f.lastErr, f.silent = true, now, nil, false
	default:
		f.lastErr = err
		if f.answered && !f.silent {
			f.silent = true
			f.log.Warn("hardware watchdog: the cell does not answer", "health", f.url, "err", err,
				"feeding_stops_after", f.stale)
		}
	}
	running, err := f.procs()
	if err != nil {
		// Unreadable /proc counts as no process seen.
		f.log.Warn("hardware watchdog: processes unreadable", "err", err)
		return
	}
	for _, p := range f.watch {
		if running[p] {
			f.lastSeen[p] = now
		}
	}
}

// verdict is "" while the device is to be fed, else why not.
func (f *feeder) verdict(now time.Time) string {
	if now.Sub(f.armed) < f.grace {
		return ""
	}
	if !f.answered {
		return fmt.Sprintf("the cell did not answer %s within the boot grace period of %s (%v)", f.url, f.grace, f.lastErr)
	}
	if since := now.Sub(f.lastAnswer); since > f.stale {
		return fmt.Sprintf("the cell has not answered %s for %s (%v)", f.url, since.Round(time.Second), f.lastErr)
	}
	for _, p := range f.watch {
		if since := now.Sub(f.lastSeen[p]); since > f.stale {
			return fmt.Sprintf("the supervised program %s has had no process for %s", p, since.Round(time.Second))
		}
	}
	return ""
}

// healthProbe asks the cell's /health whether it answers at all.
type healthProbe struct {
	url    string
	client *http.Client
}

func newHealthProbe(url string) healthProbe {
	return healthProbe{url: url, client: &http.Client{
		// A new connection every time: a server that hangs is seen at once.
		Transport: &http.Transport{DisableKeepAlives: true},
		// Any answer is an answer, a redirect too.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// answer returns nil when the cell answered, whatever the status.
func (p healthProbe) answer(ctx context.Context) error {
	if p.url == "" {
		return errors.New("no health URL in the release")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("no answer within the check's deadline")
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil
}

// supervisedPrograms returns the executables of PID 1's children, read from
// procDir (/proc): the supervised programs that have a process now. Zombies
// (whose exe link is gone) do not count.
func supervisedPrograms(procDir string) (map[string]bool, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := filepath.Join(procDir, e.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if ppid, ok := parentPID(stat); !ok || ppid != 1 {
			continue
		}
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil {
			continue
		}
		out[exe] = true
	}
	return out, nil
}

// parentPID reads the parent's PID from a /proc/<pid>/stat line:
// "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
func parentPID(stat []byte) (int, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	return ppid, err == nil
}
