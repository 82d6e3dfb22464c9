package httpapi

import (
	"strings"
	"testing"
)

func init() {
	for k, v := range map[string]routeCase{
		"GET /api/dns":                {path: "/api/dns"},
		"GET /api/dns/records":        {path: "/api/dns/records"},
		"POST /api/dns/records":       {path: "/api/dns/records", body: map[string]any{"name": "table", "type": "TXT", "value": "x"}},
		"DELETE /api/dns/records/:id": {path: "/api/dns/records/999"},
		"POST /api/dns/reload":        {path: "/api/dns/reload"},
	} {
		routeCases[k] = v
	}
}

func TestDNSRecords(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	admin.must(201, "POST", "/api/peers", map[string]any{"name": "alice"})
	var rec struct {
		ID   uint64 `json:"id"`
		FQDN string `json:"fqdn"`
		TTL  uint32 `json:"ttl"`
	}
	admin.must(201, "POST", "/api/dns/records", map[string]any{"name": "www", "type": "cname", "value": "alice"}).json(t, &rec)
	if rec.ID == 0 || rec.FQDN != "www.home.example.org" || rec.TTL != 300 {
		t.Errorf("created record = %+v", rec)
	}
	admin.must(201, "POST", "/api/dns/records", map[string]any{"name": "mail", "type": "MX", "value": "10 alice", "ttl": 600})
	var list struct {
		Records []map[string]any `json:"records"`
	}
	admin.must(200, "GET", "/api/dns/records", nil).json(t, &list)
	if len(list.Records) != 2 {
		t.Fatalf("records = %+v", list.Records)
	}
	for _, c := range []struct {
		name string
		body map[string]any
		want int
		code string
	}{
		{"shadows a peer", map[string]any{"name": "alice", "type": "A", "value": "10.77.0.9"}, 409, "name_taken"},
		{"the apex", map[string]any{"name": "@", "type": "CNAME", "value": "alice"}, 409, "apex_reserved"},
		{"the apex by its name", map[string]any{"name": "home.example.org", "type": "A", "value": "10.77.0.9"}, 409, "apex_reserved"},
		{"a CNAME beside another record", map[string]any{"name": "www", "type": "TXT", "value": "x"}, 409, "cname_conflict"},
		{"a type outside the list", map[string]any{"name": "x", "type": "NS", "value": "ns1"}, 400, "invalid_type"},
		{"PTR is derived, not added", map[string]any{"name": "x", "type": "PTR", "value": "alice"}, 400, "invalid_type"},
		{"shell in a name", map[string]any{"name": "$(reboot)", "type": "A", "value": "10.77.0.9"}, 400, "invalid_record"},
		{"a semicolon", map[string]any{"name": "a;b", "type": "A", "value": "10.77.0.9"}, 400, "invalid_record"},
		{"dot-dot-slash", map[string]any{"name": "../etc", "type": "A", "value": "10.77.0.9"}, 400, "invalid_record"},
		{"NUL", map[string]any{"name": "a\x00b", "type": "A", "value": "10.77.0.9"}, 400, "invalid_record"},
		{"newline in a value", map[string]any{"name": "t", "type": "TXT", "value": "a\nb"}, 400, "invalid_record"},
		{"4 KB of Unicode", map[string]any{"name": strings.Repeat("é", 2048), "type": "A", "value": "10.77.0.9"}, 400, "invalid_record"},
		{"not an address", map[string]any{"name": "v4", "type": "A", "value": "fd77::1"}, 400, "invalid_record"},
		{"a TTL too long", map[string]any{"name": "v4", "type": "A", "value": "10.77.0.9", "ttl": 864000}, 400, "invalid_record"},
	} {
		r := admin.do("POST", "/api/dns/records", c.body)
		if r.status != c.want || !strings.Contains(string(r.body), `"`+c.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.want, c.code)
		}
	}
	admin.must(200, "GET", "/api/dns/records", nil).json(t, &list)
	if len(list.Records) != 2 {
		t.Errorf("refused records were stored: %+v", list.Records)
	}
	// A peer may not take a name a record has.
	if r := admin.do("POST", "/api/peers", map[string]any{"name": "mail"}); r.status != 409 {
		t.Errorf("a peer named like a record: %d %s, want 409", r.status, r.body)
	}
	admin.must(200, "DELETE", "/api/dns/records/1", nil)
	admin.must(404, "DELETE", "/api/dns/records/1", nil)
	admin.must(404, "DELETE", "/api/dns/records/nonsense", nil)
	// Upstreams are checked as the config changes.
	for _, bad := range []any{[]string{"not an address"}, []string{"tls://"}, []string{"$(reboot)"}, "198.18.0.53"} {
		if r := admin.do("PUT", "/api/config", map[string]any{"dns": map[string]any{"upstreams": bad}}); r.status != 400 {
			t.Errorf("upstreams %v: %d %s, want 400", bad, r.status, r.body)
		}
	}
	admin.must(200, "PUT", "/api/config", map[string]any{"dns": map[string]any{"upstreams": []string{"198.18.0.53", "tls://dns.example@198.18.0.53"}}})
	var st struct {
		State string `json:"state"`
	}
	admin.must(200, "GET", "/api/dns", nil).json(t, &st)
	// The audit log has every change, written by the capability.
	var audit struct {
		Entries []struct{ Action, Result, TargetID string } `json:"entries"`
	}
	admin.must(200, "GET", "/api/audit?action=dns.record_add", nil).json(t, &audit)
	oks := 0
	for _, en := range audit.Entries {
		if en.Result == "ok" {
			oks++
		}
	}
	if oks != 2 || len(audit.Entries) < 16 {
		t.Errorf("dns.record_add audit: %d ok of %d, want 2 ok and every refusal", oks, len(audit.Entries))
	}
}
