package update

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/release"
)

const testCmdline = "root=PARTUUID=0bb32fb8-b49e-40bd-afa9-53f7dd8b224a/PARTNROFF=1 rootfstype=squashfs ro init=/gokrazy/init rootwait panic=10\n"

// newBootFAT writes a 40 MiB FAT32 boot partition like the image builder's.
func newBootFAT(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot.fat")
	st, err := file.CreateFromPath(p, 40<<20)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := fat32.Create(st, 40<<20, 0, 512, "CELLBOOT", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Mkdir("/loader/entries"); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"/cmdline.txt":                 testCmdline,
		"/loader/entries/gokrazy.conf": "title cell\nlinux /vmlinuz\noptions " + testCmdline,
	} {
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	st.Close()
	return p
}

// fakeSlots are two root partitions in files; it counts opens so that a test
// can prove nothing was written.
type fakeSlots struct {
	dir    string
	active int
	size   int64
	opened int
}

func newFakeSlots(t *testing.T) *fakeSlots {
	s := &fakeSlots{dir: t.TempDir(), active: SlotA, size: 1 << 20}
	for _, slot := range []int{SlotA, SlotB} {
		if err := os.WriteFile(s.path(slot), make([]byte, s.size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *fakeSlots) path(slot int) string {
	return filepath.Join(s.dir, "slot"+string(rune('0'+slot)))
}
func (s *fakeSlots) Active() (int, error)      { return s.active, nil }
func (s *fakeSlots) Size(int) (int64, error)   { return s.size, nil }
func (s *fakeSlots) BootPath() (string, error) { return "", errors.New("fake") }
func (s *fakeSlots) Open(slot int) (SlotFile, error) {
	s.opened++
	return os.OpenFile(s.path(slot), os.O_RDWR, 0)
}

type env struct {
	t       *testing.T
	slots   *fakeSlots
	bootFAT string
	state   StateFile
	key     []byte
	rel     *release.Release
	u       *Updater
}

func newEnv(t *testing.T) *env {
	privPEM, pub, err := bundle.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, slots: newFakeSlots(t), bootFAT: newBootFAT(t), key: privPEM,
		state: StateFile{Path: filepath.Join(t.TempDir(), "perm", "state.json")},
		rel:   &release.Release{Version: "1.0.0", Target: "amd64", PublicKey: pub, TrialTimeout: time.Second}}
	e.u = &Updater{Release: e.rel, Slots: e.slots, Boot: FATBoot{Open: OpenFile(e.bootFAT)}, State: e.state}
	return e
}

// makeBundle writes a bundle of a random root of n bytes.
func (e *env) makeBundle(m bundle.Manifest, n int) (path string, root []byte) {
	e.t.Helper()
	key, err := bundle.ParsePrivateKey(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	root = make([]byte, n)
	rand.Read(root)
	dir := e.t.TempDir()
	rp := filepath.Join(dir, "root")
	if err := os.WriteFile(rp, root, 0o644); err != nil {
		e.t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, m, map[string]string{bundle.PartRoot: rp}, key); err != nil {
		e.t.Fatal(err)
	}
	path = filepath.Join(dir, "b.bundle")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path, root
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

func TestApplyWritesInactiveSlotAndLeavesBootAlone(t *testing.T) {
	e := newEnv(t)
	bootBefore := readFile(t, e.bootFAT)
	path, root := e.makeBundle(bundle.Manifest{Version: "1.1.0", Target: "amd64"}, 200_000)
	m, err := e.u.Apply(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.1.0" {
		t.Errorf("manifest version %q, want 1.1.0", m.Version)
	}
	got := readFile(t, e.slots.path(SlotB))
	if !bytes.Equal(got[:len(root)], root) {
		t.Error("slot B does not hold the bundle's root")
	}
	if a := readFile(t, e.slots.path(SlotA)); !bytes.Equal(a, make([]byte, e.slots.size)) {
		t.Error("the active slot A was written")
	}
	if !bytes.Equal(readFile(t, e.bootFAT), bootBefore) {
		t.Error("Apply changed the boot partition; only the trial commit may")
	}
	st, _ := e.state.Load()
	want := State{Phase: PhasePending, Version: "1.1.0", Slot: SlotB, FromVersion: "1.0.0", FromSlot: SlotA}
	st.Updated = time.Time{}
	if st != want {
		t.Errorf("state %+v, want %+v", st, want)
	}
}

// replaceEntry rewrites a bundle with one tar entry's content changed.
func replaceEntry(t *testing.T, b []byte, name string, change func([]byte)) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			change(content)
		}
		tw.WriteHeader(h)
		tw.Write(content)
	}
	tw.Close()
	return out.Bytes()
}

func TestApplyRefusalsWriteNothing(t *testing.T) {
	good := bundle.Manifest{Version: "1.1.0", Target: "amd64"}
	tests := []struct {
		name   string
		m      bundle.Manifest
		size   int
		mangle func(b, root []byte) []byte // may use t below
		noKey  bool
		want   error
	}{
		{name: "flipped bit", m: good, size: 100_000, want: bundle.ErrHash, mangle: func(b, root []byte) []byte {
			b[bytes.Index(b, root[:64])+5000] ^= 1
			return b
		}},
		{name: "truncated root", m: good, size: 100_000, want: bundle.ErrHash, mangle: func(b, root []byte) []byte {
			return b[:bytes.Index(b, root[:64])+50_000]
		}},
		{name: "wrong signature", m: good, size: 1000, want: bundle.ErrSignature, mangle: func(b, root []byte) []byte {
			return replaceEntry(t, b, bundle.SignatureName, func(sig []byte) { sig[10] ^= 0xff })
		}},
		{name: "wrong target", m: bundle.Manifest{Version: "1.1.0", Target: "rpi"}, size: 1000, want: bundle.ErrTarget},
		{name: "older version", m: bundle.Manifest{Version: "0.9.9", Target: "amd64"}, size: 1000, want: bundle.ErrVersion},
		{name: "below minimum", m: bundle.Manifest{Version: "3.0", Target: "amd64", MinVersion: "2.0"}, size: 1000, want: bundle.ErrVersion},
		{name: "too large", m: good, size: 2 << 20, want: ErrTooLarge},
		{name: "no key on the device", m: good, size: 1000, noKey: true, want: bundle.ErrNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			prev := State{Phase: PhaseCommitted, Version: "1.0.0", Slot: SlotA, Message: "earlier update"}
			if err := e.state.Save(prev); err != nil {
				t.Fatal(err)
			}
			path, root := e.makeBundle(tt.m, tt.size)
			if tt.mangle != nil {
				if err := os.WriteFile(path, tt.mangle(readFile(t, path), root), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.noKey {
				e.rel.PublicKey = ""
			}
			bootBefore := readFile(t, e.bootFAT)
			stateBefore := readFile(t, e.state.Path)
			_, err := e.u.Apply(context.Background(), path)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Apply: got %v, want %v", err, tt.want)
			}
			if e.slots.opened != 0 {
				t.Errorf("a root slot was opened %d times", e.slots.opened)
			}
			if !bytes.Equal(readFile(t, e.bootFAT), bootBefore) {
				t.Error("boot partition changed")
			}
			if !bytes.Equal(readFile(t, e.state.Path), stateBefore) {
				t.Error("update state changed")
			}
			if p, _ := e.u.Boot.Permanent(); p != SlotA {
				t.Errorf("permanent root %d, want %d", p, SlotA)
			}
		})
	}
}

func TestApplyRefusedDuringTrial(t *testing.T) {
	e := newEnv(t)
	e.state.Save(State{Phase: PhaseTrying, Version: "1.0.0", Slot: SlotA, FromSlot: SlotB})
	path, _ := e.makeBundle(bundle.Manifest{Version: "1.1.0", Target: "amd64"}, 1000)
	if _, err := e.u.Apply(context.Background(), path); !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	if e.slots.opened != 0 {
		t.Error("slot written during a trial")
	}
}

func TestFATBootSwitch(t *testing.T) {
	e := newEnv(t)
	b := FATBoot{Open: OpenFile(e.bootFAT)}
	before := readFile(t, e.bootFAT)
	for _, slot := range []int{SlotB, SlotB, SlotA, SlotB} {
		if err := b.SetPermanent(slot); err != nil {
			t.Fatal(err)
		}
		got, err := b.Permanent()
		if err != nil || got != slot {
			t.Fatalf("Permanent() = %d, %v; want %d", got, err, slot)
		}
	}
	after := readFile(t, e.bootFAT)
	var diffs int
	for i := range before {
		if before[i] != after[i] {
			diffs++
		}
	}
	// One digit in each of the two command line files, nothing else.
	if diffs != 2 {
		t.Errorf("%d bytes differ, want 2", diffs)
	}
	if !strings.Contains(string(after), "/PARTNROFF=2 rootfstype") {
		t.Error("command line does not name root B")
	}
	if err := b.SetPermanent(4); err == nil {
		t.Error("SetPermanent(4) succeeded: perm is not a root")
	}
}

// trialEnv is a device booted with an update pending from A to B.
func trialEnv(t *testing.T) (*env, *Trial, *[]int, *int) {
	e := newEnv(t)
	var switched []int
	reboots := 0
	tr := &Trial{Release: e.rel, Slots: e.slots, Boot: e.u.Boot, State: e.state,
		SwitchRoot: func(slot int) error { switched = append(switched, slot); return errors.New("fake: no exec") },
		Reboot:     func() error { reboots++; return nil },
		Interval:   10 * time.Millisecond}
	e.state.Save(State{Phase: PhasePending, Version: "1.1.0", Slot: SlotB, FromVersion: "1.0.0", FromSlot: SlotA})
	return e, tr, &switched, &reboots
}

func TestTrialSwitchHappensOnce(t *testing.T) {
	e, tr, switched, _ := trialEnv(t)
	onTrial, err := tr.AtBoot()
	if err != nil || onTrial {
		t.Fatalf("AtBoot on the old root = %v, %v; want false, nil", onTrial, err)
	}
	if len(*switched) != 1 || (*switched)[0] != SlotB {
		t.Fatalf("switched to %v, want [3]", *switched)
	}
	// The fake switch failed, so this boot stays on A and says why.
	st, _ := e.state.Load()
	if st.Phase != PhaseRolledBack || !strings.Contains(st.Message, "could not start") {
		t.Errorf("state %+v, want rolled_back with the reason", st)
	}
	// And the next boot does not try again.
	tr.AtBoot()
	if len(*switched) != 1 {
		t.Errorf("switched again: %v", *switched)
	}
}

func TestTrialCrashRollsBack(t *testing.T) {
	e, tr, _, _ := trialEnv(t)
	// Boot 1 (A): the switch "succeeds" (the state says trying), then the new
	// system dies without a word. Boot 2 comes up on A again.
	e.state.Save(State{Phase: PhaseTrying, Version: "1.1.0", Slot: SlotB, FromVersion: "1.0.0", FromSlot: SlotA})
	onTrial, err := tr.AtBoot()
	if err != nil || onTrial {
		t.Fatalf("AtBoot = %v, %v", onTrial, err)
	}
	st, _ := e.state.Load()
	if st.Phase != PhaseRolledBack || !strings.Contains(st.Message, "did not report healthy") {
		t.Errorf("state %+v, want rolled_back", st)
	}
}

func TestTrialHealthyCommits(t *testing.T) {
	e, tr, _, reboots := trialEnv(t)
	e.state.Save(State{Phase: PhaseTrying, Version: "1.1.0", Slot: SlotB, FromVersion: "1.0.0", FromSlot: SlotA})
	e.slots.active = SlotB // the new root runs
	onTrial, err := tr.AtBoot()
	if err != nil || !onTrial {
		t.Fatalf("AtBoot on the new root = %v, %v; want true", onTrial, err)
	}
	calls := 0
	tr.Health = func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("starting")
		}
		return nil
	}
	if err := tr.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p, _ := tr.Boot.Permanent(); p != SlotB {
		t.Errorf("permanent root %d after commit, want %d", p, SlotB)
	}
	st, _ := e.state.Load()
	if st.Phase != PhaseCommitted {
		t.Errorf("phase %q, want committed", st.Phase)
	}
	if *reboots != 0 {
		t.Errorf("rebooted %d times after a healthy trial", *reboots)
	}
	// The outcome is reported once.
	if _, ok, _ := e.u.Outcome(); !ok {
		t.Error("no outcome to report")
	}
	e.u.MarkReported()
	if _, ok, _ := e.u.Outcome(); ok {
		t.Error("outcome reported twice")
	}
}

