package fleetapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
)

// rolloutID is the form of a rollout id (migrations/0017_rollouts.sql),
// or "latest".
var rolloutID = regexp.MustCompile(`^[a-z0-9-]{1,80}$`)

// maxRolloutList bounds GET /v1/rollouts; maxFailures the failures listed
// with a rollout.
const (
	maxRolloutList = 50
	maxFailures    = 50
)

// rolloutRoutes serves the rollout API on mux.
func rolloutRoutes(mux *router, st *store.Store) {
	mux.HandleFunc("GET /v1/rollouts", func(w http.ResponseWriter, r *http.Request) {
		rs, err := st.ListRollouts(r.Context(), maxRolloutList)
		if err != nil {
			api.WriteProblem(w, http.StatusInternalServerError, err.Error())
			return
		}
		out := api.RolloutList{Rollouts: []api.Rollout{}}
		for _, ro := range rs {
			doc, err := rolloutDoc(r.Context(), st, ro, false)
			if err != nil {
				api.WriteProblem(w, http.StatusInternalServerError, err.Error())
				return
			}
			out.Rollouts = append(out.Rollouts, doc)
		}
		api.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/rollouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		ro, ok := findRollout(w, r, st)
		if !ok {
			return
		}
		doc, err := rolloutDoc(r.Context(), st, ro, true)
		if err != nil {
			api.WriteProblem(w, http.StatusInternalServerError, err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, doc)
	})
	for _, a := range []struct {
		verb, to string
		from     []string
	}{
		{"pause", rollout.Paused, []string{rollout.Running}},
		{"resume", rollout.Running, []string{rollout.Paused}},
		{"abort", rollout.Aborted, []string{rollout.Running, rollout.Paused}},
	} {
		mux.HandleFunc("POST /v1/rollouts/{id}/"+a.verb, func(w http.ResponseWriter, r *http.Request) {
			ro, ok := findRollout(w, r, st)
			if !ok {
				return
			}
			var body api.RolloutAction
			data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
			if err == nil && len(bytes.TrimSpace(data)) > 0 {
				dec := json.NewDecoder(bytes.NewReader(data))
				dec.DisallowUnknownFields()
				err = dec.Decode(&body)
			}
			if err != nil || len(body.Reason) > 500 {
				api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("body: want {\"reason\": \"...\"} with at most 500 bytes of reason (%v)", err))
				return
			}
			reason := fmt.Sprintf("%sd by %s", a.verb, apiActor(r))
			if a.verb == "abort" {
				reason = "aborted by " + apiActor(r)
			}
			if body.Reason != "" {
				reason += ": " + body.Reason
			}
			ro, err = st.SetRolloutState(r.Context(), ro.ID, a.from, a.to, reason)
			switch {
			case errors.Is(err, store.ErrRolloutMoved):
				api.WriteProblem(w, http.StatusConflict, fmt.Sprintf("cannot %s: %v", a.verb, err))
				return
			case err != nil:
				api.WriteProblem(w, http.StatusInternalServerError, err.Error())
				return
			}
			if err := st.Audit(r.Context(), apiActor(r), "rollout."+a.verb, "", map[string]any{"rollout": ro.ID, "reason": body.Reason}, ro.Commit); err != nil {
				api.WriteProblem(w, http.StatusInternalServerError, fmt.Sprintf("rollout %s is %s, but the audit log was not written: %v", ro.ID, ro.State, err))
				return
			}
			doc, err := rolloutDoc(r.Context(), st, ro, true)
			if err != nil {
				api.WriteProblem(w, http.StatusInternalServerError, err.Error())
				return
			}
			api.WriteJSON(w, http.StatusOK, doc)
		})
	}
}

// findRollout reads the rollout the path names ("latest": the newest);
// false after it answered 400 or 404.
func findRollout(w http.ResponseWriter, r *http.Request, st *store.Store) (store.Rollout, bool) {
	id := r.PathValue("id")
	if !rolloutID.MatchString(id) {
		api.WriteProblem(w, http.StatusBadRequest, "id: not a rollout id ([a-z0-9-]{1,80}, or latest)")
		return store.Rollout{}, false
	}
	var ro store.Rollout
	var err error
	if id == "latest" {
		var have bool
		if ro, have, err = st.LatestRollout(r.Context()); err == nil && !have {
			err = store.ErrNoRollout
		}
	} else {
		ro, err = st.RolloutByID(r.Context(), id)
	}
	switch {
	case errors.Is(err, store.ErrNoRollout):
		api.WriteProblem(w, http.StatusNotFound, "no rollout "+id)
		return ro, false
	case err != nil:
		api.WriteProblem(w, http.StatusInternalServerError, err.Error())
		return ro, false
	}
	return ro, true
}

