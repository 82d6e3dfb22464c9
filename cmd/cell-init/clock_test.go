package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestClockFloor(t *testing.T) {
	built := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		now    time.Time
		setErr error
		want   time.Time // zero: not set
		log    string
	}{
		{"a board that starts in 1970", time.Unix(0, 0), nil, built, "moved forward"},
		{"a clock already past the build", built.Add(48 * time.Hour), nil, time.Time{}, ""},
		{"the build time itself", built, nil, time.Time{}, ""},
		{"setting fails", time.Unix(0, 0), errors.New("EPERM"), built, "could not be moved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got time.Time
			var buf bytes.Buffer
			clockFloor(built, tc.now, func(t time.Time) error { got = t; return tc.setErr }, slog.New(slog.NewTextHandler(&buf, nil)))
			if !got.Equal(tc.want) {
				t.Errorf("set %v, want %v", got, tc.want)
			}
			if tc.log == "" && buf.Len() > 0 || !strings.Contains(buf.String(), tc.log) {
				t.Errorf("log %q, want %q", buf.String(), tc.log)
			}
		})
	}
	// A release without a build time changes nothing.
	clockFloor(time.Time{}, time.Unix(0, 0), func(time.Time) error { t.Fatal("set without a build time"); return nil }, slog.New(slog.DiscardHandler))
}
