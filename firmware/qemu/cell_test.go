package qemu_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/httpapi/client"
)

const adminPassword = "qemu-admin-pass-7d2f0"

// api is a client of the VM's forwarded port that stops the test on an error.
type api struct {
	*client.Client
	t testing.TB
}

func newAPI(t testing.TB, v *testVM) *api {
	return &api{Client: v.client(30 * time.Second), t: t}
}

func (a *api) ok(what string, err error) {
	a.t.Helper()
	if err != nil {
		a.t.Fatalf("%s: %v", what, err)
	}
}

func (a *api) setupAndLogin(code string) {
	a.t.Helper()
	setUpCell(a.t, a.Client, adminPassword, code)
	a.login()
}

// setUpCell walks c through the wizard (admin, cell home.example.org, network
// 10.77.0.0/24 on 51820) with the image's setup code and completes it. First it
// checks that the cell refuses a step without the code: the image's daemon
// reads the code from the boot partition, not one of its own.
func setUpCell(t testing.TB, c *client.Client, password, code string) {
	t.Helper()
	ctx := context.Background()
	c.UseSetupCode("")
	if _, err := c.SetupStep(ctx, "admin", map[string]any{"username": "admin", "password": password}); !client.IsCode(err, "setup_code_required") {
		t.Fatalf("a setup step without the setup code: %v, want 403 setup_code_required", err)
	}
	c.UseSetupCode(code)
	for _, step := range []struct {
		name string
		data map[string]any
	}{
		{"admin", map[string]any{"username": "admin", "password": password}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
		{"network", map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24"}},
	} {
		if _, err := c.SetupStep(ctx, step.name, step.data); err != nil {
			t.Fatalf("setup step %s: %v", step.name, err)
		}
	}
	if _, err := c.CompleteSetup(ctx); err != nil {
		t.Fatalf("complete setup: %v", err)
	}
}

func (a *api) login() {
	a.t.Helper()
	a.ok("login", a.Login(context.Background(), "admin", adminPassword))
}

func (a *api) audit(action string) []client.AuditEntry {
	a.t.Helper()
	page, err := a.Audit(context.Background(), client.AuditQuery{Action: action})
	a.ok("GET /api/audit?action="+action, err)
	return page.Entries
}

func (a *api) info() client.SystemInfo {
	a.t.Helper()
	info, err := a.SystemInfo(context.Background())
	a.ok("GET /api/system/info", err)
	return info
}

// TestCellDaemonUpdateThroughAPI is the "done when": the real daemon in
// the real image, set up through its API; `cellctl update push` sends a bundle
// that takes (the cell comes back on root B with the new version), then one
// whose daemon cannot start (rolled back on its own); the audit log has both
// outcomes and says why the second failed.
func TestCellDaemonUpdateThroughAPI(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	cellctl := filepath.Join(f.dir, "cellctl")
	if out, err := exec.Command("go", "build", "-o", cellctl, "github.com/pic-cell/cell/cmd/cellctl").CombinedOutput(); err != nil {
		t.Fatalf("building cellctl: %v\n%s", err, out)
	}
	img := f.image(f.cellConfig("1.0.0"))
	good := f.bundle(f.cellConfig("1.1.0"), nil)
	badCfg := f.cellConfig("1.2.0")
	badCfg.Packages[0].Args = append(badCfg.Packages[0].Args, "-no-such-flag")
	badCfg.Settings.TrialTimeout = image.Duration(45 * time.Second)
	bad := f.bundle(badCfg, nil)

	v := bootCell(t, img, false)
	v.waitHealth(3 * time.Minute)
	a := newAPI(t, v)
	a.setupAndLogin(f.code)

	push := func(bundle string) (string, error) {
		// cellctl as an admin on the LAN runs it: https://<the cell's
		// address>, the cell's CA trusted; the LAN is a proxy to the forward.
		cmd := exec.Command(cellctl, "update", "push", "-device", v.base(), "-bundle", bundle, "-wait", "6m")
		cmd.Env = append(os.Environ(), "CELL_PASSWORD="+adminPassword, "SSL_CERT_FILE="+v.caFile,
			"HTTPS_PROXY="+connectProxy(t, fmt.Sprintf("127.0.0.1:%d", v.tlsPort)), "NO_PROXY=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := push(good)
	if err != nil || !strings.Contains(out, "updated: version 1.1.0 runs from root slot 3") {
		t.Fatalf("push 1.1.0: %v\n%s", err, out)
	}
	a.login()
	info := a.info()
	if info.Version != "1.1.0" || info.RootSlot != "B" {
		t.Errorf("info after the update: %+v, want 1.1.0 on B", info)
	}

	out, err = push(bad)
	if err == nil || !strings.Contains(out, "rolled_back") {
		t.Fatalf("push 1.2.0 (broken daemon): %v, want a rollback\n%s", err, out)
	}
	a.login()
	info = a.info()
	if info.Version != "1.1.0" || info.RootSlot != "B" {
		t.Errorf("info after the rollback: %+v, want 1.1.0 on B", info)
	}

	// The commit is audited by the daemon that was on trial, within its 10 s poll.
	var outcomes []client.AuditEntry
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
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
	if e := got["1.2.0"]; e.Result != "rolled_back" || !strings.Contains(e.Details["message"], "not healthy") {
		t.Errorf("audit outcome of 1.2.0: %+v, want rolled_back saying not healthy", e)
	}
	installs := a.audit("system.update")
	if len(installs) != 2 || installs[0].Result != "ok" || installs[0].Actor != "admin" {
		t.Errorf("audit of the installs: %+v, want two ok entries by admin", installs)
	}
	if t.Failed() {
		t.Log(fmt.Sprintf("audit outcomes: %+v", outcomes))
	}
}

// connectProxy is an HTTP CONNECT proxy that takes every tunnel to target:
// a program that dials the guest's address (as on the LAN) reaches the
// forward to it.
func connectProxy(t testing.TB, target string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.DialTimeout("tcp", target, 10*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
		go func() { io.Copy(up, buf); up.Close() }()
		io.Copy(conn, up)
		conn.Close()
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
