package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pic-cell/cell/firmware/release"
)

// Trial is the init's half of an update: the trial switch at boot and the
// health watch that commits or rolls back (steps 4 to 7 of the package doc).
type Trial struct {
	Release *release.Release // of the running root
	Slots   Slots
	Boot    BootConfig
	State   StateStore
	Log     *slog.Logger
	// Health checks the new system once; nil means CheckHealth(Release.HealthURL).
	Health func(ctx context.Context) error
	// SwitchRoot mounts the root in slot and executes its init. It returns only
	// when that failed.
	SwitchRoot func(slot int) error
	// Reboot restarts the device (the old root comes up).
	Reboot func() error
	// Interval between health checks (default 2s).
	Interval time.Duration
	Now      func() time.Time
}

func (t *Trial) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now().UTC()
}

func (t *Trial) log() *slog.Logger {
	if t.Log != nil {
		return t.Log
	}
	return slog.New(slog.DiscardHandler)
}

// AtBoot runs once per boot, after gokrazy.Boot has mounted /perm. If an update
// waits for its trial, it switches into the new root and does not return. It
// returns true when this boot is itself a trial; the caller then runs Watch.
func (t *Trial) AtBoot() (onTrial bool, err error) {
	st, err := t.State.Load()
	if err != nil {
		return false, err
	}
	active, err := t.Slots.Active()
	if err != nil {
		return false, err
	}
	log := t.log()
	save := func(p Phase, msg string) error {
		st.Phase, st.Message, st.Updated = p, msg, t.now()
		return t.State.Save(st)
	}
	switch st.Phase {
	case PhaseWriting:
		log.Warn("an update was interrupted while writing the root", "version", st.Version)
		return false, save(PhaseFailed, "interrupted while writing the root (power cut or crash); the old root runs")

	case PhasePending:
		if st.Kernel != "" {
			return t.kernelAtBoot(st, active, save)
		}
		if active != st.FromSlot {
			return false, save(PhaseFailed, fmt.Sprintf("update for slot %d was pending, but the device booted slot %d", st.Slot, active))
		}
		// "trying" first: if the new root never comes back to say otherwise, the
		// next boot (on this root) knows the trial was used up.
		if err := save(PhaseTrying, ""); err != nil {
			return false, err
		}
		log.Info("trial boot: switching to the new root", "version", st.Version, "slot", st.Slot)
		err := t.SwitchRoot(st.Slot)
		log.Error("trial boot: could not start the new root", "err", err)
		return false, save(PhaseRolledBack, fmt.Sprintf("could not start the new root: %v", err))

	case PhaseTrying:
		if active == st.Slot {
			log.Info("on trial", "version", st.Version, "deadline", t.Release.TrialTimeout)
			return true, nil
		}
		log.Warn("back on the old root after a failed trial", "version", st.Version)
		t.disarm()
		return false, save(PhaseRolledBack, fmt.Sprintf(
			"the trial boot of version %s did not report healthy (it crashed, hung or lost power); back on version %s",
			st.Version, st.FromVersion))
	}
	return false, nil
}

// kernelAtBoot handles a pending update that carries a kernel: the firmware,
// not this init, boots it on trial. Running from the new slot means the trial
// entry's kernel reached init: this boot is the trial. Running from the old
// slot means the firmware came back to the permanent entry: the new kernel
// used its one try without reaching init (it panicked, hung until a watchdog
// or a power cut), or the update was cut off before its trial was armed.
func (t *Trial) kernelAtBoot(st State, active int, save func(Phase, string) error) (bool, error) {
	log := t.log()
	switch active {
	case st.Slot:
		log.Info("trial boot of a new kernel and root", "version", st.Version, "kernel", st.Kernel, "deadline", t.Release.TrialTimeout)
		return true, save(PhaseTrying, "")
	default:
		log.Warn("back on the old system: the new kernel never reached init", "version", st.Version, "kernel", st.Kernel)
		t.disarm()
		return false, save(PhaseRolledBack, fmt.Sprintf(
			"the new kernel of version %s never reached the cell's init (the boot loader's one try was used up: "+
				"the kernel panicked or hung, or power was lost before its trial); back on version %s",
			st.Version, st.FromVersion))
	}
}

