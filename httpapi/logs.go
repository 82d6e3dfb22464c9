package httpapi

import (
	"sort"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/logs"
)

func (s *Server) logRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/logs", Access: Admin, Handle: s.logsRecent},
		{Method: "GET", Path: "/api/logs/search", Access: Admin, Handle: s.logsSearch},
		{Method: "GET", Path: "/api/logs/verbosity", Access: Admin, Handle: s.getVerbosity},
		{Method: "PUT", Path: "/api/logs/verbosity", Access: Admin, Action: "logs.verbosity", TargetType: "logs", Handle: s.putVerbosity},
	}
}

func (s *Server) logsRecent(req *Request) (any, error) {
	n, err := intParam(req, "lines", 100, 1, 5000)
	if err != nil {
		return nil, err
	}
	lines := s.deps.Logs.Query(req.URL.Query().Get("service"), "", n)
	if lines == nil {
		lines = []logs.Line{}
	}
	return map[string]any{"lines": lines}, nil
}

func (s *Server) logsSearch(req *Request) (any, error) {
	q := req.URL.Query().Get("q")
	if q == "" || len(q) > 256 {
		return nil, fault.Invalid("invalid_q", "q must be 1–256 characters of text to look for")
	}
	n, err := intParam(req, "lines", 500, 1, 5000)
	if err != nil {
		return nil, err
	}
	lines := s.deps.Logs.Query(req.URL.Query().Get("service"), q, n)
	if lines == nil {
		lines = []logs.Line{}
	}
	return map[string]any{"lines": lines}, nil
}

func (s *Server) getVerbosity(req *Request) (any, error) {
	out := map[string]any{"levels": s.deps.Logs.Levels()}
	if s.deps.Services != nil {
		cs, err := s.deps.Services.LogLevels()
		if err != nil {
			return nil, err
		}
		out["containers"] = cs
	}
	return out, nil
}

type verbosityRequest struct {
	Levels map[string]string `json:"levels"`
}

func (s *Server) putVerbosity(req *Request) (any, error) {
	var in verbosityRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Levels) == 0 {
		return nil, fault.Invalid("invalid_levels", `levels must name at least one component, such as {"levels": {"api": "debug"}}`)
	}
	known := s.deps.Logs.Levels()
	names := make([]string, 0, len(in.Levels))
	for name := range in.Levels {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names { // check all before changing any
		if _, ok := known[name]; !ok {
			return nil, fault.Invalid("unknown_component", "no component named %q (known: %v)", name, sortedKeys(known))
		}
		if _, err := logs.ParseLevel(in.Levels[name]); err != nil {
			return nil, fault.Invalid("invalid_level", "%v", err)
		}
	}
	for _, name := range names {
		l, _ := logs.ParseLevel(in.Levels[name])
		s.deps.Logs.Level(name).Set(l)
		req.Detail(name, in.Levels[name])
	}
	return map[string]any{"levels": s.deps.Logs.Levels()}, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
