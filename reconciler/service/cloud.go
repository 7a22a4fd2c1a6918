package service

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/schema"
)

// cloudFactory builds the DigitalOcean pool from genesis.yaml's accounts,
// reading each token from the environment variable the account names.
type cloudFactory struct {
	baseURL string
	getenv  func(string) string
	log     *slog.Logger
	reg     prometheus.Registerer
}

func newCloudFactory(baseURL string, getenv func(string) string, log *slog.Logger, reg prometheus.Registerer) *cloudFactory {
	return &cloudFactory{baseURL: baseURL, getenv: getenv, log: log, reg: reg}
}

func (f *cloudFactory) build(fleet *schema.Fleet) (*cloud.Pool, error) {
	var accts []cloud.Account
	for _, a := range fleet.Spec.Accounts {
		tok := f.getenv(a.TokenEnv)
		if tok == "" {
			return nil, fmt.Errorf("account %s: environment variable %s (its tokenEnv) is empty", a.Name, a.TokenEnv)
		}
		accts = append(accts, cloud.Account{Name: a.Name, Token: tok, BaseURL: f.baseURL, Regions: a.Regions})
	}
	// Only the leader mutates DigitalOcean, under its lease (reconciler.lead).
	return cloud.New(cloud.Config{Accounts: accts, Logger: f.log, Registerer: f.reg, RequireLease: true})
}

// noCloud is the cloud factory of an agent-side-only replica, whose loop
// does not run: nothing may reach DigitalOcean.
func noCloud(*schema.Fleet) (*cloud.Pool, error) {
	return nil, errors.New("agent side only: no DigitalOcean")
}
