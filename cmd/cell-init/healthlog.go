package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/sys/unix"
)

// logHealth says on the console when the cell first reports healthy. The
// daemon's own log goes to gokrazy's ring buffer, which only gokrazy's web
// interface (not exposed) shows, so without this line a console (a serial
// cable, or QEMU's serial port where the machine has no working network)
// cannot tell a cell that serves from one that hangs. It asks url every
// interval; the first answer that says ok is logged with the version and
// state the daemon reports and the time since the kernel started, and then it
// stops. If the cell is not healthy after warnAfter it says so once, with the
// last reason, and keeps asking. It returns when ctx ends.
//
// It only watches: the trial boot's commit (package update's Trial.Watch) asks
// /health by itself and does not depend on this.
func logHealth(ctx context.Context, logger *slog.Logger, url string, interval, warnAfter time.Duration) {
	start := time.Now()
	warned := false
	for {
		h, err := askHealth(ctx, url)
		if err == nil {
			logger.Info("cell healthy", "version", h.Version, "state", h.State,
				"after_start", time.Since(start).Round(time.Millisecond), "uptime", uptime().Round(time.Millisecond))
			return
		}
		if !warned && time.Since(start) >= warnAfter {
			logger.Warn("cell not healthy yet", "after_start", time.Since(start).Round(time.Second), "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// healthAnswer is the part of the daemon's /health answer the console shows.
type healthAnswer struct {
	OK      *bool  `json:"ok"`
	State   string `json:"state"`
	Version string `json:"version"`
}

// askHealth asks url once. Healthy means what it means to the trial boot
// (update.CheckHealth): 200 with a JSON object whose "ok" is true.
func askHealth(ctx context.Context, url string) (healthAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var h healthAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return h, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("the cell answers %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		return h, fmt.Errorf("the cell's health answer is not JSON: %w", err)
	}
	if h.OK == nil || !*h.OK {
		return h, errors.New("the cell says it is not ok (state " + h.State + ")")
	}
	return h, nil
}

// uptime is the time since the kernel started (CLOCK_BOOTTIME), or 0 if the
// clock cannot be read.
func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
