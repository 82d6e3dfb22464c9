package httpapi

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/update"
	"github.com/pic-cell/cell/storage"
)

// fakeFirmware records what it was sent and refuses with err.
type fakeFirmware struct {
	err      error
	received []byte
	installs int
}

func (f *fakeFirmware) Info() (update.Info, error) {
	return update.Info{Version: "1.0.0", Target: "amd64", RootSlot: "A", PermanentSlot: "A", UptimeSeconds: 42}, nil
}

func (f *fakeFirmware) Status() (update.Status, error) {
	return update.Status{Running: "1.0.0", Target: "amd64", Slot: 2, Permanent: 2}, nil
}

func (f *fakeFirmware) Install(ctx context.Context, body io.Reader, max int64) (*bundle.Manifest, error) {
	f.installs++
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("receiving: %w", err)
	}
	f.received = b
	if f.err != nil {
		return nil, f.err
	}
	return &bundle.Manifest{Version: "1.1.0", Target: "amd64"}, nil
}

func (f *fakeFirmware) MaxBundle() int64 { return 1 << 20 }

// newSystemEnv is a set-up env with the system area over fw.
func newSystemEnv(t *testing.T, fw Firmware) *env {
	t.Helper()
	e := buildEnv(t, t.TempDir(), cell.Options{HashMemoryKiB: 64}, func(c *cell.Cell) Deps {
		return Deps{Version: cell.Version, Setup: c.Setup, Auth: c.Accounts, Settings: c.Settings, Health: c.Health, Audit: c.Audit, Logs: c.Logs}
	}, fw)
	e.setup()
	return e
}

func TestSystemUpdateRefusalsAndAudit(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"accepted", nil, 202, ""},
		{"bad signature", bundle.ErrSignature, 400, "bad_signature"},
		{"wrong target", fmt.Errorf("%w: rpi", bundle.ErrTarget), 400, "wrong_target"},
		{"older version", fmt.Errorf("%w: 0.9", bundle.ErrVersion), 400, "version_refused"},
		{"flipped bit", fmt.Errorf("%w: root", bundle.ErrHash), 400, "hash_mismatch"},
		{"busy", update.ErrBusy, 409, "update_in_progress"},
		{"no key", bundle.ErrNoKey, 409, "no_update_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fw := &fakeFirmware{err: tt.err}
			e := newSystemEnv(t, fw)
			admin := e.login("admin", adminPassword)
			r := admin.do("POST", "/api/system/update", "BUNDLE-BYTES", "Content-Type", "application/octet-stream")
			if r.status != tt.status || r.code() != tt.code {
				t.Fatalf("status %d code %q, want %d %q: %s", r.status, r.code(), tt.status, tt.code, r.body)
			}
			if string(fw.received) != "BUNDLE-BYTES" {
				t.Errorf("firmware got %q, want the raw body", fw.received)
			}
			entries, _, err := e.cell.Audit.Query(storage.Filter{Action: "system.update"})
			if err != nil {
				t.Fatal(err)
			}
			want := "ok"
			if tt.code != "" {
				want = tt.code
			}
			if len(entries) != 1 || entries[0].Result != want || entries[0].Actor != "admin" {
				t.Errorf("audit %+v, want one system.update entry with result %q", entries, want)
			}
		})
	}
}

func TestSystemAccess(t *testing.T) {
	fw := &fakeFirmware{}
	e := newSystemEnv(t, fw)
	anon := e.client()
	for _, p := range []string{"/api/system/info", "/api/system/update"} {
		if r := anon.do("GET", p, nil); r.status != 401 {
			t.Errorf("GET %s without a session: %d, want 401", p, r.status)
		}
	}
	e.addPeerUser("bob", "bob-password-123456")
	peer := e.login("bob", "bob-password-123456")
	if r := peer.do("POST", "/api/system/update", "x", "Content-Type", "application/octet-stream"); r.status != 403 {
		t.Errorf("peer POST: %d, want 403", r.status)
	}
	admin := e.login("admin", adminPassword)
	if r := admin.do("POST", "/api/system/update", "x", "Content-Type", "application/octet-stream", "X-CSRF-Token", ""); r.status != 403 {
		t.Errorf("admin POST without CSRF token: %d, want 403", r.status)
	}
	if r := admin.do("POST", "/api/system/update", strings.Repeat("x", 2<<20), "Content-Type", "application/octet-stream"); r.status != 413 {
		t.Errorf("oversized bundle: %d, want 413", r.status)
	}
	if fw.installs != 0 {
		t.Errorf("firmware reached %d times by refused requests", fw.installs)
	}
	var info update.Info
	admin.must(200, "GET", "/api/system/info", nil).json(t, &info)
	if info.Version != "1.0.0" || info.RootSlot != "A" || info.UptimeSeconds != 42 {
		t.Errorf("info %+v", info)
	}
	var st update.Status
	admin.must(200, "GET", "/api/system/update", nil).json(t, &st)
	if st.Running != "1.0.0" || st.Slot != 2 {
		t.Errorf("status %+v", st)
	}
}

func TestSystemWithoutFirmware(t *testing.T) {
	e := newSystemEnv(t, nil)
	admin := e.login("admin", adminPassword)
	var info update.Info
	admin.must(200, "GET", "/api/system/info", nil).json(t, &info)
	if info.Version != cell.Version || !strings.HasPrefix(info.Target, "host-") {
		t.Errorf("info without firmware %+v", info)
	}
	if r := admin.do("POST", "/api/system/update", "x", "Content-Type", "application/octet-stream"); r.status != 503 || r.code() != "no_firmware" {
		t.Errorf("update without firmware: %d %s, want 503 no_firmware", r.status, r.body)
	}
}
