package plan

import (
	"fmt"
	"time"

	"genesis.dev/fleet/schema"
)

// IdleWarning tells a tenant that idleness will hibernate it (seed 3.4:
// "Notify User — Hibernation Warning", then a grace period).
type IdleWarning struct {
	Workspace    string    `json:"workspace"`
	LastActivity time.Time `json:"last_activity"`
	AfterIdle    string    `json:"after_idle"`
	// HibernateAt is the earliest the idle hibernation may happen: the
	// policy's idle time reached and the warning out for the fleet's
	// warning period.
	HibernateAt time.Time `json:"hibernate_at"`
}

// idleDecision is what the idle policy says about a running tenant with one
// droplet at now: nothing, warn, or hibernate.
type idleDecision int

const (
	idleNothing idleDecision = iota
	idleWarn
	idleHibernate
)

// idlePolicy decides idle hibernation. A tenant is warned once it has been
// idle for afterIdle − warning; it is hibernated once it has been idle for
// afterIdle and the warning went out at least warning ago. A warning older
// than the last activity does not count (activity after it cleared it),
// and a tenant that never reported activity is never judged idle.
func idlePolicy(h *schema.Hibernation, warning time.Duration, st Status, now time.Time) (idleDecision, IdleWarning) {
	if h == nil || st.LastActivity.IsZero() || st.WakeRequested {
		return idleNothing, IdleWarning{}
	}
	after := h.AfterIdle.Std()
	idle := now.Sub(st.LastActivity)
	warned := !st.IdleWarnedAt.IsZero() && !st.IdleWarnedAt.Before(st.LastActivity)
	w := IdleWarning{Workspace: "", LastActivity: st.LastActivity.UTC(), AfterIdle: h.AfterIdle.String()}
	switch {
	case warned && idle >= after && now.Sub(st.IdleWarnedAt) >= warning:
		return idleHibernate, w
	case !warned && idle >= after-warning:
		w.HibernateAt = latest(st.LastActivity.Add(after), now.Add(warning)).UTC()
		return idleWarn, w
	}
	return idleNothing, w
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// idleReason explains an idle hibernation.
func idleReason(st Status, h *schema.Hibernation) string {
	return fmt.Sprintf("idle since %s (policy %s), warned at %s", st.LastActivity.UTC().Format(time.RFC3339), h.AfterIdle,
		st.IdleWarnedAt.UTC().Format(time.RFC3339))
}
