package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLogHealthSaysHealthyOnce: a cell that answers 503, then not ok, then ok
// is logged healthy once, with the version and state it reports, and
// logHealth returns by itself.
func TestLogHealthSaysHealthyOnce(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		case 2:
			w.Write([]byte(`{"ok":false,"state":"down","version":"1.4.0"}`))
		default:
			w.Write([]byte(`{"ok":true,"state":"ok","version":"1.4.0"}`))
		}
	}))
	defer srv.Close()
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		logHealth(context.Background(), slog.New(slog.NewTextHandler(&buf, nil)), srv.URL+"/health", 10*time.Millisecond, time.Hour)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logHealth did not return after the cell said ok")
	}
	out := buf.String()
	if strings.Count(out, `msg="cell healthy"`) != 1 || !strings.Contains(out, "version=1.4.0") || !strings.Contains(out, "state=ok") {
		t.Errorf("log %q, want one line saying cell healthy, version 1.4.0, state ok", out)
	}
	if strings.Contains(out, "not healthy yet") {
		t.Errorf("warned before warnAfter: %q", out)
	}
	if got := n.Load(); got != 3 {
		t.Errorf("asked %d times, want 3 (it stops at the first ok)", got)
	}
}

// TestLogHealthWarnsOnceWithReason: a cell that never says ok is not logged
// healthy; after warnAfter one warning gives the reason, and logHealth
// returns when its context ends.
func TestLogHealthWarnsOnceWithReason(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":false,"state":"down"}`))
	}))
	defer srv.Close()
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		logHealth(ctx, slog.New(slog.NewTextHandler(&buf, nil)), srv.URL+"/health", 10*time.Millisecond, 50*time.Millisecond)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logHealth did not return when its context ended")
	}
	out := buf.String()
	if strings.Contains(out, "cell healthy") {
		t.Errorf("logged healthy for a cell that said not ok: %q", out)
	}
	if strings.Count(out, "cell not healthy yet") != 1 || !strings.Contains(out, "not ok (state down)") {
		t.Errorf("log %q, want one warning naming the reason", out)
	}
}

// TestLogHealthNoAnswer: nothing listening is a reason too, not a healthy cell.
func TestLogHealthNoAnswer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/health"
	srv.Close()
	if _, err := askHealth(context.Background(), url); err == nil {
		t.Fatal("askHealth of a closed port said healthy")
	}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	if _, err := askHealth(context.Background(), srv.URL); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("a plain-text answer: %v, want an error saying it is not JSON", err)
	}
}
