package agentapi

import (
	"crypto/sha256"
	"encoding/json"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// buildSpare is the manifest of a hot spare (workspace spare-<region>-<n>):
// state "spare", the fleet's default n8n version, and nothing of any tenant
// (no workflows, credentials or domains). Its agent applies it, reports
// healthy and long-polls; when the spare is assigned, the droplet's next
// manifest names the tenant's workspace, and the agent adopts it (see
// agent.Expectation.Spare).
func buildSpare(snap tenants.Snapshot, workspace, droplet, recipient, signer string, announce []string) (content, error) {
	var c content
	m := schema.Manifest{
		Type: schema.ManifestType, Workspace: workspace, Droplet: droplet,
		N8N: schema.N8NPin{Version: snap.Fleet.Spec.Defaults.N8NVersion}, State: schema.ManifestStateSpare,
		Domains: []string{}, Workflows: []schema.ManifestWorkflow{}, Credentials: []schema.ManifestCredential{},
		SigningKeys: append([]string(nil), announce...),
	}
	in := struct {
		Spare       string
		N8N         string
		Recipient   string
		Signer      string
		SigningKeys []string
	}{workspace, m.N8N.Version, recipient, signer, m.SigningKeys}
	b, err := json.Marshal(in)
	if err != nil {
		return c, err
	}
	c.manifest, c.inputs = m, sha256.Sum256(b)
	return c, nil
}
