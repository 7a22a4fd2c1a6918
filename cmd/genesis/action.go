package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/internal/cliexit"
)

const actionUsage = `Usage: genesis action <reboot|power-cycle|rebuild|snapshot|backup|rotate-secrets> TENANT --reason TEXT [--reconciler URL] [--token T] [--json]

Asks a running reconciler for an action on a tenant's droplet, as an
operator (the seed's HARD_REBOOT, and copies on demand): any replica
records it. The leader's watchdog runs reboot, power-cycle, rebuild and
snapshot at its next run — journaled, through the account's rate budget,
and not held back by an outage.

  reboot        reboot the droplet
  power-cycle   power it off and on
  rebuild       a new droplet from the tenant's newest copy (its newest
                backup is restored); the old one is kept until the new one
                is healthy, and destroyed only once a copy newer than its
                last write exists
  snapshot      a DigitalOcean snapshot of the running droplet, taken live
                (crash-consistent), named genesis-<ws>-<gen>-snap-<stamp>;
                the tenant keeps running, its latest snapshot until a
                newer one supersedes it (spec.snapshotRetention)
  backup        the droplet's next manifest asks its agent for a backup
                now (spec.backup must be on); the tenant's recovery_point
                (GET /v1/tenants/{id}) moves to it once it
                is good, and the manifest asks until then
  rotate-secrets
                a new n8n owner password and API key and new agent keys
                (re-enrolled with a one-time token); each old one is given
                up only after its successor works (the old agent credential
                is revoked when the reconciler has seen the new one used).
                One per tenant at a time (409), a fleet-wide budget per
                minute (429)

--reason is required and goes into the audit log with the token's name.
The reconciler URL defaults to $GENESIS_RECONCILER, the token (scope admin)
to $GENESIS_TOKEN. Exit status: 0 recorded, 1 the API refused or failed
(404 no such tenant, 409 no running droplet), 2 usage error.`

func runAction(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("action", actionUsage)
	base := fs.String("reconciler", "", "base URL of a running reconciler (default $GENESIS_RECONCILER)")
	token := fs.String("token", "", "bearer token for the reconciler API, scope admin (default $GENESIS_TOKEN)")
	reason := fs.String("reason", "", "why: kept in the audit log (required)")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return cliexit.Usage("action: want reboot, power-cycle, rebuild, snapshot or backup and a tenant id, got %q", pos)
	}
	var action string
	switch pos[0] {
	case "reboot":
		action = "reboot"
	case "power-cycle":
		action = "power_cycle"
	case "rotate-secrets":
		action = "rotate_secrets"
	case "rebuild", "snapshot", "backup":
		action = pos[0]
	default:
		return cliexit.Usage("action: %q is not reboot, power-cycle, rebuild, snapshot, backup or rotate-secrets", pos[0])
	}
	if *reason == "" {
		return cliexit.Usage("action: --reason is required (it goes into the audit log)")
	}
	if *base == "" {
		*base = e.Getenv("GENESIS_RECONCILER")
	}
	if *base == "" {
		return cliexit.Usage("action: give --reconciler URL (or set $GENESIS_RECONCILER)")
	}
	if *token == "" {
		*token = e.Getenv("GENESIS_TOKEN")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := client.New(*base, *token, nil).Act(ctx, pos[1], action, *reason)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.Stdout).Encode(res)
	}
	switch action {
	case "snapshot":
		fmt.Fprintf(e.Stdout, "snapshot of %s requested; the leader's watchdog takes it at its next run (the audit log and /v1/fleet's journal show it)\n", res.Workspace)
	case "backup":
		fmt.Fprintf(e.Stdout, "backup of %s requested; its agent takes one when its next manifest arrives (its recovery_point in GET /v1/tenants/%s moves to it once it is good)\n", res.Workspace, res.Workspace)
	case "rotate_secrets":
		fmt.Fprintf(e.Stdout, "secret rotation of %s requested; its agent carries it out when its next manifest arrives (the audit log shows operator.rotate_secrets.succeeded when the old secrets are revoked)\n", res.Workspace)
	default:
		fmt.Fprintf(e.Stdout, "%s of %s requested; the leader's watchdog runs it at its next run (GET /v1/fleet shows the tenant REBOOTING or rebuilding)\n", pos[0], res.Workspace)
	}
	return nil
}
