package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

const lockBody = `<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>`

// lock LOCKs p as user and returns the status, the token and the body.
func (e *env) lock(user, pass, p string) (int, string, string) {
	e.t.Helper()
	req, _ := http.NewRequest("LOCK", e.web.URL+p, strings.NewReader(lockBody))
	req.SetBasicAuth(user, pass)
	req.Header.Set("Timeout", "Second-600")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.Trim(resp.Header.Get("Lock-Token"), "<>"), string(b)
}

func TestLocks(t *testing.T) {
	e := newEnv(t, "")
	e.putAccount("alice", "pw-a", 0)
	e.putAccount("bob", "pw-b", 0)
	e.dav("alice", "pw-a", "PUT", "/shared/doc.txt", strings.NewReader("v1"))
	e.dav("alice", "pw-a", "PUT", "/mine.txt", strings.NewReader("a"))

	code, sharedTok, _ := e.lock("alice", "pw-a", "/shared/doc.txt")
	if code != http.StatusOK || sharedTok == "" {
		t.Fatalf("alice LOCK /shared/doc.txt: %d %q", code, sharedTok)
	}
	code, homeTok, body := e.lock("alice", "pw-a", "/mine.txt")
	if code != http.StatusOK || !strings.Contains(body, "<D:lockroot><D:href>/mine.txt</D:href>") {
		t.Fatalf("alice LOCK /mine.txt: %d\n%s", code, body)
	}
	steps := []struct {
		name, user, pass, method, path string
		hdr                            []string
		want                           int
	}{
		{"bob writes the locked shared file", "bob", "pw-b", "PUT", "/shared/doc.txt", nil, http.StatusLocked},
		{"bob's own /mine.txt is not alice's", "bob", "pw-b", "PUT", "/mine.txt", nil, http.StatusCreated},
		{"bob unlocks alice's shared lock", "bob", "pw-b", "UNLOCK", "/shared/doc.txt", []string{"Lock-Token", "<" + sharedTok + ">"}, http.StatusConflict},
		{"bob unlocks alice's home lock", "bob", "pw-b", "UNLOCK", "/mine.txt", []string{"Lock-Token", "<" + homeTok + ">"}, http.StatusConflict},
		{"alice writes under her lock", "alice", "pw-a", "PUT", "/shared/doc.txt", []string{"If", "(<" + sharedTok + ">)"}, http.StatusCreated},
		{"alice unlocks", "alice", "pw-a", "UNLOCK", "/shared/doc.txt", []string{"Lock-Token", "<" + sharedTok + ">"}, http.StatusNoContent},
		{"bob writes after the unlock", "bob", "pw-b", "PUT", "/shared/doc.txt", nil, http.StatusCreated},
		{"alice's home file stays locked", "alice", "pw-a", "PUT", "/mine.txt", nil, http.StatusLocked},
	}
	for _, s := range steps {
		if code, body := e.dav(s.user, s.pass, s.method, s.path, strings.NewReader("x"), s.hdr...); code != s.want {
			t.Errorf("%s: %d, want %d (%s)", s.name, code, s.want, body)
		}
	}
	// A deleted account's locks go with it.
	if code, _ := e.adminDo("DELETE", "/admin/v1/accounts/alice", ""); code != http.StatusNoContent {
		t.Fatal("DELETE alice")
	}
	e.putAccount("alice", "pw-a", 0)
	if code, _ := e.dav("alice", "pw-a", "PUT", "/mine.txt", strings.NewReader("x")); code != http.StatusCreated {
		t.Errorf("recreated alice's PUT: %d, want 201 (no stale lock)", code)
	}
}
