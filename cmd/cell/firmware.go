package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/firmware/update"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/storage"
)

// firmware returns the device's firmware when the daemon runs from a cell image
// (found by /etc/cell/release.json and /perm), or nil on a developer machine. A
// firmware that cannot be opened is logged, not fatal: the trial boot of a new
// root waits for this daemon's health, and an update must not be able to make
// the daemon refuse to start.
func firmware(ctx context.Context, c *cell.Cell, log *slog.Logger) httpapi.Firmware {
	dev, err := update.OpenDevice(log)
	if errors.Is(err, update.ErrNotDevice) {
		return nil
	}
	if err != nil {
		log.Error("firmware unavailable: updates disabled", "err", err)
		return nil
	}
	// Each finished update (committed, rolled back, failed) is written to the
	// audit log once, with the firmware's reason.
	dev.Report = func(st update.State) error {
		_, err := c.Audit.Record(storage.Entry{
			Actor: "firmware", Action: "system.update.outcome", TargetType: "firmware",
			TargetID: st.Version, Result: string(st.Phase),
			Details: map[string]string{"from_version": st.FromVersion, "slot": update.SlotName(st.Slot), "message": st.Message},
		})
		return err
	}
	go dev.WatchOutcomes(ctx, 5*time.Second)
	return dev
}
