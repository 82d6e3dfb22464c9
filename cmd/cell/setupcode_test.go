package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
)

// fakeWizard records what setupGate gives the wizard.
type fakeWizard struct {
	complete bool
	code     string
	codes    int
	hosts    []string
}

func (w *fakeWizard) SetupComplete() (bool, error) { return w.complete, nil }
func (w *fakeWizard) SetCode(code string) error    { w.code = code; w.codes++; return nil }
func (w *fakeWizard) SetHostnames(names ...string) { w.hosts = names }

func logTo(b *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var codeRe = regexp.MustCompile(`^[A-Z2-7]{4}(-[A-Z2-7]{4}){6}$`)

// TestSetupGateMakesItsOwnCode: without a code file the daemon makes a code,
// keeps it in DATA/setup-code (0600), logs it once at warn, and reads the same
// code at the next start without logging it again.
func TestSetupGateMakesItsOwnCode(t *testing.T) {
	data := t.TempDir()
	var log bytes.Buffer
	w := &fakeWizard{}
	if err := setupGate(w, "", data, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if !codeRe.MatchString(w.code) || w.codes != 1 {
		t.Fatalf("the wizard got %q (%d times), want one new code", w.code, w.codes)
	}
	own := filepath.Join(data, "setup-code")
	b, err := os.ReadFile(own)
	if err != nil || string(b) != w.code+"\n" {
		t.Fatalf("DATA/setup-code: %q, %v; want the code", b, err)
	}
	if fi, _ := os.Stat(own); fi.Mode().Perm() != 0o600 {
		t.Errorf("DATA/setup-code mode %v, want 0600", fi.Mode().Perm())
	}
	if n := strings.Count(log.String(), w.code); n != 1 || !strings.Contains(log.String(), "level=WARN") ||
		!strings.Contains(log.String(), "setup wizard asks for this setup code") {
		t.Fatalf("the code is logged %d times; want once at warn:\n%s", n, log.String())
	}
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, w.code) && !strings.Contains(line, "level=WARN") {
			t.Errorf("the code in a line below warn: %s", line)
		}
	}
	if len(w.hosts) != 1 || w.hosts[0] == "" {
		t.Errorf("host names %v, want the system's host name", w.hosts)
	}
	// The next start: the same code, not logged.
	first := w.code
	log.Reset()
	w2 := &fakeWizard{}
	if err := setupGate(w2, "", data, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if w2.code != first {
		t.Fatalf("restart: code %q, want the kept %q", w2.code, first)
	}
	if strings.Contains(log.String(), first) || !strings.Contains(log.String(), own) {
		t.Fatalf("restart log: want the file named and not the code:\n%s", log.String())
	}
}

// TestSetupGateReadsTheFile: a -setup-code-file (the image's) is the code; no
// code of the daemon's own is made, and its value is not logged.
func TestSetupGateReadsTheFile(t *testing.T) {
	data := t.TempDir()
	file := filepath.Join(t.TempDir(), "setup-code")
	os.WriteFile(file, []byte("\n  ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23 \r\n"), 0o600)
	var log bytes.Buffer
	w := &fakeWizard{}
	if err := setupGate(w, file, data, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if w.code != "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23" {
		t.Fatalf("code %q, want the file's", w.code)
	}
	if _, err := os.Stat(filepath.Join(data, "setup-code")); !os.IsNotExist(err) {
		t.Errorf("the daemon made a code of its own beside the file's: %v", err)
	}
	if strings.Contains(log.String(), "ABCD") {
		t.Errorf("the file's code is logged:\n%s", log.String())
	}

	// A missing or unusable file: the daemon's own code (made once, then kept).
	for _, bad := range []string{filepath.Join(t.TempDir(), "none"), writeTemp(t, " \n\n"), writeTemp(t, strings.Repeat("A", 2000))} {
		log.Reset()
		w := &fakeWizard{}
		if err := setupGate(w, bad, data, logTo(&log)); err != nil {
			t.Fatal(err)
		}
		own, _ := os.ReadFile(filepath.Join(data, "setup-code"))
		if !codeRe.MatchString(w.code) || string(own) != w.code+"\n" {
			t.Fatalf("file %s: the wizard got %q, DATA/setup-code has %q", bad, w.code, own)
		}
	}
}

func writeTemp(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "code")
	os.WriteFile(p, []byte(content), 0o600)
	return p
}

// TestSetupGateAfterSetup: once set up there is no code, and the daemon's own
// code file is gone.
func TestSetupGateAfterSetup(t *testing.T) {
	data := t.TempDir()
	own := filepath.Join(data, "setup-code")
	os.WriteFile(own, []byte("ABCD-EFGH\n"), 0o600)
	var log bytes.Buffer
	w := &fakeWizard{complete: true}
	if err := setupGate(w, "", data, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if w.codes != 0 {
		t.Fatalf("a set-up cell's wizard got a code")
	}
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("DATA/setup-code stays after setup: %v", err)
	}
	if strings.Contains(log.String(), "ABCD") {
		t.Errorf("the old code is logged:\n%s", log.String())
	}
}

// TestFirstContact runs the daemon on a new data directory: it writes its setup
// code to the log at warn and to DATA/setup-code; the wizard refuses changes
// without it and takes them with it; after setup and a restart the file is gone
// and the code opens nothing.
func TestFirstContact(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	d := startDaemon(t, bin, dir)
	raw, err := os.ReadFile(filepath.Join(dir, "setup-code"))
	if err != nil {
		t.Fatalf("DATA/setup-code: %v", err)
	}
	code := strings.TrimSpace(string(raw))
	if !codeRe.MatchString(code) {
		t.Fatalf("DATA/setup-code holds %q, not a setup code", code)
	}
	shown := 0
	for _, line := range strings.Split(d.log(), "\n") {
		if strings.Contains(line, code) {
			shown++
			if !strings.Contains(line, " warn ") || !strings.Contains(line, "setup wizard asks for this setup code") {
				t.Errorf("the code in a line that is not the warning: %s", line)
			}
		}
	}
	if shown != 1 {
		t.Errorf("the daemon's log (stderr) shows the code %d times, want once:\n%s", shown, d.log())
	}
	c := newClient(t, d.url)
	ctx := t.Context()
	admin := map[string]any{"username": "admin", "password": adminPassword}
	if _, err := c.SetupStep(ctx, "admin", admin); !client.IsCode(err, "setup_code_required") {
		t.Fatalf("a step without the code: %v, want 403 setup_code_required", err)
	}
	c.UseSetupCode("WRONG")
	if _, err := c.SetupStep(ctx, "admin", admin); !client.IsCode(err, "wrong_setup_code") {
		t.Fatalf("a step with a wrong code: %v, want 403 wrong_setup_code", err)
	}
	setUp(t, c, dir)
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(30 * time.Second); err != nil {
		t.Fatalf("the daemon ended with %v", err)
	}
	d2 := startDaemon(t, bin, dir)
	if _, err := os.Stat(filepath.Join(dir, "setup-code")); !os.IsNotExist(err) {
		t.Errorf("DATA/setup-code after setup and a restart: %v, want it gone", err)
	}
	c2 := newClient(t, d2.url)
	c2.UseSetupCode(code)
	if _, err := c2.SetupStep(ctx, "admin", admin); !client.IsCode(err, "setup_complete") {
		t.Fatalf("the old code after setup: %v, want 409 setup_complete", err)
	}
	logIn(t, c2)
}
