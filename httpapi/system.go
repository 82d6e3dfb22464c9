package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/update"
)

// Firmware is the device's firmware: what runs and how to install an update
// (*update.Device on a cell image).
type Firmware interface {
	Info() (update.Info, error)
	Status() (update.Status, error)
	Install(ctx context.Context, body io.Reader, max int64) (*bundle.Manifest, error)
	MaxBundle() int64
}

// processStart stands in for the boot time where there is no firmware.
var processStart = time.Now()

// SystemRoutes is the /api/system area. fw is nil when the daemon does not run
// from a cell image (a developer machine): info then describes the process,
// and updates are refused with 503.
//
//	api := httpapi.New(deps).With(httpapi.SystemRoutes(fw))
func SystemRoutes(fw Firmware) func(*Server) []Route {
	return func(s *Server) []Route {
		max := int64(1 << 30)
		if fw != nil {
			if m := fw.MaxBundle(); m > 0 {
				max = m
			}
		}
		return []Route{
			{Method: "GET", Path: "/api/system/info", Access: Admin, Handle: func(req *Request) (any, error) { return systemInfo(fw, s.deps.Version) }},
			{Method: "GET", Path: "/api/system/update", Access: Admin, Handle: func(req *Request) (any, error) { return updateStatus(fw) }},
			{Method: "POST", Path: "/api/system/update", Access: Admin, Action: "system.update", TargetType: "firmware",
				MaxBody: max, Status: 202, Handle: func(req *Request) (any, error) { return installUpdate(fw, req, max) }},
		}
	}
}

func systemInfo(fw Firmware, version string) (any, error) {
	if fw == nil {
		return update.Info{Version: version, Target: "host-" + runtime.GOARCH,
			UptimeSeconds: int64(time.Since(processStart).Seconds())}, nil
	}
	return fw.Info()
}

func updateStatus(fw Firmware) (any, error) {
	if fw == nil {
		return nil, errNoFirmware
	}
	return fw.Status()
}

var errNoFirmware = fault.Errorf(fault.ErrUnavailable, "no_firmware", "this cell does not run from a firmware image, so it cannot be updated over the API")

// installUpdate takes the bundle as the raw request body (not JSON): the
// firmware checks it completely before writing anything, writes the inactive
// root and reboots into it on trial. The answer comes before the reboot.
func installUpdate(fw Firmware, req *Request, max int64) (any, error) {
	if fw == nil {
		return nil, errNoFirmware
	}
	m, err := fw.Install(req.Context(), req.Request.Body, max)
	if m != nil {
		req.TargetID = m.Version
	}
	if err != nil {
		return nil, updateError(err)
	}
	req.Detail("version", m.Version)
	req.Detail("target", m.Target)
	return map[string]any{"accepted": true, "version": m.Version, "state": update.PhasePending,
		"message": "the bundle is written to the inactive root; the cell reboots into it on trial"}, nil
}

// updateError gives each refusal a code an operator can act on.
func updateError(err error) error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, bundle.ErrSignature):
		return fault.Errorf(fault.ErrInvalid, "bad_signature", "the bundle is not signed by this cell's update key")
	case errors.Is(err, bundle.ErrTarget):
		return fault.Errorf(fault.ErrInvalid, "wrong_target", "%s", err)
	case errors.Is(err, bundle.ErrVersion):
		return fault.Errorf(fault.ErrInvalid, "version_refused", "%s", err)
	case errors.Is(err, bundle.ErrHash):
		return fault.Errorf(fault.ErrInvalid, "hash_mismatch", "%s", err)
	case errors.Is(err, bundle.ErrFormat):
		return fault.Errorf(fault.ErrInvalid, "bad_bundle", "%s", err)
	case errors.Is(err, bundle.ErrNoKey):
		return fault.Errorf(fault.ErrConflict, "no_update_key", "this image has no update key: rebuild it with update_public_key in config.json")
	case errors.Is(err, update.ErrBusy):
		return fault.Errorf(fault.ErrConflict, "update_in_progress", "%s", err)
	case errors.Is(err, update.ErrTooLarge), errors.As(err, &tooBig):
		return fault.Errorf(fault.ErrTooLarge, "bundle_too_large", "%s", err)
	}
	return err
}
