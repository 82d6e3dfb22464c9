package update

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/pic-cell/cell/firmware/bootfs"
	"github.com/pic-cell/cell/firmware/bundle"
)

// newImageBootFAT writes a boot partition laid out as the image builder lays
// out one for target: amd64 with systemd-boot's padded loader.conf and
// permanent entry, the Pi with its padded config.txt; both with the flashed
// kernel and cmdline.txt.
func newImageBootFAT(t *testing.T, target string) (path string, flashedKernel []byte) {
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
	flashedKernel = make([]byte, 3<<20)
	rand.Read(flashedKernel)
	files := map[string][]byte{"/vmlinuz": flashedKernel, "/cmdline.txt": []byte(testCmdline)}
	switch target {
	case "amd64":
		if err := fs.Mkdir("/loader/entries"); err != nil {
			t.Fatal(err)
		}
		conf := LoaderConfContent()
		files["/"+LoaderConf] = append(conf, PadComment(LoaderConfSize-len(conf))...)
		e := EntryContent(FlashedKernel, testCmdline, "", false)
		files["/"+PermanentEntry] = append(e, PadComment(PermanentEntrySize-len(e))...)
	case "rpi":
		c := []byte("arm_64bit=1\nkernel=vmlinuz\ndisable_overscan=1\n")
		files["/config.txt"] = append(c, PadComment(256-len(c))...)
		files["/start4.elf"] = bytes.Repeat([]byte{7}, 5000)
	}
	for name, content := range files {
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(content); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	st.Close()
	fixDotDot(t, p)
	return p, flashedKernel
}

// fixDotDot makes go-diskfs' FAT acceptable to fsck.vfat, as the image
// builder does (firmware/image's fatfix.go): ".." of a directory under the
// root names cluster 0, and FSInfo's free count is the real one.
func fixDotDot(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := openFAT(f)
	if err != nil {
		t.Fatal(err)
	}
	top, _ := w.fs.ReadDir(w.fs.RootCluster)
	for _, d := range top {
		if !d.Dir || d.Name == "." || d.Name == ".." {
			continue
		}
		sub, _ := w.fs.ReadDir(d.Cluster)
		for _, e := range sub {
			if e.Name == ".." && e.Cluster != 0 {
				f.WriteAt([]byte{0, 0}, e.Offset+20)
				f.WriteAt([]byte{0, 0}, e.Offset+26)
			}
		}
	}
	if err := w.updateFSInfo(); err != nil {
		t.Fatal(err)
	}
}

// fsck runs Debian's fsck.vfat read-only on the partition file: the device's
// writes must leave a file system the firmware and Linux read without doubt.
func fsck(t *testing.T, p string) {
	t.Helper()
	bin, err := exec.LookPath("fsck.vfat")
	if err != nil {
		t.Log("fsck.vfat not found (Debian package dosfstools): the FAT's consistency is not checked")
		return
	}
	out, err := exec.Command(bin, "-n", "-v", p).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("differ")) || bytes.Contains(out, []byte("Orphan")) {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	}
}

