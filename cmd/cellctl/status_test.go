package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"ok":true,"state":"ok"}`))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	c := &CLI{Stdout: &out, Stderr: &errb}
	if err := c.Run([]string{"status", "-url", srv.URL}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"state": "ok"`) {
		t.Fatalf("output = %q", out.String())
	}
	if err := c.Run([]string{"status", "-url", "http://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("unreachable cell: %v", err)
	}
	if err := c.Run([]string{"no-such-command"}); err == nil {
		t.Fatal("an unknown command succeeded")
	}
}
