package httpapi

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// refusalCounter is the audit log's count of anonymous refusals
// (cell/audit.Log.Refused): an auditor that has it is handed those refusals
// instead of one entry each.
type refusalCounter interface {
	Refused(e storage.Entry) error
}

// recordRefusal hands the refusal of a request without a session to the audit
// log's counts (one entry per source, actor, action, target, result and minute),
// or appends it where the auditor does not count.
func (s *Server) recordRefusal(e storage.Entry) error {
	if rc, ok := s.deps.Audit.(refusalCounter); ok {
		return rc.Refused(e)
	}
	_, err := s.deps.Audit.Record(e)
	return err
}

// ExportFunc is the audit log's streaming export (cell/audit.Log.ExportTo): start
// gets the signed base of a pruned log (nil: none) before any entry, fn every
// entry in order, all from one read transaction; it returns the checkpoint signed
// for the export.
type ExportFunc func(start func(base *storage.Checkpoint) error, fn func(storage.Entry) error) (storage.Checkpoint, error)

// exportStreamer is an auditor that streams its export with the base.
type exportStreamer interface {
	ExportTo(start func(base *storage.Checkpoint) error, fn func(storage.Entry) error) (storage.Checkpoint, error)
}

func (s *Server) exportFunc() ExportFunc {
	if st, ok := s.deps.Audit.(exportStreamer); ok {
		return st.ExportTo
	}
	return func(start func(*storage.Checkpoint) error, fn func(storage.Entry) error) (storage.Checkpoint, error) {
		if start != nil {
			if err := start(nil); err != nil {
				return storage.Checkpoint{}, err
			}
		}
		return s.deps.Audit.Export(fn)
	}
}

// CSVHeader is the header row of the CSV export. A pruned log's export has a
// "base" row after it; the export ends with one row whose seq column is
// "checkpoint": size, head, time, public key and signature of the checkpoint
// signed for this export, so the file verifies offline with the public key alone
// (cellctl audit verify). See storage.CSVHeader.
var CSVHeader = storage.CSVHeader

// Stream is a response written by Write as it is produced (the audit export),
// never held in memory whole. An error before the first byte is answered as an
// error; after it, the body is cut short (an export then lacks its closing
// checkpoint, which its verifier reports).
type Stream struct {
	ContentType string
	Filename    string // when set, served as an attachment
	Write       func(w io.Writer) error
}

// StreamWriteTimeout bounds each write of a Stream: the audit export holds a read
// transaction while it streams, and a client that stops reading must not hold it
// (and with it the database's growth and the reuse of its free pages) for ever.
const StreamWriteTimeout = 30 * time.Second

// startWriter sends the status and headers with the first byte of the body, and
// gives every write StreamWriteTimeout.
type startWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	start   func()
	started bool
}

func (sw *startWriter) Write(p []byte) (int, error) {
	if !sw.started {
		sw.started = true
		sw.start()
	}
	sw.rc.SetWriteDeadline(time.Now().Add(StreamWriteTimeout)) // not supported (a recorder): no bound
	return sw.w.Write(p)
}

// writeStream serves a Stream.
func (s *Server) writeStream(w http.ResponseWriter, status int, st Stream) {
	rc := http.NewResponseController(w)
	defer rc.SetWriteDeadline(time.Time{}) // the connection may serve another request
	sw := &startWriter{w: w, rc: rc, start: func() {
		h := w.Header()
		h.Set("Content-Type", st.ContentType)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if st.Filename != "" {
			h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", st.Filename))
		}
		w.WriteHeader(status)
	}}
	err := st.Write(sw)
	switch {
	case err == nil:
	case !sw.started:
		status, code, msg := statusOf(err)
		if status >= 500 {
			s.log.Error("stream failed", "err", err)
		}
		writeError(w, status, code, msg)
	default:
		s.log.Warn("stream cut short", "err", err)
	}
}

