package storage

// CSVHeader is the header row of the audit log's CSV export (GET
// /api/audit/export?format=csv): one row per Entry in these columns, details as a
// JSON object. The export ends with one row whose seq column is "checkpoint":
// size, head, time, public key and signature of the checkpoint signed for that
// export, so the file verifies offline with the public key alone (cellctl audit
// verify). It lives here, with Entry, so that readers of exports need not link
// the daemon's API.
var CSVHeader = []string{"seq", "time", "actor", "source_ip", "action", "target_type", "target_id", "result", "details", "prev", "hash"}
