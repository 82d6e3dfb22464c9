package qemu_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
)

func TestRpiCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"root=PARTUUID=x/PARTNROFF=1 ro console=tty1 console=serial0,115200\n": "root=PARTUUID=x/PARTNROFF=1 ro console=tty1 console=ttyS0,115200",
		"root=PARTUUID=x/PARTNROFF=2 console=tty1":                             "root=PARTUUID=x/PARTNROFF=2 console=tty1",
		"console=serial0":               "console=ttyS0",
		"console=serial1,9600 panic=10": "console=serial1,9600 panic=10",
	} {
		if got := qemu.RpiCmdline(in); got != want {
			t.Errorf("RpiCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRpiArgs(t *testing.T) {
	cmdline := "root=PARTUUID=x/PARTNROFF=1 ro console=ttyS0,115200"
	args := qemu.RpiArgs(qemu.RpiOptions{Snapshot: true, Forwards: []qemu.Forward{{Proto: "tcp", HostPort: 8080, GuestPort: 80}}},
		"/t/vmlinuz", "/t/pi.dtb", "/t/card.img", cmdline)
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-machine raspi3b", "-m 1024", "-smp 4", "-kernel /t/vmlinuz", "-dtb /t/pi.dtb",
		"file=/t/card.img,format=raw,if=sd", "-snapshot",
		"user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80", "usb-net,netdev=net0,mac=b8:27:eb:00:00:01", "-serial null -serial stdio",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q: %s", want, joined)
		}
	}
	// The command line is one argument (exec, no shell), with the watchdog
	// driver kept off (QEMU resets the machine when it is armed).
	for i, a := range args {
		if a == "-append" && (i+1 >= len(args) || args[i+1] != cmdline+" initcall_blacklist=bcm2835_wdt_driver_init") {
			t.Errorf("-append is not followed by the command line and the watchdog quirk as one argument: %q", args)
		}
	}
}

// rpiConfig is the cell's image for the Pi: the real daemon as config.json
// runs it, without containerd (as the amd64 update tests), and with the
// console on the serial port, where the test reads it.
func (f *fixture) rpiConfig(version string) *image.Config {
	cfg := f.cellConfig(version)
	cfg.Target = "rpi"
	serial := true
	cfg.Settings.SerialConsole = &serial
	return cfg
}

// consoleMarks records when each pattern first appears on the console.
type consoleMarks struct {
	names []string
	res   map[string]*regexp.Regexp
	seen  map[string]time.Duration
	lines map[string]string
}

func newConsoleMarks(pairs ...string) *consoleMarks {
	m := &consoleMarks{res: map[string]*regexp.Regexp{}, seen: map[string]time.Duration{}, lines: map[string]string{}}
	for i := 0; i+1 < len(pairs); i += 2 {
		m.names = append(m.names, pairs[i])
		m.res[pairs[i]] = regexp.MustCompile(pairs[i+1])
	}
	return m
}

// update looks for the missing marks in console, seen at elapsed.
func (m *consoleMarks) update(console string, elapsed time.Duration) (all bool) {
	all = true
	for _, n := range m.names {
		if _, ok := m.seen[n]; ok {
			continue
		}
		if line := m.res[n].FindString(console); line != "" {
			m.seen[n], m.lines[n] = elapsed, strings.TrimSpace(line)
		} else {
			all = false
		}
	}
	return all
}

