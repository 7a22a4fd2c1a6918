package n8n

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// ErrStartingUp is wrapped by every error for an answer that says n8n is
// still starting (readiness 503, or 200 text/plain "n8n is starting up").
var ErrStartingUp = errors.New("n8n is starting up")

// Error is an answer from n8n with an error status.
type Error struct {
	Method  string // HTTP method of the request
	Path    string // URL path of the request, without the query
	Status  int    // HTTP status code
	Message string // n8n's message, shortened
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("n8n: %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("n8n: %s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
}

// Retryable reports whether the same request may succeed later: server
// errors, timeouts and rate limits. A 4xx is bad input and is not.
func (e *Error) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests
}

// StatusOf returns the HTTP status of the *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// IsNotFound reports whether n8n answered 404.
func IsNotFound(err error) bool { return StatusOf(err) == http.StatusNotFound }

// IsRetryable reports whether err is worth retrying: a retryable status,
// ErrStartingUp, or no answer at all (a transport error). Bad input (4xx)
// and a cancelled context are not.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, ErrStartingUp) {
		return true
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable()
	}
	var d *decodeError
	return !errors.As(err, &d)
}

// decodeError is a 2xx answer the client could not understand.
type decodeError struct{ err error }

func (d *decodeError) Error() string { return "decode answer: " + d.err.Error() }
func (d *decodeError) Unwrap() error { return d.err }
