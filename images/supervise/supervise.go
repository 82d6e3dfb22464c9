// Package supervise owns the cell's service containers at run time: the
// reconcile loop hands it the desired set of services (Set, which never
// blocks) and it converges them in its own goroutine, since container work
// is slow and must never hold up the network loop. For each service it
// imports the pinned image, makes the container (runtime.Ensure), writes the
// service's files and volumes, starts it, waits for its health check, syncs
// its accounts, and then watches it: a crashed task is restarted with
// back-off. A service no longer desired is stopped and its container removed
// (its volumes stay: the cell deletes them when asked). States publishes
// each service's phase; it never waits on containerd.
package supervise

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pic-cell/cell/images/accounts"
	"github.com/pic-cell/cell/images/runtime"
)

// Phases of State.
const (
	PhaseInstalling = "installing"
	PhaseRunning    = "running"
	PhaseFailed     = "failed"
	PhaseStopping   = "stopping"
)

// Reasons the supervisor gives that callers may match.
const (
	ReasonUnreachable = "containerd is not reachable"
	ReasonNoHealth    = "no answer to its health check"
)

// ErrFailed is wrapped by Sync's error for each service that ended failed.
var ErrFailed = errors.New("service failed")

// Service is one service as the cell wants it.
type Service struct {
	ID       string
	Archive  string // the OCI archive to import
	Image    string // the ref in it
	Digest   string // pinned digest of the image (index.json's entry for Image); an archive that differs is refused
	Spec     runtime.Spec
	Files    []File    // written before the container starts
	Dirs     []Dir     // created before start if missing, owned by UID:GID
	Health   string    // URL to GET until 200; empty: none
	Accounts *Accounts // nil: the service has no accounts
	Restart  uint64    // a bump asks for a restart
}

// File is a host file the service reads (its admin token).
type File struct {
	Path     string
	Data     []byte
	Mode     fs.FileMode // 0: 0600
	UID, GID int
}

// Dir is a volume.
type Dir struct {
	Path     string
	Mode     fs.FileMode // 0: 0750
	UID, GID int
}

// Accounts are the accounts a service must have, and how to reach its admin
// endpoint.
type Accounts struct {
	AdminURL, Token string
	Want            map[string]Account
}

// Account is one wanted account.
type Account struct {
	Password   string
	QuotaBytes int64
}

// AccountClient is a service's admin protocol; *accounts.Client has it.
type AccountClient interface {
	List(ctx context.Context) ([]accounts.Account, error)
	Put(ctx context.Context, user, password string, quota int64) error
	Delete(ctx context.Context, user string) error
}

// State is a service's published state.
type State struct {
	ID       string
	Phase    string
	Reason   string
	Since    time.Time // when Phase or Reason last changed
	Restarts int       // restarts after crashes or failed health checks
}

// Options configure a Supervisor. Zero durations take the defaults.
type Options struct {
	Runtime  runtime.Runtime
	Accounts func(adminURL, token string) AccountClient // nil: accounts.New with HTTP
	HTTP     *http.Client                               // dials into the services bridge; nil: http.DefaultClient
	Log      *slog.Logger
	Now      func() time.Time // the clock of back-off and states; nil: time.Now

	BackoffMin   time.Duration // first restart delay (1 s)
	BackoffMax   time.Duration // cap (5 min)
	BackoffReset time.Duration // up this long, a crash starts the back-off again (10 min)
	HealthWait   time.Duration // how long a start may take to answer (60 s)
	HealthEvery  time.Duration // between health checks while starting (500 ms)
	Poll         time.Duration // between status polls of running services (2 s)
	StopGrace    time.Duration // SIGTERM to SIGKILL (10 s)
	OpTimeout    time.Duration // bound of one runtime call (2 min: imports are slow)
}

// Supervisor converges the desired services.
type Supervisor struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	desired []Service
	gen     uint64 // bumped by Set
	states  map[string]State
	settled uint64        // the gen of the last pass that left everything running or failed
	passed  chan struct{} // closed (and replaced) after every pass
	failed  []error       // of the last settled pass

	wake chan struct{}

	// Owned by the loop goroutine.
	tracked map[string]*tracked
}

// stages of a tracked service.
type stage int

const (
	stageInstall  stage = iota // import, ensure
	stageStart                 // files, dirs, start
	stageHealth                // waiting for the health check
	stageAccounts              // syncing accounts
	stageRunning               // watching
	stageWait                  // failed; retry at nextTry with retry
	stageRefused               // failed for good until the service changes
	stageRestart               // stop, then stageStart
)

