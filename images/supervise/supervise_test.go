package supervise_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/accounts"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/supervise"
)

// clock is a fake clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeAccounts is an AccountClient of one service's accounts.
type fakeAccounts struct {
	mu    sync.Mutex
	users map[string]supervise.Account
	calls []string
	fail  error
}

func (f *fakeAccounts) List(ctx context.Context) ([]accounts.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var out []accounts.Account
	for u, a := range f.users {
		out = append(out, accounts.Account{Username: u, QuotaBytes: a.QuotaBytes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Username < out[j].Username })
	return out, nil
}

func (f *fakeAccounts) Put(ctx context.Context, user, password string, quota int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[user] = supervise.Account{Password: password, QuotaBytes: quota}
	f.calls = append(f.calls, "put "+user)
	return nil
}

func (f *fakeAccounts) Delete(ctx context.Context, user string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[user]; !ok {
		return accounts.ErrNotFound
	}
	delete(f.users, user)
	f.calls = append(f.calls, "delete "+user)
	return nil
}

func (f *fakeAccounts) get(user string) (supervise.Account, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.users[user]
	return a, ok
}

func (f *fakeAccounts) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := append([]string(nil), f.calls...)
	f.calls = nil
	return c
}

type env struct {
	rt       *runtime.Fake
	clock    *clock
	sup      *supervise.Supervisor
	acc      *fakeAccounts
	healthy  atomic.Bool
	health   string
	dir      string
	tokenSet atomic.Int32
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{clock: &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, dir: t.TempDir(),
		acc: &fakeAccounts{users: map[string]supervise.Account{}}}
	e.rt = runtime.NewFake(e.clock.Now)
	e.healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !e.healthy.Load() {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(srv.Close)
	e.health = srv.URL + "/healthz"
	e.sup = supervise.New(supervise.Options{
		Runtime: e.rt,
		Accounts: func(adminURL, token string) supervise.AccountClient {
			if token != "secret-token" {
				t.Errorf("account client made with token %q", token)
			}
			return e.acc
		},
		Log:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now:         e.clock.Now,
		Poll:        10 * time.Millisecond,
		HealthEvery: 5 * time.Millisecond,
		StopGrace:   time.Second,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.sup.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *env) service(id string) supervise.Service {
	archive := filepath.Join(e.dir, id+".tar")
	ref := "pic.local/" + id + ":1.0.0"
	e.rt.AddArchive(archive, runtime.Image{Ref: ref, Digest: "sha256:" + id})
	return supervise.Service{
		ID: id, Archive: archive, Image: ref,
		Spec:   runtime.Spec{User: "65534:65534"},
		Files:  []supervise.File{{Path: filepath.Join(e.dir, id, "admin-token"), Data: []byte("secret-token"), Mode: 0o640, UID: os.Getuid(), GID: os.Getgid()}},
		Dirs:   []supervise.Dir{{Path: filepath.Join(e.dir, id, "data"), UID: os.Getuid(), GID: os.Getgid()}},
		Health: e.health,
	}
}

func (e *env) sync(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.sup.Sync(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync did not return within 10 s; states %+v", e.sup.States())
	}
	return err
}

func (e *env) state(id string) supervise.State {
	for _, s := range e.sup.States() {
		if s.ID == id {
			return s
		}
	}
	return supervise.State{ID: id, Phase: "absent"}
}

func (e *env) waitState(t *testing.T, id string, ok func(supervise.State) bool, what string) supervise.State {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.state(id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s: state %+v; want %s", id, st, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func phaseIs(phase, reason string) func(supervise.State) bool {
	return func(s supervise.State) bool { return s.Phase == phase && s.Reason == reason }
}

func TestInstallRunsAndWritesFiles(t *testing.T) {
	e := newEnv(t)
	svc := e.service("files")
	e.sup.Set([]supervise.Service{svc})
	if got := e.state("files"); got.Phase != supervise.PhaseInstalling && got.Phase != supervise.PhaseRunning {
		t.Errorf("state right after Set = %+v, want installing", got)
	}
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if st := e.state("files"); st.Phase != supervise.PhaseRunning || st.Restarts != 0 {
		t.Fatalf("state = %+v, want running", st)
	}
	want := []string{"Import " + svc.Archive, "Ensure files", "Start files"}
	if got := e.rt.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("runtime calls = %q, want %q", got, want)
	}
	b, err := os.ReadFile(svc.Files[0].Path)
	if err != nil || string(b) != "secret-token" {
		t.Errorf("token file = %q, %v", b, err)
	}
	if fi, err := os.Stat(svc.Files[0].Path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("token file mode = %v, %v; want 0640", fi.Mode(), err)
	}
	if fi, err := os.Stat(svc.Dirs[0].Path); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Errorf("volume = %v, %v; want a 0750 dir", fi, err)
	}
	sp, _ := e.rt.Spec("files")
	if sp.ID != "files" || sp.Image != svc.Image {
		t.Errorf("spec id/image = %q %q, want the service's", sp.ID, sp.Image)
	}
	// Set again with the same services changes nothing.
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if got := e.rt.Calls(); len(got) != 3 {
		t.Errorf("a second Set of the same service made calls: %q", got[3:])
	}
}

func TestCrashBackoff(t *testing.T) {
	e := newEnv(t)
	e.sup.Set([]supervise.Service{e.service("files")})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	for i, d := range []string{"1s", "2s", "4s", "8s"} {
		e.rt.Crash("files", 2)
		st := e.waitState(t, "files", phaseIs(supervise.PhaseFailed, "restarting in "+d+" (exit status 2)"), "failed, restarting in "+d)
		if st.Restarts != i+1 {
			t.Errorf("restarts = %d, want %d", st.Restarts, i+1)
		}
		// Not before its time (the loop polls every 10 ms).
		time.Sleep(50 * time.Millisecond)
		if st := e.state("files"); st.Phase != supervise.PhaseFailed {
			t.Fatalf("restarted before the back-off: %+v", st)
		}
		dur, _ := time.ParseDuration(d)
		e.clock.Add(dur)
		e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running again")
	}
	// Up for 10 minutes: the back-off starts again at 1 s.
	e.clock.Add(10 * time.Minute)
	time.Sleep(30 * time.Millisecond)
	e.rt.Crash("files", 1)
	st := e.waitState(t, "files", phaseIs(supervise.PhaseFailed, "restarting in 1s (exit status 1)"), "back-off reset to 1s")
	if st.Restarts != 5 {
		t.Errorf("restarts = %d, want 5", st.Restarts)
	}
}

func TestBackoffCap(t *testing.T) {
	e := newEnv(t)
	e.sup.Set([]supervise.Service{e.service("files")})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	want := []string{"1s", "2s", "4s", "8s", "16s", "32s", "1m4s", "2m8s", "4m16s", "5m0s", "5m0s"}
	for _, d := range want {
		e.rt.Crash("files", 2)
		e.waitState(t, "files", phaseIs(supervise.PhaseFailed, "restarting in "+d+" (exit status 2)"), "restarting in "+d)
		dur, _ := time.ParseDuration(d)
		e.clock.Add(dur)
		e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running again")
	}
}

func TestAdoptsRunningContainer(t *testing.T) {
	e := newEnv(t)
	svc := e.service("files")
	ctx := context.Background()
	defer func() {
		if t.Failed() {
			t.Logf("runtime calls: %q", e.rt.Calls())
		}
	}()
	// What a previous run of the cell left: image, container, task.
	if _, err := e.rt.Import(ctx, svc.Archive); err != nil {
		t.Fatal(err)
	}
	sp := svc.Spec
	sp.ID, sp.Image = svc.ID, svc.Image
	if err := e.rt.Ensure(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Start(ctx, "files"); err != nil {
		t.Fatal(err)
	}
	before := len(e.rt.Calls())
	// The loop runs before the cell's first Set (it has not read its
	// database yet): nothing is removed as unwanted meanwhile.
	time.Sleep(50 * time.Millisecond)
	if st, _ := e.rt.Status(ctx, "files"); st.State != runtime.StateRunning {
		t.Fatalf("before the first Set the container is %+v, want left running", st)
	}
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if st := e.state("files"); st.Phase != supervise.PhaseRunning {
		t.Fatalf("state %+v, want running", st)
	}
	if got := e.rt.Calls()[before:]; len(got) != 0 {
		t.Errorf("adoption made runtime calls %q, want none", got)
	}
}

func TestRemovedServiceGoesVolumesStay(t *testing.T) {
	e := newEnv(t)
	a, b := e.service("files"), e.service("mail")
	e.sup.Set([]supervise.Service{a, b})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	e.sup.Set([]supervise.Service{a})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.rt.Status(context.Background(), "mail"); st.State != runtime.StateAbsent {
		t.Errorf("mail container %+v, want absent", st)
	}
	if got := e.sup.States(); len(got) != 1 || got[0].ID != "files" {
		t.Errorf("states = %+v, want only files", got)
	}
	if _, err := os.Stat(b.Dirs[0].Path); err != nil {
		t.Errorf("mail's volume went with it: %v", err)
	}
	// A container of ours nobody wants (left from before) is removed too.
	ctx := context.Background()
	if _, err := e.rt.Import(ctx, b.Archive); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Ensure(ctx, runtime.Spec{ID: "stray", Image: b.Image}); err != nil {
		t.Fatal(err)
	}
	e.sup.Set([]supervise.Service{a})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.rt.Status(ctx, "stray"); st.State != runtime.StateAbsent {
		t.Errorf("stray container %+v, want removed", st)
	}
}

func TestAccountsSync(t *testing.T) {
	e := newEnv(t)
	e.acc.users["old"] = supervise.Account{}
	e.acc.users["alice"] = supervise.Account{Password: "x"}
	svc := e.service("files")
	svc.Accounts = &supervise.Accounts{AdminURL: "http://admin", Token: "secret-token", Want: map[string]supervise.Account{
		"alice": {Password: "pa", QuotaBytes: 10}, "bob": {Password: "pb", QuotaBytes: 20},
	}}
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(e.acc.Calls(), ","), "put alice,put bob,delete old"; got != want {
		t.Errorf("account calls = %s, want %s", got, want)
	}
	if u, _ := e.acc.get("bob"); u.Password != "pb" || u.QuotaBytes != 20 {
		t.Errorf("bob = %+v", u)
	}
	// Want changes: synced again.
	svc.Accounts = &supervise.Accounts{AdminURL: "http://admin", Token: "secret-token", Want: map[string]supervise.Account{"alice": {Password: "pa2"}}}
	e.sup.Set([]supervise.Service{svc})
	deadline := time.Now().Add(5 * time.Second)
	for _, has := e.acc.get("bob"); has && time.Now().Before(deadline); _, has = e.acc.get("bob") {
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := strings.Join(e.acc.Calls(), ","), "put alice,delete bob"; got != want {
		t.Errorf("account calls after the change = %s, want %s", got, want)
	}
	// A restart after a crash syncs again.
	e.rt.Crash("files", 2)
	e.waitState(t, "files", phaseIs(supervise.PhaseFailed, "restarting in 1s (exit status 2)"), "failed")
	e.clock.Add(time.Second)
	e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running")
	if got, want := strings.Join(e.acc.Calls(), ","), "put alice"; got != want {
		t.Errorf("account calls after the restart = %s, want %s", got, want)
	}
	// A failing admin endpoint: failed with the reason, retried.
	e.acc.mu.Lock()
	e.acc.fail = errors.New("admin down")
	e.acc.mu.Unlock()
	svc.Accounts.Want = map[string]supervise.Account{"carol": {Password: "pc"}}
	e.sup.Set([]supervise.Service{svc})
	e.waitState(t, "files", phaseIs(supervise.PhaseFailed, "accounts: admin down"), "failed on accounts")
	e.acc.mu.Lock()
	e.acc.fail = nil
	e.acc.mu.Unlock()
	e.clock.Add(5 * time.Second)
	e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running")
	if _, ok := e.acc.get("carol"); !ok {
		t.Error("carol not made after the retry")
	}
}

func TestContainerdUnreachable(t *testing.T) {
	e := newEnv(t)
	e.rt.SetDown(true)
	e.sup.Set([]supervise.Service{e.service("files")})
	err := e.sync(t)
	if !errors.Is(err, supervise.ErrFailed) {
		t.Fatalf("Sync = %v, want ErrFailed", err)
	}
	if st := e.state("files"); st.Phase != supervise.PhaseFailed || st.Reason != supervise.ReasonUnreachable {
		t.Fatalf("state %+v, want failed: %s", st, supervise.ReasonUnreachable)
	}
	e.rt.SetDown(false)
	e.clock.Add(time.Second)
	e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running once containerd is back")
	// Down while running: failed; back: running, the task untouched.
	n := len(e.rt.Calls())
	e.rt.SetDown(true)
	e.waitState(t, "files", phaseIs(supervise.PhaseFailed, supervise.ReasonUnreachable), "failed while down")
	e.rt.SetDown(false)
	e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running again")
	if got := e.rt.Calls()[n:]; len(got) != 0 {
		t.Errorf("calls after containerd came back: %q, want none (the task ran on)", got)
	}
}

func writeIndexArchive(t *testing.T, path, ref, digest string) {
	t.Helper()
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{
		{"digest": digest, "annotations": map[string]string{"io.containerd.image.name": ref}},
	}})
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	_ = tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: int64(len(idx))})
	_, _ = tw.Write(idx)
	_ = tw.Close()
	_ = f.Close()
}

