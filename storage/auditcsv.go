package storage

import "strings"

// CSVHeader is the header row of the audit log's CSV export (GET
// /api/audit/export?format=csv): one row per Entry in these columns, details as a
// JSON object. A pruned log's export has, right after the header, one row whose
// seq column is "base": size, head, time, public key and signature of the signed
// base (the entries up to size were pruned; the first row's prev is head). The
// export ends with one row whose seq column is "checkpoint": size, head, time,
// public key and signature of the checkpoint signed for that export, so the file
// verifies offline with the public key alone (cellctl audit verify). It lives
// here, with Entry, so that readers of exports need not link the daemon's API.
//
// Every column of an entry's row but seq is written through CSVNeutral, so a
// spreadsheet never takes a field for a formula; readers undo it with
// CSVUnneutral before rebuilding the canonical entry the hash covers.
var CSVHeader = []string{"seq", "time", "actor", "source_ip", "action", "target_type", "target_id", "result", "details", "prev", "hash"}

// CSVNeutral neutralises a CSV field as OWASP recommends against formula
// injection: a field that starts with = + - @, a tab or a CR gets a single quote
// in front. So that the quote can always be taken off again, a field that starts
// with a quote gets one more too.
func CSVNeutral(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\'':
		return "'" + s
	}
	return s
}

// CSVUnneutral undoes CSVNeutral: one leading single quote goes.
func CSVUnneutral(s string) string { return strings.TrimPrefix(s, "'") }