type tracked struct {
	svc         Service
	installed   string // installKey of what was installed; "" none
	stage       stage
	retry       stage // the stage stageWait goes back to
	nextTry     time.Time
	deadline    time.Time // of the health check
	backoff     time.Duration
	upSince     time.Time
	restarts    int
	restartSeen uint64
	synced      string // accountsKey of the last successful sync
	refused     string // installKey of the service refused for good
	phase       string
	reason      string
	since       time.Time
}

// New returns a supervisor; Run must be running for Set to take effect.
func New(o Options) *Supervisor {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTP == nil {
		o.HTTP = http.DefaultClient
	}
	if o.Accounts == nil {
		hc := o.HTTP
		o.Accounts = func(u, tok string) AccountClient { return accounts.New(u, tok, hc) }
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.BackoffMin, time.Second)
	def(&o.BackoffMax, 5*time.Minute)
	def(&o.BackoffReset, 10*time.Minute)
	def(&o.HealthWait, 60*time.Second)
	def(&o.HealthEvery, 500*time.Millisecond)
	def(&o.Poll, 2*time.Second)
	def(&o.StopGrace, 10*time.Second)
	def(&o.OpTimeout, 2*time.Minute)
	return &Supervisor{
		o: o, log: o.Log.With("part", "supervise"),
		states: map[string]State{}, passed: make(chan struct{}),
		wake: make(chan struct{}, 1), tracked: map[string]*tracked{},
	}
}

// Set replaces the desired services; it never blocks.
func (s *Supervisor) Set(desired []Service) {
	cp := make([]Service, len(desired))
	copy(cp, desired)
	s.mu.Lock()
	s.desired = cp
	s.gen++
	for _, d := range cp {
		if _, ok := s.states[d.ID]; !ok {
			s.states[d.ID] = State{ID: d.ID, Phase: PhaseInstalling, Since: s.o.Now()}
		}
	}
	s.mu.Unlock()
	s.kick()
}

func (s *Supervisor) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// States returns a snapshot of every service's state, sorted by id.
func (s *Supervisor) States() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]State, 0, len(s.states))
	for _, st := range s.states {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Sync waits until a pass of the loop has worked on the last Set and left
// every desired service running or failed and every other one removed (or
// failed to be). Its error wraps ErrFailed for each failed service, or is
// ctx's. Without a Set it returns at once; without Run, only when ctx ends.
func (s *Supervisor) Sync(ctx context.Context) error {
	s.mu.Lock()
	want := s.gen
	s.mu.Unlock()
	for {
		s.mu.Lock()
		ch, done, failed := s.passed, s.settled >= want, s.failed
		s.mu.Unlock()
		if done {
			return errors.Join(failed...)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Run converges until ctx ends.
func (s *Supervisor) Run(ctx context.Context) {
	var exits <-chan runtime.Exit
	for ctx.Err() == nil {
		if exits == nil {
			// Exits make restarts prompt; polling catches what they miss.
			if ch, err := s.o.Runtime.Exits(ctx); err == nil {
				exits = ch
			}
		}
		next := s.pass(ctx)
		wait := s.o.Poll
		if d := next.Sub(s.o.Now()); !next.IsZero() && d < wait {
			wait = d
		}
		if wait < 10*time.Millisecond {
			wait = 10 * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-t.C:
		case e, ok := <-exits:
			if !ok {
				exits = nil
			} else {
				s.log.Info("service exited", "id", e.ID, "exit_status", e.ExitCode)
			}
		}
		t.Stop()
	}
}

// pass works once on every service and returns when it wants the next
// (zero: at the next poll).
func (s *Supervisor) pass(ctx context.Context) time.Time {
	s.mu.Lock()
	gen, desired := s.gen, s.desired
	s.mu.Unlock()
	if gen == 0 {
		// Nothing was asked yet: after a restart of the cell the loop has
		// not read the database, and the containers running are adopted,
		// not removed as unwanted.
		return time.Time{}
	}

	want := map[string]bool{}
	for _, d := range desired {
		want[d.ID] = true
	}
	settled := true
	var failed []error
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}

	// What is no longer wanted goes, tracked or found (a container of a
	// service removed while the cell was down).
	gone := map[string]bool{}
	for id := range s.tracked {
		if !want[id] {
			gone[id] = true
		}
	}
	if cs, err := s.call(ctx, func(ctx context.Context) ([]runtime.Container, error) { return s.o.Runtime.Containers(ctx) }); err == nil {
		for _, c := range cs {
			if !want[c.ID] {
				gone[c.ID] = true
			}
		}
	}
	for id := range gone {
		if err := s.remove(ctx, id); err != nil {
			failed = append(failed, fmt.Errorf("service %q: %w: removing: %v", id, ErrFailed, err))
			soon(s.o.Now().Add(s.o.Poll))
		}
	}

	for _, d := range desired {
		t, ok := s.tracked[d.ID]
		if !ok {
			t = &tracked{svc: d, restartSeen: d.Restart}
			s.tracked[d.ID] = t
		}
		t.svc = d
		// A few steps at once: install, start and the first health
		// check need no wait between them.
		for i := 0; i < 6 && ctx.Err() == nil; i++ {
			before := t.stage
			s.step(ctx, t)
			if t.stage == before {
				break
			}
		}
		s.publish(t)
		switch t.stage {
		case stageRunning:
		case stageWait, stageRefused:
			failed = append(failed, fmt.Errorf("service %q: %w: %s", d.ID, ErrFailed, t.reason))
			if t.stage == stageWait {
				soon(t.nextTry)
			}
		case stageHealth:
			settled = false
			soon(s.o.Now().Add(s.o.HealthEvery))
		default:
			settled = false
			soon(s.o.Now())
		}
	}

	s.mu.Lock()
	for id := range s.states {
		// Removed ones were deleted by remove; a failed removal stays.
		if !want[id] && !gone[id] {
			delete(s.states, id)
		}
	}
	if settled {
		if gen > s.settled {
			s.settled = gen
		}
		s.failed = failed
	}
	close(s.passed)
	s.passed = make(chan struct{})
	s.mu.Unlock()
	return next
}

// call runs one runtime call bounded by OpTimeout.
func (s *Supervisor) call(ctx context.Context, f func(context.Context) ([]runtime.Container, error)) ([]runtime.Container, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.OpTimeout)
	defer cancel()
	return f(ctx)
}

func (s *Supervisor) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.OpTimeout)
}

