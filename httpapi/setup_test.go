package httpapi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pic-cell/cell/storage"
)

var (
	adminStep = map[string]any{"step": "admin", "data": map[string]any{"username": "admin", "password": adminPassword}}
	cellStep  = map[string]any{"step": "cell", "data": map[string]any{"name": "home", "domain": "home.example.org"}}
)

// where is the part of every code refusal that tells the operator where the code is.
var where = []string{"cellctl image build", "setup-code.txt", "make run", "DATA/setup-code"}

func wantRefusal(t *testing.T, what string, r resp, status int, code string, says ...string) {
	t.Helper()
	if r.status != status || r.code() != code {
		t.Fatalf("%s: %d %s, want %d %s", what, r.status, r.body, status, code)
	}
	for _, s := range says {
		if !strings.Contains(string(r.body), s) {
			t.Errorf("%s: the message does not say %q: %s", what, s, r.body)
		}
	}
}

// TestSetupCode: the wizard's changes need the setup code; without it or with a
// wrong one they are refused with a message that says where it is, nothing is
// stored, and the refusal is audited.
func TestSetupCode(t *testing.T) {
	e := newEnv(t)
	none := e.client()
	none.setupCode = ""
	wrong := e.client()
	wrong.setupCode = "canary-wrong-code-8c1d"

	wantRefusal(t, "step without a code", none.do("POST", "/api/setup/step", adminStep), 403, "setup_code_required", append(where, "X-Setup-Code")...)
	wantRefusal(t, "complete without a code", none.do("POST", "/api/setup/complete", nil), 403, "setup_code_required", where...)
	wantRefusal(t, "step with a wrong code", wrong.do("POST", "/api/setup/step", adminStep), 403, "wrong_setup_code", where...)
	wantRefusal(t, "complete with a wrong code", wrong.do("POST", "/api/setup/complete", nil), 403, "wrong_setup_code", where...)
	// An empty header is no code.
	wantRefusal(t, "empty header", e.client().do("POST", "/api/setup/step", adminStep, SetupCodeHeader, ""), 403, "setup_code_required")
	// Reading the wizard needs no code.
	var st struct {
		Step string
		Done []string
	}
	none.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	if st.Step != "admin" || len(st.Done) != 0 {
		t.Fatalf("a refused step was stored: %+v", st)
	}
	none.must(200, "GET", "/api/setup/step", nil)

	// The right code, as printed or typed sloppily (case, dashes, spaces).
	right := e.client()
	right.must(200, "POST", "/api/setup/step", adminStep)
	sloppy := e.client()
	sloppy.setupCode = " " + strings.ToLower(strings.ReplaceAll(setupCode, "-", " ")) + " "
	sloppy.must(200, "POST", "/api/setup/step", cellStep)

	entries, _, err := e.cell.Audit.Query(storage.Filter{Action: "setup.step"})
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]int{}
	for _, en := range entries {
		results[en.Result] += int(countOf(en)) // refusals without a session are counted
		if en.SourceIP != "127.0.0.1" || en.Actor != "anonymous" {
			t.Errorf("audit entry %+v: want anonymous from 127.0.0.1", en)
		}
	}
	if results["setup_code_required"] != 2 || results["wrong_setup_code"] != 1 || results["ok"] != 2 {
		t.Errorf("setup.step audit results %v, want 2 setup_code_required, 1 wrong_setup_code, 2 ok", results)
	}
	if n := countedQuery(e, storage.Filter{Action: "setup.complete", Result: "wrong_setup_code"}); n != 1 {
		t.Errorf("refused completions with a wrong code audited %d times, want 1", n)
	}
}

// TestSetupCodeThrottle: ten wrong codes from one address are refused with 403;
// the eleventh gets 429, and so does the right code from that address.
func TestSetupCodeThrottle(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	for i := 1; i <= 10; i++ {
		c.setupCode = fmt.Sprintf("WRONG-%02d", i)
		wantRefusal(t, fmt.Sprintf("wrong code %d", i), c.do("POST", "/api/setup/step", adminStep), 403, "wrong_setup_code")
	}
	c.setupCode = "WRONG-11"
	wantRefusal(t, "11th wrong code", c.do("POST", "/api/setup/step", adminStep), 429, "too_many_attempts")
	c.setupCode = setupCode
	wantRefusal(t, "right code while throttled", c.do("POST", "/api/setup/step", adminStep), 429, "too_many_attempts")
	wantRefusal(t, "completion while throttled", c.do("POST", "/api/setup/complete", nil), 429, "too_many_attempts")
	if n := countedQuery(e, storage.Filter{Action: "setup.step", Result: "too_many_attempts"}); n != 2 {
		t.Errorf("throttled steps audited %d times, want 2", n)
	}
	var st struct{ Step string }
	c.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	if st.Step != "admin" {
		t.Fatalf("a throttled step was stored: %+v", st)
	}
}

