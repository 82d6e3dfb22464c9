package httpapi

import (
	"strconv"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

func (s *Server) coreRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/health", Access: Public, Handle: s.health},
		{Method: "GET", Path: "/api/status", Access: Admin, Handle: s.status},
		{Method: "GET", Path: "/api/config", Access: Admin, Handle: s.getConfig},
		{Method: "PUT", Path: "/api/config", Access: Admin, Action: "config.update", TargetType: "config", Handle: s.putConfig},
		{Method: "GET", Path: "/api/health/history", Access: Admin, Handle: s.healthHistory},
	}
}

// health is public: it says whether the cell answers and its overall state, nothing
// that helps an attacker.
func (s *Server) health(req *Request) (any, error) {
	st := s.deps.Health.Status(req.Context())
	return map[string]any{"ok": st.State != storage.StateDown, "state": st.State, "version": st.Version, "setup_complete": s.isSetupDone()}, nil
}

func (s *Server) status(req *Request) (any, error) { return s.deps.Health.Status(req.Context()), nil }

func (s *Server) getConfig(req *Request) (any, error) { return s.deps.Settings.Config() }

func (s *Server) putConfig(req *Request) (any, error) {
	raw, err := req.Body()
	if err != nil {
		return nil, err
	}
	cfg, _, err := s.deps.Settings.PatchConfig(raw, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return cfg, nil
}

func (s *Server) healthHistory(req *Request) (any, error) {
	limit, err := intParam(req, "limit", 100, 1, 100000)
	if err != nil {
		return nil, err
	}
	recs, err := s.deps.Health.History(limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"history": recs}, nil
}

// intParam reads an integer query parameter within bounds.
func intParam(req *Request, name string, def, min, max int) (int, error) {
	v := req.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		return 0, fault.Invalid("invalid_"+name, "%s must be a whole number from %d to %d", name, min, max)
	}
	return n, nil
}