// remove stops and deletes id's container.
func (s *Supervisor) remove(ctx context.Context, id string) error {
	s.setState(id, PhaseStopping, "")
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.o.Runtime.Stop(ctx, id, s.o.StopGrace); err != nil {
		s.setState(id, PhaseFailed, reasonOf(err))
		return err
	}
	if err := s.o.Runtime.Remove(ctx, id); err != nil {
		s.setState(id, PhaseFailed, reasonOf(err))
		return err
	}
	s.log.Info("service removed", "id", id)
	delete(s.tracked, id)
	s.mu.Lock()
	delete(s.states, id)
	s.mu.Unlock()
	return nil
}

func (s *Supervisor) setState(id, phase, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.states[id]
	if st.Phase != phase || st.Reason != reason {
		st.Since = s.o.Now()
	}
	st.ID, st.Phase, st.Reason = id, phase, reason
	if t := s.tracked[id]; t != nil {
		st.Restarts = t.restarts
	}
	s.states[id] = st
}

// publish copies t's phase to the states.
func (s *Supervisor) publish(t *tracked) {
	s.setState(t.svc.ID, t.phase, t.reason)
}

// to moves t to a phase (logging the changes).
func (s *Supervisor) to(t *tracked, phase, reason string) {
	if t.phase != phase || t.reason != reason {
		s.log.Info("service state", "id", t.svc.ID, "phase", phase, "reason", reason)
		t.phase, t.reason, t.since = phase, reason, s.o.Now()
	}
}

func reasonOf(err error) string {
	if errors.Is(err, runtime.ErrUnavailable) {
		return ReasonUnreachable
	}
	return err.Error()
}

// fail handles an error of a stage: containerd away is retried at the next
// poll from the same stage; anything else after the back-off.
func (s *Supervisor) fail(t *tracked, from stage, err error) {
	t.retry = from
	t.stage = stageWait
	if errors.Is(err, runtime.ErrUnavailable) {
		t.nextTry = s.o.Now().Add(s.o.Poll)
		s.to(t, PhaseFailed, ReasonUnreachable)
		return
	}
	if errors.Is(err, runtime.ErrInvalid) {
		// Retrying cannot help: wait for the service to change.
		t.stage, t.refused = stageRefused, installKey(t.svc)
		s.to(t, PhaseFailed, err.Error())
		return
	}
	d := s.nextBackoff(t)
	t.nextTry = s.o.Now().Add(d)
	s.to(t, PhaseFailed, fmt.Sprintf("%v (retrying in %s)", err, d))
}