func TestPinnedDigest(t *testing.T) {
	e := newEnv(t)
	svc := e.service("files")
	writeIndexArchive(t, svc.Archive, svc.Image, "sha256:other")
	svc.Digest = "sha256:files"
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); !errors.Is(err, supervise.ErrFailed) {
		t.Fatalf("Sync = %v, want ErrFailed", err)
	}
	st := e.state("files")
	if st.Phase != supervise.PhaseFailed || !strings.Contains(st.Reason, "not the pinned sha256:files") {
		t.Errorf("state %+v, want failed: not the pinned digest", st)
	}
	if got := e.rt.Calls(); len(got) != 0 {
		t.Errorf("a refused archive made runtime calls %q", got)
	}
	// The right archive: installed.
	writeIndexArchive(t, svc.Archive, svc.Image, "sha256:files")
	// The service must change to be tried again.
	svc.Spec.Env = []string{"V=2"}
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if st := e.state("files"); st.Phase != supervise.PhaseRunning {
		t.Errorf("state %+v, want running", st)
	}
}

func TestHealthTimeoutAndRestartBump(t *testing.T) {
	e := newEnv(t)
	e.healthy.Store(false)
	svc := e.service("files")
	e.sup.Set([]supervise.Service{svc})
	e.waitState(t, "files", phaseIs(supervise.PhaseInstalling, ""), "installing")
	time.Sleep(30 * time.Millisecond)
	if st := e.state("files"); st.Phase != supervise.PhaseInstalling {
		t.Fatalf("state %+v before the health deadline, want installing", st)
	}
	e.clock.Add(61 * time.Second)
	e.waitState(t, "files", phaseIs(supervise.PhaseFailed, "restarting in 1s ("+supervise.ReasonNoHealth+")"), "failed: no health")
	e.healthy.Store(true)
	e.clock.Add(time.Second)
	e.waitState(t, "files", phaseIs(supervise.PhaseRunning, ""), "running")
	calls := e.rt.Calls()
	if got := strings.Join(calls[len(calls)-2:], ","); got != "Stop files,Start files" {
		t.Errorf("retry after a failed health check: %s, want a stop and a start", got)
	}
	// A bump of Restart restarts it.
	n := len(calls)
	svc.Restart++
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(e.rt.Calls()[n:], ","); got != "Stop files,Start files" {
		t.Errorf("restart asked: calls %s, want Stop files,Start files", got)
	}
	if st := e.state("files"); st.Restarts != 1 {
		t.Errorf("restarts = %d, want 1 (the asked restart is no crash)", st.Restarts)
	}
}

