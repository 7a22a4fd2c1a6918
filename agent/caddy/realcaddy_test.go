package caddy_test

import (
	"testing"

	"genesis.dev/fleet/agent/caddy/caddytest"
)

func freePort(t *testing.T) int { return caddytest.FreePort(t) }

func startCaddy(t *testing.T, admin string, config []byte) { caddytest.Start(t, admin, config) }
