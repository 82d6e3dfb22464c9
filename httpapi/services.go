package httpapi

import (
	"context"
	"strconv"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/cell/services"
	"github.com/pic-cell/cell/storage"
)

// ServicesService is the services, store, containers and files areas' view of
// the cell (cell/services).
type ServicesService interface {
	Store() ([]services.StoreEntry, error)
	Active() ([]services.Active, error)
	Install(ctx context.Context, id string, audit storage.Entry) (services.Active, error)
	Remove(ctx context.Context, id string, keepData bool, audit storage.Entry) error
	Status(ctx context.Context, id string) (services.Status, error)
	Restart(ctx context.Context, id string, audit storage.Entry) error
	Accounts(id string) ([]services.Account, error)
	AddAccount(ctx context.Context, id string, in services.NewAccount, audit storage.Entry) (services.Account, error)
	DeleteAccount(ctx context.Context, id, user string, audit storage.Entry) error
	Credentials(id, user string) (services.Credentials, error)
	PeerCredentials(peer string) ([]services.Credentials, error)

	Containers(ctx context.Context) ([]services.Container, error)
	Inspect(ctx context.Context, id string) (services.Container, error)
	SetStopped(ctx context.Context, id string, stopped bool, audit storage.Entry) error
	Logs(ctx context.Context, id string, lines int) ([]string, error)
	Images(ctx context.Context) ([]services.Image, error)
	RemoveImage(ctx context.Context, ref string, audit storage.Entry) error
	Volumes() ([]services.Volume, error)
	RemoveVolume(name string, audit storage.Entry) error
	LogLevels() (map[string]string, error)

	FilesStatus() (services.FilesStatus, error)
	FilesUsers(ctx context.Context) (services.FilesUsage, error)
}

func (s *Server) servicesRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/services/active", Access: Admin, Handle: s.activeServices},
		{Method: "GET", Path: "/api/store", Access: Admin, Handle: s.store},
		{Method: "POST", Path: "/api/store/install", Access: Admin, Action: "service.install", TargetType: "service", Status: 202, Handle: s.installService},
		{Method: "POST", Path: "/api/store/remove", Access: Admin, Action: "service.remove", TargetType: "service", Handle: s.removeService},
		{Method: "GET", Path: "/api/services/catalog/:id/status", Access: Admin, Handle: s.serviceStatus},
		{Method: "POST", Path: "/api/services/catalog/:id/restart", Access: Admin, Action: "service.restart", TargetType: "service", Handle: s.restartService},
		{Method: "GET", Path: "/api/services/catalog/:id/accounts", Access: Admin, Handle: s.serviceAccounts},
		{Method: "POST", Path: "/api/services/catalog/:id/accounts", Access: Admin, Action: "service.account_add", TargetType: "service_account", Status: 201, Handle: s.addServiceAccount},
		{Method: "DELETE", Path: "/api/services/catalog/:id/accounts/:username", Access: Admin, Action: "service.account_delete", TargetType: "service_account", Handle: s.deleteServiceAccount},
		{Method: "GET", Path: "/api/services/catalog/:id/accounts/:username/credentials", Access: Admin, Handle: s.serviceCredentials},

		{Method: "GET", Path: "/api/containers", Access: Admin, Handle: s.containers},
		{Method: "GET", Path: "/api/containers/inspect/:id", Access: Admin, Handle: s.inspectContainer},
		{Method: "POST", Path: "/api/containers/start/:id", Access: Admin, Action: "container.start", TargetType: "container", Handle: s.startContainer},
		{Method: "POST", Path: "/api/containers/stop/:id", Access: Admin, Action: "container.stop", TargetType: "container", Handle: s.stopContainer},
		{Method: "POST", Path: "/api/containers/restart/:id", Access: Admin, Action: "container.restart", TargetType: "container", Handle: s.restartContainer},
		{Method: "GET", Path: "/api/containers/logs/:id", Access: Admin, Handle: s.containerLogs},
		{Method: "GET", Path: "/api/containers/images", Access: Admin, Handle: s.images},
		{Method: "POST", Path: "/api/containers/images/remove", Access: Admin, Action: "container.image_remove", TargetType: "image", Handle: s.removeImage},
		{Method: "GET", Path: "/api/containers/volumes", Access: Admin, Handle: s.volumes},
		{Method: "DELETE", Path: "/api/containers/volumes/:name", Access: Admin, Action: "container.volume_remove", TargetType: "volume", Handle: s.removeVolume},

		{Method: "GET", Path: "/api/files/status", Access: Admin, Handle: s.filesStatus},
		{Method: "GET", Path: "/api/files/users", Access: Admin, Handle: s.filesUsers},
	}
}

// serviceID reads a path's service id, recording it for the audit log when
// it is one.
func serviceID(req *Request, param string) string {
	id := req.Params.ByName(param)
	if names.ValidLabel(id) && len(id) <= 31 {
		req.TargetID = id
	}
	return id
}