func (s *Supervisor) nextBackoff(t *tracked) time.Duration {
	if t.backoff == 0 {
		t.backoff = s.o.BackoffMin
	} else {
		t.backoff *= 2
	}
	if t.backoff > s.o.BackoffMax {
		t.backoff = s.o.BackoffMax
	}
	return t.backoff
}

// installKey covers what installing depends on (not Restart, not Accounts).
func installKey(d Service) string {
	h := sha256.New()
	_ = json.NewEncoder(h).Encode(struct {
		A, I, D string
		S       runtime.Spec
		F       []File
		Dirs    []Dir
		H       string
	}{d.Archive, d.Image, d.Digest, d.Spec, d.Files, d.Dirs, d.Health})
	return hex.EncodeToString(h.Sum(nil))
}

// accountsKey covers the wanted accounts and how to reach them; it is only
// compared, never shown (it hashes passwords).
func accountsKey(a *Accounts) string {
	if a == nil {
		return "none"
	}
	h := sha256.New()
	_ = json.NewEncoder(h).Encode(a)
	return hex.EncodeToString(h.Sum(nil))
}

// spec is the runtime spec of d: its id and image are the service's.
func spec(d Service) runtime.Spec {
	sp := d.Spec
	sp.ID = d.ID
	if sp.Image == "" {
		sp.Image = d.Image
	}
	return sp
}

// step advances t by one stage.
func (s *Supervisor) step(ctx context.Context, t *tracked) {
	now := s.o.Now()
	key := installKey(t.svc)
	if t.stage == stageRefused && key == t.refused {
		return
	}
	if key != t.installed && t.stage != stageInstall && !(t.stage == stageWait && t.retry == stageInstall) {
		// A changed service (or a refused one changed) installs again.
		t.stage, t.backoff = stageInstall, 0
	}
	if t.svc.Restart != t.restartSeen {
		t.restartSeen = t.svc.Restart
		if t.installed != "" && t.stage != stageInstall {
			s.log.Info("service restart asked", "id", t.svc.ID)
			ctx, cancel := s.op(ctx)
			err := s.o.Runtime.Stop(ctx, t.svc.ID, s.o.StopGrace)
			cancel()
			if err != nil {
				s.fail(t, stageStart, err)
				return
			}
			t.stage = stageStart
		}
	}
	switch t.stage {
	case stageWait:
		if now.Before(t.nextTry) {
			return
		}
		t.stage = t.retry
		if t.stage == stageRunning {
			t.stage = stageStart
		}
	}

	switch t.stage {
	case stageInstall:
		if t.phase == "" || t.phase == PhaseRunning {
			s.to(t, PhaseInstalling, "")
		}
		s.install(ctx, t)
	case stageRestart:
		ctx, cancel := s.op(ctx)
		err := s.o.Runtime.Stop(ctx, t.svc.ID, s.o.StopGrace)
		cancel()
		if err != nil {
			s.fail(t, stageRestart, err)
			return
		}
		t.stage = stageStart
	case stageStart:
		s.start(ctx, t)
	case stageHealth:
		s.health(ctx, t)
	case stageAccounts:
		s.syncAccounts(ctx, t)
	case stageRunning:
		s.watch(ctx, t)
	}
}

