package agentapi

import (
	"crypto/sha256"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// lifecycleHibernating is fleet_status's state while a hibernation runs.
const lifecycleHibernating = string(lifecycle.Hibernating)

// hibernating turns a droplet's manifest content into PREPARE_HIBERNATE's:
// while its workspace is HIBERNATING (also when the idle policy, not git,
// hibernates it) the manifest says state: hibernated, which asks the agent
// to stop n8n cleanly and confirm it in a heartbeat before the snapshot.
// The inputs' identity changes with it, so the manifest is issued again.
func hibernating(c *content) {
	if c.manifest.State == string(schema.StateHibernated) {
		return
	}
	c.manifest.State = string(schema.StateHibernated)
	c.inputs = sha256.Sum256(append(c.inputs[:], []byte("\x00state=hibernated")...))
}
