package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/pic-cell/cell/firmware/bootfs"
	"github.com/pic-cell/cell/firmware/bundle"
)

// The boot partition's files that choose what boots (see the package doc).
const (
	// LoaderConf is systemd-boot's configuration (amd64).
	LoaderConf = "loader/loader.conf"
	// EntriesDir holds systemd-boot's entries (amd64).
	EntriesDir = "loader/entries"
	// PermanentEntry is the entry the device boots when no trial is armed:
	// gokrazy's name, so that gokrazy's tools find it.
	PermanentEntry = "loader/entries/gokrazy.conf"
	// FlashedKernel is the kernel the image was flashed with; gokrazy's kexec
	// reboot reads it and cmdline.txt.
	FlashedKernel = "/vmlinuz"
	// PiConfig is the Pi firmware's configuration; PiTryboot replaces it for
	// one boot after a reboot with the tryboot flag.
	PiConfig  = "config.txt"
	PiTryboot = "tryboot.txt"
	// TrialSortKey sorts a trial entry before the permanent one, which has no
	// sort key: systemd-boot puts entries with a sort key before those
	// without, and entries whose tries are used up after every other.
	TrialSortKey = "cell-trial"
	// PermanentEntrySize is the length the image builder pads the permanent
	// entry (and config.txt) to, so that a commit can rewrite it in place
	// with a longer kernel path or command line. A file of at most one
	// sector lies in one sector (a cluster starts on a sector), so the
	// rewrite is one sector write.
	PermanentEntrySize = 500
	// LoaderConfSize is the length loader.conf is padded to.
	LoaderConfSize = 128
)

// LoaderConfContent is loader.conf: no menu (the device has no one in front
// of it), and the default is the first entry in systemd-boot's order: a trial
// entry with tries left, else the permanent entry.
func LoaderConfContent() []byte {
	return []byte("timeout 0\neditor no\ndefault *\n")
}

// EntryContent is a systemd-boot entry booting kernel (a path on the boot
// partition) with the command line options. A trial entry has a sort key and
// the version; the permanent entry has neither.
func EntryContent(kernel, options, version string, trial bool) []byte {
	var b strings.Builder
	if trial {
		fmt.Fprintf(&b, "title cell %s (trial)\nsort-key %s\nversion %s\n", version, TrialSortKey, version)
	} else {
		b.WriteString("title cell\n")
	}
	fmt.Fprintf(&b, "linux %s\noptions %s\n", kernel, strings.TrimSpace(options))
	return []byte(b.String())
}

// PadComment pads a configuration file that takes '#' comments (systemd-boot's
// files, the Pi's config.txt) to n more bytes: a comment line.
func PadComment(n int) []byte {
	switch {
	case n <= 0:
		return nil
	case n == 1:
		return []byte("\n")
	}
	return append(append([]byte{'#'}, bytes.Repeat([]byte{' '}, n-2)...), '\n')
}

// padSpaces pads a kernel command line file (one line; spaces separate
// arguments) with spaces before its final newline.
func padSpaces(n int) []byte { return bytes.Repeat([]byte{' '}, n) }