// install imports the image if containerd lacks it (or has another digest
// under the ref) and makes the container.
func (s *Supervisor) install(ctx context.Context, t *tracked) {
	d := t.svc
	ctx, cancel := s.op(ctx)
	defer cancel()
	imgs, err := s.o.Runtime.Images(ctx)
	if err != nil {
		s.fail(t, stageInstall, err)
		return
	}
	have := false
	for _, im := range imgs {
		if im.Ref == d.Image && (d.Digest == "" || im.Digest == d.Digest) {
			have = true
		}
	}
	if !have {
		if d.Digest != "" {
			got, err := ArchiveDigest(d.Archive, d.Image)
			if err != nil {
				t.stage, t.refused = stageRefused, installKey(d)
				s.to(t, PhaseFailed, fmt.Sprintf("archive: %v", err))
				return
			}
			if got != d.Digest {
				t.stage, t.refused = stageRefused, installKey(d)
				s.to(t, PhaseFailed, fmt.Sprintf("archive %s has digest %s, not the pinned %s", filepath.Base(d.Archive), got, d.Digest))
				return
			}
		}
		img, err := s.o.Runtime.Import(ctx, d.Archive)
		if err != nil {
			s.fail(t, stageInstall, err)
			return
		}
		if img.Ref != d.Image || (d.Digest != "" && img.Digest != d.Digest) {
			t.stage, t.refused = stageRefused, installKey(d)
			s.to(t, PhaseFailed, fmt.Sprintf("archive %s holds %s %s, not %s %s", filepath.Base(d.Archive), img.Ref, img.Digest, d.Image, d.Digest))
			return
		}
	}
	if err := s.o.Runtime.Ensure(ctx, spec(d)); err != nil {
		s.fail(t, stageInstall, err)
		return
	}
	if t.installed != "" {
		// Installed before with other files or a check: a running
		// task restarts to read the new files (Ensure recreated it
		// already if its spec changed).
		if err := s.o.Runtime.Stop(ctx, d.ID, s.o.StopGrace); err != nil {
			s.fail(t, stageInstall, err)
			return
		}
	}
	t.installed = installKey(d)
	t.stage = stageStart
}

