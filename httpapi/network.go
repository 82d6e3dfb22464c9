package httpapi

import (
	"context"

	"github.com/pic-cell/cell/cell/ntp"
	"github.com/pic-cell/cell/cell/outside"
	"github.com/pic-cell/cell/storage"
)

// NetworkService is the network area's view of the cell (cell/outside): how
// the outside reaches it, and the diagnostics.
type NetworkService interface {
	Status(ctx context.Context) (outside.Status, error)
	DDNSStatus() outside.DDNSView
	PutDDNS(raw []byte, audit storage.Entry) (outside.DDNSView, error)
	RefreshDDNS() (outside.DDNSView, error)
	Test(ctx context.Context, r outside.TestRequest) (outside.TestResult, error)
}

// TimeService is the ntp area's view of the cell (cell/ntp).
type TimeService interface {
	Status() ntp.View
}

func (s *Server) networkRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/network", Access: Admin, Handle: s.networkStatus},
		{Method: "GET", Path: "/api/network/ddns", Access: Admin, Handle: s.ddnsStatus},
		{Method: "PUT", Path: "/api/network/ddns", Access: Admin, Action: "network.ddns_update", TargetType: "ddns", Handle: s.putDDNS},
		{Method: "POST", Path: "/api/network/ddns/refresh", Access: Admin, Action: "network.ddns_refresh", TargetType: "ddns", Handle: s.refreshDDNS},
		{Method: "POST", Path: "/api/network/test", Access: Admin, Action: "network.test", TargetType: "network_test", Handle: s.networkTest},
	}
}

func (s *Server) ntpRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/ntp", Access: Admin, Handle: s.ntpStatus},
		{Method: "GET", Path: "/api/ntp/status", Access: Admin, Handle: s.ntpStatus},
	}
}

func (s *Server) networkStatus(req *Request) (any, error) {
	return s.deps.Network.Status(req.Context())
}

func (s *Server) ddnsStatus(req *Request) (any, error) { return s.deps.Network.DDNSStatus(), nil }

func (s *Server) putDDNS(req *Request) (any, error) {
	raw, err := req.Body()
	if err != nil {
		return nil, err
	}
	v, err := s.deps.Network.PutDDNS(raw, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return v, nil
}

func (s *Server) refreshDDNS(req *Request) (any, error) { return s.deps.Network.RefreshDDNS() }

func (s *Server) networkTest(req *Request) (any, error) {
	var in outside.TestRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	// The audit keeps what was probed, when it is printable text at all
	// (a hostile target is refused and audited without it).
	if printable(in.Kind, 32) {
		req.Detail("kind", in.Kind)
	}
	if printable(in.Target, 256) {
		req.Detail("target", in.Target)
	}
	return s.deps.Network.Test(req.Context(), in)
}

func (s *Server) ntpStatus(req *Request) (any, error) { return s.deps.Time.Status(), nil }

// printable reports whether s is 1 to max bytes of printable ASCII.
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