// bootFile reads a file of the partition file (nil if it does not exist).
func bootFile(t *testing.T, p, name string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := openFAT(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.readFile(name)
	if errors.Is(err, bootfs.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func bootNames(t *testing.T, p, dir string) []string {
	t.Helper()
	f, _ := os.Open(p)
	defer f.Close()
	w, err := openFAT(f)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := w.list(dir)
	if errors.Is(err, bootfs.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name)
	}
	return out
}

type kernelEnv struct {
	*env
	kernel  []byte
	flashed []byte
}

// newKernelEnv is a device of target whose boot partition is an image's.
func newKernelEnv(t *testing.T, target string) *kernelEnv {
	e := newEnv(t)
	e.rel.Target = target
	var flashed []byte
	e.bootFAT, flashed = newImageBootFAT(t, target)
	e.u.Boot = FATBoot{Open: OpenFile(e.bootFAT)}
	k := &kernelEnv{env: e, flashed: flashed, kernel: make([]byte, 2<<20+123)}
	rand.Read(k.kernel)
	return k
}

// kernelBundle writes a bundle of a random root, the env's kernel, a command
// line with marker, and extra boot files.
func (k *kernelEnv) kernelBundle(version, marker string, extra map[string][]byte) string {
	k.t.Helper()
	key, err := bundle.ParsePrivateKey(k.key)
	if err != nil {
		k.t.Fatal(err)
	}
	dir := k.t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			k.t.Fatal(err)
		}
		return p
	}
	root := make([]byte, 100_000)
	rand.Read(root)
	parts := map[string]string{
		bundle.PartRoot:                   write("root", root),
		bundle.BootPrefix + "vmlinuz":     write("vmlinuz", k.kernel),
		bundle.BootPrefix + "cmdline.txt": write("cmdline.txt", []byte("root=PARTUUID=00000000-0000-0000-0000-000000000000/PARTNROFF=1 ro init=/gokrazy/init panic=10 "+marker+"\n")),
	}
	for name, b := range extra {
		parts[bundle.BootPrefix+name] = write(name, b)
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, bundle.Manifest{Version: version, Target: k.rel.Target}, parts, key); err != nil {
		k.t.Fatal(err)
	}
	return write("b.bundle", buf.Bytes())
}

func TestKernelBundleInstallsSlotFilesAndArmsTrialEntry(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	entryBefore := bootFile(t, k.bootFAT, PermanentEntry)
	m, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "cell.test=marker", nil))
	if err != nil {
		t.Fatal(err)
	}
	if !m.HasKernel() {
		t.Error("manifest without boot files")
	}
	if got := bootFile(t, k.bootFAT, "slot-b/vmlinuz"); !bytes.Equal(got, k.kernel) {
		t.Errorf("slot-b/vmlinuz holds %d bytes, not the bundle's kernel", len(got))
	}
	if got := bootFile(t, k.bootFAT, "vmlinuz"); !bytes.Equal(got, k.flashed) {
		t.Error("the flashed kernel changed")
	}
	if got := bootFile(t, k.bootFAT, PermanentEntry); !bytes.Equal(got, entryBefore) {
		t.Errorf("the permanent entry changed:\n%s", got)
	}
	if names := bootNames(t, k.bootFAT, EntriesDir); len(names) != 2 || names[1] != "cell-b+1.conf" {
		t.Fatalf("entries %q, want gokrazy.conf and the trial cell-b+1.conf", names)
	}
	trial := string(bootFile(t, k.bootFAT, EntriesDir+"/cell-b+1.conf"))
	for _, want := range []string{"sort-key " + TrialSortKey + "\n", "version 1.1.0\n", "linux /slot-b/vmlinuz\n",
		"options root=PARTUUID=0bb32fb8-b49e-40bd-afa9-53f7dd8b224a/PARTNROFF=2 ro init=/gokrazy/init panic=10 cell.test=marker\n"} {
		if !strings.Contains(trial, want) {
			t.Errorf("trial entry lacks %q:\n%s", want, trial)
		}
	}
	if got := bootFile(t, k.bootFAT, LoaderConf); !bytes.HasPrefix(got, []byte("timeout 0\neditor no\ndefault *\n")) {
		t.Errorf("loader.conf:\n%s", got)
	}
	st, _ := k.state.Load()
	if st.Phase != PhasePending || st.Kernel != "/slot-b/vmlinuz" || !strings.Contains(st.Cmdline, "PARTNROFF=2") {
		t.Errorf("state %+v, want pending with the kernel", st)
	}
	if safe, err := (FATBoot{Open: OpenFile(k.bootFAT)}).KexecSafe(); err != nil || safe {
		t.Errorf("KexecSafe with a trial armed = %v, %v; want false", safe, err)
	}
	fsck(t, k.bootFAT)
}

