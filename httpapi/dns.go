package httpapi

import (
	"context"

	"github.com/pic-cell/cell/cell/dns"
	"github.com/pic-cell/cell/storage"
)

// DNSService is the dns area's view of the cell (cell/dns).
type DNSService interface {
	Status() (dns.Status, error)
	Records() ([]dns.Record, error)
	AddRecord(ctx context.Context, in dns.NewRecord, audit storage.Entry) (dns.Record, error)
	DeleteRecord(ctx context.Context, id string, audit storage.Entry) error
	Reload(ctx context.Context) error
}

func (s *Server) dnsRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/dns", Access: Admin, Handle: s.dnsStatus},
		{Method: "GET", Path: "/api/dns/records", Access: Admin, Handle: s.dnsRecords},
		{Method: "POST", Path: "/api/dns/records", Access: Admin, Action: "dns.record_add", TargetType: "dns_record", Status: 201, Handle: s.addDNSRecord},
		{Method: "DELETE", Path: "/api/dns/records/:id", Access: Admin, Action: "dns.record_delete", TargetType: "dns_record", Handle: s.deleteDNSRecord},
		{Method: "POST", Path: "/api/dns/reload", Access: Admin, Action: "dns.reload", TargetType: "dns", Handle: s.reloadDNS},
	}
}

func (s *Server) dnsStatus(req *Request) (any, error) { return s.deps.DNS.Status() }

func (s *Server) dnsRecords(req *Request) (any, error) {
	rs, err := s.deps.DNS.Records()
	if err != nil {
		return nil, err
	}
	return map[string]any{"records": rs}, nil
}

func (s *Server) addDNSRecord(req *Request) (any, error) {
	var in dns.NewRecord
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	r, err := s.deps.DNS.AddRecord(req.Context(), in, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return r, nil
}

func (s *Server) deleteDNSRecord(req *Request) (any, error) {
	id := req.Params.ByName("id")
	if len(id) <= 20 {
		req.TargetID = id
	}
	if err := s.deps.DNS.DeleteRecord(req.Context(), id, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"deleted": id}, nil
}

func (s *Server) reloadDNS(req *Request) (any, error) {
	if err := s.deps.DNS.Reload(req.Context()); err != nil {
		return nil, err
	}
	return map[string]any{"reloaded": true}, nil
}
