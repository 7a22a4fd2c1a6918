package api

import (
	"encoding/json"
	"net/http"

	"genesis.dev/fleet/schema"
)

// ProblemContentType is the media type of every error body (RFC 9457).
const ProblemContentType = "application/problem+json"

// Problem is every error body: RFC 9457 problem details. Type is omitted
// (about:blank): Title is the status's text, Detail says what went wrong.
// Error repeats Detail, the member error bodies had before problem
// details, which older clients (agents, dashboards) read. The tenant API
// adds Errors, the validation errors exactly as genesis validate --json
// prints them, and Current, the tenant as it is now (412, 409).
type Problem struct {
	Type    string        `json:"type,omitempty"`
	Title   string        `json:"title"`
	Status  int           `json:"status"`
	Detail  string        `json:"detail,omitempty"`
	Error   string        `json:"error"`
	Errors  schema.Errors `json:"errors,omitempty"`
	Current *Tenant       `json:"current,omitempty"`
}

// Write answers p with status: its Status, Title (the status's text when
// empty) and Error (Detail) are filled in. Headers set on w before (e.g.
// WWW-Authenticate, Retry-After, Cache-Control) are kept.
func (p Problem) Write(w http.ResponseWriter, status int) {
	p.Status = status
	if p.Title == "" {
		p.Title = http.StatusText(status)
	}
	if p.Detail == "" {
		p.Detail = p.Error
	}
	p.Error = p.Detail
	write(w, status, ProblemContentType, p)
}

// WriteProblem answers status with detail as problem details.
func WriteProblem(w http.ResponseWriter, status int, detail string) {
	Problem{Detail: detail}.Write(w, status)
}

// WriteJSON answers v as indented JSON (application/json) with status:
// every answer of the API that is not an error.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	write(w, status, "application/json", v)
}

func write(w http.ResponseWriter, status int, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
