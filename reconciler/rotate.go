package reconciler

import (
	"context"
	"errors"
	"fmt"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/store"
)

// ActionRotateSecrets is the operator action (POST
// /v1/tenants/{id}/actions) that rotates a tenant's secrets: a new n8n
// owner password and API key, a new database password and new agent keys
// (re-enrolled with a one-time token), each old one given up only after
// its successor works. The droplet's agent carries it out; see package
// agentapi's rotate.go for the protocol and its failure story.
const ActionRotateSecrets = "rotate_secrets"

// ErrRotationBusy means the tenant's previous rotation still runs.
var ErrRotationBusy = api.NewError(api.ErrConflict, "cannot rotate")

// ErrRotationBudget means the fleet-wide budget of rotations per minute is
// spent (429: ask again in a minute).
var ErrRotationBudget = api.NewError(api.ErrTooMany, "rotation budget spent")

// errNoRotation means this replica was built without the agent protocol.
var errNoRotation = api.NewError(api.ErrUnavailable, "secret rotation needs the agent protocol (--signing-key and --age-identity)")

// rotateSecrets records a rotation of id's secrets (any replica; audited
// as operator.rotate_secrets.requested with actor and reason) and renders
// its droplet's manifest, which carries the request to the agent.
func (r *Reconciler) rotateSecrets(ctx context.Context, id, actor, reason string) error {
	if n := len(reason); n == 0 || n > 500 {
		return fmt.Errorf("%w: reason: 1-500 characters (got %d)", ErrBadAction, n)
	}
	if r.cfg.RotateSecrets == nil {
		return errNoRotation
	}
	rot, err := r.cfg.RotateSecrets(ctx, id, actor, reason)
	switch {
	case errors.Is(err, store.ErrUnknownTenant):
		return fmt.Errorf("%w %s", ErrUnknownTenant, id)
	case errors.Is(err, store.ErrNotRunning):
		return fmt.Errorf("%w %s: %v", ErrNotRunning, id, err)
	case errors.Is(err, store.ErrRotationRunning):
		return fmt.Errorf("%w %s: %v", ErrRotationBusy, id, err)
	case errors.Is(err, store.ErrRotationBudget):
		return fmt.Errorf("%w: %v", ErrRotationBudget, err)
	case err != nil:
		return err
	}
	r.log.Warn("operator action requested", "tenant", id, "action", ActionRotateSecrets, "generation", rot.Generation, "actor", actor, "reason", reason)
	return nil
}
