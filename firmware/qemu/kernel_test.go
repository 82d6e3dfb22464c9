package qemu_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/bootfs"
	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/update"
	"github.com/pic-cell/cell/httpapi/client"
)

// kernelBundle is a bundle of cfg's root with the kernel and command line a
// fresh image of cfg boots, the command line extended by extraCmdline (a
// marker the test finds in the booted kernel's command line, or arguments
// that make it panic), and extra boot files (boot path → host file).
func (f *fixture) kernelBundle(cfg *image.Config, extraCmdline string, extraBoot map[string]string) string {
	f.t.Helper()
	dir, err := os.MkdirTemp(f.dir, "kernel-bundle-")
	if err != nil {
		f.t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	o := image.Options{Dir: moduleRoot(f.t)}
	if err := image.BuildRoot(context.Background(), cfg, o, root); err != nil {
		f.t.Fatal(err)
	}
	parts, err := image.BundleBootFiles(cfg, o, dir)
	if err != nil {
		f.t.Fatal(err)
	}
	if extraCmdline != "" {
		p := parts[bundle.BootPrefix+"cmdline.txt"]
		b, err := os.ReadFile(p)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.TrimSpace(string(b))+" "+extraCmdline+"\n"), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	for name, src := range extraBoot {
		parts[bundle.BootPrefix+name] = src
	}
	parts[bundle.PartRoot] = root
	key, err := bundle.ParsePrivateKey(f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	p := filepath.Join(f.dir, "cell-"+cfg.Version+"-kernel.bundle")
	out, err := os.Create(p)
	if err != nil {
		f.t.Fatal(err)
	}
	defer out.Close()
	if err := bundle.Write(out, bundle.Manifest{Version: cfg.Version, Target: cfg.Target}, parts, key); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// bootFS opens the boot partition of a disk image as the host sees it.
func bootFS(t testing.TB, img string, layout image.Layout) (*bootfs.FS, func()) {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := bootfs.Open(io.NewSectionReader(fh, layout.Start[image.PartBoot], layout.Size[image.PartBoot]))
	if err != nil {
		fh.Close()
		t.Fatal(err)
	}
	return fs, func() { fh.Close() }
}

// bootEntries lists loader/entries on the image's boot partition.
func bootEntries(t testing.TB, img string, layout image.Layout) []string {
	t.Helper()
	fs, done := bootFS(t, img, layout)
	defer done()
	e, err := fs.Lookup(update.EntriesDir)
	if err != nil {
		t.Fatal(err)
	}
	all, err := fs.ReadDir(e.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range all {
		if x.Name != "." && x.Name != ".." {
			names = append(names, x.Name)
		}
	}
	return names
}

func readBootFile(t testing.TB, img string, layout image.Layout, name string) []byte {
	t.Helper()
	fs, done := bootFS(t, img, layout)
	defer done()
	b, err := fs.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firmwareBoots counts the boots through UEFI on the serial console (OVMF's
// boot manager says so; a kexec reboot goes straight to the next kernel).
func firmwareBoots(serial string) int { return strings.Count(serial, "BdsDxe: starting") }

var cmdlineRe = regexp.MustCompile(`Kernel command line: ([^\r\n]*)`)

// kernelCmdlines are the command lines of the kernels booted so far, from
// their first console line.
func kernelCmdlines(serial string) []string {
	var out []string
	for _, m := range cmdlineRe.FindAllStringSubmatch(serial, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestKernelUpdateTrialAndPanic runs the real cell through two kernel
// updates. (a) A bundle with a kernel (the same kernel binary, relabelled by a
// marker on its command line) is taken: the device reboots through the
// firmware (not kexec), systemd-boot boots the trial entry once, the kernel
// with the bundle's command line comes up on root B, the cell is healthy and
// the trial is blessed: the permanent entry names the new kernel and root.
// (b) A bundle whose kernel panics before init (init=/nonexistent): nothing
// on the device helps; systemd-boot's counter has used the entry's one try,
// so the next boot is the permanent entry's, the old system comes up, and the
// audit log says why.
func TestKernelUpdateTrialAndPanic(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	img := f.image(f.cellConfig("1.0.0"))
	layout := image.LayoutFor(f.cellConfig("1.0.0"))
	const marker = "cell.test=kernel-of-1.1.0"
	good := f.kernelBundle(f.cellConfig("1.1.0"), marker, nil)
	panicky := f.kernelBundle(f.cellConfig("1.2.0"), "init=/nonexistent panic=5", nil)

	v := bootCell(t, img, false)
	v.waitHealth(3 * time.Minute)
	a := newAPI(t, v)
	a.setupAndLogin(f.code)

	push := func(p string) {
		t.Helper()
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := a.PushUpdate(ctx, fh, nil); err != nil {
			t.Fatalf("push %s: %v", filepath.Base(p), err)
		}
	}
	// waitOutcome logs in again after each reboot and waits for the update
	// of version to end.
	waitOutcome := func(version string, timeout time.Duration) client.UpdateStatus {
		t.Helper()
		var st client.UpdateStatus
		var err error
		for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(3 * time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err = a.SystemUpdateStatus(ctx)
			if client.IsStatus(err, 401) {
				err = a.Login(ctx, "admin", adminPassword)
			}
			cancel()
			if err == nil && st.Update.Version == version &&
				(st.Update.Phase == "committed" || st.Update.Phase == "rolled_back" || st.Update.Phase == "failed") {
				return st
			}
		}
		t.Fatalf("update %s: no outcome within %s (last %+v, %v)", version, timeout, st, err)
		return st
	}

	// (a) a kernel that works.
	bootsBefore := firmwareBoots(v.serial.String())
	cmdlinesBefore := len(kernelCmdlines(v.serial.String()))
	start := time.Now()
	push(good)
	st := waitOutcome("1.1.0", 8*time.Minute)
	t.Logf("kernel update 1.0.0 → 1.1.0: %s after the push: %s", time.Since(start).Round(time.Second), st.Update.Message)
	if st.Update.Phase != "committed" || st.Running != "1.1.0" || st.Slot != update.SlotB || st.PermanentSlot != update.SlotB {
		t.Fatalf("after the kernel update: %+v, want 1.1.0 committed on slot 3", st)
	}
	serial := v.serial.String()
	checkBoots := firmwareBoots(serial) > 0
	if !checkBoots {
		t.Log("OVMF does not say on the console when it boots: the boots through the firmware are not counted")
	}
	if n := firmwareBoots(serial) - bootsBefore; checkBoots && n != 1 {
		t.Errorf("%d boots through the firmware for the kernel update, want 1 (not kexec)", n)
	}
	lines := kernelCmdlines(serial)[cmdlinesBefore:]
	if len(lines) != 1 || !strings.Contains(lines[0], marker) || !strings.Contains(lines[0], "/PARTNROFF=2") {
		t.Errorf("kernels booted for the update: %q, want one with the bundle's %s and root B", lines, marker)
	}
	entry := readBootFile(t, img, layout, update.PermanentEntry)
	if !bytes.Contains(entry, []byte("linux /slot-b/vmlinuz\n")) || !bytes.Contains(entry, []byte(marker)) {
		t.Errorf("the permanent entry after the commit:\n%s\nwant the new kernel and command line", entry)
	}
	if names := bootEntries(t, img, layout); len(names) != 1 || names[0] != "gokrazy.conf" {
		t.Errorf("boot entries after the commit: %q, want only gokrazy.conf", names)
	}

	// (b) a kernel that panics before init.
	bootsBefore = firmwareBoots(serial)
	cmdlinesBefore = len(lines) + cmdlinesBefore
	push(panicky)
	st = waitOutcome("1.2.0", 8*time.Minute)
	t.Logf("panicking kernel 1.2.0: %s", st.Update.Message)
	if st.Update.Phase != "rolled_back" || st.Running != "1.1.0" || st.Slot != update.SlotB || st.PermanentSlot != update.SlotB {
		t.Errorf("after the panicking kernel: %+v, want 1.1.0 rolled back on slot 3", st)
	}
	if !strings.Contains(st.Update.Message, "never reached the cell's init") {
		t.Errorf("rollback message %q, want it to say the kernel never reached init", st.Update.Message)
	}
	serial = v.serial.String()
	if !strings.Contains(serial, "Requested init /nonexistent failed") {
		t.Error("the trial kernel's panic is not on the console")
	}
	if n := firmwareBoots(serial) - bootsBefore; checkBoots && n != 2 {
		t.Errorf("%d boots through the firmware, want 2 (the trial, then the permanent entry)", n)
	}
	lines = kernelCmdlines(serial)[cmdlinesBefore:]
	if len(lines) != 2 || !strings.Contains(lines[0], "init=/nonexistent") || !strings.Contains(lines[1], marker) {
		t.Errorf("kernels booted: %q, want the trial's, then 1.1.0's", lines)
	}
	if names := bootEntries(t, img, layout); len(names) != 1 || names[0] != "gokrazy.conf" {
		t.Errorf("boot entries after the rollback: %q, want only gokrazy.conf (the used-up trial removed)", names)
	}
	if got := readBootFile(t, img, layout, update.PermanentEntry); !bytes.Equal(got, entry) {
		t.Errorf("the rollback changed the permanent entry:\n%s", got)
	}

	// The audit log says why, once the old system is up.
	var outcomes []client.AuditEntry
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		a.login()
		if outcomes = a.audit("system.update.outcome"); len(outcomes) >= 2 {
			break
		}
	}
	got := map[string]client.AuditEntry{}
	for _, e := range outcomes {
		got[e.TargetID] = e
	}
	if e := got["1.1.0"]; e.Result != "committed" {
		t.Errorf("audit outcome of 1.1.0: %+v, want committed", e)
	}
	if e := got["1.2.0"]; e.Result != "rolled_back" || !strings.Contains(e.Details["message"], "never reached the cell's init") {
		t.Errorf("audit outcome of 1.2.0: %+v, want rolled_back saying the kernel never reached init", e)
	}
}

// TestPowerCutWhileWritingBootFiles kills QEMU while a kernel bundle's boot
// files are being written to the boot partition (the root is written by
// then; 48 MB of incompressible boot files make the window seconds long):
// the old system still boots from the permanent entry, untouched, and says
// that the update did not get its trial.
func TestPowerCutWhileWritingBootFiles(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	cfg := f.config("1.0.0", time.Minute)
	img := f.image(cfg)
	layout := image.LayoutFor(cfg)
	junk := filepath.Join(f.dir, "junk")
	b := make([]byte, 48<<20)
	rand.Read(b)
	os.WriteFile(junk, b, 0o644)
	big := f.kernelBundle(f.config("1.1.0", time.Minute), "", map[string]string{"junk.bin": junk})
	entryBefore := readBootFile(t, img, layout, update.PermanentEntry)
	loaderBefore := readBootFile(t, img, layout, update.LoaderConf)

	v := bootVM(t, img, false)
	v.waitHealth(3 * time.Minute)
	go postBundle(v.client(3*time.Minute), big)
	// "pending" with a kernel: the root is written, the boot files are being
	// written, the trial entry comes last.
	deadline := time.Now().Add(4 * time.Minute)
	c := v.client(2 * time.Second)
	for {
		var st update.Status
		if err := c.Do(context.Background(), "GET", "/update", nil, &st); err == nil {
			if st.State.Phase == update.PhasePending && st.State.Kernel != "" {
				break
			}
			if st.State.Phase.Terminal() {
				t.Fatalf("missed the boot files' write: already %s", st.State.Phase)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the boot files' write was not seen within 4 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	v.vm.Kill()
	t.Log("power cut while the boot files were being written")
	names := bootEntries(t, img, layout)
	for _, n := range names {
		if strings.HasPrefix(n, "cell-") {
			t.Fatalf("the trial was armed before the cut (%q): the cut came too late to test the write", names)
		}
	}
	if got := readBootFile(t, img, layout, update.PermanentEntry); !bytes.Equal(got, entryBefore) {
		t.Errorf("the permanent entry changed:\n%s", got)
	}
	if got := readBootFile(t, img, layout, update.LoaderConf); !bytes.Equal(got, loaderBefore) {
		t.Errorf("loader.conf changed:\n%s", got)
	}

	v.start(false)
	v.waitHealth(3 * time.Minute)
	var info update.Info
	if err := v.getJSON("/info", &info); err != nil {
		t.Fatal(err)
	}
	if info.Version != "1.0.0" || info.RootSlot != "A" || info.PermanentSlot != "A" {
		t.Errorf("after the power cut: %+v, want 1.0.0 on root A", info)
	}
	st := v.waitUpdate(10*time.Second, "status", func(update.Status) bool { return true })
	if st.State.Phase != update.PhaseRolledBack || st.State.Version != "1.1.0" {
		t.Errorf("state %+v, want 1.1.0 rolled back", st.State)
	}
}
