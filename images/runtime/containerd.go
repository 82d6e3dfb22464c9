package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Namespace is the containerd namespace of the cell's containers.
const Namespace = "pic"

const (
	snapshotter = "overlayfs"
	runcRuntime = "io.containerd.runc.v2"
	// removeGrace is how long Remove lets a task stop after SIGTERM.
	removeGrace = 10 * time.Second
)

// Options are the adapter's settings beyond the socket.
type Options struct {
	// RuncRoot is runc's state directory; empty: runc's default
	// (/run/containerd/runc). Tests that run their own containerd give it
	// one of its own, since the default is shared by every containerd.
	RuncRoot string
	// CgroupParent is the cgroup under which containers get theirs
	// (CgroupParent/<id>); empty: /pic.
	CgroupParent string
	// Kernel is what the kernel can enforce; nil: HostKernel(). A limit it
	// cannot enforce is left out of every container (see Kernel).
	Kernel *Kernel
}

// Containerd is the Runtime on a containerd daemon.
type Containerd struct {
	c    *client.Client
	log  *slog.Logger
	opts Options

	// mu serialises the changes to one container (Ensure, Start, Stop,
	// Remove) made from different goroutines.
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

var _ Runtime = (*Containerd)(nil)

// New connects to containerd at socket. It does not wait for the daemon: a
// daemon that is down (or restarts later) makes calls fail with
// ErrUnavailable until it answers again; the gRPC connection reconnects.
func New(socket string, log *slog.Logger) (*Containerd, error) {
	return NewWithOptions(socket, log, Options{})
}

// NewWithOptions is New with Options.
func NewWithOptions(socket string, log *slog.Logger, o Options) (*Containerd, error) {
	if log == nil {
		log = slog.Default()
	}
	c, err := client.New(socket, client.WithDefaultNamespace(Namespace), client.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w: %v", socket, ErrUnavailable, err)
	}
	if o.CgroupParent == "" {
		o.CgroupParent = "/" + Namespace
	}
	if o.Kernel == nil {
		k := HostKernel()
		o.Kernel = &k
		if u := k.Unenforced(); len(u) > 0 {
			log.Warn("the kernel cannot enforce some container limits: the services run without them", "unenforced", strings.Join(u, ","))
		}
	}
	return &Containerd{c: c, log: log.With("part", "runtime"), opts: o, locks: map[string]*sync.Mutex{}}, nil
}

// Unenforced names the limits the kernel cannot enforce, which every
// container runs without (the services' health says so).
func (r *Containerd) Unenforced() []string { return r.opts.Kernel.Unenforced() }

// Close closes the connection.
func (r *Containerd) Close() error { return r.c.Close() }

func (r *Containerd) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, Namespace)
}

// lock serialises work on container id.
func (r *Containerd) lock(id string) func() {
	r.mu.Lock()
	l, ok := r.locks[id]
	if !ok {
		l = &sync.Mutex{}
		r.locks[id] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// wrap turns containerd's errors into the package's sentinels.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	switch {
	case isUnavailable(err):
		return fmt.Errorf("%s: %w (%v)", what, ErrUnavailable, err)
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w (%v)", what, ErrNotFound, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isUnavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) || errdefs.IsUnavailable(err) {
		return true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return true
	}
	// A stream cut by the daemon's exit and a dial that never connected.
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "error reading from server: EOF") ||
		strings.Contains(msg, "transport is closing") || strings.Contains(msg, "connection error")
}

// Import loads and unpacks the archive's image.
func (r *Containerd) Import(ctx context.Context, archivePath string) (Image, error) {
	ctx = r.ns(ctx)
	f, err := os.Open(archivePath)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", archivePath, err)
	}
	defer f.Close()
	imgs, err := r.c.Import(ctx, f)
	if err != nil {
		return Image{}, wrap(err, "import %s", archivePath)
	}
	var named []images.Image
	for _, im := range imgs {
		// Without a name in index.json containerd names the image by
		// its digest; only named images are the archive's services.
		if !strings.Contains(im.Name, "@") {
			named = append(named, im)
		}
	}
	if len(named) == 0 {
		return Image{}, fmt.Errorf("import %s: %w: no image named by io.containerd.image.name in index.json", archivePath, ErrNotFound)
	}
	im := named[0]
	if err := r.unpack(ctx, client.NewImage(r.c, im)); err != nil {
		return Image{}, wrap(err, "unpack %s", im.Name)
	}
	r.log.Info("image imported", "ref", im.Name, "digest", im.Target.Digest.String())
	return Image{Ref: im.Name, Digest: im.Target.Digest.String()}, nil
}