func (s *Server) activeServices(req *Request) (any, error) {
	list, err := s.deps.Services.Active()
	if err != nil {
		return nil, err
	}
	return map[string]any{"services": list}, nil
}

func (s *Server) store(req *Request) (any, error) {
	list, err := s.deps.Services.Store()
	if err != nil {
		return nil, err
	}
	return map[string]any{"services": list}, nil
}

type installRequest struct {
	ID string `json:"id"`
}

func (s *Server) installService(req *Request) (any, error) {
	var in installRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if in.ID == "" {
		return nil, fault.Invalid("missing_id", `give the id of the service to install, such as {"id": "files"}`)
	}
	a, err := s.deps.Services.Install(req.Context(), in.ID, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return a, nil
}

type removeRequest struct {
	ID       string `json:"id"`
	KeepData *bool  `json:"keep_data"` // default true: a household's data is never removed by omission
}

func (s *Server) removeService(req *Request) (any, error) {
	var in removeRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if in.ID == "" {
		return nil, fault.Invalid("missing_id", `give the id of the service to remove, such as {"id": "files", "keep_data": true}`)
	}
	keep := in.KeepData == nil || *in.KeepData
	if err := s.deps.Services.Remove(req.Context(), in.ID, keep, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"removed": in.ID, "kept_data": keep}, nil
}

func (s *Server) serviceStatus(req *Request) (any, error) {
	return s.deps.Services.Status(req.Context(), serviceID(req, "id"))
}

func (s *Server) restartService(req *Request) (any, error) {
	id := serviceID(req, "id")
	if err := s.deps.Services.Restart(req.Context(), id, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"restarting": id}, nil
}

func (s *Server) serviceAccounts(req *Request) (any, error) {
	list, err := s.deps.Services.Accounts(serviceID(req, "id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"accounts": list}, nil
}

func (s *Server) addServiceAccount(req *Request) (any, error) {
	id := serviceID(req, "id")
	var in services.NewAccount
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	a, err := s.deps.Services.AddAccount(req.Context(), id, in, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return a, nil
}

func (s *Server) deleteServiceAccount(req *Request) (any, error) {
	id, user := serviceID(req, "id"), req.Params.ByName("username")
	if err := s.deps.Services.DeleteAccount(req.Context(), id, user, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"deleted": user}, nil
}

func (s *Server) serviceCredentials(req *Request) (any, error) {
	return s.deps.Services.Credentials(serviceID(req, "id"), req.Params.ByName("username"))
}

func (s *Server) containers(req *Request) (any, error) {
	list, err := s.deps.Services.Containers(req.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"containers": list}, nil
}

func (s *Server) inspectContainer(req *Request) (any, error) {
	return s.deps.Services.Inspect(req.Context(), serviceID(req, "id"))
}

func (s *Server) startContainer(req *Request) (any, error) { return s.setStopped(req, false) }
func (s *Server) stopContainer(req *Request) (any, error)  { return s.setStopped(req, true) }

func (s *Server) setStopped(req *Request, stopped bool) (any, error) {
	id := serviceID(req, "id")
	if err := s.deps.Services.SetStopped(req.Context(), id, stopped, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"id": id, "stopped": stopped}, nil
}

func (s *Server) restartContainer(req *Request) (any, error) { return s.restartService(req) }

func (s *Server) containerLogs(req *Request) (any, error) {
	lines := 100
	if v := req.URL.Query().Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fault.Invalid("invalid_lines", "lines must be a number from 1 to %d", services.MaxLogLines)
		}
		lines = n
	}
	out, err := s.deps.Services.Logs(req.Context(), serviceID(req, "id"), lines)
	if err != nil {
		return nil, err
	}
	return map[string]any{"lines": out}, nil
}

func (s *Server) images(req *Request) (any, error) {
	list, err := s.deps.Services.Images(req.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"images": list}, nil
}

type imageRequest struct {
	Ref string `json:"ref"`
}

func (s *Server) removeImage(req *Request) (any, error) {
	var in imageRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Ref) <= 255 {
		req.TargetID = in.Ref
	}
	if err := s.deps.Services.RemoveImage(req.Context(), in.Ref, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"removed": in.Ref}, nil
}

func (s *Server) volumes(req *Request) (any, error) {
	list, err := s.deps.Services.Volumes()
	if err != nil {
		return nil, err
	}
	return map[string]any{"volumes": list}, nil
}

func (s *Server) removeVolume(req *Request) (any, error) {
	name := serviceID(req, "name")
	if err := s.deps.Services.RemoveVolume(name, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"removed": name}, nil
}

func (s *Server) filesStatus(req *Request) (any, error) { return s.deps.Services.FilesStatus() }

func (s *Server) filesUsers(req *Request) (any, error) {
	return s.deps.Services.FilesUsers(req.Context())
}
