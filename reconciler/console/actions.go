package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"genesis.dev/fleet/api/client"
)

// Actions. Each is a form on the tenant (or rollouts) page that posts to a
// confirmation page; its "yes" posts the action, which the console makes
// as a request to the reconciler's own API with the viewer's token (an
// in-process round trip through the API's handler: the same scope checks,
// validation and audit as the dashboard's calls). The result, or the API's
// problem detail, is flashed on the page the viewer returns to.

// actionInfo describes one tenant action.
type actionInfo struct {
	Name, Label, Explain, API string
	// Admin says the API route needs the admin scope.
	Admin bool
}

// actionList is the tenant page's actions, in order.
var actionList = []actionInfo{
	{"wake", "Wake", "Wake the hibernated tenant now: a new droplet from its snapshot.", "POST /v1/tenants/{id}/wake", false},
	{"hibernate", "Hibernate", "Commit state: hibernated to the tenant's file: the reconciler snapshots and destroys the droplet.", "PATCH /v1/tenants/{id}", false},
	{"reboot", "Reboot", "Reboot the tenant's droplet (the watchdog takes the step at its next run).", "POST /v1/tenants/{id}/actions", true},
	{"rebuild", "Rebuild", "Rebuild the tenant's droplet from its image; its data comes back from the newest copy.", "POST /v1/tenants/{id}/actions", true},
	{"retry", "Retry", "Take the tenant out of FAILED or its backoff and try again now.", "POST /v1/tenants/{id}/retry", true},
	{"backup", "Back up now", "Ask the droplet's agent for a backup now.", "POST /v1/tenants/{id}/actions", true},
}

func actionByName(name string) (actionInfo, bool) {
	for _, a := range actionList {
		if a.Name == name {
			return a, true
		}
	}
	return actionInfo{}, false
}

// maxReason bounds an action's reason (the API's own bound).
const maxReason = 500

// confirmData is the confirmation page's data.
type confirmData struct {
	What, Explain, API, Action, Post, Back, Reason string
	Admin                                          bool
}

// confirm is POST /console/tenants/{id}/confirm: the confirmation page of
// the form's action.
func (c *Console) confirm(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	if !workspaceRe.MatchString(id) {
		c.fail(w, r, v, http.StatusBadRequest, "id: not a workspace id ([a-z0-9-]{3,40})")
		return
	}
	a, ok := actionByName(r.PostForm.Get("action"))
	if !ok {
		c.fail(w, r, v, http.StatusBadRequest, fmt.Sprintf("action: %q is not one of wake, hibernate, reboot, rebuild, retry, backup", r.PostForm.Get("action")))
		return
	}
	c.render(w, r, http.StatusOK, "confirm", "Confirm "+a.Label, v, confirmData{
		What: a.Label + " " + id, Explain: a.Explain, API: strings.ReplaceAll(a.API, "{id}", id), Action: a.Name, Admin: a.Admin,
		Post: "/console/tenants/" + id + "/act", Back: "/console/tenants/" + id,
		Reason: "requested from the fleet console by " + v.ID.Name})
}