func (s *Server) auditExport(req *Request) (any, error) {
	format := req.URL.Query().Get("format")
	if format == "" {
		format = "csv"
	}
	if format != "csv" && format != "json" {
		return nil, fault.Invalid("invalid_format", "format must be csv or json")
	}
	export := s.exportFunc()
	if format == "json" {
		return Stream{ContentType: "application/json", Filename: "audit.json", Write: func(w io.Writer) error { return WriteJSON(w, export) }}, nil
	}
	return Stream{ContentType: "text/csv; charset=utf-8", Filename: "audit.csv", Write: func(w io.Writer) error { return WriteCSV(w, export) }}, nil
}

// exportBuffer is what an export writes through: big enough that the
// ResponseWriter sees few large writes, small enough to be no memory at all.
const exportBuffer = 32 << 10

// WriteCSV writes the CSV export to w as it reads the log: the header, the base
// row of a pruned log, one row per entry (every column but seq neutralised by
// storage.CSVNeutral), and the checkpoint row.
func WriteCSV(w io.Writer, export ExportFunc) error {
	bw := bufio.NewWriterSize(w, exportBuffer)
	cw := csv.NewWriter(bw)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	row := make([]string, len(CSVHeader))
	cp, err := export(func(base *storage.Checkpoint) error {
		if base == nil {
			return nil
		}
		return cw.Write(checkpointRow("base", *base))
	}, func(e storage.Entry) error {
		d := e.Details
		if d == nil {
			d = map[string]string{}
		}
		details, _ := json.Marshal(d)
		row[0] = strconv.FormatUint(e.Seq, 10)
		for i, f := range []string{e.Time, e.Actor, e.SourceIP, e.Action, e.TargetType, e.TargetID, e.Result, string(details), e.Prev, e.Hash} {
			row[i+1] = storage.CSVNeutral(f)
		}
		return cw.Write(row)
	})
	if err != nil {
		return err
	}
	if err := cw.Write(checkpointRow("checkpoint", cp)); err != nil {
		return err
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

func checkpointRow(kind string, cp storage.Checkpoint) []string {
	return []string{kind, strconv.FormatUint(cp.Size, 10), cp.Head, cp.Time, cp.PublicKey, cp.Signature, "", "", "", "", ""}
}

// WriteJSON writes the JSON export to w as it reads the log:
// {"base":{...},"entries":[...],"checkpoint":{...}}, base only for a pruned log.
func WriteJSON(w io.Writer, export ExportFunc) error {
	bw := bufio.NewWriterSize(w, exportBuffer)
	n := 0
	cp, err := export(func(base *storage.Checkpoint) error {
		bw.WriteString("{")
		if base != nil {
			raw, err := json.Marshal(base)
			if err != nil {
				return err
			}
			bw.WriteString(`"base":`)
			bw.Write(raw)
			bw.WriteString(",")
		}
		_, err := bw.WriteString(`"entries":[`)
		return err
	}, func(e storage.Entry) error {
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if n > 0 {
			bw.WriteString(",")
		}
		n++
		bw.WriteString("\n")
		_, err = bw.Write(raw)
		return err
	})
	if err != nil {
		return err
	}
	raw, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	bw.WriteString("\n],\"checkpoint\":")
	bw.Write(raw)
	bw.WriteString("}\n")
	return bw.Flush()
}

// EncodeCSV writes entries and the closing checkpoint row (an export of a log
// that was never pruned), in memory: for tests and small logs.
func EncodeCSV(entries []storage.Entry, cp storage.Checkpoint) ([]byte, error) {
	return EncodeCSVFrom(nil, entries, cp)
}

// EncodeCSVFrom is EncodeCSV of a pruned log's entries from its base.
func EncodeCSVFrom(base *storage.Checkpoint, entries []storage.Entry, cp storage.Checkpoint) ([]byte, error) {
	var buf bytes.Buffer
	err := WriteCSV(&buf, func(start func(*storage.Checkpoint) error, fn func(storage.Entry) error) (storage.Checkpoint, error) {
		if err := start(base); err != nil {
			return cp, err
		}
		for _, e := range entries {
			if err := fn(e); err != nil {
				return cp, err
			}
		}
		return cp, nil
	})
	return buf.Bytes(), err
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
