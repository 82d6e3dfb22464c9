package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/release"
)

// Device is the firmware as a program on the device (the daemon) sees it: what
// runs, and a way to install a bundle. It is what the API's /api/system routes
// call.
type Device struct {
	Updater  *Updater
	SpoolDir string
	// Reboot restarts the device after an accepted bundle (default
	// GokrazyReboot; for a Pi kernel bundle TrybootReboot).
	Reboot func() error
	// RebootDelay lets the HTTP answer reach the client first (default 2s).
	RebootDelay time.Duration
	Log         *slog.Logger
	// Report writes a finished update's outcome to the audit log. Install
	// calls it before a new update overwrites the state, and WatchOutcomes
	// calls it as outcomes appear, so that each outcome is reported once.
	Report func(State) error

	reportMu sync.Mutex
}

// ErrNotDevice is returned by OpenDevice where there is no firmware (a
// developer machine running the daemon).
var ErrNotDevice = errors.New("not running from a cell firmware image")

// OpenDevice returns the Device when the process runs from a cell image: the
// root carries release.Path and /perm is mounted.
func OpenDevice(log *slog.Logger) (*Device, error) {
	rel, err := release.Load(release.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotDevice
	}
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat("/perm"); err != nil {
		return nil, ErrNotDevice
	}
	slots := BlockSlots{}
	bootPath, err := slots.BootPath()
	if err != nil {
		return nil, err
	}
	return &Device{
		Updater: &Updater{Release: rel, Slots: slots, Boot: FATBoot{Open: OpenFile(bootPath)},
			State: StateFile{Path: DefaultStatePath}, Log: log},
		SpoolDir: filepath.Dir(DefaultStatePath),
		Log:      log,
	}, nil
}

// Info is what GET /api/system/info reports.
type Info struct {
	Version       string    `json:"version"`
	Target        string    `json:"target"`
	Hostname      string    `json:"hostname"`
	Built         time.Time `json:"built"`
	RootSlot      string    `json:"root_slot"` // "A" or "B"
	PermanentSlot string    `json:"permanent_slot"`
	UptimeSeconds int64     `json:"uptime_seconds"`
}

// SlotName names a root partition the way people say it.
func SlotName(slot int) string {
	switch slot {
	case SlotA:
		return "A"
	case SlotB:
		return "B"
	}
	return strconv.Itoa(slot)
}

// Info reads what runs.
func (d *Device) Info() (Info, error) {
	r := d.Updater.Release
	info := Info{Version: r.Version, Target: r.Target, Hostname: r.Hostname, Built: r.Built}
	active, err := d.Updater.Slots.Active()
	if err != nil {
		return info, err
	}
	perm, err := d.Updater.Boot.Permanent()
	if err != nil {
		return info, err
	}
	info.RootSlot, info.PermanentSlot = SlotName(active), SlotName(perm)
	info.UptimeSeconds = uptime()
	return info, nil
}

func uptime() int64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return int64(f)
}

// Status is GET /api/system/update.
func (d *Device) Status() (Status, error) { return d.Updater.Status() }

// ReportOutcome passes an unreported outcome to Report, once.
func (d *Device) ReportOutcome() error {
	if d.Report == nil {
		return nil
	}
	d.reportMu.Lock()
	defer d.reportMu.Unlock()
	st, ok, err := d.Updater.Outcome()
	if err != nil || !ok {
		return err
	}
	if err := d.Report(st); err != nil {
		return err
	}
	return d.Updater.MarkReported()
}

// WatchOutcomes reports outcomes until ctx ends. It keeps looking because a
// trial's commit happens after the daemon is up: its health is what the
// commit waits for.
func (d *Device) WatchOutcomes(ctx context.Context, every time.Duration) {
	for {
		if err := d.ReportOutcome(); err != nil && d.Log != nil {
			d.Log.Error("reporting the update outcome", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Install spools body (at most max bytes) to /perm, applies it and, when it was
// accepted, reboots the device after RebootDelay. The spool file is removed in
// every case.
func (d *Device) Install(ctx context.Context, body io.Reader, max int64) (*bundle.Manifest, error) {
	if err := os.MkdirAll(d.SpoolDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.SpoolDir, "incoming-*.bundle")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, io.LimitReader(body, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("receiving the bundle: %w", err)
	}
	if n > max {
		return nil, fmt.Errorf("%w: bundle larger than %d bytes", bundle.ErrFormat, max)
	}
	// The previous outcome goes to the audit log before this update's state
	// replaces it.
	if err := d.ReportOutcome(); err != nil {
		return nil, err
	}
	m, err := d.Updater.Apply(ctx, f.Name())
	if err != nil {
		return nil, err
	}
	reboot, delay := d.Reboot, d.RebootDelay
	switch {
	case reboot != nil:
	case m.HasKernel() && d.Updater.Release.Target == "rpi":
		// The Pi's firmware boots the trial only after a reboot with
		// the tryboot flag.
		reboot = TrybootReboot
	default:
		// Through the firmware when a trial entry is armed (see
		// GokrazyReboot).
		reboot = GokrazyReboot
	}
	if delay == 0 {
		delay = 2 * time.Second
	}
	go func() {
		time.Sleep(delay)
		if err := reboot(); err != nil && d.Log != nil {
			d.Log.Error("reboot for the trial boot", "err", err)
		}
	}()
	return m, nil
}

// MaxBundle is the largest bundle worth receiving: a root that fills the
// inactive partition and boot files that fill the boot partition, plus room
// for the manifest and the tar headers.
func (d *Device) MaxBundle() int64 {
	active, err := d.Updater.Slots.Active()
	if err != nil {
		return 0
	}
	size, err := d.Updater.Slots.Size(Other(active))
	if err != nil {
		return 0
	}
	boot, err := d.Updater.Slots.Size(1)
	if err != nil {
		boot = 0
	}
	return size + boot + 2<<20
}
