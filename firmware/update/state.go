package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Phase is where an update is.
type Phase string

const (
	PhaseIdle       Phase = ""            // no update has run
	PhaseWriting    Phase = "writing"     // the inactive root is being written
	PhasePending    Phase = "pending"     // written; the next boot tries it
	PhaseTrying     Phase = "trying"      // booted once on trial
	PhaseCommitted  Phase = "committed"   // healthy and permanent
	PhaseRolledBack Phase = "rolled_back" // not healthy; the old root runs
	PhaseFailed     Phase = "failed"      // stopped before the trial (write interrupted or failed)
)

// State is the update's persistent state, on /perm.
type State struct {
	Phase       Phase  `json:"phase"`
	Version     string `json:"version,omitempty"` // the version being installed
	Slot        int    `json:"slot,omitempty"`    // the partition it goes to
	FromVersion string `json:"from_version,omitempty"`
	FromSlot    int    `json:"from_slot,omitempty"`
	Message     string `json:"message,omitempty"`
	// Kernel is set for an update that carries boot files: the path the boot
	// loader loads its kernel from ("/slot-b/vmlinuz"), booted on trial by
	// the firmware; Cmdline is the command line it boots with.
	Kernel  string    `json:"kernel,omitempty"`
	Cmdline string    `json:"cmdline,omitempty"`
	Updated time.Time `json:"updated"`
	// Reported is set once the daemon has written the outcome to the audit log.
	Reported bool `json:"reported,omitempty"`
}

// Terminal reports whether the phase is an outcome (nothing more will happen).
func (p Phase) Terminal() bool {
	return p == PhaseCommitted || p == PhaseRolledBack || p == PhaseFailed
}

// StateStore keeps the State.
type StateStore interface {
	Load() (State, error)
	Save(State) error
}

// StateFile keeps the State in a JSON file, replaced atomically.
type StateFile struct{ Path string }

// DefaultStatePath is where the device keeps the update state.
const DefaultStatePath = "/perm/cell-firmware/state.json"

// Load returns the zero State when the file does not exist yet.
func (f StateFile) Load() (State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("%s: %w", f.Path, err)
	}
	return s, nil
}

// Save writes a temporary file, syncs it, renames it over the old one and syncs
// the directory: after a power cut the file is either the old or the new state.
func (f StateFile) Save(s State) error {
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