func TestTamperedKernelRefusedBeforeAnythingIsWritten(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	path := k.kernelBundle("1.1.0", "", nil)
	b, _ := os.ReadFile(path)
	// The kernel's bytes are the bundle's last big part; flip one inside it.
	i := bytes.Index(b, k.kernel[1000:1064])
	if i < 0 {
		t.Fatal("kernel not found in the bundle")
	}
	b[i+10] ^= 0x40
	os.WriteFile(path, b, 0o644)
	bootBefore := readFile(t, k.bootFAT)
	_, err := k.u.Apply(context.Background(), path)
	if !errors.Is(err, bundle.ErrHash) {
		t.Fatalf("tampered kernel: %v, want ErrHash", err)
	}
	if !bytes.Equal(readFile(t, k.bootFAT), bootBefore) {
		t.Error("the boot partition was written")
	}
	if k.slots.opened != 0 {
		t.Error("a root slot was opened")
	}
	if st, _ := k.state.Load(); st.Phase != PhaseIdle {
		t.Errorf("state %+v, want none", st)
	}
}

func TestKernelTrialBlessed(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "cell.test=marker", nil)); err != nil {
		t.Fatal(err)
	}
	// The firmware booted the trial entry: the new root's init runs.
	k.slots.active = SlotB
	tr := &Trial{Release: k.rel, Slots: k.slots, Boot: k.u.Boot, State: k.state,
		SwitchRoot: func(int) error { t.Fatal("a kernel trial switched roots in init"); return nil },
		Reboot:     func() error { t.Fatal("rebooted"); return nil },
		Health:     func(context.Context) error { return nil }}
	onTrial, err := tr.AtBoot()
	if err != nil || !onTrial {
		t.Fatalf("AtBoot on the trial = %v, %v; want on trial", onTrial, err)
	}
	if st, _ := k.state.Load(); st.Phase != PhaseTrying {
		t.Errorf("phase %q, want trying", st.Phase)
	}
	if err := tr.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	entry := string(bootFile(t, k.bootFAT, PermanentEntry))
	if !strings.HasPrefix(entry, "title cell\nlinux /slot-b/vmlinuz\noptions root=PARTUUID=0bb32fb8-b49e-40bd-afa9-53f7dd8b224a/PARTNROFF=2 ro init=/gokrazy/init panic=10 cell.test=marker\n#") ||
		len(entry) != PermanentEntrySize {
		t.Errorf("blessed permanent entry (%d bytes):\n%s", len(entry), entry)
	}
	if names := bootNames(t, k.bootFAT, EntriesDir); len(names) != 1 {
		t.Errorf("entries after blessing %q, want only the permanent one", names)
	}
	if p, _ := k.u.Boot.Permanent(); p != SlotB {
		t.Errorf("permanent root %d, want %d", p, SlotB)
	}
	if c := bootFile(t, k.bootFAT, "cmdline.txt"); !bytes.Contains(c, []byte("PARTNROFF=2")) {
		t.Errorf("cmdline.txt not switched to root B: %s", c)
	}
	if st, _ := k.state.Load(); st.Phase != PhaseCommitted {
		t.Errorf("phase %q, want committed", st.Phase)
	}
	if safe, _ := (FATBoot{Open: OpenFile(k.bootFAT)}).KexecSafe(); safe {
		t.Error("kexec called safe with a bundle's kernel permanent: it would load the flashed /vmlinuz")
	}
	fsck(t, k.bootFAT)

	// The next kernel update goes to root A and, since the permanent boot
	// uses slot-b's kernel, to slot-a.
	k.rel.Version = "1.1.0"
	if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.2.0", "", nil)); err != nil {
		t.Fatal(err)
	}
	if names := bootNames(t, k.bootFAT, EntriesDir); len(names) != 2 || names[1] != "cell-a+1.conf" {
		t.Errorf("entries %q, want the trial cell-a+1.conf", names)
	}
	if got := bootFile(t, k.bootFAT, "slot-b/vmlinuz"); !bytes.Equal(got, k.kernel) {
		t.Error("the permanent kernel in slot-b changed")
	}
	fsck(t, k.bootFAT)
}