// start writes the files and volumes and starts the task (a running one,
// adopted after a restart of the cell, is left as it is).
func (s *Supervisor) start(ctx context.Context, t *tracked) {
	d := t.svc
	if err := writeFiles(d); err != nil {
		s.fail(t, stageStart, err)
		return
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	st, err := s.o.Runtime.Status(ctx, d.ID)
	if err != nil {
		s.fail(t, stageStart, err)
		return
	}
	if st.State == runtime.StateAbsent {
		t.installed = ""
		t.stage = stageInstall
		return
	}
	if err := s.o.Runtime.Start(ctx, d.ID); err != nil {
		s.fail(t, stageStart, err)
		return
	}
	if st.State == runtime.StateRunning && !st.StartedAt.IsZero() {
		t.upSince = st.StartedAt
	} else {
		t.upSince = s.o.Now()
	}
	t.synced = "" // accounts sync after every (re)start
	t.deadline = s.o.Now().Add(s.o.HealthWait)
	t.stage = stageHealth
	s.to(t, PhaseInstalling, "")
}

// health checks the service answers; the task dying meanwhile is a crash.
func (s *Supervisor) health(ctx context.Context, t *tracked) {
	if t.svc.Health != "" && !s.healthy(ctx, t.svc.Health) {
		running, err := s.checkTask(ctx, t)
		if err != nil {
			s.to(t, PhaseFailed, ReasonUnreachable)
			return
		}
		if !running {
			return
		}
		if t.phase != PhaseInstalling {
			s.to(t, PhaseInstalling, "")
		}
		if s.o.Now().After(t.deadline) {
			s.log.Warn("service does not answer its health check", "id", t.svc.ID, "after", s.o.HealthWait)
			s.restartLater(t, ReasonNoHealth)
		}
		return
	}
	t.stage = stageAccounts
}

func (s *Supervisor) healthy(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := s.o.HTTP.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// checkTask reports whether t's task runs; one that does not is handled
// (a restart scheduled, an absent container made again). err is the
// runtime's (containerd away).
func (s *Supervisor) checkTask(ctx context.Context, t *tracked) (bool, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	st, err := s.o.Runtime.Status(ctx, t.svc.ID)
	if err != nil {
		return false, err
	}
	switch st.State {
	case runtime.StateRunning:
		return true, nil
	case runtime.StateAbsent:
		// Someone removed the container: make it again.
		s.log.Warn("service container vanished: installing again", "id", t.svc.ID)
		t.installed, t.stage = "", stageInstall
		s.to(t, PhaseInstalling, "")
		return false, nil
	}
	s.log.Warn("service task ended", "id", t.svc.ID, "state", st.State, "exit_status", st.ExitCode)
	s.restartLater(t, fmt.Sprintf("exit status %d", st.ExitCode))
	return false, nil
}

// restartLater schedules a restart after the back-off: "restarting in 8s
// (exit status 2)". The back-off starts again after BackoffReset up.
func (s *Supervisor) restartLater(t *tracked, why string) {
	if !t.upSince.IsZero() && s.o.Now().Sub(t.upSince) >= s.o.BackoffReset {
		t.backoff = 0
	}
	d := s.nextBackoff(t)
	t.restarts++
	t.stage, t.retry, t.nextTry = stageWait, stageStart, s.o.Now().Add(d)
	s.to(t, PhaseFailed, fmt.Sprintf("restarting in %s (%s)", d, why))
	if why == ReasonNoHealth {
		// It may still run, not answering: stop it before the retry
		// starts a fresh task.
		t.retry = stageRestart
	}
}

// syncAccounts puts every wanted account and deletes every other one.
func (s *Supervisor) syncAccounts(ctx context.Context, t *tracked) {
	a := t.svc.Accounts
	key := accountsKey(a)
	if a != nil && key != t.synced {
		if err := s.sync(ctx, t.svc.ID, a); err != nil {
			t.retry, t.stage = stageAccounts, stageWait
			t.nextTry = s.o.Now().Add(s.o.BackoffMin * 5)
			s.to(t, PhaseFailed, "accounts: "+err.Error())
			return
		}
	}
	t.synced = key
	t.stage = stageRunning
	s.to(t, PhaseRunning, "")
}

func (s *Supervisor) sync(ctx context.Context, id string, a *Accounts) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := s.o.Accounts(a.AdminURL, a.Token)
	have, err := c.List(ctx)
	if err != nil {
		return err
	}
	users := make([]string, 0, len(a.Want))
	for u := range a.Want {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		w := a.Want[u]
		if err := c.Put(ctx, u, w.Password, w.QuotaBytes); err != nil {
			return err
		}
	}
	var deleted []string
	for _, h := range have {
		if _, ok := a.Want[h.Username]; ok {
			continue
		}
		if err := c.Delete(ctx, h.Username); err != nil && !errors.Is(err, accounts.ErrNotFound) {
			return err
		}
		deleted = append(deleted, h.Username)
	}
	s.log.Info("service accounts synced", "id", id, "accounts", len(users), "deleted", strings.Join(deleted, ","))
	return nil
}

// watch polls a running service: a dead task restarts after the back-off,
// changed accounts are synced.
func (s *Supervisor) watch(ctx context.Context, t *tracked) {
	running, err := s.checkTask(ctx, t)
	if err != nil {
		s.to(t, PhaseFailed, reasonOf(err))
		return
	}
	if !running {
		return
	}
	s.to(t, PhaseRunning, "")
	if accountsKey(t.svc.Accounts) != t.synced {
		t.stage = stageAccounts
	}
}

// writeFiles creates the volumes and writes the files (atomically: a
// temporary file renamed over the old one).
func writeFiles(d Service) error {
	for _, dir := range d.Dirs {
		mode := dir.Mode
		if mode == 0 {
			mode = 0o750
		}
		if _, err := os.Stat(dir.Path); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(dir.Path, mode); err != nil {
				return fmt.Errorf("volume %s: %w", dir.Path, err)
			}
			if err := os.Chmod(dir.Path, mode); err != nil {
				return fmt.Errorf("volume %s: %w", dir.Path, err)
			}
			if err := os.Chown(dir.Path, dir.UID, dir.GID); err != nil {
				return fmt.Errorf("volume %s: %w", dir.Path, err)
			}
		} else if err != nil {
			return fmt.Errorf("volume %s: %w", dir.Path, err)
		}
	}
	for _, f := range d.Files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o600
		}
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		tmp, err := os.CreateTemp(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".*")
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		werr := func() error {
			if _, err := tmp.Write(f.Data); err != nil {
				return err
			}
			if err := tmp.Chmod(mode); err != nil {
				return err
			}
			if err := tmp.Chown(f.UID, f.GID); err != nil {
				return err
			}
			return tmp.Sync()
		}()
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), f.Path)
		}
		if werr != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("file %s: %w", f.Path, werr)
		}
	}
	return nil
}

// ArchiveDigest reads the digest index.json of the OCI archive gives for
// the image named ref (io.containerd.image.name), without importing it.
func ArchiveDigest(archive, ref string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return "", fmt.Errorf("%s: no index.json", filepath.Base(archive))
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Base(archive), err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Digest      string            `json:"digest"`
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
			return "", fmt.Errorf("%s: index.json: %w", filepath.Base(archive), err)
		}
		for _, m := range idx.Manifests {
			if m.Annotations["io.containerd.image.name"] == ref {
				return m.Digest, nil
			}
		}
		return "", fmt.Errorf("%s: index.json names no image %s", filepath.Base(archive), ref)
	}
}
