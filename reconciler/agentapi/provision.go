package agentapi

import (
	"context"
	"fmt"

	cloudinit "genesis.dev/fleet/deploy/cloud-init"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// MintToken makes a one-time provisioning token for the droplet named
// dropletName of workspace and stores its hash. The workspace must have a
// fleet_status row (store.Begin makes it before any create or wake).
func (s *Service) MintToken(ctx context.Context, workspace, dropletName string) (string, error) {
	tok, err := secret()
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	h := hash(tok)
	now := s.cfg.Now()
	if err := s.st.AddToken(ctx, h, workspace, dropletName, now, now.Add(s.cfg.TokenTTL)); err != nil {
		return "", fmt.Errorf("store provisioning token for %s: %w", dropletName, err)
	}
	return tok, nil
}

// UserData renders the cloud-init user data of the droplet a is about to
// create (create, wake or resize), with a new provisioning token bound to
// its workspace and name. It is reconciler.Config.UserData.
func (s *Service) UserData(ctx context.Context, a plan.Action) (string, error) {
	if !s.enabled {
		return "", errDisabled
	}
	name := a.Droplet
	if a.Kind == plan.Resize || name == "" {
		name = plan.DropletName(a.Workspace, a.Gen)
	}
	tok, err := s.MintToken(ctx, a.Workspace, name)
	if err != nil {
		return "", err
	}
	ud, err := cloudinit.Render(cloudinit.Input{
		Agent: schema.AgentConfig{ReconcilerURL: s.cfg.PublicURL, SigningKeys: s.cfg.SigningKeys,
			Workspace: a.Workspace, DropletName: name, Token: tok},
		StableName: s.stableName(a.Workspace),
		Compose:    s.cfg.Compose, AgentURL: s.cfg.AgentURL, AgentSHA256: s.cfg.AgentSHA256, InsecureHTTP: s.cfg.AgentInsecureHTTP,
	})
	if err != nil {
		return "", err
	}
	s.log.Info("provisioning token issued", "tenant", a.Workspace, "droplet", name, "expires_in", s.cfg.TokenTTL.String())
	return string(ud), nil
}

// stableName is workspace's stable DNS name in the desired fleet ("" when
// it has no spec.dns, or no desired state is known yet).
func (s *Service) stableName(workspace string) string {
	if s.cfg.Desired == nil {
		return ""
	}
	snap, ok := s.cfg.Desired()
	if !ok {
		return ""
	}
	return snap.Fleet.StableName(workspace)
}
