package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/release"
)

// ErrBusy is returned while another update is being applied or is waiting for
// its trial boot.
var ErrBusy = errors.New("an update is already in progress")

// ErrTooLarge is returned for a root that does not fit its partition.
var ErrTooLarge = errors.New("root does not fit the root partition")

// Updater applies bundles on the device.
type Updater struct {
	Release *release.Release // of the running root
	Slots   Slots
	Boot    BootConfig
	State   StateStore
	Log     *slog.Logger
	Now     func() time.Time

	mu sync.Mutex
}

func (u *Updater) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now().UTC()
}

func (u *Updater) log() *slog.Logger {
	if u.Log != nil {
		return u.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Expect is what this device accepts.
func (u *Updater) Expect() (bundle.Expect, error) {
	exp := bundle.Expect{Target: u.Release.Target, Running: u.Release.Version}
	if u.Release.PublicKey == "" {
		return exp, bundle.ErrNoKey
	}
	k, err := bundle.ParsePublicKey(u.Release.PublicKey)
	if err != nil {
		return exp, fmt.Errorf("%w: %v", bundle.ErrNoKey, err)
	}
	exp.Key = k
	return exp, nil
}

// Apply checks the bundle at path completely, then writes its root to the
// inactive slot and marks it for a trial at the next boot. The caller reboots.
// Every refusal (a bundle error, ErrBusy, ErrTooLarge) happens before anything
// is written.
func (u *Updater) Apply(ctx context.Context, path string) (*bundle.Manifest, error) {
	if !u.mu.TryLock() {
		return nil, ErrBusy
	}
	defer u.mu.Unlock()
	log := u.log()

	st, err := u.State.Load()
	if err != nil {
		return nil, err
	}
	// While a trial runs, the inactive slot is the old root, the way back: it
	// must not be overwritten. A pending update may be replaced by a newer one.
	if st.Phase == PhaseTrying {
		return nil, fmt.Errorf("%w: version %s is on trial", ErrBusy, st.Version)
	}
	exp, err := u.Expect()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, cmdline, err := verify(f, exp)
	if err != nil {
		log.Warn("update refused", "err", err)
		return nil, err
	}
	active, err := u.Slots.Active()
	if err != nil {
		return nil, err
	}
	target := Other(active)
	root, _ := m.Part(bundle.PartRoot)
	size, err := u.Slots.Size(target)
	if err != nil {
		return nil, err
	}
	if root.Size > size {
		return nil, fmt.Errorf("%w: %d bytes, partition %d holds %d", ErrTooLarge, root.Size, target, size)
	}
	var plan KernelPlan
	var kb KernelBoot
	if m.HasKernel() {
		var ok bool
		if kb, ok = u.Boot.(KernelBoot); !ok {
			return nil, errors.New("this device cannot install boot files")
		}
		if plan, err = kb.PlanKernel(target, m.Version, m.BootParts(), cmdline); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// A pending kernel update that this one replaces has its trial armed:
	// the firmware must not boot it into the slot about to be rewritten.
	if st.Phase == PhasePending && st.Kernel != "" {
		kb, ok := u.Boot.(KernelBoot)
		if !ok {
			return nil, errors.New("this device cannot remove the pending kernel's trial")
		}
		if err := kb.Disarm(); err != nil {
			return nil, fmt.Errorf("removing the pending kernel's trial: %w", err)
		}
	}

	// From here on the inactive slot is written; the boot partition's
	// permanent files are not.
	log.Info("writing root", "version", m.Version, "slot", target, "bytes", root.Size, "kernel", plan.Kernel)
	st = State{Phase: PhaseWriting, Version: m.Version, Slot: target,
		FromVersion: u.Release.Version, FromSlot: active, Updated: u.now(),
		Kernel: plan.Kernel, Cmdline: plan.Cmdline}
	if err := u.State.Save(st); err != nil {
		return nil, err
	}
	fail := func(err error) (*bundle.Manifest, error) {
		st.Phase, st.Message, st.Updated = PhaseFailed, err.Error(), u.now()
		if serr := u.State.Save(st); serr != nil {
			log.Error("saving state", "err", serr)
		}
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	br, err := u.writeRoot(ctx, f, exp, target)
	if err != nil {
		return fail(err)
	}
	if m.HasKernel() {
		// "pending" before the trial is armed: from the moment the trial
		// entry exists, any boot may be the trial's, and its init must
		// find the state saying so.
		st.Phase, st.Updated = PhasePending, u.now()
		if err := u.State.Save(st); err != nil {
			return fail(err)
		}
		log.Info("writing boot files", "version", m.Version, "dir", plan.Dir, "files", len(plan.Files))
		if err := kb.InstallKernel(plan, func() (bundle.Part, io.Reader, error) {
			p, r, err := br.Next()
			return p, ctxReader{ctx, r}, err
		}); err != nil {
			if derr := kb.Disarm(); derr != nil {
				log.Error("removing the trial after a failed install", "err", derr)
			}
			return fail(err)
		}
		log.Info("root and kernel written; the firmware boots them once on trial", "version", m.Version, "slot", target, "kernel", plan.Kernel)
		return m, nil
	}
	st.Phase, st.Updated = PhasePending, u.now()
	if err := u.State.Save(st); err != nil {
		return fail(err)
	}
	log.Info("root written; the next boot tries it", "version", m.Version, "slot", target)
	return m, nil
}

// maxCmdline bounds a bundle's cmdline.txt, which the device reads into memory.
const maxCmdline = 4096

// verify reads the whole bundle and checks everything, as bundle.Verify does,
// keeping the boot files' cmdline.txt, which the device rewrites with its own
// root= before the boot files are written.
func verify(r io.Reader, exp bundle.Expect) (*bundle.Manifest, []byte, error) {
	br, err := bundle.Open(r, exp)
	if err != nil {
		return nil, nil, err
	}
	var cmdline []byte
	for {
		p, pr, err := br.Next()
		if err == io.EOF {
			return br.Manifest, cmdline, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if p.BootPath() == "cmdline.txt" && p.Name != bundle.PartRoot {
			if p.Size > maxCmdline {
				return nil, nil, fmt.Errorf("%w: cmdline.txt is %d bytes, at most %d", bundle.ErrFormat, p.Size, maxCmdline)
			}
			if cmdline, err = io.ReadAll(pr); err != nil {
				return nil, nil, err
			}
			continue
		}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			return nil, nil, err
		}
	}
}

// writeRoot streams the root from the bundle into the slot (the reader checks
// the hash again: the file could have changed since Verify), syncs, and reads it
// back to prove the partition holds what was signed.
// It returns the bundle reader, positioned after the root, for the boot files.
func (u *Updater) writeRoot(ctx context.Context, f io.Reader, exp bundle.Expect, slot int) (*bundle.Reader, error) {
	br, err := bundle.Open(f, exp)
	if err != nil {
		return nil, err
	}
	part, r, err := br.Next()
	if err != nil {
		return nil, err
	}
	dst, err := u.Slots.Open(slot)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	if _, err := io.Copy(dst, ctxReader{ctx, r}); err != nil {
		return nil, err
	}
	if err := dst.Sync(); err != nil {
		return nil, err
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.CopyN(h, dst, part.Size); err != nil {
		return nil, fmt.Errorf("reading back slot %d: %w", slot, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != part.SHA256 {
		return nil, fmt.Errorf("slot %d reads back with SHA-256 %s, want %s", slot, got, part.SHA256)
	}
	return br, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Status is what GET /api/system/update reports.
type Status struct {
	Running     string `json:"running_version"`
	Target      string `json:"target"`
	Slot        int    `json:"root_slot"`
	Permanent   int    `json:"permanent_slot"`
	State       State  `json:"update"`
	UpdateReady bool   `json:"update_key_configured"`
}

// Status reads the current state.
func (u *Updater) Status() (Status, error) {
	s := Status{Running: u.Release.Version, Target: u.Release.Target, UpdateReady: u.Release.PublicKey != ""}
	var err error
	if s.Slot, err = u.Slots.Active(); err != nil {
		return s, err
	}
	if s.Permanent, err = u.Boot.Permanent(); err != nil {
		return s, err
	}
	s.State, err = u.State.Load()
	return s, err
}

// Outcome returns a finished update's state that has not been reported (written
// to the audit log) yet; ok is false if there is none.
func (u *Updater) Outcome() (State, bool, error) {
	st, err := u.State.Load()
	if err != nil || !st.Phase.Terminal() || st.Reported {
		return st, false, err
	}
	return st, true, nil
}

// MarkReported records that the outcome has been written to the audit log.
func (u *Updater) MarkReported() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.State.Load()
	if err != nil {
		return err
	}
	st.Reported = true
	return u.State.Save(st)
}
