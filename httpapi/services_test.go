package httpapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/images/catalog"
	"github.com/pic-cell/cell/images/runtime"
)

func init() {
	for k, v := range map[string]routeCase{
		"GET /api/services/active":                                     {path: "/api/services/active"},
		"GET /api/store":                                               {path: "/api/store"},
		"POST /api/store/install":                                      {path: "/api/store/install", body: map[string]any{"id": "nope"}},
		"POST /api/store/remove":                                       {path: "/api/store/remove", body: map[string]any{"id": "nope"}},
		"GET /api/services/catalog/:id/status":                         {path: "/api/services/catalog/files/status"},
		"POST /api/services/catalog/:id/restart":                       {path: "/api/services/catalog/files/restart"},
		"GET /api/services/catalog/:id/accounts":                       {path: "/api/services/catalog/files/accounts"},
		"POST /api/services/catalog/:id/accounts":                      {path: "/api/services/catalog/files/accounts", body: map[string]any{"username": "guest"}},
		"DELETE /api/services/catalog/:id/accounts/:username":          {path: "/api/services/catalog/files/accounts/guest"},
		"GET /api/services/catalog/:id/accounts/:username/credentials": {path: "/api/services/catalog/files/accounts/guest/credentials"},
		"GET /api/containers":                                          {path: "/api/containers"},
		"GET /api/containers/inspect/:id":                              {path: "/api/containers/inspect/files"},
		"POST /api/containers/start/:id":                               {path: "/api/containers/start/files"},
		"POST /api/containers/stop/:id":                                {path: "/api/containers/stop/files"},
		"POST /api/containers/restart/:id":                             {path: "/api/containers/restart/files"},
		"GET /api/containers/logs/:id":                                 {path: "/api/containers/logs/files?lines=10"},
		"GET /api/containers/images":                                   {path: "/api/containers/images"},
		"POST /api/containers/images/remove":                           {path: "/api/containers/images/remove", body: map[string]any{"ref": "pic.local/none:1"}},
		"GET /api/containers/volumes":                                  {path: "/api/containers/volumes"},
		"DELETE /api/containers/volumes/:name":                         {path: "/api/containers/volumes/nothing"},
		"GET /api/files/status":                                        {path: "/api/files/status"},
		"GET /api/files/users":                                         {path: "/api/files/users"},
	} {
		routeCases[k] = v
	}
}

// newServicesEnv is a cell with a fake container runtime and no network:
// what is stored and refused, never a container (the daemon tests run real
// ones). rt nil: a cell without containerd.
func newServicesEnv(t *testing.T, rt runtime.Runtime, cat func() ([]byte, []byte)) *env {
	t.Helper()
	dir := t.TempDir()
	return buildEnv(t, dir, cell.Options{HashMemoryKiB: 64, Runtime: rt, DataDir: dir, Catalog: cat}, depsOf, nil)
}