func TestKernelThatNeverReachedInitRollsBack(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "", nil)); err != nil {
		t.Fatal(err)
	}
	entryBefore := bootFile(t, k.bootFAT, PermanentEntry)
	// systemd-boot used the entry's try (renaming it, as it does), the kernel
	// panicked, and the next boot was the permanent entry's: the old root.
	renameTrial(t, k.bootFAT, "cell-b+1.conf", "cell-b+0-1.conf")
	tr := &Trial{Release: k.rel, Slots: k.slots, Boot: k.u.Boot, State: k.state,
		SwitchRoot: func(int) error { t.Fatal("switched roots"); return nil }}
	onTrial, err := tr.AtBoot()
	if err != nil || onTrial {
		t.Fatalf("AtBoot on the old root = %v, %v", onTrial, err)
	}
	st, _ := k.state.Load()
	if st.Phase != PhaseRolledBack || !strings.Contains(st.Message, "never reached the cell's init") || !strings.Contains(st.Message, "back on version 1.0.0") {
		t.Errorf("state %+v, want rolled_back saying why", st)
	}
	if names := bootNames(t, k.bootFAT, EntriesDir); len(names) != 1 {
		t.Errorf("entries %q, want the used-up trial removed", names)
	}
	if got := bootFile(t, k.bootFAT, PermanentEntry); !bytes.Equal(got, entryBefore) {
		t.Error("the rollback changed the permanent entry")
	}
	fsck(t, k.bootFAT)
}

// renameTrial stands in for systemd-boot's rename of a booted entry: the same
// file under the name with the counter decremented.
func renameTrial(t *testing.T, p, from, to string) {
	t.Helper()
	content := bootFile(t, p, EntriesDir+"/"+from)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	w, err := openFAT(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.remove(EntriesDir + "/" + from); err != nil {
		t.Fatal(err)
	}
	if err := w.create(EntriesDir+"/"+to, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
}

func TestKernelTrialUnhealthyRollsBackAndDisarms(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "", nil)); err != nil {
		t.Fatal(err)
	}
	k.slots.active = SlotB
	reboots := 0
	k.rel.TrialTimeout = 50_000_000
	tr := &Trial{Release: k.rel, Slots: k.slots, Boot: k.u.Boot, State: k.state, Interval: 10_000_000,
		Reboot: func() error { reboots++; return nil },
		Health: func(context.Context) error { return errors.New("database not open") }}
	if onTrial, err := tr.AtBoot(); err != nil || !onTrial {
		t.Fatalf("AtBoot = %v, %v", onTrial, err)
	}
	if err := tr.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if reboots != 1 {
		t.Errorf("%d reboots, want 1", reboots)
	}
	if names := bootNames(t, k.bootFAT, EntriesDir); len(names) != 1 {
		t.Errorf("entries %q, want the trial removed", names)
	}
	if e := bootFile(t, k.bootFAT, PermanentEntry); !bytes.Contains(e, []byte("linux /vmlinuz\n")) {
		t.Errorf("permanent entry changed by the rollback:\n%s", e)
	}
	if st, _ := k.state.Load(); st.Phase != PhaseRolledBack || !strings.Contains(st.Message, "database not open") {
		t.Errorf("state %+v", st)
	}
}

// cutPartition is the boot partition losing power after n writes: every later
// write fails (and is not made).
type cutPartition struct {
	*os.File
	left *int
}

var errPowerCut = errors.New("power cut")

func (c cutPartition) WriteAt(b []byte, off int64) (int, error) {
	if *c.left <= 0 {
		return 0, errPowerCut
	}
	*c.left--
	return c.File.WriteAt(b, off)
}

func (c cutPartition) Sync() error {
	if *c.left <= 0 {
		return errPowerCut
	}
	return c.File.Sync()
}