// TestSetupCodeVoidAfterCompletion: once set up, the code opens nothing: every
// change is 409 with the right code, a wrong one or none.
func TestSetupCodeVoidAfterCompletion(t *testing.T) {
	e := newEnv(t)
	e.setup()
	for _, code := range []string{setupCode, "WRONG", ""} {
		c := e.client()
		c.setupCode = code
		wantRefusal(t, fmt.Sprintf("step after setup with code %q", code), c.do("POST", "/api/setup/step", adminStep), 409, "setup_complete")
		wantRefusal(t, fmt.Sprintf("complete after setup with code %q", code), c.do("POST", "/api/setup/complete", nil), 409, "setup_complete")
	}
	// Nor do wrong codes after completion count against the address.
	c := e.client()
	c.setupCode = "WRONG"
	for range 12 {
		wantRefusal(t, "wrong code after setup", c.do("POST", "/api/setup/step", adminStep), 409, "setup_complete")
	}
}

// TestSetupHostCheck: the wizard answers only when the Host is an IP literal,
// localhost, the cell's host name or its domain; a page elsewhere that rebinds
// its own name to the cell is refused, even with the right code.
func TestSetupHostCheck(t *testing.T) {
	e := newEnv(t)
	e.cell.Setup.SetHostnames("celltest")
	c := e.client()
	for _, host := range []string{"evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil.example", "home.example.org", "celltest.evil.example"} {
		for _, call := range []struct {
			method, path string
			body         any
		}{{"GET", "/api/setup/status", nil}, {"GET", "/api/setup/step", nil}, {"POST", "/api/setup/step", adminStep}, {"POST", "/api/setup/complete", nil}} {
			r := c.do(call.method, call.path, call.body, "Host", host)
			wantRefusal(t, fmt.Sprintf("%s %s at Host %q", call.method, call.path, host), r, 403, "wrong_host", "the wizard answers only at the cell's own address")
		}
	}
	var st struct{ Step string }
	c.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	if st.Step != "admin" {
		t.Fatalf("a step at a foreign Host was stored: %+v", st)
	}
	if n := countedQuery(e, storage.Filter{Action: "setup.step", Result: "wrong_host"}); n != 6 {
		t.Errorf("steps at a foreign Host audited %d times, want 6", n)
	}
	for _, host := range []string{"127.0.0.1", "127.0.0.1:3000", "10.77.0.1:80", "[::1]:3000", "[fd00::1]", "localhost", "LOCALHOST:3000", "celltest", "CellTest.:80"} {
		if r := c.do("GET", "/api/setup/status", nil, "Host", host); r.status != 200 {
			t.Errorf("status at Host %q: %d %s", host, r.status, r.body)
		}
	}
	c.do("POST", "/api/setup/step", adminStep, "Host", "celltest:80")
	// Once the cell step names the domain, the wizard answers there too.
	if r := c.do("POST", "/api/setup/step", cellStep, "Host", "home.example.org"); r.status != 403 {
		t.Fatalf("cell step at the domain before it is known: %d %s", r.status, r.body)
	}
	c.must(200, "POST", "/api/setup/step", cellStep)
	if r := c.do("GET", "/api/setup/status", nil, "Host", "Home.Example.Org:443"); r.status != 200 {
		t.Errorf("status at the cell's domain: %d %s", r.status, r.body)
	}
	if r := c.do("GET", "/api/setup/status", nil, "Host", "other.example.org"); r.status != 403 {
		t.Errorf("status at another name: %d %s", r.status, r.body)
	}
}

// TestSetupCodeCanary: the code, right or wrong, is in no response, log line
// (at debug) or audit entry.
func TestSetupCodeCanary(t *testing.T) {
	e := newEnv(t)
	const wrongCode = "canary-wrong-code-5e9a"
	c := e.client()
	c.setupCode = wrongCode
	c.do("POST", "/api/setup/step", adminStep)
	c.do("POST", "/api/setup/complete", nil)
	c.do("POST", "/api/setup/step", adminStep, "Host", "evil.example")
	e.setup()
	c.setupCode = setupCode
	c.do("POST", "/api/setup/step", adminStep)
	a := e.login("admin", adminPassword)
	for _, p := range []string{"/api/audit?limit=10000", "/api/audit/export?format=csv", "/api/audit/export?format=json", "/api/logs?lines=5000"} {
		a.do("GET", p, nil)
	}
	var audit strings.Builder
	e.db.Audit().Each(func(en storage.Entry) error { fmt.Fprintf(&audit, "%+v\n", en); return nil })
	if !strings.Contains(audit.String(), "wrong_setup_code") {
		t.Fatal("the refused code was not audited")
	}
	logged := e.logText()
	if !strings.Contains(logged, "/api/setup/step") {
		t.Fatal("the logs scanned hold no line of the wizard")
	}
	for _, s := range []string{setupCode, normalizeForCanary(setupCode), wrongCode} {
		for _, b := range e.bodies {
			if strings.Contains(b, s) {
				t.Errorf("setup code %q in a response: %.200s", s, b)
			}
		}
		if strings.Contains(logged, s) {
			t.Errorf("setup code %q in the logs", s)
		}
		if strings.Contains(audit.String(), s) {
			t.Errorf("setup code %q in the audit log", s)
		}
	}
}

func normalizeForCanary(code string) string { return strings.ReplaceAll(code, "-", "") }