// rolloutDoc is ro as the API shows it; detail adds the failures.
func rolloutDoc(ctx context.Context, st *store.Store, ro store.Rollout, detail bool) (api.Rollout, error) {
	doc := api.Rollout{ID: ro.ID, State: ro.State, Reason: ro.Reason, Commit: ro.Commit, CorrelationID: ro.Correlation,
		Wave: ro.Wave, AckedFailures: ro.AckedFailures, SupersededBy: ro.SupersededBy, WaveStartedAt: ro.WaveStartedAt,
		BakingSince: ro.BakingSince, LastProgressAt: ro.LastProgressAt, CreatedAt: ro.CreatedAt, FinishedAt: ro.FinishedAt,
		Waves: []api.RolloutWave{}, Changes: []string{}}
	from, err := inputsOf(ctx, st, ro.Baseline)
	if err != nil {
		return doc, err
	}
	to, err := inputsOf(ctx, st, ro.Target)
	if err != nil {
		return doc, err
	}
	doc.From, doc.To, doc.Changes = summary(ro.Baseline, from), summary(ro.Target, to), changes(from, to)
	limit := 0
	if detail {
		limit = maxFailures
	}
	counts, failures, err := st.RolloutProgress(ctx, ro.ID, limit)
	if err != nil {
		return doc, err
	}
	byWave := map[int]store.WaveCount{}
	for _, c := range counts {
		byWave[c.Wave] = c
	}
	for i, w := range ro.Waves {
		c := byWave[i]
		status := "waiting"
		switch {
		case i < ro.Wave || ro.State == rollout.Done:
			status = "done"
		case i == ro.Wave:
			status = "current"
		}
		doc.Waves = append(doc.Waves, api.RolloutWave{Name: w.Name, Status: status, BakeSeconds: w.BakeSeconds,
			MaxUnavailable: w.MaxUnavailable, FailureBudget: w.FailureBudget, Members: c.Members, Released: c.Released,
			Applied: c.Applied, Skipped: c.Skipped, Failed: c.Failed})
	}
	for _, f := range failures {
		name := ""
		if f.Wave < len(ro.Waves) {
			name = ro.Waves[f.Wave].Name
		}
		doc.Failures = append(doc.Failures, api.RolloutFailure{Workspace: f.Workspace, Wave: name, Reason: f.Reason, At: f.At})
	}
	return doc, nil
}

func inputsOf(ctx context.Context, st *store.Store, digest string) (rollout.Inputs, error) {
	var in rollout.Inputs
	body, err := st.RolloutInputs(ctx, digest)
	if err != nil {
		return in, err
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return in, fmt.Errorf("rollout inputs %s: %w", digest, err)
	}
	return in, nil
}

func summary(digest string, in rollout.Inputs) api.RolloutInputs {
	s := api.RolloutInputs{Digest: digest, N8NVersion: in.N8NVersion, Templates: []string{}}
	if in.Agent != nil {
		s.AgentVersion = in.Agent.Version
	}
	for name := range in.Templates {
		s.Templates = append(s.Templates, name)
	}
	sort.Strings(s.Templates)
	return s
}

// changes says what differs from a to b.
func changes(a, b rollout.Inputs) []string {
	out := []string{}
	if a.N8NVersion != b.N8NVersion {
		out = append(out, fmt.Sprintf("n8n %s -> %s", a.N8NVersion, b.N8NVersion))
	}
	av, bv := "", ""
	if a.Agent != nil {
		av = a.Agent.Version
	}
	if b.Agent != nil {
		bv = b.Agent.Version
	}
	if av != bv || (a.Agent != nil && b.Agent != nil && *a.Agent != *b.Agent) {
		out = append(out, fmt.Sprintf("agent %s -> %s", orNone(av), orNone(bv)))
	}
	var names []string
	for n := range a.Templates {
		names = append(names, n)
	}
	for n := range b.Templates {
		if _, ok := a.Templates[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		x, inA := a.Templates[n]
		y, inB := b.Templates[n]
		switch {
		case !inA:
			out = append(out, "template "+n+" added")
		case !inB:
			out = append(out, "template "+n+" removed")
		case !bytes.Equal(x, y):
			out = append(out, "template "+n+" changed")
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