func TestServicesStoreInstallAccounts(t *testing.T) {
	e := newServicesEnv(t, runtime.NewFake(nil), nil)
	e.setup()
	admin := e.login("admin", adminPassword)

	var store struct {
		Services []struct {
			ID        string `json:"id"`
			Installed bool   `json:"installed"`
			Subdomain string `json:"subdomain"`
		} `json:"services"`
	}
	admin.must(200, "GET", "/api/store", nil).json(t, &store)
	if len(store.Services) == 0 || store.Services[0].ID != "files" || store.Services[0].Installed || store.Services[0].Subdomain != "files" {
		t.Fatalf("store = %+v", store)
	}

	var created struct {
		OneTimePassword string `json:"one_time_password"`
	}
	admin.must(201, "POST", "/api/peers", map[string]any{"name": "alice"}).json(t, &created)
	admin.must(201, "POST", "/api/peers", map[string]any{"name": "bob"})

	// Bad input: clear errors, nothing stored.
	for _, c := range []struct {
		body   any
		status int
		code   string
	}{
		{map[string]any{"id": "nope"}, 404, "service_not_found"},
		{map[string]any{"id": "../etc"}, 404, "service_not_found"},
		{map[string]any{"id": "$(reboot)"}, 404, "service_not_found"},
		{map[string]any{"id": "files\x00"}, 404, "service_not_found"},
		{map[string]any{"id": strings.Repeat("é", 2000)}, 404, "service_not_found"},
		{map[string]any{}, 400, "missing_id"},
		{map[string]any{"id": "files", "extra": 1}, 400, ""},
	} {
		r := admin.do("POST", "/api/store/install", c.body)
		if r.status != c.status || (c.code != "" && r.code() != c.code) {
			t.Errorf("install %v: %d %s, want %d %s", c.body, r.status, r.body, c.status, c.code)
		}
	}
	var active []any
	var act struct{ Services []any }
	admin.must(200, "GET", "/api/services/active", nil).json(t, &act)
	if len(act.Services) != 0 {
		t.Fatalf("a refused install left %v", act.Services)
	}
	_ = active

	var inst struct {
		ID, State, URL string
		Accounts       int
	}
	admin.must(202, "POST", "/api/store/install", map[string]any{"id": "files"}).json(t, &inst)
	if inst.ID != "files" || inst.State != "installing" || inst.URL != "https://files.home.example.org/" || inst.Accounts != 2 {
		t.Errorf("install answered %+v", inst)
	}
	if r := admin.do("POST", "/api/store/install", map[string]any{"id": "files"}); r.status != 409 || r.code() != "already_installed" {
		t.Errorf("install twice: %d %s", r.status, r.body)
	}
	// A peer may not take the service's name, nor the service a peer's.
	if r := admin.do("POST", "/api/peers", map[string]any{"name": "files"}); r.status != 409 {
		t.Errorf("a peer named files: %d %s", r.status, r.body)
	}

	var creds struct {
		Services []struct{ Service, URL, Username, Password string }
	}
	admin.must(200, "GET", "/api/peers/alice/service-credentials", nil).json(t, &creds)
	if len(creds.Services) != 1 || creds.Services[0].Username != "alice" || len(creds.Services[0].Password) < 20 || creds.Services[0].URL != "https://files.home.example.org/" {
		t.Fatalf("alice's credentials: %+v", creds)
	}
	alicePW := creds.Services[0].Password
	// The peer sees the same through its own portal.
	peer := e.firstLogin("alice", created.OneTimePassword) // onetime_test.go: chooses its own password first
	var mine struct {
		Services []struct{ Username, Password string }
	}
	peer.must(200, "GET", "/api/peer/service-credentials", nil).json(t, &mine)
	if len(mine.Services) != 1 || mine.Services[0].Password != alicePW {
		t.Errorf("alice's own credentials: %+v", mine)
	}
	// The admin's account routes.
	admin.must(201, "POST", "/api/services/catalog/files/accounts", map[string]any{"username": "guest"})
	if r := admin.do("POST", "/api/services/catalog/files/accounts", map[string]any{"username": "guest"}); r.status != 409 {
		t.Errorf("account twice: %d %s", r.status, r.body)
	}
	for _, bad := range []string{"../x", "a/b", "UPPER", "a b", strings.Repeat("x", 100), "$(id)"} {
		if r := admin.do("POST", "/api/services/catalog/files/accounts", map[string]any{"username": bad}); r.status != 400 || r.code() != "invalid_username" {
			t.Errorf("account %q: %d %s", bad, r.status, r.body)
		}
	}
	if r := admin.do("POST", "/api/services/catalog/files/accounts", map[string]any{"peer": "carol"}); r.status != 404 {
		t.Errorf("account for no such peer: %d %s", r.status, r.body)
	}
	var guest struct{ Username, Password string }
	admin.must(200, "GET", "/api/services/catalog/files/accounts/guest/credentials", nil).json(t, &guest)
	if guest.Username != "guest" || guest.Password == "" || guest.Password == alicePW {
		t.Errorf("guest's credentials: %+v", guest)
	}
	admin.must(200, "DELETE", "/api/services/catalog/files/accounts/guest", nil)
	if r := admin.do("DELETE", "/api/services/catalog/files/accounts/guest", nil); r.status != 404 {
		t.Errorf("deleting twice: %d", r.status)
	}
	if r := admin.do("GET", "/api/services/catalog/files/accounts/guest/credentials", nil); r.status != 404 {
		t.Errorf("credentials of a deleted account: %d", r.status)
	}
	if r := admin.do("GET", "/api/services/catalog/mail/accounts", nil); r.status != 404 || r.code() != "service_not_installed" {
		t.Errorf("accounts of a service not installed: %d %s", r.status, r.body)
	}

	// Deleting a peer takes its accounts (and their secrets) along.
	admin.must(200, "DELETE", "/api/peers/bob", nil)
	var accts struct{ Accounts []struct{ Username string } }
	admin.must(200, "GET", "/api/services/catalog/files/accounts", nil).json(t, &accts)
	if len(accts.Accounts) != 1 || accts.Accounts[0].Username != "alice" {
		t.Errorf("accounts after bob left: %+v", accts)
	}
	if _, err := e.db.Vault.Get("service/files/account/bob"); err == nil {
		t.Error("bob's password is still in the vault")
	}
	// A new peer gets an account at once.
	admin.must(201, "POST", "/api/peers", map[string]any{"name": "carol"})
	admin.must(200, "GET", "/api/services/catalog/files/accounts", nil).json(t, &accts)
	if len(accts.Accounts) != 2 {
		t.Errorf("accounts after carol came: %+v", accts)
	}

	var fs struct {
		Installed bool
		Accounts  int
	}
	admin.must(200, "GET", "/api/files/status", nil).json(t, &fs)
	if !fs.Installed || fs.Accounts != 2 {
		t.Errorf("files status %+v", fs)
	}
	var verb struct{ Containers map[string]string }
	admin.must(200, "GET", "/api/logs/verbosity", nil).json(t, &verb)
	if verb.Containers["files"] != "info" {
		t.Errorf("verbosity lists the containers as %v", verb.Containers)
	}

	// Volumes: in use while installed, removable once the service is gone
	// (a remove keeps the data unless told otherwise).
	vol := filepath.Join(e.dir, "volumes", "files", "data")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(vol, "note.txt"), []byte("keep me"), 0o644)
	if r := admin.do("DELETE", "/api/containers/volumes/files", nil); r.status != 409 {
		t.Errorf("removing a volume in use: %d %s", r.status, r.body)
	}
	admin.must(200, "POST", "/api/store/remove", map[string]any{"id": "files"})
	if r := admin.do("POST", "/api/store/remove", map[string]any{"id": "files"}); r.status != 404 || r.code() != "service_not_installed" {
		t.Errorf("removing twice: %d %s", r.status, r.body)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "note.txt")); err != nil || string(b) != "keep me" {
		t.Errorf("a remove that keeps the data lost it: %q %v", b, err)
	}
	if r := admin.do("GET", "/api/files/users", nil); r.status != 404 || r.code() != "files_not_installed" {
		t.Errorf("/api/files/users without files: %d %s", r.status, r.body)
	}
	admin.must(200, "GET", "/api/files/status", nil).json(t, &fs)
	if fs.Installed {
		t.Error("files status says installed after remove")
	}
	admin.must(200, "GET", "/api/peers/alice/service-credentials", nil).json(t, &creds)
	if len(creds.Services) != 0 {
		t.Errorf("credentials after remove: %+v", creds)
	}
	var vols struct {
		Volumes []struct {
			Name  string
			InUse bool `json:"in_use"`
		}
	}
	admin.must(200, "GET", "/api/containers/volumes", nil).json(t, &vols)
	if len(vols.Volumes) != 1 || vols.Volumes[0].Name != "files" || vols.Volumes[0].InUse {
		t.Errorf("volumes after a remove that kept the data: %+v", vols)
	}
	admin.must(200, "DELETE", "/api/containers/volumes/files", nil)
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Errorf("the volume is still there: %v", err)
	}

	// Reinstall, then remove without keeping the data.
	admin.must(202, "POST", "/api/store/install", map[string]any{"id": "files"})
	os.MkdirAll(vol, 0o755)
	admin.must(200, "POST", "/api/store/remove", map[string]any{"id": "files", "keep_data": false})
	if _, err := os.Stat(filepath.Join(e.dir, "volumes", "files")); !os.IsNotExist(err) {
		t.Errorf("remove without keep_data left the volume: %v", err)
	}
	// Every change was audited.
	var audit struct {
		Entries []struct{ Action, Result string }
	}
	admin.must(200, "GET", "/api/audit?limit=200", nil).json(t, &audit)
	seen := map[string]bool{}
	for _, en := range audit.Entries {
		seen[en.Action+" "+en.Result] = true
	}
	for _, want := range []string{"service.install ok", "service.remove ok", "service.account_add ok", "service.account_delete ok", "container.volume_remove ok"} {
		if !seen[want] {
			t.Errorf("no audit entry %q", want)
		}
	}
}

