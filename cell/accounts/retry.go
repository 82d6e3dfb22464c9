package accounts

import (
	"errors"
	"strconv"
	"time"
)

// retryError is a refusal that says how long to wait before trying again.
type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

func retryAfter(err error, d time.Duration) error {
	return &retryError{err: err, after: max(d, time.Second)}
}

// RetryAfter is how long a refusal of Login or ChangePassword (ErrTooMany) asks the
// caller to wait, for a Retry-After header.
func RetryAfter(err error) (time.Duration, bool) {
	var r *retryError
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}

// waitText says a wait in words for a message: "3 minutes", "40 seconds".
func waitText(d time.Duration) string {
	switch {
	case d >= 90*time.Minute:
		return plural(int((d+time.Hour-1)/time.Hour), "hour")
	case d >= 90*time.Second:
		return plural(int((d+time.Minute-1)/time.Minute), "minute")
	default:
		return plural(int((max(d, time.Second)+time.Second-1)/time.Second), "second")
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}
