// Package fault holds the kinds of failure every capability returns and the one
// error type that carries a stable code and a message a person can read. httpapi
// maps the kinds to HTTP statuses in one place; capabilities never pick statuses.
package fault

import (
	"errors"
	"fmt"

	"github.com/pic-cell/cell/storage"
)

// Kinds of failure. Every error the cell returns to the API wraps one of these (or a
// storage sentinel), and httpapi maps them to statuses in one place.
var (
	ErrInvalid      = errors.New("invalid input")          // 400
	ErrUnauthorized = errors.New("not logged in")          // 401
	ErrForbidden    = errors.New("forbidden")              // 403
	ErrNotFound     = storage.ErrNotFound                  // 404
	ErrConflict     = storage.ErrConflict                  // 409
	ErrExists       = storage.ErrExists                    // 409
	ErrTooMany      = errors.New("too many requests")      // 429
	ErrUnavailable  = errors.New("a dependency is down")   // 503
	ErrSetupNeeded  = errors.New("setup is not complete")  // 409
	ErrTooLarge     = errors.New("request body too large") // 413
)

// Error is a failure a person can read: a stable code, a message, and its kind.
type Error struct {
	Kind    error
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Kind }

// Errorf builds an *Error.
func Errorf(kind error, code, format string, args ...any) error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid is the common case of a field that fails validation.
func Invalid(code, format string, args ...any) error {
	return Errorf(ErrInvalid, code, format, args...)
}