// disarm removes a kernel trial's boot files that a boot no longer needs
// (logged, not fatal: the firmware does not boot a used-up trial again).
func (t *Trial) disarm() {
	if kb, ok := t.Boot.(KernelBoot); ok {
		if err := kb.Disarm(); err != nil {
			t.log().Error("removing the trial's boot entry", "err", err)
		}
	}
}

// Watch polls the new system's health for at most Release.TrialTimeout. Healthy:
// the boot partition is switched to this root for good. Otherwise the outcome is
// recorded and the device reboots into the old root.
func (t *Trial) Watch(ctx context.Context) error {
	health := t.Health
	if health == nil {
		url := t.Release.HealthURL
		health = func(ctx context.Context) error { return CheckHealth(ctx, url) }
	}
	interval := t.Interval
	if interval == 0 {
		interval = 2 * time.Second
	}
	start := time.Now()
	deadline, cancel := context.WithTimeout(ctx, t.Release.TrialTimeout)
	defer cancel()
	var last error
	for {
		last = health(deadline)
		if last == nil {
			return t.commit(time.Since(start))
		}
		select {
		case <-deadline.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return t.rollback(last)
		case <-time.After(interval):
		}
	}
}

func (t *Trial) commit(took time.Duration) error {
	st, err := t.State.Load()
	if err != nil {
		return err
	}
	// Boot partition first: if power is cut between the two writes, the next
	// boot runs this root, still "trying", and checks health again.
	if st.Kernel != "" {
		kb, ok := t.Boot.(KernelBoot)
		if !ok {
			return errors.New("commit: this device cannot install boot files")
		}
		if err := kb.Bless(st); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	} else if err := t.Boot.SetPermanent(st.Slot); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	st.Phase, st.Updated = PhaseCommitted, t.now()
	st.Message = fmt.Sprintf("healthy %s after start; version %s is permanent", took.Round(time.Second), st.Version)
	t.log().Info("update committed", "version", st.Version, "slot", st.Slot)
	return t.State.Save(st)
}

func (t *Trial) rollback(reason error) error {
	st, err := t.State.Load()
	if err != nil {
		return err
	}
	if err := t.Boot.SetPermanent(st.FromSlot); err != nil {
		t.log().Error("rollback: boot partition", "err", err)
	}
	if st.Kernel != "" {
		t.disarm()
	}
	st.Phase, st.Updated = PhaseRolledBack, t.now()
	st.Message = fmt.Sprintf("version %s was not healthy within %s (%v); back on version %s",
		st.Version, t.Release.TrialTimeout, reason, st.FromVersion)
	t.log().Warn("update rolled back", "version", st.Version, "reason", reason)
	if err := t.State.Save(st); err != nil {
		return err
	}
	return t.Reboot()
}

// CheckHealth asks url once: healthy is 200 with a JSON object whose "ok" is true
// (the daemon's /health says so only when its parts are up).
func CheckHealth(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s", resp.Status)
	}
	var h struct {
		OK *bool `json:"ok"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if h.OK == nil || !*h.OK {
		return errors.New("health: not ok")
	}
	return nil
}

// GokrazyReboot asks gokrazy's init, over its Unix socket (never on the LAN),
// to stop every service, unmount /perm and reboot: the orderly way, so that the
// daemon closes its database. gokrazy reboots amd64 by kexec, loading /vmlinuz
// with cmdline.txt and bypassing UEFI and systemd-boot; that is asked for only
// when it boots what the firmware would (FATBoot.KexecSafe): never while a
// kernel trial is armed, never once a bundle's kernel is permanent.
func GokrazyReboot() error {
	kexec := false
	if path, err := (BlockSlots{}).BootPath(); err == nil {
		kexec, _ = FATBoot{Open: OpenFile(path)}.KexecSafe()
	}
	return gokrazyReboot(kexec)
}

func gokrazyReboot(kexec bool) error {
	body := ""
	if !kexec {
		body = "kexec=off"
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", "/run/gokrazy-http.sock")
		},
	}}
	resp, err := client.Post("http://gokrazy/reboot", "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gokrazy reboot: %s", resp.Status)
	}
	return nil
}
