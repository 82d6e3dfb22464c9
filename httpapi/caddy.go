package httpapi

import (
	"context"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/fault"
)

// Caddy is the caddy area's view of the front (netstack/front, wired by the
// daemon): its certificates as Caddy's cache holds them, and renewing them now.
type Caddy interface {
	Certificates() []CertStatus
	Renew(ctx context.Context) error
}

// CertStatus is one of the front's names and its certificate.
type CertStatus struct {
	Name      string     `json:"name"`
	Issuer    string     `json:"issuer,omitempty"` // the issuing CA's common name; empty: none yet
	NotAfter  *time.Time `json:"not_after,omitempty"`
	DaysLeft  int        `json:"days_left"`
	LastError string     `json:"last_error,omitempty"`
}

// CaddyStatus is GET /api/caddy/cert-status.
type CaddyStatus struct {
	Configured   bool         `json:"configured"` // false: this cell runs no front
	Certificates []CertStatus `json:"certificates"`
}

func (s *Server) caddyRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/caddy/cert-status", Access: Admin, Handle: s.caddyCertStatus},
		{Method: "POST", Path: "/api/caddy/cert-renew", Access: Admin, Action: "caddy.cert_renew", TargetType: "front", Handle: s.caddyCertRenew},
	}
}

func (s *Server) caddyCertStatus(*Request) (any, error) {
	if s.deps.Caddy == nil {
		return CaddyStatus{Certificates: []CertStatus{}}, nil
	}
	certs := s.deps.Caddy.Certificates()
	if certs == nil {
		certs = []CertStatus{}
	}
	return CaddyStatus{Configured: true, Certificates: certs}, nil
}

func (s *Server) caddyCertRenew(req *Request) (any, error) {
	if s.deps.Caddy == nil {
		return nil, fault.Errorf(fault.ErrConflict, "no_front", "this cell runs no front (the daemon's -front is empty): there is no certificate to renew")
	}
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Minute)
	defer cancel()
	if err := s.deps.Caddy.Renew(ctx); err != nil {
		return nil, fault.Errorf(fault.ErrUnavailable, "renew_failed", "renewing the front's certificates: %v", err)
	}
	st := CaddyStatus{Configured: true, Certificates: s.deps.Caddy.Certificates()}
	names := make([]string, 0, len(st.Certificates))
	for _, c := range st.Certificates {
		names = append(names, c.Name)
	}
	req.Detail("names", strings.Join(names, " "))
	return st, nil
}
