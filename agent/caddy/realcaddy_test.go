package caddy_test

import (
	"testing"

	"genesis.dev/fleet/agent/caddy/caddytest"
)

func startCaddy(t *testing.T, admin string, config []byte) { caddytest.Start(t, admin, config) }
