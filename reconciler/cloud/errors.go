package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/digitalocean/godo"
)

// ErrorKind says what a caller can do about an error.
type ErrorKind int

const (
	// KindTransient is a 5xx, a 429, a timeout or a connection error that
	// is still failing after the capped, jittered retries: try again later.
	KindTransient ErrorKind = iota + 1
	// KindTerminal is a request DigitalOcean refused for a reason a retry
	// will not change (422 validation, 401, 403, an unknown account, a
	// wake from a snapshot another account holds): wait for new input.
	KindTerminal
	// KindCapacity is the 422 "will exceed your droplet limit": try the
	// action's Alternates accounts.
	KindCapacity
	// KindNotFound is a 404. Deletes treat it as success ("already gone").
	KindNotFound
	// KindPending is the 422 "Droplet already has a pending event.": wait
	// for the droplet's current action and try again. Execute handles it
	// itself; callers only see it if the wait ran out.
	KindPending
	// KindFenced is a mutating request this process did not send because
	// it lost the leader lease (ErrFenced): not the action's failure; the
	// caller stops leading.
	KindFenced
)

func (k ErrorKind) String() string {
	switch k {
	case KindTransient:
		return "transient"
	case KindTerminal:
		return "terminal"
	case KindCapacity:
		return "capacity"
	case KindNotFound:
		return "not_found"
	case KindPending:
		return "pending"
	case KindFenced:
		return "fenced"
	default:
		return "unknown"
	}
}

// Error is a failed DigitalOcean operation with its kind.
type Error struct {
	Kind    ErrorKind
	Account string
	// Op is what was being done ("create droplet genesis-acme-1").
	Op string
	// Status is the HTTP status, 0 when no response came back.
	Status int
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("account %s: %s: %v", e.Account, e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err, or 0 when err is not (and does not wrap)
// an *Error — for example a cancelled context.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// IsCapacity reports whether err is an account's droplet limit: the action
// may succeed in another account.
func IsCapacity(err error) bool { return KindOf(err) == KindCapacity }

// IsNotFound reports whether err is a 404.
func IsNotFound(err error) bool { return KindOf(err) == KindNotFound }

// IsFenced reports whether err is (or wraps) ErrFenced: the request was
// not sent because the leader lease is lost.
func IsFenced(err error) bool { return errors.Is(err, ErrFenced) }

// IsTransient reports whether err may go away by itself (retry later).
func IsTransient(err error) bool { return KindOf(err) == KindTransient }

// IsTerminal reports whether retrying the same request cannot help: a
// validation error, an authentication error, a capacity error (in this
// account) or a 404.
func IsTerminal(err error) bool {
	switch KindOf(err) {
	case KindTerminal, KindCapacity, KindNotFound:
		return true
	}
	return false
}

// Messages DigitalOcean answers that decide a kind.
const (
	msgDropletLimit = "exceed your droplet limit"
	msgPending      = "pending event"
)

// classify turns what godo returned into an *Error.
func classify(account, op string, err error) *Error {
	e := &Error{Account: account, Op: op, Err: err, Kind: KindTransient}
	if errors.Is(err, ErrFenced) {
		e.Kind = KindFenced
		return e
	}
	var er *godo.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		e.Status = er.Response.StatusCode
		msg := strings.ToLower(er.Message)
		switch s := e.Status; {
		case s == http.StatusTooManyRequests, s == http.StatusRequestTimeout, s >= 500:
			e.Kind = KindTransient
		case s == http.StatusNotFound:
			e.Kind = KindNotFound
		case s == http.StatusUnprocessableEntity && strings.Contains(msg, msgDropletLimit):
			e.Kind = KindCapacity
		case s == http.StatusUnprocessableEntity && strings.Contains(msg, msgPending):
			e.Kind = KindPending
		default:
			e.Kind = KindTerminal
		}
		return e
	}
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		// Only the caller's context cancels a request; the caller sees
		// its own ctx.Err() before this matters.
		e.Kind = KindTransient
	case errors.As(err, &ne), errors.As(err, &ue), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		e.Kind = KindTransient
	}
	return e
}

// terminalf makes a KindTerminal error that did not come from an HTTP call.
func terminalf(account, op, format string, args ...any) *Error {
	return &Error{Kind: KindTerminal, Account: account, Op: op, Err: fmt.Errorf(format, args...)}
}