func TestTrialUnhealthyRollsBack(t *testing.T) {
	e, tr, _, reboots := trialEnv(t)
	e.state.Save(State{Phase: PhaseTrying, Version: "1.1.0", Slot: SlotB, FromVersion: "1.0.0", FromSlot: SlotA})
	e.slots.active = SlotB
	e.rel.TrialTimeout = 100 * time.Millisecond
	tr.Health = func(context.Context) error { return errors.New("database not open") }
	start := time.Now()
	if err := tr.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("rollback took %s, want about the 100ms deadline", d)
	}
	if *reboots != 1 {
		t.Errorf("rebooted %d times, want 1", *reboots)
	}
	if p, _ := tr.Boot.Permanent(); p != SlotA {
		t.Errorf("permanent root %d, want the old %d", p, SlotA)
	}
	st, _ := e.state.Load()
	if st.Phase != PhaseRolledBack || !strings.Contains(st.Message, "database not open") {
		t.Errorf("state %+v, want rolled_back naming the reason", st)
	}
}

func TestInterruptedWriteIsReported(t *testing.T) {
	e, tr, switched, _ := trialEnv(t)
	e.state.Save(State{Phase: PhaseWriting, Version: "1.1.0", Slot: SlotB, FromSlot: SlotA})
	if onTrial, _ := tr.AtBoot(); onTrial || len(*switched) != 0 {
		t.Fatal("an interrupted write must not be tried")
	}
	st, _ := e.state.Load()
	if st.Phase != PhaseFailed {
		t.Errorf("phase %q, want failed", st.Phase)
	}
}