// PiConfigContent is config.txt with the slot's prefix (os_prefix applies to
// the kernel, cmdline.txt, the device trees and the overlays) set: "" boots
// the files the image was flashed with, at the top of the partition.
func PiConfigContent(base []byte, prefix string) []byte {
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(base), "\n"), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "os_prefix=") || strings.HasPrefix(t, "#") || t == "" {
			continue
		}
		out = append(out, line)
	}
	if prefix != "" {
		out = append(out, "os_prefix="+prefix)
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// slotDir names a kernel directory: "slot-a" or "slot-b".
func slotDir(letter string) string { return "slot-" + letter }

var (
	linuxRe    = regexp.MustCompile(`(?m)^linux[ \t]+(\S+)`)
	optionsRe  = regexp.MustCompile(`(?m)^options[ \t]+(.*)$`)
	osPrefixRe = regexp.MustCompile(`(?m)^[ \t]*os_prefix=(\S*)`)
	rootArgRe  = regexp.MustCompile(`(^|\s)root=\S+`)
)

// KernelPlan is where a kernel bundle's boot files go, decided before anything
// is written.
type KernelPlan struct {
	Target  string // "amd64" or "rpi"
	Slot    int    // the root slot the trial boots
	Dir     string // "slot-a" or "slot-b"
	Kernel  string // the kernel's path for the boot loader ("/slot-b/vmlinuz")
	Cmdline string // the trial's command line, with this device's root=
	Version string
	Files   []bundle.Part
}

// KernelBoot installs a kernel bundle's boot files into a slot's directory of
// the boot partition and arms the firmware's one-time trial of them
// (implemented by FATBoot; see the package doc).
type KernelBoot interface {
	// PlanKernel checks, writing nothing, that the files fit and where they go.
	PlanKernel(slot int, version string, files []bundle.Part, cmdline []byte) (KernelPlan, error)
	// InstallKernel writes the files, read from next in the plan's order,
	// reads them back against their hashes and arms the trial.
	InstallKernel(plan KernelPlan, next func() (bundle.Part, io.Reader, error)) error
	// Bless makes the trial's kernel and root the permanent boot.
	Bless(st State) error
	// Disarm removes a trial that is over; it never touches the permanent boot.
	Disarm() error
}

// target says which boot firmware the partition is for: systemd-boot's
// loader.conf (amd64) or the Pi's config.txt.
func (b FATBoot) target(w *fatWriter) (string, error) {
	if ok, err := w.exists(LoaderConf); err != nil || ok {
		return "amd64", err
	}
	if ok, err := w.exists(PiConfig); err != nil || ok {
		return "rpi", err
	}
	return "", errors.New("boot partition: neither loader/loader.conf nor config.txt")
}

func (b FATBoot) open() (*fatWriter, func(), error) {
	p, err := b.Open()
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() {
		if c, ok := p.(io.Closer); ok {
			c.Close()
		}
	}
	w, err := openFAT(p)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return w, closeFn, nil
}

// openTarget is open, and the target the boot partition is laid out for.
func (b FATBoot) openTarget() (*fatWriter, string, func(), error) {
	w, closeFn, err := b.open()
	if err != nil {
		return nil, "", nil, err
	}
	target, err := b.target(w)
	if err != nil {
		closeFn()
		return nil, "", nil, err
	}
	return w, target, closeFn, nil
}

// permanentKernel is the kernel the permanent boot loads: the permanent
// entry's linux line (amd64), or os_prefix + "vmlinuz" (Pi).
func permanentKernel(w *fatWriter, target string) (string, error) {
	switch target {
	case "amd64":
		e, err := w.readFile(PermanentEntry)
		if err != nil {
			return "", err
		}
		m := linuxRe.FindSubmatch(e)
		if m == nil {
			return "", fmt.Errorf("%s: no linux line", PermanentEntry)
		}
		return string(m[1]), nil
	default:
		c, err := w.readFile(PiConfig)
		if err != nil {
			return "", err
		}
		prefix := ""
		if m := osPrefixRe.FindSubmatch(c); m != nil {
			prefix = string(m[1])
		}
		return "/" + prefix + "vmlinuz", nil
	}
}

// permanentCmdline is the permanent boot's command line.
func permanentCmdline(w *fatWriter, target string) (string, error) {
	if target == "amd64" {
		e, err := w.readFile(PermanentEntry)
		if err != nil {
			return "", err
		}
		m := optionsRe.FindSubmatch(e)
		if m == nil {
			return "", fmt.Errorf("%s: no options line", PermanentEntry)
		}
		return strings.TrimSpace(string(m[1])), nil
	}
	kernel, err := permanentKernel(w, target)
	if err != nil {
		return "", err
	}
	c, err := w.readFile(strings.TrimPrefix(strings.TrimSuffix(kernel, "vmlinuz"), "/") + "cmdline.txt")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(c)), nil
}

