package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/internal/cliexit"
)

const rolloutUsage = `Usage: genesis rollout <list|status|pause|resume|abort> [ID] [--reconciler URL] [--token T] [--reason TEXT] [--json]

Shows and steers the rollouts of fleet-wide changes (genesis.yaml
spec.rollout: a new default n8n version, agent build or golden template
reaches the droplets wave by wave) through a running reconciler's API.

  list            the newest rollouts, newest first
  status [ID]     one rollout (default: the newest) with its waves and
                  failed members
  pause ID        stop releasing tenants (those released keep the change)
  resume ID       release again, accepting the current wave's failures
  abort ID        every tenant goes back to the inputs it had before; git
                  still declares the change: revert it, or the next
                  fleet-wide change starts a new rollout

ID may be "latest". The reconciler URL defaults to $GENESIS_RECONCILER, the
token to $GENESIS_TOKEN (list and status need the dashboard scope, pause,
resume and abort admin). Exit status: 0 done, 1 the API refused or failed
(e.g. 409 for resume of a rollout that is not paused), 2 usage error.`

func runRollout(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("rollout", rolloutUsage)
	base := fs.String("reconciler", "", "base URL of a running reconciler (default $GENESIS_RECONCILER)")
	token := fs.String("token", "", "bearer token for the reconciler API (default $GENESIS_TOKEN)")
	reason := fs.String("reason", "", "why (pause, resume, abort): kept in the rollout and the audit log")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return cliexit.Usage("rollout: want a subcommand: list, status, pause, resume or abort")
	}
	verb, rest := pos[0], pos[1:]
	if *base == "" {
		*base = e.Getenv("GENESIS_RECONCILER")
	}
	if *base == "" {
		return cliexit.Usage("rollout: give --reconciler URL (or set $GENESIS_RECONCILER)")
	}
	if *token == "" {
		*token = e.Getenv("GENESIS_TOKEN")
	}
	cl := client.New(*base, *token, nil)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out any
	switch verb {
	case "list":
		if len(rest) > 0 {
			return cliexit.Usage("rollout list takes no arguments, got %q", rest)
		}
		l, err := cl.Rollouts(ctx)
		if err != nil {
			return err
		}
		if !*asJSON {
			writeRolloutList(e.Stdout, l)
			return nil
		}
		out = l
	case "status", "pause", "resume", "abort":
		id := "latest"
		switch {
		case len(rest) == 1:
			id = rest[0]
		case len(rest) > 1, len(rest) == 0 && verb != "status":
			return cliexit.Usage("rollout %s: want one rollout id (or latest)", verb)
		}
		var r api.Rollout
		if verb == "status" {
			r, err = cl.Rollout(ctx, id)
		} else {
			r, err = cl.RolloutAction(ctx, id, verb, *reason)
		}
		if err != nil {
			return err
		}
		if !*asJSON {
			writeRollout(e.Stdout, r)
			return nil
		}
		out = r
	default:
		return cliexit.Usage("rollout: unknown subcommand %q (list, status, pause, resume, abort)", verb)
	}
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeRolloutList(w io.Writer, l api.RolloutList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tWAVE\tCHANGES\tCREATED")
	for _, r := range l.Rollouts {
		wave := "-"
		if r.Wave < len(r.Waves) {
			wave = fmt.Sprintf("%d/%d %s", r.Wave+1, len(r.Waves), r.Waves[r.Wave].Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, wave, orDash(strings.Join(r.Changes, ", ")), r.CreatedAt.UTC().Format(time.RFC3339))
	}
	tw.Flush()
	if len(l.Rollouts) == 0 {
		fmt.Fprintln(w, "no rollouts yet (genesis.yaml has no spec.rollout, or the reconciler has not read it)")
	}
}

func writeRollout(w io.Writer, r api.Rollout) {
	fmt.Fprintf(w, "rollout %s: %s\n", r.ID, r.State)
	if r.Reason != "" {
		fmt.Fprintf(w, "  reason: %s\n", r.Reason)
	}
	if r.Commit != "" {
		fmt.Fprintf(w, "  commit: %s\n", r.Commit)
	}
	fmt.Fprintf(w, "  changes: %s\n", orDash(strings.Join(r.Changes, ", ")))
	if r.SupersededBy != "" {
		fmt.Fprintf(w, "  superseded by: %s\n", r.SupersededBy)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  WAVE\tSTATUS\tMEMBERS\tRELEASED\tAPPLIED\tSKIPPED\tFAILED\tBUDGET\tAT ONCE\tBAKE")
	for _, wv := range r.Waves {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", wv.Name, wv.Status, wv.Members, wv.Released, wv.Applied,
			wv.Skipped, wv.Failed, wv.FailureBudget, wv.MaxUnavailable, time.Duration(wv.BakeSeconds*float64(time.Second)))
	}
	tw.Flush()
	if r.BakingSince != nil {
		fmt.Fprintf(w, "  baking since %s\n", r.BakingSince.UTC().Format(time.RFC3339))
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  failed: %s (wave %s, %s): %s\n", f.Workspace, f.Wave, f.At.UTC().Format(time.RFC3339), f.Reason)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
