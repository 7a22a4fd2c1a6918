package dosim

import (
	"fmt"
	"net/http"
	"path"
	"strings"
)

// Fault kinds.
const (
	// FaultError makes matching requests fail with Status (default 500).
	FaultError = "error"
	// FaultTimeout holds matching requests without answering until the
	// client gives up, Hold passes (then 504) or the simulator closes.
	FaultTimeout = "timeout"
	// FaultPartialList serves OKPages pages of a matching listing (the last
	// one cut to half its items when Truncate is set) and then fails the
	// next Count page requests with Status (so a client's retries can be
	// made to fail too).
	FaultPartialList = "partial_list"
	// FaultActionError makes the next matching actions end "errored"
	// instead of "completed".
	FaultActionError = "action_error"
)

// Fault is one injected failure. Count is how many failures it produces
// (default 1); a fault is removed once it has produced Count failures.
type Fault struct {
	ID   int    `json:"id"`
	Kind string `json:"kind"`
	// Route limits the fault to requests whose "METHOD /path" matches it
	// (path.Match syntax: "GET /v2/droplets", "POST /v2/droplets/*/actions",
	// "* /v2/snapshots/*"). A route without a method matches any method.
	// Empty matches every API request. For action_error it is ignored.
	Route string `json:"route,omitempty"`
	// Account limits the fault to one account's requests.
	Account string `json:"account,omitempty"`
	Count   int    `json:"count,omitempty"`
	// Status of the failure (error, partial_list); default 500.
	Status int `json:"status,omitempty"`
	// Message of the failure body; a default per status when empty.
	Message string `json:"message,omitempty"`
	// RetryAfter, when set, is sent as Retry-After (seconds) with the
	// failure. A 429 or 503 without it gets Retry-After: 0.
	RetryAfter *int `json:"retry_after,omitempty"`
	// OKPages is how many listing pages partial_list serves before failing
	// (default 1).
	OKPages int `json:"ok_pages,omitempty"`
	// Truncate cuts the last good page of a partial_list to half its items.
	Truncate bool `json:"truncate,omitempty"`
	// Hold bounds a timeout (default: until the client goes away).
	Hold Duration `json:"hold,omitempty"`

	served int // partial_list: pages served so far
}

func (f *Fault) normalize() error {
	switch f.Kind {
	case FaultError, FaultTimeout, FaultPartialList, FaultActionError:
	default:
		return fmt.Errorf("kind: want one of %s, %s, %s, %s", FaultError, FaultTimeout, FaultPartialList, FaultActionError)
	}
	if f.Count < 0 {
		return fmt.Errorf("count: must not be negative")
	}
	if f.Count == 0 {
		f.Count = 1
	}
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	if f.Status < 400 || f.Status > 599 {
		return fmt.Errorf("status: want 400-599, got %d", f.Status)
	}
	if f.RetryAfter != nil && *f.RetryAfter < 0 {
		return fmt.Errorf("retry_after: must not be negative")
	}
	if f.OKPages < 0 {
		return fmt.Errorf("ok_pages: must not be negative")
	}
	if f.Kind == FaultPartialList && f.OKPages == 0 {
		f.OKPages = 1
	}
	if f.Hold < 0 {
		return fmt.Errorf("hold: must not be negative")
	}
	if _, err := path.Match(routePattern(f.Route), "/"); err != nil {
		return fmt.Errorf("route: %v", err)
	}
	return nil
}

func routePattern(route string) string {
	if _, p, ok := strings.Cut(route, " "); ok {
		return p
	}
	return route
}

func (f *Fault) matches(method, urlPath, account string) bool {
	if f.Account != "" && f.Account != account {
		return false
	}
	if f.Route == "" {
		return true
	}
	m, p, ok := strings.Cut(f.Route, " ")
	if !ok {
		m, p = "*", f.Route
	}
	if m != "*" && !strings.EqualFold(m, method) {
		return false
	}
	okMatch, _ := path.Match(p, urlPath)
	return okMatch
}

// faultDecision is what the fault layer decided for one request.
type faultDecision struct {
	kind       string // "", error, timeout, truncate
	status     int
	message    string
	retryAfter *int
	hold       Duration
}

// pickFaultLocked finds the first fault matching a request and consumes it.
// isList says whether the route is a listing (partial_list only fires there).
func (s *Sim) pickFaultLocked(method, urlPath, account string, isList bool) faultDecision {
	for i, f := range s.faults {
		if f.Kind == FaultActionError || !f.matches(method, urlPath, account) {
			continue
		}
		if f.Kind == FaultPartialList && !isList {
			continue
		}
		dec := faultDecision{status: f.Status, message: f.Message, retryAfter: f.RetryAfter, hold: f.Hold}
		switch f.Kind {
		case FaultError:
			dec.kind = FaultError
			f.Count--
		case FaultTimeout:
			dec.kind = FaultTimeout
			f.Count--
		case FaultPartialList:
			if f.served < f.OKPages {
				f.served++
				if f.served == f.OKPages && f.Truncate {
					dec.kind = "truncate"
				} else {
					dec.kind = ""
				}
				return dec
			}
			dec.kind = FaultError
			f.Count--
		}
		if f.Count <= 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		return dec
	}
	return faultDecision{}
}

// takeActionFaultLocked reports whether a new action of account should
// error, consuming an action_error fault.
func (s *Sim) takeActionFaultLocked(account string) bool {
	for i, f := range s.faults {
		if f.Kind != FaultActionError || (f.Account != "" && f.Account != account) {
			continue
		}
		f.Count--
		if f.Count <= 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		return true
	}
	return false
}