func TestSetNeverBlocks(t *testing.T) {
	// No Run: Set and States must still return at once.
	sup := supervise.New(supervise.Options{Runtime: runtime.NewFake(nil)})
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			sup.Set([]supervise.Service{{ID: "files"}})
			_ = sup.States()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Set blocked without a running loop")
	}
	if st := sup.States(); len(st) != 1 || st[0].Phase != supervise.PhaseInstalling {
		t.Errorf("states = %+v, want files installing", st)
	}
}

func TestInvalidSpecWaitsForAChange(t *testing.T) {
	e := newEnv(t)
	svc := e.service("files")
	svc.Spec.Mounts = []runtime.Mount{{Source: "relative", Target: "/data"}}
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); !errors.Is(err, supervise.ErrFailed) {
		t.Fatalf("Sync = %v, want ErrFailed", err)
	}
	st := e.state("files")
	if st.Phase != supervise.PhaseFailed || !strings.Contains(st.Reason, "invalid spec") {
		t.Fatalf("state %+v, want failed: invalid spec", st)
	}
	n := len(e.rt.Calls())
	e.clock.Add(time.Hour)
	time.Sleep(50 * time.Millisecond)
	if got := e.rt.Calls()[n:]; len(got) != 0 {
		t.Errorf("an invalid spec was retried: %q", got)
	}
	svc.Spec.Mounts = nil
	e.sup.Set([]supervise.Service{svc})
	if err := e.sync(t); err != nil {
		t.Fatal(err)
	}
	if st := e.state("files"); st.Phase != supervise.PhaseRunning {
		t.Errorf("state %+v after the fix, want running", st)
	}
}
