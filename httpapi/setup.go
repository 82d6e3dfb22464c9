package httpapi

import (
	"encoding/json"
)

func (s *Server) setupRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/setup/status", Access: Setup, Handle: s.setupStatus},
		{Method: "GET", Path: "/api/setup/step", Access: Setup, Handle: s.setupStep},
		{Method: "POST", Path: "/api/setup/step", Access: Setup, Action: "setup.step", TargetType: "setup", Handle: s.submitStep},
		{Method: "POST", Path: "/api/setup/complete", Access: Setup, Action: "setup.complete", TargetType: "setup", Handle: s.completeSetup},
	}
}

func (s *Server) setupStatus(req *Request) (any, error) { return s.deps.Setup.Status() }

func (s *Server) setupStep(req *Request) (any, error) { return s.deps.Setup.CurrentStep() }

type stepRequest struct {
	Step string          `json:"step"`
	Data json.RawMessage `json:"data"`
}

func (s *Server) submitStep(req *Request) (any, error) {
	var in stepRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Step) <= 32 {
		req.TargetID = in.Step
	}
	if err := s.deps.Setup.SubmitStep(in.Step, in.Data, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return s.deps.Setup.Status()
}

func (s *Server) completeSetup(req *Request) (any, error) {
	e := s.auditEntry(req, nil)
	if _, err := s.deps.Setup.CompleteSetup(req.Context(), e); err != nil {
		return nil, err
	}
	s.setupDone.Store(true)
	req.Audited()
	return s.deps.Setup.Status()
}
