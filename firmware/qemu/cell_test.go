package qemu_test

import (
	"github.com/pic-cell/cell/firmware/image"

	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const adminPassword = "qemu-admin-pass-7d2f0"

// api is an HTTP client with a cookie jar against the VM's forwarded port.
type api struct {
	t    testing.TB
	v    *testVM
	hc   *http.Client
	csrf string
}

func (a *api) do(method, path string, body any) (int, []byte) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.v.url(path), rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.csrf != "" {
		req.Header.Set("X-CSRF-Token", a.csrf)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (a *api) must(method, path string, body any, dst any) {
	a.t.Helper()
	code, b := a.do(method, path, body)
	if code/100 != 2 {
		a.t.Fatalf("%s %s: %d %s", method, path, code, b)
	}
	if dst != nil {
		if err := json.Unmarshal(b, dst); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func newAPI(t testing.TB, v *testVM) *api {
	jar, _ := cookiejar.New(nil)
	return &api{t: t, v: v, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

func (a *api) setupAndLogin() {
	a.must("POST", "/api/setup/step", map[string]any{"step": "admin", "data": map[string]any{"username": "admin", "password": adminPassword}}, nil)
	a.must("POST", "/api/setup/step", map[string]any{"step": "cell", "data": map[string]any{"name": "home", "domain": "home.example.org"}}, nil)
	a.must("POST", "/api/setup/step", map[string]any{"step": "network", "data": map[string]any{"wg_port": 51820, "subnet_v4": "10.77.0.0/24"}}, nil)
	a.must("POST", "/api/setup/complete", nil, nil)
	a.login()
}

func (a *api) login() {
	a.must("POST", "/api/auth/login", map[string]string{"username": "admin", "password": adminPassword}, nil)
	var tok struct{ Token string }
	a.must("GET", "/api/auth/csrf-token", nil, &tok)
	a.csrf = tok.Token
}

type auditEntry struct {
	Actor    string            `json:"actor"`
	Action   string            `json:"action"`
	TargetID string            `json:"target_id"`
	Result   string            `json:"result"`
	Details  map[string]string `json:"details"`
}

func (a *api) audit(action string) []auditEntry {
	var out struct{ Entries []auditEntry }
	a.must("GET", "/api/audit?action="+action, nil, &out)
	return out.Entries
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

	v := bootVM(t, img, false)
	v.waitHealth(3 * time.Minute)
	a := newAPI(t, v)
	a.setupAndLogin()

	push := func(bundle string) (string, error) {
		cmd := exec.Command(cellctl, "update", "push", "-device", v.url(""), "-bundle", bundle, "-wait", "6m")
		cmd.Env = append(os.Environ(), "CELL_PASSWORD="+adminPassword)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := push(good)
	if err != nil || !strings.Contains(out, "updated: version 1.1.0 runs from root slot 3") {
		t.Fatalf("push 1.1.0: %v\n%s", err, out)
	}
	a.login()
	var info struct {
		Version  string `json:"version"`
		RootSlot string `json:"root_slot"`
	}
	a.must("GET", "/api/system/info", nil, &info)
	if info.Version != "1.1.0" || info.RootSlot != "B" {
		t.Errorf("info after the update: %+v, want 1.1.0 on B", info)
	}

	out, err = push(bad)
	if err == nil || !strings.Contains(out, "rolled_back") {
		t.Fatalf("push 1.2.0 (broken daemon): %v, want a rollback\n%s", err, out)
	}
	a.login()
	a.must("GET", "/api/system/info", nil, &info)
	if info.Version != "1.1.0" || info.RootSlot != "B" {
		t.Errorf("info after the rollback: %+v, want 1.1.0 on B", info)
	}

	// The commit is audited by the daemon that was on trial, within its 10 s poll.
	var outcomes []auditEntry
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		if outcomes = a.audit("system.update.outcome"); len(outcomes) >= 2 {
			break
		}
	}
	got := map[string]auditEntry{}
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