// TestRpiImageBootsInEmulation boots the rpi image's own kernel, device tree
// and root on QEMU's Raspberry Pi 3 (raspi3b) and reads from the serial
// console that the kernel is the image's, that the root (squashfs) and /perm
// (ext4) are mounted from the SD card, and that the cell daemon started and
// its /health said ok (the init's "cell healthy" line). Then it asks /health
// itself over the emulated USB network, through the cell's front (HTTPS, the
// CA from /ca.crt), as the amd64 tests do.
//
// Software emulation of four Cortex-A53 cores on a busy host: the boot is
// bounded by 10 minutes.
func TestRpiImageBootsInEmulation(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boot tests are not short")
	}
	if err := qemu.RpiAvailable(); err != nil {
		t.Skipf("cannot emulate the Raspberry Pi here: %v", err)
	}
	if err := image.CheckHost("rpi"); err != nil {
		t.Skipf("cannot build the rpi image here: %v", err)
	}
	f := newFixture(t)
	buildStart := time.Now()
	img := f.image(f.rpiConfig("1.0.0"))
	t.Logf("rpi image built in %s", time.Since(buildStart).Round(time.Second))

	// The image carries the kernel module's kernel, and the version in its
	// banner is the module's (lib/modules/<version>).
	kdir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/gokrazy/kernel.rpi").Output()
	if err != nil {
		t.Fatal(err)
	}
	moduleKernel, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(kdir)), "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	mods, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(kdir)), "lib", "modules", "*"))
	if len(mods) != 1 {
		t.Fatalf("the kernel module has %d module trees, want 1: %v", len(mods), mods)
	}
	kver := filepath.Base(mods[0])
	boot, err := qemu.ReadRpiBoot(img, qemu.RpiDeviceTree)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(boot.Kernel, moduleKernel) {
		t.Fatal("the image's vmlinuz is not the kernel module's")
	}
	if !strings.Contains(boot.Cmdline, "console=ttyS0,115200") {
		t.Fatalf("the command line has no serial console: %q", boot.Cmdline)
	}

	v := &testVM{t: t, img: img, serial: &syncBuffer{}, front: true}
	if v.port, err = qemu.FreePort(); err != nil {
		t.Fatal(err)
	}
	if v.tlsPort, err = qemu.FreePort(); err != nil {
		t.Fatal(err)
	}
	v.vm, err = qemu.StartRpi(context.Background(), qemu.RpiOptions{Image: img, Serial: v.serial, Forwards: v.forwards()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.vm.Kill()
		if t.Failed() {
			s := v.serial.String()
			if len(s) > 12000 {
				s = s[len(s)-12000:]
			}
			t.Logf("serial console (tail):\n%s", s)
		}
	})

	marks := newConsoleMarks(
		"kernel", `Linux version `+regexp.QuoteMeta(kver)+` .*`,
		"board", `Machine model: Raspberry Pi 3 Model B.*`,
		"root", `VFS: Mounted root \(squashfs filesystem\) readonly on device 179:2.*`,
		"perm", `EXT4-fs \(mmcblk0p4\): mounted filesystem.*`,
		"init", `.*msg=booting .*version=1\.0\.0 target=rpi.*`,
		"healthy", `.*msg="cell healthy".*`,
	)
	const limit = 10 * time.Minute
	for !marks.update(v.serial.String(), time.Since(v.vm.Started)) {
		select {
		case <-v.vm.Done():
			t.Fatalf("QEMU exited: %v", v.vm.Err())
		case <-time.After(500 * time.Millisecond):
		}
		if time.Since(v.vm.Started) > limit {
			var missing []string
			for _, n := range marks.names {
				if _, ok := marks.seen[n]; !ok {
					missing = append(missing, n)
				}
			}
			t.Fatalf("not on the console within %s: %s", limit, strings.Join(missing, ", "))
		}
	}
	for _, n := range marks.names {
		t.Logf("%-8s %6s  %s", n, marks.seen[n].Round(time.Second), marks.lines[n])
	}
	console := v.serial.String()
	for _, bad := range []string{"Could not mount permanent storage partition", "Kernel panic", "cell not healthy yet"} {
		if strings.Contains(console, bad) {
			t.Errorf("the console says %q", bad)
		}
	}

	// Over the network: the USB Ethernet adapter, DHCP from QEMU, the front.
	took := v.waitHealth(3 * time.Minute)
	h, err := v.client(30 * time.Second).Health(context.Background())
	if err != nil {
		t.Fatalf("/health over the USB network: %v", err)
	}
	if !h.OK {
		t.Errorf("/health over the network: %+v, want ok", h)
	}
	t.Log(fmt.Sprintf("/health over the USB network (HTTPS through the front) answered %s after QEMU started", took.Round(time.Second)))
}
