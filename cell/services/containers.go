package services

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/storage"
)

// MaxLogLines bounds what one logs request reads.
const MaxLogLines = 1000

// Container is one of the cell's containers as /api/containers shows it.
type Container struct {
	ID        string    `json:"id"`
	Image     string    `json:"image"`
	State     string    `json:"state"`
	Service   string    `json:"service"`
	PID       uint32    `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	ExitCode  uint32    `json:"exit_code,omitempty"`
	ExitedAt  time.Time `json:"exited_at,omitzero"`
}

// runtimeErr maps the runtime's errors to the API's.
func runtimeErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, runtime.ErrUnavailable):
		return fault.Errorf(fault.ErrUnavailable, "containerd_unavailable", "containerd is not answering: %s cannot be done now", what)
	case errors.Is(err, runtime.ErrNotFound):
		return fault.Errorf(fault.ErrNotFound, "not_found", "%s: not found", what)
	case errors.Is(err, runtime.ErrInUse):
		return fault.Errorf(fault.ErrConflict, "in_use", "%s: it is in use by a container", what)
	}
	return err
}

func containerNotFound(id string) error {
	return fault.Errorf(fault.ErrNotFound, "container_not_found", "no container %s", names.Quote(id))
}

// Containers lists the cell's containers.
func (s *Services) Containers(ctx context.Context) ([]Container, error) {
	if err := s.needRuntime(); err != nil {
		return nil, err
	}
	list, err := s.o.Runtime.Containers(ctx)
	if err != nil {
		return nil, runtimeErr(err, "listing the containers")
	}
	out := []Container{}
	for _, c := range list {
		out = append(out, Container{ID: c.ID, Image: c.Image, State: c.State, Service: c.Labels[runtime.LabelService]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Inspect is one container with its task's state.
func (s *Services) Inspect(ctx context.Context, id string) (Container, error) {
	if err := s.needRuntime(); err != nil {
		return Container{}, err
	}
	if !runtime.ValidID(id) {
		return Container{}, containerNotFound(id)
	}
	list, err := s.o.Runtime.Containers(ctx)
	if err != nil {
		return Container{}, runtimeErr(err, "reading the containers")
	}
	for _, c := range list {
		if c.ID != id {
			continue
		}
		st, err := s.o.Runtime.Status(ctx, id)
		if err != nil {
			return Container{}, runtimeErr(err, "reading the container")
		}
		return Container{ID: c.ID, Image: c.Image, State: st.State, Service: c.Labels[runtime.LabelService], PID: st.PID,
			StartedAt: st.StartedAt, ExitCode: st.ExitCode, ExitedAt: st.ExitedAt}, nil
	}
	return Container{}, containerNotFound(id)
}

// SetStopped stops (or starts again) an installed service's container: the
// choice is stored, so the supervisor does not restart a container the admin
// stopped, and a reboot keeps it stopped.
func (s *Services) SetStopped(ctx context.Context, id string, stopped bool, audit storage.Entry) error {
	if err := s.needRuntime(); err != nil {
		return err
	}
	if !runtime.ValidID(id) {
		return containerNotFound(id)
	}
	audit.TargetType, audit.TargetID, audit.Result = "container", id, "ok"
	err := s.o.DB.Update(func(tx *storage.Tx) error {
		svc, err := s.o.DB.Services().GetTx(tx, id)
		if err != nil {
			return containerNotFound(id)
		}
		if svc.Stopped == stopped {
			return s.o.Audit.Within(audit)(tx) // already so: still the admin's act
		}
		svc.Stopped = stopped
		if err := s.o.DB.Services().PutTx(tx, svc); err != nil {
			return err
		}
		return s.o.Audit.Within(audit)(tx)
	})
	if err != nil {
		return err
	}
	if err := s.sync(ctx); err != nil {
		return err
	}
	return s.settle(ctx)
}

// Logs are a container's last lines.
func (s *Services) Logs(ctx context.Context, id string, lines int) ([]string, error) {
	if err := s.needRuntime(); err != nil {
		return nil, err
	}
	if !runtime.ValidID(id) {
		return nil, containerNotFound(id)
	}
	if lines <= 0 || lines > MaxLogLines {
		return nil, fault.Invalid("invalid_lines", "lines must be from 1 to %d", MaxLogLines)
	}
	out, err := s.o.Runtime.Logs(ctx, id, lines)
	if errors.Is(err, runtime.ErrNotFound) {
		return nil, containerNotFound(id)
	}
	if out == nil {
		out = []string{}
	}
	return out, runtimeErr(err, "reading the logs")
}

// Image is an image containerd holds for the cell.
type Image struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	InUse  bool   `json:"in_use"`
}

// Images lists the images, each with whether a container uses it.
func (s *Services) Images(ctx context.Context) ([]Image, error) {
	if err := s.needRuntime(); err != nil {
		return nil, err
	}
	imgs, err := s.o.Runtime.Images(ctx)
	if err != nil {
		return nil, runtimeErr(err, "listing the images")
	}
	cs, err := s.o.Runtime.Containers(ctx)
	if err != nil {
		return nil, runtimeErr(err, "listing the containers")
	}
	used := map[string]bool{}
	for _, c := range cs {
		used[c.Image] = true
	}
	out := []Image{}
	for _, im := range imgs {
		out = append(out, Image{Ref: im.Ref, Digest: im.Digest, InUse: used[im.Ref]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// RemoveImage removes an image no container uses (409 otherwise).
func (s *Services) RemoveImage(ctx context.Context, ref string, audit storage.Entry) error {
	if err := s.needRuntime(); err != nil {
		return err
	}
	if ref == "" || len(ref) > 255 {
		return fault.Invalid("invalid_ref", "give the image's ref, as the images list shows it")
	}
	audit.TargetType, audit.TargetID, audit.Result = "image", ref, "ok"
	err := s.o.Runtime.RemoveImage(ctx, ref)
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		return fault.Errorf(fault.ErrNotFound, "image_not_found", "no image %s", names.Quote(ref))
	case errors.Is(err, runtime.ErrInUse):
		return fault.Errorf(fault.ErrConflict, "image_in_use", "the image %s is used by a container: remove its service first", names.Quote(ref))
	case err != nil:
		return runtimeErr(err, "removing the image")
	}
	return s.o.DB.Update(func(tx *storage.Tx) error { return s.o.Audit.Within(audit)(tx) })
}

// Volume is a service's data directory.
type Volume struct {
	Name  string `json:"name"` // the service's id
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	InUse bool   `json:"in_use"` // its service is installed
}

// Volumes lists the services' data directories, installed or left behind
// by a remove that kept the data.
func (s *Services) Volumes() ([]Volume, error) {
	dir := filepath.Join(s.o.DataDir, "volumes")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []Volume{}, nil
	}
	if err != nil {
		return nil, err
	}
	installed := map[string]bool{}
	err = s.o.DB.View(func(tx *storage.Tx) error {
		list, err := s.o.DB.Services().ListTx(tx)
		for _, svc := range list {
			installed[svc.ID] = true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := []Volume{}
	for _, e := range ents {
		if !e.IsDir() || !runtime.ValidID(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		out = append(out, Volume{Name: e.Name(), Path: p, Bytes: duBytes(p), InUse: installed[e.Name()]})
	}
	return out, nil
}

// duBytes is the size of the files under p (what a best effort walk finds).
func duBytes(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// RemoveVolume deletes a volume whose service is not installed (409 while it is).
func (s *Services) RemoveVolume(name string, audit storage.Entry) error {
	if !runtime.ValidID(name) {
		return fault.Errorf(fault.ErrNotFound, "volume_not_found", "no volume %s", names.Quote(name))
	}
	audit.TargetType, audit.TargetID, audit.Result = "volume", name, "ok"
	return s.o.DB.Update(func(tx *storage.Tx) error {
		if _, err := s.o.DB.Services().GetTx(tx, name); err == nil {
			return fault.Errorf(fault.ErrConflict, "volume_in_use", "the volume %s belongs to the installed service %q: remove the service first", names.Quote(name), name)
		}
		p := VolumeDir(s.o.DataDir, name)
		if _, err := os.Stat(p); err != nil {
			return fault.Errorf(fault.ErrNotFound, "volume_not_found", "no volume %s", names.Quote(name))
		}
		if err := s.o.Audit.Within(audit)(tx); err != nil {
			return err
		}
		// Inside the transaction: a concurrent install of the same id waits,
		// and the audit entry commits only if the data is gone.
		return os.RemoveAll(p)
	})
}

// LogLevels are the installed services' log levels, by id (each service logs
// at info; GET /api/logs/verbosity shows them beside the cell's components).
func (s *Services) LogLevels() (map[string]string, error) {
	out := map[string]string{}
	err := s.o.DB.View(func(tx *storage.Tx) error {
		list, err := s.o.DB.Services().ListTx(tx)
		for _, svc := range list {
			out[svc.ID] = "info"
		}
		return err
	})
	return out, err
}