// act is POST /console/tenants/{id}/act: the action, through the API.
func (c *Console) act(w http.ResponseWriter, r *http.Request, v *viewer) {
	id := r.PathValue("id")
	if !workspaceRe.MatchString(id) {
		c.fail(w, r, v, http.StatusBadRequest, "id: not a workspace id ([a-z0-9-]{3,40})")
		return
	}
	back := "/console/tenants/" + id
	a, ok := actionByName(r.PostForm.Get("action"))
	if !ok {
		c.fail(w, r, v, http.StatusBadRequest, fmt.Sprintf("action: %q is not one of wake, hibernate, reboot, rebuild, retry, backup", r.PostForm.Get("action")))
		return
	}
	reason, err := formReason(r.PostForm.Get("reason"), v)
	if err != nil {
		c.setFlash(w, r, "error", err.Error())
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	msg, err := c.do(r.Context(), v, id, a.Name, reason)
	if err != nil {
		c.log.Info("console action refused", "caller", v.ID.Name, "tenant", id, "action", a.Name, "err", err)
		c.setFlash(w, r, "error", a.Label+" "+id+": "+problemText(err))
	} else {
		c.log.Info("console action", "caller", v.ID.Name, "tenant", id, "action", a.Name)
		c.setFlash(w, r, "ok", a.Label+" "+id+": "+msg)
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// formReason is the form's reason, or a default naming the viewer.
func formReason(s string, v *viewer) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		s = "requested from the fleet console by " + v.ID.Name
	}
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxReason {
		return "", fmt.Errorf("reason: at most %d characters of UTF-8", maxReason)
	}
	return s, nil
}

// do makes one tenant action through the API and summarises its answer.
func (c *Console) do(ctx context.Context, v *viewer, id, action, reason string) (string, error) {
	cl := c.client(v)
	switch action {
	case "wake":
		st, err := cl.Wake(ctx, id)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("202 Accepted: wake requested (lifecycle %s)", st.Lifecycle), nil
	case "hibernate":
		t, err := cl.Tenant(ctx, id)
		if err != nil {
			return "", err
		}
		res, err := cl.PatchTenant(ctx, id, t.ETag, []byte(`{"spec":{"state":"hibernated"}}`), "console-"+randomID()[:12])
		if err != nil {
			return "", err
		}
		switch {
		case res.Unchanged:
			return "200 OK: already declared hibernated (no commit)", nil
		case res.Proposed:
			return fmt.Sprintf("200 OK: proposed on branch %s (commit %.12s)", res.Branch, res.Commit), nil
		}
		return fmt.Sprintf("200 OK: committed %.12s to %s", res.Commit, res.File), nil
	case "retry":
		res, err := cl.Retry(ctx, id)
		if err != nil {
			return "", err
		}
		return "202 Accepted: " + res.Result, nil
	case "reboot", "rebuild", "backup":
		res, err := cl.Act(ctx, id, action, reason)
		if err != nil {
			return "", err
		}
		return "202 Accepted: " + res.Action + " " + res.Result, nil
	}
	return "", fmt.Errorf("action: unknown %q", action)
}

// problemText is an API error as the flash shows it: status and the
// problem's detail.
func problemText(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		d := ce.Problem.Detail
		if d == "" {
			d = ce.Problem.Title
		}
		return fmt.Sprintf("%s (%s %s): %s", ce.Status, ce.Method, ce.Path, d)
	}
	return err.Error()
}

// rolloutVerbs are the rollouts page's actions.
var rolloutVerbs = map[string]string{
	"pause":  "Pause the rollout: no further tenant is released until it resumes.",
	"resume": "Resume the rollout (accepting the failures so far, after a breach).",
	"abort":  "Abort the rollout: tenants released keep the change; no more are released.",
}

// rolloutConfirm is POST /console/rollouts/{id}/confirm.
func (c *Console) rolloutConfirm(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, verb := r.PathValue("id"), r.PostForm.Get("verb")
	explain, ok := rolloutVerbs[verb]
	if !ok || !validRolloutID(id) {
		c.fail(w, r, v, http.StatusBadRequest, fmt.Sprintf("verb: %q is not one of pause, resume, abort (or the rollout id is malformed)", verb))
		return
	}
	c.render(w, r, http.StatusOK, "confirm", "Confirm "+verb, v, confirmData{
		What: strings.ToUpper(verb[:1]) + verb[1:] + " rollout " + id, Explain: explain, Admin: true,
		API: "POST /v1/rollouts/" + id + "/" + verb, Action: verb, Post: "/console/rollouts/" + url.PathEscape(id) + "/act",
		Back: "/console/rollouts", Reason: "requested from the fleet console by " + v.ID.Name})
}

// rolloutAct is POST /console/rollouts/{id}/act.
func (c *Console) rolloutAct(w http.ResponseWriter, r *http.Request, v *viewer) {
	id, verb := r.PathValue("id"), r.PostForm.Get("action")
	if _, ok := rolloutVerbs[verb]; !ok || !validRolloutID(id) {
		c.fail(w, r, v, http.StatusBadRequest, fmt.Sprintf("action: %q is not one of pause, resume, abort (or the rollout id is malformed)", verb))
		return
	}
	reason, err := formReason(r.PostForm.Get("reason"), v)
	if err == nil {
		res, aerr := c.client(v).RolloutAction(r.Context(), id, verb, reason)
		if aerr != nil {
			err = aerr
		} else {
			c.setFlash(w, r, "ok", fmt.Sprintf("%s %s: 200 OK: now %s", verb, id, res.State))
		}
	}
	if err != nil {
		c.setFlash(w, r, "error", verb+" "+id+": "+problemText(err))
	}
	http.Redirect(w, r, "/console/rollouts", http.StatusSeeOther)
}

// validRolloutID is the form of rollouts.id.
func validRolloutID(id string) bool {
	if len(id) == 0 || len(id) > 80 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
