package httpapi

import (
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

func (s *Server) auditRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/audit", Access: Admin, Handle: s.auditQuery},
		{Method: "GET", Path: "/api/audit/export", Access: Admin, Handle: s.auditExport},
		{Method: "GET", Path: "/api/audit/verify", Access: Admin, Handle: s.auditVerify},
	}
}

func timeParam(req *Request, name string) (time.Time, error) {
	v := req.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, fault.Invalid("invalid_"+name, "%s must be a time such as 2026-01-02T15:04:05Z", name)
	}
	return t, nil
}

func (s *Server) auditQuery(req *Request) (any, error) {
	q := req.URL.Query()
	f := storage.Filter{
		Actor: q.Get("actor"), Action: q.Get("action"), TargetType: q.Get("target_type"),
		TargetID: q.Get("target_id"), Result: q.Get("result"),
	}
	var err error
	if f.Since, err = timeParam(req, "since"); err != nil {
		return nil, err
	}
	if f.Until, err = timeParam(req, "until"); err != nil {
		return nil, err
	}
	if f.Limit, err = intParam(req, "limit", 100, 1, 10000); err != nil {
		return nil, err
	}
	if f.Offset, err = intParam(req, "offset", 0, 0, 1<<31-1); err != nil {
		return nil, err
	}
	entries, total, err := s.deps.Audit.Query(f)
	if err != nil {
		return nil, err
	}
	if entries == nil {
		entries = []storage.Entry{}
	}
	return map[string]any{"entries": entries, "total": total}, nil
}

// CSVHeader is the header row of the CSV export. The export ends with one row whose
// seq column is "checkpoint": size, head, time, public key and signature of the
// checkpoint signed for this export, so the file verifies offline with the public key
// alone (cellctl audit verify).
var CSVHeader = storage.CSVHeader

func (s *Server) auditExport(req *Request) (any, error) {
	format := req.URL.Query().Get("format")
	if format == "" {
		format = "csv"
	}
	if format != "csv" && format != "json" {
		return nil, fault.Invalid("invalid_format", "format must be csv or json")
	}
	var entries []storage.Entry
	cp, err := s.deps.Audit.Export(func(e storage.Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if format == "json" {
		raw, err := json.Marshal(map[string]any{"entries": entries, "checkpoint": cp})
		if err != nil {
			return nil, err
		}
		return Raw{ContentType: "application/json", Filename: "audit.json", Body: raw}, nil
	}
	raw, err := EncodeCSV(entries, cp)
	if err != nil {
		return nil, err
	}
	return Raw{ContentType: "text/csv; charset=utf-8", Filename: "audit.csv", Body: raw}, nil
}

// EncodeCSV writes entries and the closing checkpoint row.
func EncodeCSV(entries []storage.Entry, cp storage.Checkpoint) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(CSVHeader)
	for _, e := range entries {
		d := e.Details
		if d == nil {
			d = map[string]string{}
		}
		details, _ := json.Marshal(d)
		w.Write([]string{strconv.FormatUint(e.Seq, 10), e.Time, e.Actor, e.SourceIP, e.Action, e.TargetType, e.TargetID, e.Result, string(details), e.Prev, e.Hash})
	}
	w.Write([]string{"checkpoint", strconv.FormatUint(cp.Size, 10), cp.Head, cp.Time, cp.PublicKey, cp.Signature, "", "", "", "", ""})
	w.Flush()
	return buf.Bytes(), w.Error()
}

func (s *Server) auditVerify(req *Request) (any, error) {
	v, err := s.deps.Audit.Verify()
	if err != nil {
		return nil, err
	}
	return struct {
		storage.Verification
		PublicKey string `json:"public_key"`
	}{v, hex.EncodeToString(s.deps.Audit.PublicKey())}, nil
}
