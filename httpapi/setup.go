package httpapi

import (
	"encoding/json"
)

// SetupCodeHeader carries the cell's one-time setup code on every change of the
// wizard (each step and the completion). A header rather than a body field, so
// that every change sends it the same way, and so that it never lands in a
// step's data.
const SetupCodeHeader = "X-Setup-Code"

// The wizard answers only at the cell's own address (atOwnAddress), and every
// change needs the setup code (withSetupCode). Their refusals (403 wrong_host,
// 403 setup_code_required or wrong_setup_code, 429 too_many_attempts, 409
// setup_complete) are audited by serve like every refused change; the code
// itself is in no entry, no log line and no answer.
func (s *Server) setupRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/setup/status", Access: Setup, Handle: s.atOwnAddress(s.setupStatus)},
		{Method: "GET", Path: "/api/setup/step", Access: Setup, Handle: s.atOwnAddress(s.setupStep)},
		{Method: "POST", Path: "/api/setup/step", Access: Setup, Action: "setup.step", TargetType: "setup", Handle: s.atOwnAddress(s.withSetupCode(s.submitStep))},
		{Method: "POST", Path: "/api/setup/complete", Access: Setup, Action: "setup.complete", TargetType: "setup", Handle: s.atOwnAddress(s.withSetupCode(s.completeSetup))},
	}
}

// atOwnAddress refuses a request whose Host is not one of the cell's own names
// or an IP literal: a page elsewhere that rebinds its DNS name to the cell
// sends its own name, and never reaches the wizard.
func (s *Server) atOwnAddress(h func(*Request) (any, error)) func(*Request) (any, error) {
	return func(req *Request) (any, error) {
		if err := s.deps.Setup.CheckHost(req.Host); err != nil {
			return nil, err
		}
		return h(req)
	}
}

// withSetupCode lets a change through only with the setup code (and answers
// 409 once setup is complete, whatever the code), before the body is read.
func (s *Server) withSetupCode(h func(*Request) (any, error)) func(*Request) (any, error) {
	return func(req *Request) (any, error) {
		if err := s.deps.Setup.CheckCode(req.Header.Get(SetupCodeHeader), req.SourceIP); err != nil {
			return nil, err
		}
		return h(req)
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