func (r *Containerd) unpack(ctx context.Context, img client.Image) error {
	ok, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	return img.Unpack(ctx, snapshotter)
}

// Images lists every image of the namespace.
func (r *Containerd) Images(ctx context.Context) ([]Image, error) {
	ctx = r.ns(ctx)
	list, err := r.c.ImageService().List(ctx)
	if err != nil {
		return nil, wrap(err, "list images")
	}
	out := make([]Image, 0, len(list))
	for _, im := range list {
		out = append(out, Image{Ref: im.Name, Digest: im.Target.Digest.String()})
	}
	return out, nil
}

// RemoveImage deletes the image unless a container uses it.
func (r *Containerd) RemoveImage(ctx context.Context, ref string) error {
	ctx = r.ns(ctx)
	if _, err := r.c.ImageService().Get(ctx, ref); err != nil {
		return wrap(err, "image %q", ref)
	}
	cs, err := r.c.ContainerService().List(ctx)
	if err != nil {
		return wrap(err, "list containers")
	}
	for _, c := range cs {
		if c.Image == ref {
			return fmt.Errorf("image %q: %w by container %q", ref, ErrInUse, c.ID)
		}
	}
	if err := r.c.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return wrap(err, "delete image %q", ref)
	}
	return nil
}

// Ensure makes container s.ID exist with spec s.
func (r *Containerd) Ensure(ctx context.Context, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	defer r.lock(s.ID)()
	ctx = r.ns(ctx)
	img, err := r.c.GetImage(ctx, s.Image)
	if err != nil {
		return wrap(err, "container %q: image %q", s.ID, s.Image)
	}
	hash := s.Hash(img.Target().Digest.String())
	if c, err := r.c.LoadContainer(ctx, s.ID); err == nil {
		labels, err := c.Labels(ctx)
		if err != nil {
			return wrap(err, "container %q", s.ID)
		}
		if labels[LabelSpec] == hash {
			return nil
		}
		r.log.Info("container spec changed: recreating", "id", s.ID)
		if err := r.remove(ctx, s.ID, removeGrace); err != nil {
			return err
		}
	} else if !errdefs.IsNotFound(err) {
		return wrap(err, "container %q", s.ID)
	}
	if err := r.unpack(ctx, img); err != nil {
		return wrap(err, "unpack %s", s.Image)
	}
	// A snapshot left by a creation that failed half-way would make
	// WithNewSnapshot fail.
	if err := r.c.SnapshotService(snapshotter).Remove(ctx, s.ID); err != nil && !errdefs.IsNotFound(err) {
		r.log.Warn("remove stale snapshot", "id", s.ID, "err", err)
	}
	labels := s.containerLabels(hash)
	var runtimeOpts any
	if r.opts.RuncRoot != "" {
		runtimeOpts = &options.Options{Root: r.opts.RuncRoot}
	}
	_, err = r.c.NewContainer(ctx, s.ID,
		client.WithImage(img),
		client.WithSnapshotter(snapshotter),
		client.WithNewSnapshot(s.ID, img),
		client.WithRuntime(runcRuntime, runtimeOpts),
		client.WithNewSpec(r.specOpts(img, s)...),
		client.WithContainerLabels(labels),
	)
	if err != nil {
		_ = r.c.SnapshotService(snapshotter).Remove(ctx, s.ID)
		return wrap(err, "create container %q", s.ID)
	}
	r.log.Info("container created", "id", s.ID, "image", s.Image)
	return nil
}

