package browsertest

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	pic "github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/update"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/storage"
	"github.com/pic-cell/cell/ui"
)

// slowFirmware is the device side of an update for the tests: it takes the
// bundle slowly (so the upload's progress is seen moving) and accepts it.
type slowFirmware struct {
	mu       sync.Mutex
	received int64
	state    update.State
}

func (f *slowFirmware) Info() (update.Info, error) {
	return update.Info{Version: "1.0.0", Target: "amd64", RootSlot: "A", PermanentSlot: "A", UptimeSeconds: 42}, nil
}

func (f *slowFirmware) Status() (update.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return update.Status{Running: "1.0.0", Target: "amd64", Slot: update.SlotA, Permanent: update.SlotA, State: f.state, UpdateReady: true}, nil
}

func (f *slowFirmware) Install(ctx context.Context, body io.Reader, max int64) (*bundle.Manifest, error) {
	buf := make([]byte, 64<<10)
	for {
		n, err := body.Read(buf)
		f.mu.Lock()
		f.received += int64(n)
		f.mu.Unlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("receiving: %w", err)
		}
		time.Sleep(15 * time.Millisecond)
	}
	f.mu.Lock()
	f.state = update.State{Phase: update.PhaseCommitted, Version: "1.1.0", FromVersion: "1.0.0", Message: "the test firmware took it", Updated: time.Now()}
	f.mu.Unlock()
	return &bundle.Manifest{Version: "1.1.0", Target: "amd64"}, nil
}

func (f *slowFirmware) MaxBundle() int64 { return 64 << 20 }

// fakeDeviceCell is a cell in this process with the API and the app over
// Go's TLS (not the front: the daemon cannot take a fake firmware) and the
// system area over fw; set up, its admin's password adminPassword.
func fakeDeviceCell(t *testing.T, fw httpapi.Firmware) (base, spki string) {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	book, err := logs.Open(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pic.New(pic.Options{DB: db, Logs: book, HashMemoryKiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	const code = "UITE-STSE-TUPC-ODE2-3456-7ABC-DEFG"
	if err := c.Setup.SetCode(code); err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(httpapi.Deps{Version: pic.Version, Setup: c.Setup, Auth: c.Accounts, Settings: c.Settings, Health: c.Health, Audit: c.Audit, Logs: book, Peers: c.Peers, Routing: c.Peers}).With(httpapi.SystemRoutes(fw))
	api.UI = ui.Handler()
	srv := httptest.NewTLSServer(api.Handler())
	t.Cleanup(func() {
		srv.Close()
		db.Close()
		book.Close()
	})
	cl := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	cl.UseSetupCode(code)
	ctx := t.Context()
	for _, step := range []struct {
		name string
		data map[string]any
	}{
		{"admin", map[string]any{"username": adminUser, "password": adminPassword}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
		{"network", map[string]any{"wg_port": freeUDPPort(t), "subnet_v4": "10.77.0.0/24"}},
	} {
		if _, err := cl.SetupStep(ctx, step.name, step.data); err != nil {
			t.Fatalf("setup step %s: %v", step.name, err)
		}
	}
	if _, err := cl.CompleteSetup(ctx); err != nil {
		t.Fatal(err)
	}
	return srv.URL, spkiHash(srv.Certificate())
}

// bundleFile writes size random bytes as an update bundle to upload.
func bundleFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cell-1.1.0.bundle")
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// recordProgress keeps every value the upload's progress bar takes.
const recordProgress = `(() => {
  window.__progress = [];
  const p = document.getElementById("update-progress");
  new MutationObserver(() => window.__progress.push(Number(p.value))).observe(p, { attributes: true, attributeFilter: ["value"] });
  return true;
})()`

// uploadBundle chooses the file on the system page and starts the upload.
func uploadBundle(b *browser, file string) {
	b.t.Helper()
	b.waitFor("the update form", `!!document.getElementById("update-file")`, 20*time.Second)
	eval[bool](b, recordProgress)
	b.run("choose the bundle", chromedp.SetUploadFiles(chromedp.ID("update-file"), []string{file}))
	b.click("Upload and install")
}

// TestUpdateUploadInTheBrowser: on the system page, an update bundle goes
// up with a progress bar that moves, and the answer is shown. Against a cell
// whose device side is the test's fake firmware (in this process: the daemon
// takes none) the bar climbs to 100 % and the page says the version was
// accepted; the real daemon has no firmware on a developer machine, and the
// page shows the API's message (503 no_firmware).
func TestUpdateUploadInTheBrowser(t *testing.T) {
	needChromium(t)
	t.Run("fake firmware", func(t *testing.T) {
		fw := &slowFirmware{}
		base, spki := fakeDeviceCell(t, fw)
		b := newBrowserAt(t, base, []string{spki})
		b.open("#/login")
		login(b, adminUser, adminPassword)
		b.gotoRoute("system")
		const size = 6 << 20
		uploadBundle(b, bundleFile(t, size))
		b.waitText("Accepted version 1.1.0")
		b.waitFor("the state polled", `(document.getElementById("update-phase") || {}).dataset?.phase === "committed"`, 15*time.Second)
		b.shot("update-accepted")
		steps := eval[[]float64](b, `window.__progress`)
		t.Logf("the progress bar went %v", steps)
		between := 0
		for _, v := range steps {
			if v > 0 && v < 100 {
				between++
			}
		}
		if between == 0 || steps[len(steps)-1] != 100 {
			t.Errorf("the progress bar went %v: want values between 0 and 100, ending at 100", steps)
		}
		fw.mu.Lock()
		got := fw.received
		fw.mu.Unlock()
		if got != size {
			t.Errorf("the firmware received %d bytes, want %d", got, size)
		}
	})
	t.Run("daemon without firmware", func(t *testing.T) {
		c := startCell(t)
		c.setUp()
		b := newBrowser(t, c)
		b.open("#/login")
		login(b, adminUser, adminPassword)
		b.gotoRoute("system")
		uploadBundle(b, bundleFile(t, 2<<20))
		b.waitFor("the refusal shown", `!!document.querySelector("#update-error .error")`, 20*time.Second)
		msg := eval[string](b, `document.querySelector("#update-error .error").innerText`)
		b.shot("update-refused")
		if !strings.Contains(msg, "does not run from a firmware image") || !strings.Contains(msg, "no_firmware") {
			t.Errorf("the page says %q: want the API's message and code (no_firmware)", msg)
		}
		t.Logf("the progress bar went %v; the page says %q", eval[[]float64](b, `window.__progress`), msg)
	})
}