// TestPowerCutWhileWritingBootFiles cuts the power after each number of writes
// to the boot partition the install makes: whatever was written, the flashed
// kernel, the permanent entry and loader.conf are as they were and no trial
// is armed, so the old system boots; and the next install succeeds, taking
// back what the cut left unreferenced.
func TestPowerCutWhileWritingBootFiles(t *testing.T) {
	// How many writes a whole install makes.
	k := newKernelEnv(t, "amd64")
	counting := 1 << 30
	k.u.Boot = FATBoot{Open: func() (Partition, error) {
		f, err := os.OpenFile(k.bootFAT, os.O_RDWR, 0)
		return cutPartition{f, &counting}, err
	}}
	if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "", map[string][]byte{"extra.bin": make([]byte, 70_000)})); err != nil {
		t.Fatal(err)
	}
	total := 1<<30 - counting
	t.Logf("an install makes %d writes to the boot partition", total)
	if total < 10 {
		t.Fatalf("only %d writes: the test would prove nothing", total)
	}
	for cut := 0; cut < total; cut += max(1, total/40) {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			k := newKernelEnv(t, "amd64")
			entry, loader := bootFile(t, k.bootFAT, PermanentEntry), bootFile(t, k.bootFAT, LoaderConf)
			left := cut
			k.u.Boot = FATBoot{Open: func() (Partition, error) {
				f, err := os.OpenFile(k.bootFAT, os.O_RDWR, 0)
				return cutPartition{f, &left}, err
			}}
			bundlePath := k.kernelBundle("1.1.0", "", map[string][]byte{"extra.bin": make([]byte, 70_000)})
			if _, err := k.u.Apply(context.Background(), bundlePath); !errors.Is(err, errPowerCut) {
				t.Fatalf("install with the power cut after %d writes: %v", cut, err)
			}
			if !bytes.Equal(bootFile(t, k.bootFAT, PermanentEntry), entry) || !bytes.Equal(bootFile(t, k.bootFAT, LoaderConf), loader) {
				t.Error("the permanent entry or loader.conf changed")
			}
			if !bytes.Equal(bootFile(t, k.bootFAT, "vmlinuz"), k.flashed) {
				t.Error("the flashed kernel changed")
			}
			for _, n := range bootNames(t, k.bootFAT, EntriesDir) {
				if strings.HasPrefix(n, "cell-") && !strings.Contains(n, "+0") {
					t.Errorf("a trial is armed after the cut: %s", n)
				}
			}
			// The device boots the old root: the update says so, and a
			// new install (power back) works.
			k.u.Boot = FATBoot{Open: OpenFile(k.bootFAT)}
			tr := &Trial{Release: k.rel, Slots: k.slots, Boot: k.u.Boot, State: k.state}
			tr.AtBoot()
			if st, _ := k.state.Load(); !st.Phase.Terminal() {
				t.Errorf("state after the boot: %+v", st)
			}
			if _, err := k.u.Apply(context.Background(), bundlePath); err != nil {
				t.Fatalf("install after the cut: %v", err)
			}
			if got := bootFile(t, k.bootFAT, "slot-b/vmlinuz"); !bytes.Equal(got, k.kernel) {
				t.Error("slot-b/vmlinuz wrong after the second install")
			}
			fsck(t, k.bootFAT)
		})
	}
}

func TestOldBootPartitionRefusesKernelBundle(t *testing.T) {
	e := newEnv(t) // the layout of images built before kernel updates
	e.bootFAT = newBootFAT(t)
	e.u.Boot = FATBoot{Open: OpenFile(e.bootFAT)}
	// It has no loader.conf: add the old one, unpadded.
	f, _ := os.OpenFile(e.bootFAT, os.O_RDWR, 0)
	w, _ := openFAT(f)
	old := []byte("default gokrazy.conf\ntimeout 0\neditor no\n")
	if err := w.create(LoaderConf, bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	k := &kernelEnv{env: e, kernel: make([]byte, 1000)}
	before := readFile(t, e.bootFAT)
	// The same command line as the image's: only the kernel's path grows.
	_, err := e.u.Apply(context.Background(), k.kernelBundle("1.1.0", "rootfstype=squashfs rootwait", nil))
	if err == nil || !strings.Contains(err.Error(), "flash once with a newer image") {
		t.Fatalf("kernel bundle on an old boot partition: %v, want a refusal saying to re-flash", err)
	}
	if !bytes.Equal(readFile(t, e.bootFAT), before) || e.slots.opened != 0 {
		t.Error("the refusal wrote something")
	}
	// A root-only bundle works as before.
	path, _ := e.makeBundle(bundle.Manifest{Version: "1.1.0", Target: "amd64"}, 5000)
	if _, err := e.u.Apply(context.Background(), path); err != nil {
		t.Fatal(err)
	}
}

func TestBootPartitionFullRefused(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	before := readFile(t, k.bootFAT)
	big := make([]byte, 36<<20) // the partition is 40 MiB and holds 3 MiB already
	_, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "", map[string][]byte{"big.bin": big}))
	if !errors.Is(err, ErrBootFull) {
		t.Fatalf("too big: %v, want ErrBootFull", err)
	}
	if !bytes.Equal(readFile(t, k.bootFAT), before) || k.slots.opened != 0 {
		t.Error("the refusal wrote something")
	}
}

