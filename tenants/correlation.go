package tenants

import (
	"regexp"
	"strings"
)

// CorrelationTrailer is the commit-message trailer that carries the
// correlation id of the request that made a commit (the state API writes
// it), so the reconciler's logs of the plan, actions, manifests and
// heartbeats that follow can be found from the API call.
const CorrelationTrailer = "Genesis-Correlation-Id"

// correlationID is what a trailer value may be: short, printable, no
// spaces (it goes into logs and manifests).
var correlationID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// Correlation returns the correlation id of a commit: the value of its
// last valid Genesis-Correlation-Id trailer, else "git-" and the first 12
// hex digits of commit.
func Correlation(message, commit string) string {
	id := ""
	for _, line := range strings.Split(message, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), CorrelationTrailer) {
			if v = strings.TrimSpace(v); correlationID.MatchString(v) {
				id = v
			}
		}
	}
	if id != "" {
		return id
	}
	if len(commit) > 12 {
		commit = commit[:12]
	}
	return "git-" + commit
}

// ValidCorrelation reports whether id can be a correlation id: 1-64 of
// A-Z, a-z, 0-9 and . _ : -.
func ValidCorrelation(id string) bool { return correlationID.MatchString(id) }

// WithCorrelation appends the correlation trailer for id to a commit
// message.
func WithCorrelation(message, id string) string {
	return strings.TrimRight(message, "\n") + "\n\n" + CorrelationTrailer + ": " + id + "\n"
}
