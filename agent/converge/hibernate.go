package converge

import (
	"context"
	"fmt"

	"genesis.dev/fleet/schema"
)

// A manifest saying state: hibernated is PREPARE_HIBERNATE: the reconciler
// is about to snapshot and destroy the droplet. The converger stops n8n
// cleanly through the Runtime (so the snapshot holds a consistent
// database), records that it did (converge.json, which the snapshot keeps)
// and changes nothing else. Any later manifest (the woken droplet's,
// state: running) starts n8n again before it converges.

// stopForHibernation stops n8n for a hibernation.
func (c *Converger) stopForHibernation(ctx context.Context, m *schema.Manifest) error {
	if c.rec.N8NStopped {
		return nil
	}
	// From now on a down n8n is meant to be (ProbeN8N leaves it alone).
	c.asleep.Store(true)
	if c.cfg.Runtime != nil {
		if err := c.cfg.Runtime.Stop(ctx); err != nil {
			return fmt.Errorf("stop n8n for hibernation: %w", err)
		}
	}
	c.rec.N8NStopped = true
	if err := c.save(); err != nil {
		return err
	}
	c.log.InfoContext(ctx, "n8n stopped for hibernation", "version", m.Version)
	return nil
}

// startAfterHibernation starts n8n again if a hibernation stopped it.
func (c *Converger) startAfterHibernation(ctx context.Context) error {
	if !c.rec.N8NStopped {
		return nil
	}
	if c.cfg.Runtime != nil {
		if err := c.cfg.Runtime.Start(ctx); err != nil {
			return fmt.Errorf("start n8n after hibernation: %w", err)
		}
	}
	c.rec.N8NStopped = false
	c.asleep.Store(false)
	if err := c.save(); err != nil {
		return err
	}
	c.log.InfoContext(ctx, "n8n started after hibernation")
	return nil
}

// N8NStopped reports whether n8n is stopped for a hibernation.
func (c *Converger) N8NStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec.N8NStopped
}
