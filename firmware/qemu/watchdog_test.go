package qemu_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
	"github.com/pic-cell/cell/firmware/update"
)

// hangd accepts connections and never answers them: a daemon that hangs.
const hangd = "github.com/pic-cell/cell/firmware/qemu/testdata/hangd"

func TestArgsWatchdog(t *testing.T) {
	with := strings.Join(qemu.Args(qemu.Options{Image: "/x.img", Watchdog: true}, "/code.fd", "/vars.fd"), " ")
	if !strings.Contains(with, "-device i6300esb -action watchdog=reset") {
		t.Errorf("no emulated watchdog in %q", with)
	}
	without := strings.Join(qemu.Args(qemu.Options{Image: "/x.img"}, "/code.fd", "/vars.fd"), " ")
	if strings.Contains(without, "i6300esb") {
		t.Errorf("a watchdog without asking: %q", without)
	}
}

// TestWatchdogResetsHungTrial boots the image on a machine with a hardware
// watchdog (QEMU's i6300esb) and installs an update whose daemon hangs: it
// accepts connections on the health port and never answers. The trial's own
// deadline (15 min) is far away, so what ends the trial is the watchdog: the
// new root's init feeds it through the boot grace period (3 min), then stops
// because /health never answered, and the emulated hardware resets the
// machine 60 s later. The firmware boots the permanent (old) root, whose
// init records the rollback.
func TestWatchdogResetsHungTrial(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	img := f.image(f.config("1.0.0", time.Minute))
	hung := f.config("1.1.0", 15*time.Minute)
	hung.Packages = []image.Package{{Path: hangd, Args: []string{"-listen", "0.0.0.0:80"}}}
	bundlePath := f.bundle(hung, nil)

	port, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	console := &consoleClock{}
	v := &testVM{t: t, img: img, port: port, serial: &syncBuffer{}}
	v.vm, err = qemu.Start(context.Background(), qemu.Options{
		Image: img, Serial: io.MultiWriter(v.serial, console), Forwards: v.forwards(), Watchdog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	v.killAtEnd(12000)
	v.waitHealth(4 * time.Minute)

	// The init armed the device before gokrazy could, and gokrazy's own
	// pinger (which would feed it whatever happens) found it busy.
	armed := console.wait(t, consoleStart, "hardware watchdog armed", 10*time.Second)
	if !strings.Contains(armed.text, "timeout=1m0s") {
		t.Errorf("armed with another timeout than 60 s: %s", armed.text)
	}
	if l := console.wait(t, consoleStart, "disabling hardware watchdog", 10*time.Second); !strings.Contains(l.text, "busy") {
		t.Errorf("gokrazy's pinger gave up for another reason than a busy device: %s", l.text)
	}

	pushed, beforePush := time.Now(), console.last()
	if code, body := v.post(bundlePath); code != 200 {
		t.Fatalf("bundle refused: %d %s", code, body)
	}
	// The old root's init switches into the new root, whose init arms the
	// watchdog again and starts the trial.
	switched := console.wait(t, beforePush, "trial boot: switching to the new root", 5*time.Minute)
	rearmed := console.wait(t, switched, "hardware watchdog armed", time.Minute)
	onTrial := console.wait(t, rearmed, `msg="on trial"`, 2*time.Minute)
	t.Logf("update pushed; the new root armed the watchdog %s later and is on trial", rearmed.at.Sub(pushed).Round(time.Second))

	// Grace (3 min) passes, then the init stops feeding because the cell
	// never answered.
	stopped := console.wait(t, onTrial, "no longer fed", 5*time.Minute)
	if !strings.Contains(stopped.text, "did not answer") {
		t.Errorf("feeding stopped for another reason than a silent cell: %s", stopped.text)
	}
	// The reset: the machine's firmware (OVMF) starts again, which a
	// software reboot by kexec, as gokrazy reboots, never does; then the
	// kernel.
	firmware := console.wait(t, stopped, "BdsDxe", 3*time.Minute)
	banner := console.wait(t, firmware, "Linux version", time.Minute)
	t.Logf("the init stopped feeding %s after arming, %s after its last feed; the firmware wrote %s after the stop, the kernel banner %s after it (watchdog timeout 60 s)",
		stopped.at.Sub(rearmed.at).Round(time.Second), field(stopped.text, "last_fed_ago"),
		firmware.at.Sub(stopped.at).Round(time.Second), banner.at.Sub(stopped.at).Round(time.Second))
	if early := firmware.at.Sub(stopped.at); early < 50*time.Second {
		t.Errorf("the machine reset %s after the feeding stopped, before the 60 s timeout could run out", early)
	}

	// Back on the old root, which says why.
	v.waitHealth(4 * time.Minute)
	// QEMU's i6300esb, like the chip, remembers that it fired; the old
	// root's init says so.
	if _, ok := console.find(banner, "the last boot ended in a reset by the watchdog"); !ok {
		t.Error("the old root's init did not report a reset by the watchdog")
	}
	back := time.Now()
	st := v.waitUpdate(30*time.Second, "status", func(update.Status) bool { return true })
	if st.Running != "1.0.0" || st.Slot != update.SlotA || st.Permanent != update.SlotA {
		t.Errorf("after the reset: %+v, want 1.0.0 on root A, permanent", st)
	}
	if st.State.Phase != update.PhaseRolledBack || st.State.Version != "1.1.0" ||
		!strings.Contains(st.State.Message, "did not report healthy") {
		t.Errorf("state %+v, want rolled_back of 1.1.0 saying it did not report healthy", st.State)
	}
	// The trial's own deadline did not fire: that would have been the new
	// init's orderly rollback ("was not healthy within").
	if strings.Contains(st.State.Message, "was not healthy within") {
		t.Errorf("the trial deadline ended the trial, not the watchdog: %s", st.State.Message)
	}
	t.Logf("/health on the old root %s after the kernel banner; push to rollback %s",
		back.Sub(banner.at).Round(time.Second), back.Sub(pushed).Round(time.Second))
}

// field is key's value in a console line in slog's text format.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// consoleClock notes when each line of the serial console arrived.
type consoleClock struct {
	mu      sync.Mutex
	partial []byte
	lines   []timedLine
}

type timedLine struct {
	n    int // its place on the console
	at   time.Time
	text string
}

func (c *consoleClock) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.partial = append(c.partial, p...)
	for {
		i := strings.IndexByte(string(c.partial), '\n')
		if i < 0 {
			break
		}
		c.lines = append(c.lines, timedLine{n: len(c.lines), at: now, text: strings.TrimRight(string(c.partial[:i]), "\r")})
		c.partial = c.partial[i+1:]
	}
	return len(p), nil
}

// find returns the first line containing s that came after line after
// (consoleStart is before the first line).
func (c *consoleClock) find(after timedLine, s string) (timedLine, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines[min(after.n+1, len(c.lines)):] {
		if strings.Contains(l.text, s) {
			return l, true
		}
	}
	return timedLine{}, false
}

// wait waits for find(after, s) for at most timeout.
func (c *consoleClock) wait(t *testing.T, after timedLine, s string, timeout time.Duration) timedLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l, ok := c.find(after, s); ok {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("no console line with %q within %s", s, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// consoleStart is a place before the console's first line.
var consoleStart = timedLine{n: -1}

// last is the console's last line so far.
func (c *consoleClock) last() timedLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) == 0 {
		return consoleStart
	}
	return c.lines[len(c.lines)-1]
}

// between returns the lines from from to to, inclusive.
func (c *consoleClock) between(from, to timedLine) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, l := range c.lines[max(from.n, 0):min(to.n+1, len(c.lines))] {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}