// deviceRoot replaces the root= of a bundle's command line with this device's
// root argument for slot (the bundle cannot know the boot partition's GUID).
func deviceRoot(bundleCmdline, permanent string, slot int) (string, error) {
	m := partnroffRe.FindStringSubmatchIndex(permanent)
	if m == nil {
		return "", errors.New("the permanent command line has no root=PARTUUID=.../PARTNROFF=")
	}
	root := permanent[m[0]:m[2]] + string(rune('0'+slot-1))
	line := strings.Join(strings.Fields(bundleCmdline), " ")
	if line == "" {
		line = permanent
	}
	if rootArgRe.MatchString(line) {
		line = rootArgRe.ReplaceAllString(line, "${1}"+root)
	} else {
		line = root + " " + line
	}
	return strings.TrimSpace(line), nil
}

// PlanKernel picks the kernel directory the permanent boot does not use
// (slot-a for root A, slot-b for root B, unless the permanent boot uses that
// one after root-only updates), checks the room (free space, what the
// directory holds now, and clusters a power cut left unreferenced) and that
// the permanent files can hold the trial's choice once it is blessed.
func (b FATBoot) PlanKernel(slot int, version string, files []bundle.Part, cmdline []byte) (KernelPlan, error) {
	var plan KernelPlan
	if slot != SlotA && slot != SlotB {
		return plan, fmt.Errorf("root slot %d: want 2 or 3", slot)
	}
	w, target, closeFn, err := b.openTarget()
	if err != nil {
		return plan, err
	}
	defer closeFn()
	hasKernel := false
	for _, f := range files {
		if f.BootPath() == "vmlinuz" {
			hasKernel = true
		}
	}
	if !hasKernel {
		return plan, fmt.Errorf("%w: the boot files have no vmlinuz", bundle.ErrFormat)
	}
	perm, err := permanentKernel(w, target)
	if err != nil {
		return plan, err
	}
	letter := strings.ToLower(SlotName(slot))
	if strings.HasPrefix(perm, "/"+slotDir(letter)+"/") {
		letter = strings.ToLower(SlotName(Other(slot)))
	}
	plan = KernelPlan{Target: target, Slot: slot, Dir: slotDir(letter), Kernel: "/" + slotDir(letter) + "/vmlinuz",
		Version: version, Files: files}
	permLine, err := permanentCmdline(w, target)
	if err != nil {
		return plan, err
	}
	if plan.Cmdline, err = deviceRoot(string(cmdline), permLine, slot); err != nil {
		return plan, err
	}

	// Room: what the new files take, against free space plus what the
	// directory and old trial files hold now (they are removed first).
	var need int64
	for _, f := range files {
		need += w.clustersFor(f.Size)
	}
	need += 8 // the trial entry, a cmdline.txt, directories
	have, err := w.freeBytes()
	if err != nil {
		return plan, err
	}
	haveClusters := have / w.fs.ClusterBytes
	old, err := w.treeClusters(plan.Dir)
	if err != nil {
		return plan, err
	}
	orphans, err := w.orphans()
	if err != nil {
		return plan, err
	}
	haveClusters += int64(old + len(orphans))
	if need > haveClusters {
		return plan, fmt.Errorf("%w: %d KiB needed, %d KiB free (the boot partition holds %d KiB in all)",
			ErrBootFull, need*w.fs.ClusterBytes>>10, haveClusters*w.fs.ClusterBytes>>10, int64(w.fs.TotalClusters)*w.fs.ClusterBytes>>10)
	}

	// The files a commit rewrites in place must hold the new content.
	switch target {
	case "amd64":
		if err := fits(w, PermanentEntry, EntryContent(plan.Kernel, plan.Cmdline, "", false)); err != nil {
			return plan, fmt.Errorf("this boot partition cannot take a kernel update (flashed before kernel updates; flash once with a newer image): %w", err)
		}
		if err := fits(w, LoaderConf, LoaderConfContent()); err != nil {
			return plan, fmt.Errorf("this boot partition cannot take a kernel update (flashed before kernel updates; flash once with a newer image): %w", err)
		}
	case "rpi":
		c, err := w.readFile(PiConfig)
		if err != nil {
			return plan, err
		}
		if err := fits(w, PiConfig, PiConfigContent(c, plan.Dir+"/")); err != nil {
			return plan, fmt.Errorf("this boot partition cannot take a kernel update (flashed before kernel updates; flash once with a newer image): %w", err)
		}
	}
	return plan, nil
}