func TestServicesRefusals(t *testing.T) {
	t.Run("no containerd", func(t *testing.T) {
		e := newServicesEnv(t, nil, nil)
		e.setup()
		admin := e.login("admin", adminPassword)
		if r := admin.do("POST", "/api/store/install", map[string]any{"id": "files"}); r.status != 503 || r.code() != "containerd_unavailable" {
			t.Errorf("install without containerd: %d %s", r.status, r.body)
		}
		if r := admin.do("GET", "/api/containers", nil); r.status != 503 {
			t.Errorf("containers without containerd: %d %s", r.status, r.body)
		}
		admin.must(200, "GET", "/api/store", nil) // the catalog still shows
		admin.must(200, "GET", "/api/files/status", nil)
	})
	t.Run("tampered catalog", func(t *testing.T) {
		idx, sig := catalog.DefaultBytes()
		bad := []byte(strings.Replace(string(idx), "WebDAV", "WebDAW", 1))
		if string(bad) == string(idx) {
			t.Fatal("the test's tampering changed nothing")
		}
		e := newServicesEnv(t, runtime.NewFake(nil), func() ([]byte, []byte) { return bad, sig })
		e.setup()
		admin := e.login("admin", adminPassword)
		for _, r := range []resp{admin.do("GET", "/api/store", nil), admin.do("POST", "/api/store/install", map[string]any{"id": "files"})} {
			if r.status != 503 || r.code() != "catalog_untrusted" {
				t.Errorf("a tampered catalog: %d %s", r.status, r.body)
			}
		}
		var act struct{ Services []any }
		admin.must(200, "GET", "/api/services/active", nil).json(t, &act)
		if len(act.Services) != 0 {
			t.Errorf("installed from a tampered catalog: %v", act.Services)
		}
	})
}
