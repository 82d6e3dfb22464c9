package runtime

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"time"
)

// Fake is an in-memory Runtime with the adapter's semantics (idempotent
// calls, ErrNotFound, ErrInUse, a changed spec recreates the container) for
// unit tests. Tests feed it archives (AddArchive), make tasks crash (Crash),
// take containerd away (SetDown) and read what was asked of it (Calls).
type Fake struct {
	mu         sync.Mutex
	now        func() time.Time
	archives   map[string]Image
	images     map[string]Image
	containers map[string]*fakeContainer
	subs       []chan Exit
	down       bool
	startErr   map[string]error
	calls      []string
	pid        uint32
}

type fakeContainer struct {
	spec   Spec
	hash   string
	status Status
	labels map[string]string
	logs   []string
}

var _ Runtime = (*Fake)(nil)

// NewFake returns an empty fake; now may be nil (time.Now).
func NewFake(now func() time.Time) *Fake {
	if now == nil {
		now = time.Now
	}
	return &Fake{now: now, archives: map[string]Image{}, images: map[string]Image{},
		containers: map[string]*fakeContainer{}, startErr: map[string]error{}, pid: 1000}
}

// AddArchive makes Import(path) yield img.
func (f *Fake) AddArchive(path string, img Image) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.archives[path] = img
}

// SetDown makes every call fail with ErrUnavailable (true) or work again.
// Running tasks go on running, as with containerd.
func (f *Fake) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// SetStartError makes Start(id) fail with err (nil: work again).
func (f *Fake) SetStartError(id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.startErr, id)
	} else {
		f.startErr[id] = err
	}
}

// Crash ends id's running task with code and sends its exit.
func (f *Fake) Crash(id string, code uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok || c.status.State != StateRunning {
		return
	}
	f.exit(id, c, code)
}

// AppendLog adds lines to id's log.
func (f *Fake) AppendLog(id string, lines ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.logs = append(c.logs, lines...)
	}
}

// Calls returns the calls that changed something or were refused, in order:
// "Import PATH", "Ensure ID" (only when it created), "Start ID" (only when
// it started a task), "Stop ID", "Remove ID", "RemoveImage REF".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Spec returns the spec id was created with.
func (f *Fake) Spec(id string) (Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return Spec{}, false
	}
	return c.spec, true
}

// exit stops c's task; f.mu is held.
func (f *Fake) exit(id string, c *fakeContainer, code uint32) {
	c.status.State = StateStopped
	c.status.ExitCode = code
	c.status.ExitedAt = f.now()
	e := Exit{ID: id, PID: c.status.PID, ExitCode: code, At: c.status.ExitedAt}
	for _, s := range f.subs {
		// Never block the caller: a subscriber that does not read
		// loses exits (the supervisor also polls).
		select {
		case s <- e:
		default:
		}
	}
}

func (f *Fake) check(what string) error {
	if f.down {
		return fmt.Errorf("%s: %w (fake)", what, ErrUnavailable)
	}
	return nil
}

func (f *Fake) Import(ctx context.Context, archivePath string) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("import"); err != nil {
		return Image{}, err
	}
	img, ok := f.archives[archivePath]
	if !ok {
		return Image{}, fmt.Errorf("import %s: %w", archivePath, fs.ErrNotExist)
	}
	f.calls = append(f.calls, "Import "+archivePath)
	f.images[img.Ref] = img
	return img, nil
}

func (f *Fake) Images(ctx context.Context) ([]Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("list images"); err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(f.images))
	for _, im := range f.images {
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

func (f *Fake) RemoveImage(ctx context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("remove image"); err != nil {
		return err
	}
	if _, ok := f.images[ref]; !ok {
		return fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	for id, c := range f.containers {
		if c.spec.Image == ref {
			return fmt.Errorf("image %q: %w by container %q", ref, ErrInUse, id)
		}
	}
	f.calls = append(f.calls, "RemoveImage "+ref)
	delete(f.images, ref)
	return nil
}

func (f *Fake) Ensure(ctx context.Context, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ensure"); err != nil {
		return err
	}
	img, ok := f.images[s.Image]
	if !ok {
		return fmt.Errorf("container %q: image %q: %w", s.ID, s.Image, ErrNotFound)
	}
	hash := s.Hash(img.Digest)
	if c, ok := f.containers[s.ID]; ok {
		if c.hash == hash {
			return nil
		}
		if c.status.State == StateRunning {
			f.exit(s.ID, c, 143)
		}
		delete(f.containers, s.ID)
	}
	labels := s.containerLabels(hash)
	f.containers[s.ID] = &fakeContainer{spec: s, hash: hash, status: Status{State: StateCreated}, labels: labels}
	f.calls = append(f.calls, "Ensure "+s.ID)
	return nil
}

func (f *Fake) Start(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("start"); err != nil {
		return err
	}
	c, ok := f.containers[id]
	if !ok {
		return fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	if c.status.State == StateRunning {
		return nil
	}
	if err := f.startErr[id]; err != nil {
		return fmt.Errorf("container %q: start: %w", id, err)
	}
	f.pid++
	c.status = Status{State: StateRunning, PID: f.pid, StartedAt: f.now()}
	f.calls = append(f.calls, "Start "+id)
	return nil
}

func (f *Fake) Stop(ctx context.Context, id string, grace time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("stop"); err != nil {
		return err
	}
	c, ok := f.containers[id]
	if !ok || c.status.State != StateRunning {
		return nil
	}
	f.calls = append(f.calls, "Stop "+id)
	f.exit(id, c, 143) // 128 + SIGTERM, as the shim reports it
	return nil
}

func (f *Fake) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("remove"); err != nil {
		return err
	}
	c, ok := f.containers[id]
	if !ok {
		return nil
	}
	if c.status.State == StateRunning {
		f.exit(id, c, 143)
	}
	delete(f.containers, id)
	f.calls = append(f.calls, "Remove "+id)
	return nil
}

func (f *Fake) Status(ctx context.Context, id string) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("status"); err != nil {
		return Status{}, err
	}
	c, ok := f.containers[id]
	if !ok {
		return Status{State: StateAbsent}, nil
	}
	return c.status, nil
}

func (f *Fake) Containers(ctx context.Context) ([]Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("list containers"); err != nil {
		return nil, err
	}
	var out []Container
	for id, c := range f.containers {
		labels := map[string]string{}
		for k, v := range c.labels {
			labels[k] = v
		}
		out = append(out, Container{ID: id, Image: c.spec.Image, State: c.status.State, Labels: labels})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *Fake) Logs(ctx context.Context, id string, maxLines int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("logs"); err != nil {
		return nil, err
	}
	c, ok := f.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	l := c.logs
	if maxLines > 0 && len(l) > maxLines {
		l = l[len(l)-maxLines:]
	}
	return append([]string(nil), l...), nil
}

// Exits subscribes; the channel (buffered) closes when ctx ends.
func (f *Fake) Exits(ctx context.Context) (<-chan Exit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("exits"); err != nil {
		return nil, err
	}
	ch := make(chan Exit, 64)
	f.subs = append(f.subs, ch)
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, s := range f.subs {
			if s == ch {
				f.subs = append(f.subs[:i], f.subs[i+1:]...)
				break
			}
		}
		close(ch)
	}()
	return ch, nil
}

func (f *Fake) Close() error { return nil }
