package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// apiError is the body of every error response.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// statusOf is the one place that maps errors to HTTP statuses.
func statusOf(err error) (status int, code, message string) {
	var ce *fault.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than this endpoint accepts"
	case errors.As(err, &ce):
		code, message = ce.Code, ce.Message
	default:
		message = err.Error()
	}
	switch {
	case errors.Is(err, fault.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, fault.ErrUnauthorized):
		status = http.StatusUnauthorized
	case errors.Is(err, fault.ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, storage.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, fault.ErrSetupNeeded):
		status = http.StatusConflict
	case errors.Is(err, storage.ErrConflict), errors.Is(err, storage.ErrExists):
		status = http.StatusConflict
	case errors.Is(err, fault.ErrTooMany):
		status = http.StatusTooManyRequests
	case errors.Is(err, fault.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, errMethod):
		status = http.StatusMethodNotAllowed
	case errors.Is(err, errMediaType):
		status = http.StatusUnsupportedMediaType
	case errors.Is(err, fault.ErrUnavailable):
		status = http.StatusServiceUnavailable
	case errors.Is(err, storage.ErrNoSpace):
		// Before the others' default: the message says how much is free.
		return http.StatusInsufficientStorage, "insufficient_storage", err.Error()
	default:
		// Not a kind the cell names: a fault of ours, not of the input. The message
		// is logged, not shown, since it may name internals.
		return http.StatusInternalServerError, "internal", "the cell failed to do that; the log has the details"
	}
	if code == "" {
		code = defaultCode(status)
	}
	return status, code, message
}

var (
	errMethod    = errors.New("method not allowed")
	errMediaType = errors.New("unsupported media type")
)

func defaultCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusUnauthorized:
		return "not_logged_in"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusInsufficientStorage:
		return "insufficient_storage"
	}
	return "error"
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var body apiError
	body.Error.Code, body.Error.Message = code, message
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		raw = []byte(`{"error":{"code":"internal","message":"the response could not be encoded"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(raw)
	w.Write([]byte("\n"))
}
