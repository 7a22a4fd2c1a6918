// Package droplet carries the files every tenant droplet runs next to
// cloud-init's (compose.yaml, genesis-agent.service), embedded so the
// reconciler writes the exact files of its own release into each droplet's
// user data (see deploy/cloud-init).
package droplet

import (
	"bytes"
	_ "embed"
)

var (
	//go:embed compose.yaml
	compose []byte
	//go:embed genesis-agent.service
	agentUnit []byte
)

// Compose is compose.yaml: the droplet's n8n, Postgres and Caddy stack.
func Compose() []byte { return bytes.Clone(compose) }

// AgentUnit is genesis-agent.service: the agent's systemd unit.
func AgentUnit() []byte { return bytes.Clone(agentUnit) }