// specOpts is the sandbox of every container and what of it the spec sets.
func (r *Containerd) specOpts(img client.Image, s Spec) []oci.SpecOpts {
	s = r.opts.Kernel.enforceable(s)
	o := []oci.SpecOpts{oci.WithImageConfig(img)}
	if s.Args != nil {
		o = append(o, oci.WithProcessArgs(s.Args...))
	}
	if len(s.Env) > 0 {
		o = append(o, oci.WithEnv(s.Env))
	}
	if s.User != "" {
		o = append(o, oci.WithUser(s.User))
	}
	o = append(o,
		oci.WithHostname(s.ID),
		oci.WithRootFSReadonly(),
		oci.WithNoNewPrivileges,
		// No capability in any set: a service binds ports above 1024
		// and owns its files through the UID it runs as.
		oci.WithCapabilities(nil),
		withNoAmbientCapabilities,
		oci.WithCgroup(path.Join(r.opts.CgroupParent, s.ID)),
	)
	if s.NetNS != "" {
		o = append(o, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNS}))
	}
	if len(s.Mounts) > 0 {
		var ms []specs.Mount
		for _, m := range s.Mounts {
			opt := []string{"rbind", "nosuid", "nodev", "rw"}
			if m.ReadOnly {
				opt[3] = "ro"
			}
			ms = append(ms, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opt})
		}
		o = append(o, oci.WithMounts(ms))
	}
	if s.MemoryBytes > 0 {
		o = append(o, oci.WithMemoryLimit(uint64(s.MemoryBytes)))
	}
	if s.CPUMillis > 0 {
		const period = 100000 // µs
		o = append(o, oci.WithCPUCFS(int64(s.CPUMillis)*period/1000, period))
	}
	if s.Pids > 0 {
		o = append(o, oci.WithPidsLimit(s.Pids))
	}
	// Last: the default profile allows the syscalls of the capabilities
	// the spec holds by then (none).
	o = append(o, seccomp.WithDefaultProfile())
	return o
}

func withNoAmbientCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process != nil && s.Process.Capabilities != nil {
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// Start starts the container's task unless it runs.
func (r *Containerd) Start(ctx context.Context, id string) error {
	defer r.lock(id)()
	ctx = r.ns(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return wrap(err, "container %q", id)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return wrap(err, "container %q", id)
	}
	task, err := c.Task(ctx, nil)
	switch {
	case err == nil:
		st, err := task.Status(ctx)
		if err != nil {
			return wrap(err, "container %q: task status", id)
		}
		switch st.Status {
		case client.Running, client.Pausing, client.Paused:
			return nil
		case client.Created:
			return r.startTask(ctx, c, task)
		}
		// Stopped (or unknown): a new task replaces it.
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return wrap(err, "container %q: delete dead task", id)
		}
	case !errdefs.IsNotFound(err):
		return wrap(err, "container %q: task", id)
	}
	creator := cio.NullIO
	if p := labels[LabelLog]; p != "" {
		trimLog(p, r.log)
		creator = cio.LogFile(p)
	}
	task, err = c.NewTask(ctx, creator)
	if err != nil {
		return wrap(err, "container %q: new task", id)
	}
	return r.startTask(ctx, c, task)
}

func (r *Containerd) startTask(ctx context.Context, c client.Container, task client.Task) error {
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, client.WithProcessKill)
		return wrap(err, "container %q: start", c.ID())
	}
	if _, err := c.SetLabels(ctx, map[string]string{LabelStarted: time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
		r.log.Warn("container started; start time not kept", "id", c.ID(), "err", err)
	}
	r.log.Info("container started", "id", c.ID(), "pid", task.Pid())
	return nil
}

// Stop stops the task: SIGTERM, SIGKILL after grace.
func (r *Containerd) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.lock(id)()
	return r.stop(r.ns(ctx), id, grace)
}

func (r *Containerd) stop(ctx context.Context, id string, grace time.Duration) error {
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap(err, "container %q", id)
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap(err, "container %q: task", id)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return wrap(err, "container %q: task status", id)
	}
	if st.Status == client.Stopped {
		return nil
	}
	// Wait must be set up before the signal, or the exit can be missed.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited, err := task.Wait(wctx)
	if err != nil {
		return wrap(err, "container %q: wait", id)
	}
	if st.Status == client.Created {
		// Never started: nothing listens for SIGTERM.
		grace = 0
	}
	if grace > 0 {
		if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
			return wrap(err, "container %q: SIGTERM", id)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-exited:
			return nil
		case <-t.C:
			r.log.Warn("container did not stop on SIGTERM: killing", "id", id, "grace", grace)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "container %q: SIGKILL", id)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("container %q: still running 10 s after SIGKILL", id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remove deletes the task, the container and its snapshot.
func (r *Containerd) Remove(ctx context.Context, id string) error {
	defer r.lock(id)()
	return r.remove(r.ns(ctx), id, removeGrace)
}

func (r *Containerd) remove(ctx context.Context, id string, grace time.Duration) error {
	if err := r.stop(ctx, id, grace); err != nil {
		return err
	}
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap(err, "container %q", id)
	}
	if task, err := c.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return wrap(err, "container %q: delete task", id)
		}
	} else if !errdefs.IsNotFound(err) {
		return wrap(err, "container %q: task", id)
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "delete container %q", id)
	}
	r.log.Info("container removed", "id", id)
	return nil
}

