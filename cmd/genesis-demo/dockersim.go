package main

import (
	"context"

	"genesis.dev/fleet/fakes/dockersim"
	"genesis.dev/fleet/internal/cliexit"
)

// runN8NContainer is the process of an n8n "container" the docker
// emulator starts: its configuration is the container's environment.
func runN8NContainer(ctx context.Context, e cliexit.Env, args []string) error {
	if len(args) > 0 {
		return cliexit.Usage("n8n-container: takes no arguments (its configuration is the environment)")
	}
	return dockersim.RunContainer(ctx, e.Getenv, e.Stderr)
}
