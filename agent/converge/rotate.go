package converge

import (
	"context"
	"fmt"

	"genesis.dev/fleet/agent/n8n"
)

// RotateN8N carries out the n8n part of secret rotation generation gen
// (once: a generation already done is a no-op), each new secret verified
// before the old one is given up:
//
//  1. API key: make a new key (logged in as the owner), record it, check
//     that n8n's public API accepts it, switch to it, then delete every
//     other key of the owner (the old one, and any a crash left behind).
//  2. Owner password: record the new password as next, change it in n8n
//     with the current one, log in with the new one, then record it as
//     the password (the old one no longer works in n8n).
//
// Crash story: the records are written before each step that makes
// something in n8n, so a restart resumes: a key made but not recorded is
// deleted by the next attempt's cleanup; a password change that happened
// but was not recorded is found by logging in with next_password.
func (c *Converger) RotateN8N(ctx context.Context, gen int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.access.Rotated >= gen {
		return nil
	}
	if _, err := c.bootstrap(ctx); err != nil {
		return fmt.Errorf("rotate n8n secrets: %w", err)
	}
	sess, err := c.login(ctx)
	if err != nil {
		return fmt.Errorf("rotate n8n secrets: %w", err)
	}
	// 1. The API key.
	id, key, err := c.cfg.N8N.NewAPIKey(ctx, sess)
	if err != nil {
		return fmt.Errorf("rotate n8n api key: %w", err)
	}
	api := c.cfg.N8N.WithAPIKey(key)
	if err := api.CheckKey(ctx); err != nil {
		return fmt.Errorf("rotate n8n api key: the new key does not work: %w", err)
	}
	next := c.access
	next.APIKey, next.APIKeyID = key, id
	if err := saveJSON(c.cfg.Dir, n8nFile, next); err != nil {
		return fmt.Errorf("rotate n8n api key: %w", err)
	}
	c.access, c.api = next, api
	c.keyed.Store(api)
	keys, err := c.cfg.N8N.APIKeys(ctx, sess)
	if err != nil {
		return fmt.Errorf("rotate n8n api key: %w", err)
	}
	for _, k := range keys {
		if k.ID == id {
			continue
		}
		if err := c.cfg.N8N.DeleteAPIKey(ctx, sess, k.ID); err != nil {
			return fmt.Errorf("rotate n8n api key: %w", err)
		}
	}
	c.log.InfoContext(ctx, "n8n api key rotated", "generation", gen, "deleted", len(keys)-1)
	// 2. The owner's password.
	next = c.access
	next.NextPassword = newPassword()
	if err := saveJSON(c.cfg.Dir, n8nFile, next); err != nil {
		return fmt.Errorf("rotate n8n owner password: %w", err)
	}
	c.access = next
	if err := c.cfg.N8N.ChangePassword(ctx, sess, c.access.Password, c.access.NextPassword); err != nil {
		return fmt.Errorf("rotate n8n owner password: %w", err)
	}
	if _, err := c.cfg.N8N.Login(ctx, c.access.Email, c.access.NextPassword); err != nil {
		return fmt.Errorf("rotate n8n owner password: the new password does not work: %w", err)
	}
	next = c.access
	next.Password, next.NextPassword, next.Rotated = next.NextPassword, "", gen
	if err := saveJSON(c.cfg.Dir, n8nFile, next); err != nil {
		return fmt.Errorf("rotate n8n owner password: %w", err)
	}
	c.access = next
	c.owner.Store(&n8nAccess{Email: next.Email, Password: next.Password})
	c.forgetVersion()
	c.log.InfoContext(ctx, "n8n owner password rotated", "generation", gen)
	return nil
}

// login logs in as the owner with the recorded password, or with the next
// one when a rotation changed it in n8n but crashed before recording it
// (which it then records). c.mu is held.
func (c *Converger) login(ctx context.Context) (*n8n.Session, error) {
	sess, err := c.cfg.N8N.Login(ctx, c.access.Email, c.access.Password)
	if err == nil || c.access.NextPassword == "" {
		return sess, err
	}
	sess, err2 := c.cfg.N8N.Login(ctx, c.access.Email, c.access.NextPassword)
	if err2 != nil {
		return nil, err
	}
	next := c.access
	next.Password, next.NextPassword = next.NextPassword, ""
	if err := saveJSON(c.cfg.Dir, n8nFile, next); err != nil {
		return nil, err
	}
	c.access = next
	c.owner.Store(&n8nAccess{Email: next.Email, Password: next.Password})
	return sess, nil
}