// Status reports the container's task.
func (r *Containerd) Status(ctx context.Context, id string) (Status, error) {
	ctx = r.ns(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return Status{State: StateAbsent}, nil
	}
	if err != nil {
		return Status{}, wrap(err, "container %q", id)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return Status{}, wrap(err, "container %q", id)
	}
	if p := labels[LabelLog]; p != "" {
		// Status is polled: the place to keep the log bounded.
		trimLog(p, r.log)
	}
	return r.taskStatus(ctx, c, labels)
}

func (r *Containerd) taskStatus(ctx context.Context, c client.Container, labels map[string]string) (Status, error) {
	out := Status{State: StateCreated}
	if t, err := time.Parse(time.RFC3339Nano, labels[LabelStarted]); err == nil {
		out.StartedAt = t
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return out, nil
	}
	if err != nil {
		return Status{}, wrap(err, "container %q: task", c.ID())
	}
	st, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return out, nil
	}
	if err != nil {
		return Status{}, wrap(err, "container %q: task status", c.ID())
	}
	out.PID = task.Pid()
	switch st.Status {
	case client.Running, client.Pausing, client.Paused:
		out.State = StateRunning
	case client.Stopped:
		out.State = StateStopped
		out.ExitCode = st.ExitStatus
		out.ExitedAt = st.ExitTime
	}
	return out, nil
}

// Containers lists our containers.
func (r *Containerd) Containers(ctx context.Context) ([]Container, error) {
	ctx = r.ns(ctx)
	cs, err := r.c.Containers(ctx, fmt.Sprintf("labels.%q", LabelService))
	if err != nil {
		return nil, wrap(err, "list containers")
	}
	var out []Container
	for _, c := range cs {
		info, err := c.Info(ctx)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, wrap(err, "container %q", c.ID())
		}
		st, err := r.taskStatus(ctx, c, info.Labels)
		if err != nil {
			return nil, err
		}
		out = append(out, Container{ID: info.ID, Image: info.Image, State: st.State, Labels: info.Labels})
	}
	return out, nil
}

// Logs returns the last lines of the container's log file.
func (r *Containerd) Logs(ctx context.Context, id string, maxLines int) ([]string, error) {
	ctx = r.ns(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return nil, wrap(err, "container %q", id)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return nil, wrap(err, "container %q", id)
	}
	p := labels[LabelLog]
	if p == "" {
		return nil, nil
	}
	return tailLines(p, maxLines)
}

// Exits subscribes to the task exit events of the namespace. The
// subscription is made again when it breaks (containerd restarted), so the
// channel stays open until ctx ends; exits while containerd was down are
// not delivered (the supervisor also polls).
func (r *Containerd) Exits(ctx context.Context) (<-chan Exit, error) {
	ctx = r.ns(ctx)
	out := make(chan Exit, 16)
	go func() {
		defer close(out)
		delay := 100 * time.Millisecond
		for ctx.Err() == nil {
			sctx, cancel := context.WithCancel(ctx)
			evs, errs := r.c.Subscribe(sctx, `topic=="/tasks/exit"`, fmt.Sprintf("namespace==%q", Namespace))
			got := r.forwardExits(sctx, evs, errs, out)
			cancel()
			if got {
				delay = 100 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			if delay < 5*time.Second {
				delay *= 2
			}
		}
	}()
	return out, nil
}

// forwardExits copies one subscription's exits to out until it breaks; it
// reports whether any event came.
func (r *Containerd) forwardExits(ctx context.Context, evs <-chan *events.Envelope, errs <-chan error, out chan<- Exit) bool {
	got := false
	for {
		select {
		case <-ctx.Done():
			return got
		case err := <-errs:
			if err != nil && ctx.Err() == nil {
				r.log.Debug("exit events: subscription broke; subscribing again", "err", err)
			}
			return got
		case ev, ok := <-evs:
			if !ok {
				return got
			}
			got = true
			if ev.Event == nil {
				continue
			}
			v, err := typeurl.UnmarshalAny(ev.Event)
			if err != nil {
				continue
			}
			te, ok := v.(*apievents.TaskExit)
			// An exec'd process's exit is not the task's.
			if !ok || te.ID != te.ContainerID {
				continue
			}
			e := Exit{ID: te.ContainerID, PID: te.Pid, ExitCode: te.ExitStatus}
			if te.ExitedAt != nil {
				e.At = te.ExitedAt.AsTime()
			}
			select {
			case out <- e:
			case <-ctx.Done():
				return got
			}
		}
	}
}