func TestDeviceInstallReportsPreviousOutcomeThenReboots(t *testing.T) {
	e := newEnv(t)
	e.state.Save(State{Phase: PhaseCommitted, Version: "1.0.0", Slot: SlotA, Message: "healthy"})
	var reported []State
	rebooted := make(chan struct{}, 1)
	d := &Device{Updater: e.u, SpoolDir: t.TempDir(), RebootDelay: time.Millisecond,
		Reboot: func() error { rebooted <- struct{}{}; return nil },
		Report: func(s State) error { reported = append(reported, s); return nil }}
	path, _ := e.makeBundle(bundle.Manifest{Version: "1.1.0", Target: "amd64"}, 5000)
	f, _ := os.Open(path)
	defer f.Close()
	if _, err := d.Install(context.Background(), f, d.MaxBundle()); err != nil {
		t.Fatal(err)
	}
	if len(reported) != 1 || reported[0].Phase != PhaseCommitted || reported[0].Version != "1.0.0" {
		t.Errorf("reported %+v, want the earlier commit once", reported)
	}
	select {
	case <-rebooted:
	case <-time.After(5 * time.Second):
		t.Error("no reboot after an accepted bundle")
	}
	if entries, _ := os.ReadDir(d.SpoolDir); len(entries) != 0 {
		t.Errorf("spool not cleaned up: %v", entries)
	}
	// A refused bundle: no reboot.
	old, _ := e.makeBundle(bundle.Manifest{Version: "0.5.0", Target: "amd64"}, 5000)
	f3, _ := os.Open(old)
	defer f3.Close()
	if _, err := d.Install(context.Background(), f3, d.MaxBundle()); !errors.Is(err, bundle.ErrVersion) {
		t.Fatalf("older bundle: %v, want ErrVersion", err)
	}
	select {
	case <-rebooted:
		t.Error("rebooted after a refused bundle")
	case <-time.After(50 * time.Millisecond):
	}
}
