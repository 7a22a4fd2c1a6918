package api

import (
	"errors"
	"net/http"
)

// Kinds of failure the API answers with their own status. A server's
// error says which it is by matching one with errors.Is (NewError makes
// such an error); the client's errors match them too.
var (
	ErrBadRequest  = errors.New("bad request") // 400
	ErrNotFound    = errors.New("not found")   // 404
	ErrConflict    = errors.New("conflict")    // 409
	ErrUnavailable = errors.New("unavailable") // 503: not yet, retry
	ErrTooMany     = errors.New("too many")    // 429: a budget is spent, retry later
)

// NewError is an error saying msg that matches kind (one of the kinds
// above) with errors.Is: a sentinel a package declares without knowing of
// HTTP, which the API answers with kind's status.
func NewError(kind error, msg string) error { return &kindError{msg: msg, kind: kind} }

type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Status is the status the API answers err with: its kind's, else 500.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}
