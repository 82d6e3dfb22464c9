// Package runtime owns the cell's container runtime: the small interface the
// service supervisor drives (import an image, make a container of a spec,
// start, stop, remove, watch it), its adapter to containerd (namespace "pic")
// and Fake, an in-memory runtime with the same semantics for unit tests.
//
// A container's sandbox is fixed here, not by the caller: a read-only root
// file system, no capabilities, containerd's default seccomp profile, no new
// privileges, its own hostname (the service id), the spec's cgroup limits and
// network namespace. Its stdout and stderr go to a host file the shim writes,
// so the log outlives a restart of the cell; the adapter keeps it near 1 MiB.
package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"time"
)

// Errors the adapter and the fake wrap. ErrUnavailable means containerd is
// not reachable (the daemon answers 503 for it).
var (
	ErrNotFound    = errors.New("not found")
	ErrInUse       = errors.New("in use")
	ErrUnavailable = errors.New("containerd is not reachable")
	ErrInvalid     = errors.New("invalid spec")
)

// Container states of Status.
const (
	StateRunning = "running"
	StateStopped = "stopped"
	StateCreated = "created"
	StateAbsent  = "absent"
)

// Labels the runtime puts on its containers.
const (
	LabelService = "pic.service" // the service id: marks a container as ours
	LabelSpec    = "pic.spec"    // hash of the Spec (and of the image's digest)
	LabelLog     = "pic.log"     // the host log file
	LabelStarted = "pic.started" // RFC 3339 time of the last task start
)

// Runtime is what the supervisor needs of a container runtime.
type Runtime interface {
	// Import loads an OCI archive (a tar of an OCI layout whose index.json
	// names the image with io.containerd.image.name) and unpacks it.
	// Importing the same archive again changes nothing.
	Import(ctx context.Context, archivePath string) (Image, error)
	Images(ctx context.Context) ([]Image, error)
	// RemoveImage fails with ErrInUse while a container uses the image.
	RemoveImage(ctx context.Context, ref string) error
	// Ensure makes the container exist with exactly this spec; a container
	// of another spec is stopped and recreated.
	Ensure(ctx context.Context, s Spec) error
	// Start starts the container's task unless it runs (a dead task is
	// deleted first).
	Start(ctx context.Context, id string) error
	// Stop sends SIGTERM, then SIGKILL after grace. A stopped or absent
	// task is no error.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Remove stops the task and deletes it, the container and its
	// snapshot. An absent container is no error.
	Remove(ctx context.Context, id string) error
	// Status of an absent container is StateAbsent, not an error.
	Status(ctx context.Context, id string) (Status, error)
	// Containers lists the containers that carry LabelService.
	Containers(ctx context.Context) ([]Container, error)
	// Logs returns up to maxLines last lines of the container's output.
	Logs(ctx context.Context, id string, maxLines int) ([]string, error)
	// Exits delivers the exits of containers' tasks until ctx ends.
	Exits(ctx context.Context) (<-chan Exit, error)
	Close() error
}

// Image is an image the runtime holds.
type Image struct {
	Ref    string // "pic.local/files:1.0.0"
	Digest string // the image's target, "sha256:..."
}

// Mount is a bind mount of a host path into the container.
type Mount struct {
	Source   string // host path
	Target   string // path inside
	ReadOnly bool
}

// Spec is a container as the supervisor wants it.
type Spec struct {
	ID          string            // container id = service id; ^[a-z][a-z0-9-]{0,30}$
	Image       string            // image ref
	Args        []string          // the whole command line; nil: the image's entrypoint and cmd
	Env         []string          // KEY=VALUE, on top of the image's
	User        string            // "uid:gid"; empty: the image's
	NetNS       string            // path of a network namespace to join; empty: a new one (loopback only)
	Mounts      []Mount           // bind mounts
	MemoryBytes int64             // 0: no limit
	CPUMillis   int               // thousandths of a CPU; 0: no limit
	Pids        int64             // 0: no limit
	Labels      map[string]string // extra container labels
	LogPath     string            // host file for stdout+stderr; empty: discarded
}

// Status is the state of a container and its task.
type Status struct {
	State     string // StateRunning, StateStopped, StateCreated or StateAbsent
	PID       uint32
	ExitCode  uint32
	StartedAt time.Time
	ExitedAt  time.Time
}

// Container is one of ours as Containers lists it.
type Container struct {
	ID     string
	Image  string
	State  string
	Labels map[string]string
}

// Exit is the end of a container's task.
type Exit struct {
	ID       string
	PID      uint32
	ExitCode uint32
	At       time.Time
}

var idPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// ValidID reports whether id may name a container.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Validate checks what the runtime relies on.
func (s Spec) Validate() error {
	if !ValidID(s.ID) {
		return fmt.Errorf("container id %q: %w: want ^[a-z][a-z0-9-]{0,30}$", s.ID, ErrInvalid)
	}
	if s.Image == "" {
		return fmt.Errorf("container %q: %w: no image", s.ID, ErrInvalid)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) {
			return fmt.Errorf("container %q: %w: mount %q on %q: paths must be absolute", s.ID, ErrInvalid, m.Source, m.Target)
		}
	}
	if s.NetNS != "" && !filepath.IsAbs(s.NetNS) {
		return fmt.Errorf("container %q: %w: netns %q must be an absolute path", s.ID, ErrInvalid, s.NetNS)
	}
	if s.LogPath != "" && !filepath.IsAbs(s.LogPath) {
		return fmt.Errorf("container %q: %w: log path %q must be absolute", s.ID, ErrInvalid, s.LogPath)
	}
	if s.MemoryBytes < 0 || s.CPUMillis < 0 || s.Pids < 0 {
		return fmt.Errorf("container %q: %w: negative limit", s.ID, ErrInvalid)
	}
	return nil
}

// Hash is the value of LabelSpec for s on an image of digest imageDigest: a
// new image under the same ref is a new spec too.
func (s Spec) Hash(imageDigest string) string {
	// Empty and nil lists mean the same; Args keeps the difference (nil is
	// the image's command).
	if len(s.Env) == 0 {
		s.Env = nil
	}
	if len(s.Mounts) == 0 {
		s.Mounts = nil
	}
	if len(s.Labels) == 0 {
		s.Labels = nil
	}
	b, _ := json.Marshal(struct {
		Spec   Spec
		Digest string
	}{s, imageDigest})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// containerLabels are the labels a container of s carries, hash being its
// Hash: the spec's own, then ours (which win).
func (s Spec) containerLabels(hash string) map[string]string {
	labels := make(map[string]string, len(s.Labels)+3)
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelService] = s.ID
	labels[LabelSpec] = hash
	if s.LogPath != "" {
		labels[LabelLog] = s.LogPath
	}
	return labels
}