func TestPiKernelBundleTryboot(t *testing.T) {
	k := newKernelEnv(t, "rpi")
	configBefore := bootFile(t, k.bootFAT, "config.txt")
	dtb, overlay := []byte("dtb bytes"), []byte("overlay bytes")
	_, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "cell.test=pi",
		map[string][]byte{"bcm2711-rpi-4-b.dtb": dtb, "overlays/vc4-kms-v3d.dtbo": overlay}))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"slot-b/vmlinuz": k.kernel, "slot-b/bcm2711-rpi-4-b.dtb": dtb,
		"slot-b/overlays/vc4-kms-v3d.dtbo": overlay, "config.txt": configBefore, "vmlinuz": k.flashed} {
		if got := bootFile(t, k.bootFAT, name); !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, not what it should hold", name, len(got))
		}
	}
	if c := string(bootFile(t, k.bootFAT, "slot-b/cmdline.txt")); !strings.HasPrefix(c, "root=PARTUUID=0bb32fb8-b49e-40bd-afa9-53f7dd8b224a/PARTNROFF=2 ") || !strings.Contains(c, "cell.test=pi") {
		t.Errorf("slot-b/cmdline.txt = %q", c)
	}
	try := string(bootFile(t, k.bootFAT, PiTryboot))
	if try != "arm_64bit=1\nkernel=vmlinuz\ndisable_overscan=1\nos_prefix=slot-b/\n" {
		t.Errorf("tryboot.txt = %q", try)
	}
	fsck(t, k.bootFAT)

	// Healthy on trial: config.txt takes the prefix in place, tryboot.txt goes.
	k.slots.active = SlotB
	tr := &Trial{Release: k.rel, Slots: k.slots, Boot: k.u.Boot, State: k.state, Health: func(context.Context) error { return nil }}
	if onTrial, err := tr.AtBoot(); err != nil || !onTrial {
		t.Fatalf("AtBoot = %v, %v", onTrial, err)
	}
	if err := tr.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := bootFile(t, k.bootFAT, "config.txt")
	if !bytes.HasPrefix(c, []byte("arm_64bit=1\nkernel=vmlinuz\ndisable_overscan=1\nos_prefix=slot-b/\n#")) || len(c) != len(configBefore) {
		t.Errorf("config.txt after the commit = %q", c)
	}
	if bootFile(t, k.bootFAT, PiTryboot) != nil {
		t.Error("tryboot.txt left after the commit")
	}
	// A root-only update later switches the root digit in the slot's cmdline.txt.
	if err := k.u.Boot.SetPermanent(SlotA); err != nil {
		t.Fatal(err)
	}
	if c := bootFile(t, k.bootFAT, "slot-b/cmdline.txt"); !bytes.Contains(c, []byte("PARTNROFF=1 ")) {
		t.Errorf("slot-b/cmdline.txt after a root switch: %q", c)
	}
	fsck(t, k.bootFAT)
}

func TestPiConfigContent(t *testing.T) {
	base := []byte("arm_64bit=1\nkernel=vmlinuz\nos_prefix=slot-a/\n# padding\n")
	if got := string(PiConfigContent(base, "slot-b/")); got != "arm_64bit=1\nkernel=vmlinuz\nos_prefix=slot-b/\n" {
		t.Errorf("got %q", got)
	}
	if got := string(PiConfigContent(base, "")); got != "arm_64bit=1\nkernel=vmlinuz\n" {
		t.Errorf("got %q", got)
	}
}

