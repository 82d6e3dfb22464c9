package qemu_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
	"github.com/pic-cell/cell/httpapi/client"
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

// rpiConfig is the cell's image for the Pi as config.json defines it: the
// real daemon with its flags, containerd and runc (arm64, runc linked with
// the arm64 libseccomp) supervised beside it, and the console on the serial
// port, where the test reads it. No services' archives: none is built for
// arm64 here.
func (f *fixture) rpiConfig(version string) *image.Config {
	cfg := f.cellConfig(version)
	cfg.Target = "rpi"
	serial := true
	cfg.Settings.SerialConsole = &serial
	cfg.Settings.Containerd = nil // the default: carried and supervised
	cfg.Packages[0].Args = append(cfg.Packages[0].Args,
		"-containerd", "/run/containerd/containerd.sock", "-images", "/usr/share/pic/images")
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
// console that the kernel is the image's (the kernel module's vmlinuz, its
// version in the banner, the Pi 3 Model B's device tree), that the root
// (squashfs, mmcblk0p2) and /perm (ext4, mmcblk0p4) are mounted from the SD
// card, that the kernel has the cgroup controllers the services' limits need
// and the arm64 containerd answers, and that the cell daemon started and its
// /health said ok (the init's "cell healthy" line). Then it asks /health itself over the emulated USB
// network, through the cell's front (HTTPS, the CA from /ca.crt pinned).
//
// What this proves: the image's boot partition, as the firmware finds it,
// boots an arm64 Broadcom SoC into the arm64 init; the root=PARTUUID line finds
// root A on an SD card; the init, gokrazy and the daemon built for arm64 run,
// grow and mount /perm on an mmcblk disk, open the database and serve, and
// containerd runs on the Pi's kernel; DHCP
// and the front work over a USB Ethernet adapter. What it does not prove for a
// Pi 4 or 5 (see the README): their SoCs (BCM2711, BCM2712 with RP1) and
// device trees, the Pi firmware and config.txt (not run: QEMU loads the
// kernel), tryboot, the watchdog (kept off: QEMU cannot emulate its
// countdown), their Ethernet and USB controllers, real SD cards' timing and
// power-cut behaviour.
//
// Four Cortex-A53 cores emulated in software on a busy host: the boot is
// bounded by 10 minutes (it takes about 90 s to the healthy line on 2 cores).
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
	v.killAtEnd(12000)

	marks := newConsoleMarks(
		"kernel", `Linux version `+regexp.QuoteMeta(kver)+` .*`,
		"board", `Machine model: Raspberry Pi 3 Model B.*`,
		"root", `VFS: Mounted root \(squashfs filesystem\) readonly on device 179:2.*`,
		"perm", `EXT4-fs \(mmcblk0p4\): mounted filesystem.*`,
		"init", `.*msg=booting .*version=1\.0\.0 target=rpi.*`,
		// Logged at this level only when no controller is missing: the Pi's
		// kernel has the memory and CPU controllers the amd64 one lacks.
		"cgroups", `.*msg="cgroup controllers" .*controllers="[^"]*\bcpu\b[^"]*\bmemory\b.*`,
		"containerd", `.*msg="containerd answers".*`,
		"healthy", `.*msg="cell healthy".*`,
	)
	const limit = 10 * time.Minute
	for !marks.update(v.serial.String(), time.Since(v.vm.Started)) {
		// Without the watchdog driver the emulated Pi cannot restart: a
		// panic would sit there until the limit.
		if strings.Contains(v.serial.String(), "Kernel panic") {
			t.Fatal("the kernel panicked")
		}
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
		t.Logf("%-10s %6s  %s", n, marks.seen[n].Round(time.Second), marks.lines[n])
	}
	console := v.serial.String()
	for _, bad := range []string{"Could not mount permanent storage partition", "Kernel panic", "cell not healthy yet"} {
		if strings.Contains(console, bad) {
			t.Errorf("the console says %q", bad)
		}
	}

	// Over the network: the USB Ethernet adapter, DHCP from QEMU's user
	// network, the front. The Pi has no clock that survives power off, and
	// the emulated one has no network time either (QEMU's user network
	// answers no NTP): the guest lives in 1970, and the front's certificates
	// are issued at its time. So the chain is checked against the pinned CA
	// and the guest's name at the guest's own time, read from the console's
	// "cell healthy" line, plus the time since.
	guestNow := parseGuestTime(t, marks.lines["healthy"])
	healthySeen := v.vm.Started.Add(marks.seen["healthy"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pemBytes, err := qemu.WaitHTTP(ctx, v.url("/ca.crt"))
	if err != nil {
		t.Fatalf("no /ca.crt over the USB network: %v", err)
	}
	ca := x509.NewCertPool()
	if !ca.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("/ca.crt is not a PEM certificate: %q", pemBytes)
	}
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", v.tlsPort)
	var leaf *x509.Certificate
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca, ServerName: guestAddr,
			Time: func() time.Time { return guestNow.Add(time.Since(healthySeen)) },
			VerifyConnection: func(cs tls.ConnectionState) error {
				leaf = cs.PeerCertificates[0]
				return nil
			}},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, tlsAddr)
		}}}
	c := client.New("https://"+guestAddr, client.WithHTTPClient(hc), client.WithTimeout(30*time.Second))
	var h client.Health
	for {
		if h, err = c.Health(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no /health over HTTPS on the USB network: %v", err)
		case <-time.After(time.Second):
		}
	}
	if !h.OK {
		t.Errorf("/health over the network: %+v, want ok", h)
	}
	t.Logf("/health over the USB network (HTTPS through the front, the CA pinned) answered %+v %s after QEMU started",
		h, time.Since(v.vm.Started).Round(time.Second))
	if leaf != nil && leaf.NotBefore.Year() < 2000 {
		t.Logf("note: the front's certificate is valid from %s, the guest's clock: a Pi without network time issues certificates that clients with a real clock find expired",
			leaf.NotBefore.UTC().Format(time.RFC3339))
	}
}

// parseGuestTime reads the time= of a console line of the init's log.
func parseGuestTime(t *testing.T, line string) time.Time {
	t.Helper()
	m := regexp.MustCompile(`time=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no time= in %q", line)
	}
	ts, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatalf("the guest's time %q: %v", m[1], err)
	}
	return ts
}