// fits reports whether content fits the file at path in place.
func fits(w *fatWriter, path string, content []byte) error {
	_, n, err := w.fs.Extent(path)
	if err != nil {
		return err
	}
	if int64(len(content)) > n {
		return fmt.Errorf("%s holds %d bytes, the new content needs %d", path, n, len(content))
	}
	return nil
}

// treeClusters counts the clusters of the files under dir (0 if it does not exist).
func (w *fatWriter) treeClusters(dir string) (int, error) {
	entries, err := w.list(dir)
	if errors.Is(err, bootfs.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.Dir {
			k, err := w.treeClusters(dir + "/" + e.Name)
			if err != nil {
				return 0, err
			}
			n += k
			continue
		}
		n += int(w.clustersFor(e.Size))
	}
	return n, nil
}

// clearTree removes every file under dir, keeping the directories.
func (w *fatWriter) clearTree(dir string) error {
	entries, err := w.list(dir)
	if errors.Is(err, bootfs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := dir + "/" + e.Name
		if e.Dir {
			if err := w.clearTree(p); err != nil {
				return err
			}
			continue
		}
		if err := w.remove(p); err != nil {
			return err
		}
	}
	return nil
}

// mkdirAll makes the directories of path that do not exist.
func (w *fatWriter) mkdirAll(path string) error {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		ok, err := w.exists(p)
		if err != nil {
			return err
		}
		if !ok {
			if err := w.mkdir(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// trialEntries lists the trial entries (cell-*.conf, with or without a counter).
func trialEntries(w *fatWriter) ([]string, error) {
	entries, err := w.list(EntriesDir)
	if errors.Is(err, bootfs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := strings.ToLower(e.Name)
		if !e.Dir && strings.HasPrefix(n, "cell-") && strings.HasSuffix(n, ".conf") {
			out = append(out, EntriesDir+"/"+e.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// disarm removes every trial entry (amd64) or tryboot.txt (Pi).
func disarm(w *fatWriter, target string) error {
	if target == "rpi" {
		return w.remove(PiTryboot)
	}
	names, err := trialEntries(w)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := w.remove(n); err != nil {
			return err
		}
	}
	return nil
}

// InstallKernel writes the boot files of the plan into its directory and arms
// the trial, in this order, each step written before the next: unreferenced
// clusters freed; old trial entries removed; loader.conf's default made the
// first entry in systemd-boot's order (it already is on images built for
// kernel updates); the directory emptied and filled; every file read back and
// hashed; last the trial entry (amd64: loader/entries/cell-<x>+1.conf, one
// try) or tryboot.txt (Pi). Until that last write the permanent boot is all
// there is, and the permanent files are never written here.
func (b FATBoot) InstallKernel(plan KernelPlan, next func() (bundle.Part, io.Reader, error)) error {
	w, closeFn, err := b.open()
	if err != nil {
		return err
	}
	defer closeFn()
	if _, err := w.reclaim(); err != nil {
		return err
	}
	if err := disarm(w, plan.Target); err != nil {
		return err
	}
	if plan.Target == "amd64" {
		if err := w.rewrite(LoaderConf, LoaderConfContent(), PadComment); err != nil {
			return err
		}
	}
	if err := w.clearTree(plan.Dir); err != nil {
		return err
	}
	if err := w.mkdirAll(plan.Dir); err != nil {
		return err
	}
	for _, want := range plan.Files {
		part, r, err := next()
		if err != nil {
			return err
		}
		if part != want {
			return fmt.Errorf("%w: boot file %s out of order", bundle.ErrFormat, part.Name)
		}
		path := plan.Dir + "/" + part.BootPath()
		if part.BootPath() == "cmdline.txt" {
			// The device's own root= replaces the bundle's; the bytes
			// were checked in the verify pass and are drained here.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
			continue
		}
		if dir, _ := splitPath(path); dir != plan.Dir {
			if err := w.mkdirAll(dir); err != nil {
				return err
			}
		}
		if err := w.create(path, r, part.Size); err != nil {
			return err
		}
	}
	if plan.Target == "rpi" {
		line := []byte(plan.Cmdline + "\n")
		if err := w.create(plan.Dir+"/cmdline.txt", bytes.NewReader(line), int64(len(line))); err != nil {
			return err
		}
	}
	// Read back: the partition holds what was signed.
	for _, part := range plan.Files {
		if part.BootPath() == "cmdline.txt" {
			continue
		}
		h := sha256.New()
		e, err := w.fs.Lookup(plan.Dir + "/" + part.BootPath())
		if err != nil {
			return err
		}
		if err := w.copyFile(h, e); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != part.SHA256 || e.Size != part.Size {
			return fmt.Errorf("boot file %s reads back with SHA-256 %s, want %s", part.BootPath(), got, part.SHA256)
		}
	}
	// Arm the trial: the one write that makes the firmware try it.
	switch plan.Target {
	case "amd64":
		e := EntryContent(plan.Kernel, plan.Cmdline, plan.Version, true)
		name := fmt.Sprintf("%s/cell-%s+1.conf", EntriesDir, strings.TrimPrefix(plan.Dir, "slot-"))
		return w.create(name, bytes.NewReader(e), int64(len(e)))
	default:
		c, err := w.readFile(PiConfig)
		if err != nil {
			return err
		}
		t := PiConfigContent(c, plan.Dir+"/")
		return w.create(PiTryboot, bytes.NewReader(t), int64(len(t)))
	}
}

// Bless makes the trial permanent: the permanent entry (amd64) or config.txt
// (Pi) is rewritten in place, one sector, to boot the trial's kernel and
// root; then cmdline.txt's root digit follows (gokrazy's kexec reads it);
// then the trial's files are removed. A cut after the first write boots the
// new system, which finds itself still on trial and blesses again.
func (b FATBoot) Bless(st State) error {
	w, target, closeFn, err := b.openTarget()
	if err != nil {
		return err
	}
	defer closeFn()
	switch target {
	case "amd64":
		if err := w.rewrite(PermanentEntry, EntryContent(st.Kernel, st.Cmdline, "", false), PadComment); err != nil {
			return err
		}
	default:
		c, err := w.readFile(PiConfig)
		if err != nil {
			return err
		}
		prefix := strings.TrimPrefix(strings.TrimSuffix(st.Kernel, "vmlinuz"), "/")
		if err := w.rewrite(PiConfig, PiConfigContent(c, prefix), PadComment); err != nil {
			return err
		}
	}
	closeFn()
	if err := b.SetPermanent(st.Slot); err != nil {
		return err
	}
	return b.Disarm()
}

// Disarm removes the trial files: systemd-boot's trial entries, the Pi's
// tryboot.txt. The permanent boot is not touched.
func (b FATBoot) Disarm() error {
	w, target, closeFn, err := b.openTarget()
	if err != nil {
		return err
	}
	defer closeFn()
	return disarm(w, target)
}

// KexecSafe reports whether gokrazy's kexec reboot (which loads /vmlinuz with
// cmdline.txt, bypassing the firmware) boots what the firmware would: the
// permanent kernel is the flashed one and no trial is armed.
func (b FATBoot) KexecSafe() (bool, error) {
	w, target, closeFn, err := b.openTarget()
	if err != nil {
		return false, err
	}
	defer closeFn()
	if target != "amd64" {
		return false, nil
	}
	k, err := permanentKernel(w, target)
	if err != nil {
		return false, err
	}
	trials, err := trialEntries(w)
	if err != nil {
		return false, err
	}
	return k == FlashedKernel && len(trials) == 0, nil
}

// permanentCmdlineFiles are the files whose root digit a root switch
// rewrites: cmdline.txt and the permanent entry (amd64), and on the Pi the
// permanent slot's cmdline.txt when config.txt names a slot directory.
func permanentCmdlineFiles(w *fatWriter) []string {
	files := append([]string{}, CmdlineFiles...)
	if ok, _ := w.exists(PiConfig); ok {
		if k, err := permanentKernel(w, "rpi"); err == nil && k != FlashedKernel {
			files = append(files, strings.TrimPrefix(strings.TrimSuffix(k, "vmlinuz"), "/")+"cmdline.txt")
		}
	}
	return files
}