func TestDeviceRoot(t *testing.T) {
	perm := "root=PARTUUID=abc-1/PARTNROFF=1 ro panic=10"
	for bundleLine, want := range map[string]string{
		"root=PARTUUID=0000/PARTNROFF=1 ro x=1\n": "root=PARTUUID=abc-1/PARTNROFF=2 ro x=1",
		"ro   x=1": "root=PARTUUID=abc-1/PARTNROFF=2 ro x=1",
		"":         "root=PARTUUID=abc-1/PARTNROFF=1 ro panic=10",
	} {
		got, err := deviceRoot(bundleLine, perm, SlotB)
		if bundleLine == "" {
			// The permanent line's root digit is replaced too.
			want = "root=PARTUUID=abc-1/PARTNROFF=2 ro panic=10"
		}
		if err != nil || got != want {
			t.Errorf("deviceRoot(%q) = %q, %v; want %q", bundleLine, got, err, want)
		}
	}
}

// A root-only bundle that replaces a pending kernel update removes its trial
// entry first: the firmware must not boot the old bundle's kernel into the
// new root.
func TestRootOnlyBundleReplacingPendingKernelDisarms(t *testing.T) {
	k := newKernelEnv(t, "amd64")
	if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "", nil)); err != nil {
		t.Fatal(err)
	}
	path, _ := k.makeBundle(bundle.Manifest{Version: "1.2.0", Target: "amd64"}, 5000)
	if _, err := k.u.Apply(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	if names := bootNames(t, k.bootFAT, EntriesDir); len(names) != 1 {
		t.Errorf("entries %q, want the kernel trial removed", names)
	}
	if st, _ := k.state.Load(); st.Phase != PhasePending || st.Kernel != "" || st.Version != "1.2.0" {
		t.Errorf("state %+v, want the root-only update pending", st)
	}
	if safe, _ := (FATBoot{Open: OpenFile(k.bootFAT)}).KexecSafe(); !safe {
		t.Error("a root-only update on the flashed kernel should reboot by kexec, as before")
	}
}

// TestPowerCutAfterKernelCommit: with a bundle's kernel permanent (slot-b),
// the next kernel update writes slot-a; a power cut at any point of it leaves
// the permanent entry and slot-b's kernel as they were.
func TestPowerCutAfterKernelCommit(t *testing.T) {
	for _, cut := range []int{0, 3, 9, 20, 40, 80} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			k := newKernelEnv(t, "amd64")
			if _, err := k.u.Apply(context.Background(), k.kernelBundle("1.1.0", "", nil)); err != nil {
				t.Fatal(err)
			}
			st, _ := k.state.Load()
			if err := (FATBoot{Open: OpenFile(k.bootFAT)}).Bless(st); err != nil {
				t.Fatal(err)
			}
			k.state.Save(State{Phase: PhaseCommitted, Version: "1.1.0", Slot: SlotB})
			k.slots.active, k.rel.Version = SlotB, "1.1.0"
			entry := bootFile(t, k.bootFAT, PermanentEntry)
			permKernel := k.kernel
			k.kernel = make([]byte, 1<<20)
			rand.Read(k.kernel)
			left := cut
			k.u.Boot = FATBoot{Open: func() (Partition, error) {
				f, err := os.OpenFile(k.bootFAT, os.O_RDWR, 0)
				return cutPartition{f, &left}, err
			}}
			_, err := k.u.Apply(context.Background(), k.kernelBundle("1.2.0", "", nil))
			if left > 0 {
				t.Skipf("the install needs fewer than %d writes", cut)
			}
			if !errors.Is(err, errPowerCut) {
				t.Fatalf("install with the power cut after %d writes: %v", cut, err)
			}
			if !bytes.Equal(bootFile(t, k.bootFAT, PermanentEntry), entry) {
				t.Error("the permanent entry changed")
			}
			if !bytes.Equal(bootFile(t, k.bootFAT, "slot-b/vmlinuz"), permKernel) {
				t.Error("the permanent kernel in slot-b changed")
			}
			for _, n := range bootNames(t, k.bootFAT, EntriesDir) {
				if strings.HasPrefix(n, "cell-") {
					t.Errorf("a trial is armed after the cut: %s", n)
				}
			}
		})
	}
}
