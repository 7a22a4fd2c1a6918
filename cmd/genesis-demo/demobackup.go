package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/localfleet"
	"genesis.dev/fleet/schema"
)

// brokenFile on a simulated droplet's disk makes droplet-sim refuse to boot
// it: the droplet is up as DigitalOcean sees it, and nothing runs on it.
const brokenFile = "broken"

// declareBackups commits genesis.yaml's spec.backup for the local fleet's
// S3 server: every tier backs up every 5 minutes (the shortest schedule
// allowed); the demo's agents take their first backup within 2 seconds of
// their first manifest.
func (d *demo) declareBackups(ctx context.Context, b schema.Backup) error {
	s := b.Storage
	block := fmt.Sprintf(`  backup:
    # The demo's: a local S3 server (SeaweedFS) and a fresh key.
    recipients: [%s]
    storage:
      endpoint: %s
      region: %s
      bucket: %s
      accessKeyEnv: %s
      secretKeyEnv: %s
    tiers:
      starter: {every: 5m, objective: 10m}
      pro: {every: 5m, objective: 10m}
      enterprise: {every: 5m, objective: 10m}
`, b.Recipients[0], s.Endpoint, s.Region, s.Bucket, s.AccessKeyEnv, s.SecretKeyEnv)
	path := filepath.Join(d.repo, "genesis.yaml")
	err := d.commitAndHook(ctx, "declare backups to the local S3 server", func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text := strings.TrimRight(string(data), "\n") + "\n" + block
		if _, errs := schema.DecodeFleet("genesis.yaml", []byte(text)); len(errs) > 0 {
			return fmt.Errorf("the demo's spec.backup: %v", errs[0])
		}
		return os.WriteFile(path, []byte(text), 0o644)
	})
	if err != nil {
		return err
	}
	d.say("backups declared (genesis.yaml spec.backup): every droplet backs up its n8n database and data directory every 5m")
	return nil
}

// rebuildFromBackup waits for a backup of workspace id, breaks its
// droplet for good (killed, and its disk refuses to boot again), and
// follows the watchdog: reboot and power cycle do not bring it back, so it
// rebuilds a new droplet, which restores the backup before n8n serves;
// the dead droplet is retired (snapshot, then destroy). It checks the new
// droplet's n8n database holds the executions the backup held.
func (d *demo) rebuildFromBackup(ctx context.Context, id string) (string, error) {
	var b strings.Builder
	var rp *api.RecoveryPoint
	if _, err := d.waitStates(ctx, func(f api.Fleet) bool {
		rp = tenantIn(f, id).RecoveryPoint
		return rp != nil && rp.Kind == "backup"
	}); err != nil {
		return "", fmt.Errorf("no backup of %s: %w", id, err)
	}
	row, info, err := d.dropletOf(ctx, id)
	if err != nil {
		return "", err
	}
	oldDB := d.dropletDBURL(info.DropletID)
	backedUp, err := countExecutions(ctx, oldDB, info.DropletID, rp.At)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "backup %s of droplet %s taken %s; its n8n database had %d executions then\n",
		rp.ID, row.DropletName, rp.At.Format(time.TimeOnly), backedUp)
	// Break it: the disk refuses boots, then every process of the
	// droplet dies.
	disk := filepath.Join(d.work, "disks", "droplets", info.DropletID)
	if err := os.WriteFile(filepath.Join(disk, brokenFile), []byte("broken by the demo\n"), 0o644); err != nil {
		return "", err
	}
	for _, pid := range []int{info.AgentPID, info.CaddyPID, info.PID} {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return "", fmt.Errorf("kill pid %d of droplet %s: %w", pid, info.DropletID, err)
		}
	}
	for _, pid := range []int{info.AgentPID, info.CaddyPID, info.PID} {
		for deadline := time.Now().Add(10 * time.Second); !localfleet.ProcessGone(pid); {
			if time.Now().After(deadline) {
				return "", fmt.Errorf("pid %d of droplet %s is still running", pid, info.DropletID)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Fprintf(&b, "droplet %s killed; its disk refuses to boot again (reboot and power cycle cannot help)\n", row.DropletName)
	killed := time.Now()
	var rebuilt api.FleetTenant
	if _, err := d.waitStates(ctx, func(f api.Fleet) bool {
		rebuilt = tenantIn(f, id)
		return rebuilt.DropletID != 0 && rebuilt.DropletID != row.DropletID && booted(rebuilt.Lifecycle)
	}); err != nil {
		return "", fmt.Errorf("rebuild of %s: %w", id, err)
	}
	fmt.Fprintf(&b, "rebuilt as %s after %.1fs (reboot, power cycle, then a new droplet)\n", rebuilt.DropletName, time.Since(killed).Seconds())
	newInfo, err := d.droplet(rebuilt.DropletID)
	if err != nil {
		return "", err
	}
	// The agent restores before it applies the manifest naming the
	// backup (the rebuilt droplet's second, once it is recorded).
	restored, deadline := 0, time.Now().Add(d.timeout)
	for {
		restored, err = countExecutions(ctx, d.dropletDBURL(newInfo.DropletID), info.DropletID, rp.At)
		if err == nil && restored >= backedUp && backedUp > 0 {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the rebuilt droplet's n8n database holds %d of the %d executions the backup held (%v)", restored, backedUp, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(&b, "the new droplet restored backup %s before n8n served: its n8n database holds all %d executions of %s\n",
		rp.ID, restored, row.DropletName)
	// The dead droplet goes only once it has a copy: a snapshot here (its
	// last heartbeat is newer than its last backup).
	if _, err := d.waitStates(ctx, func(f api.Fleet) bool {
		_, err := os.Stat(disk)
		return errors.Is(err, os.ErrNotExist)
	}); err != nil {
		return "", fmt.Errorf("the dead droplet %s was not retired: %w", row.DropletName, err)
	}
	snaps, _ := os.ReadDir(filepath.Join(d.work, "disks", "snapshots"))
	fmt.Fprintf(&b, "the dead droplet %s was retired: stopped, snapshotted (%d snapshots kept), then destroyed\n", row.DropletName, len(snaps))
	// The measure: the recovery point after a forced rebuild is within
	// the tier's schedule (the new droplet backs up soon after it starts).
	f, err := d.fleetNow(ctx)
	if err != nil {
		return "", err
	}
	after := tenantIn(f, id).RecoveryPoint
	if after == nil || after.Kind == "" {
		return "", fmt.Errorf("%s has no recovery point after the rebuild", id)
	}
	age := time.Since(after.At)
	fmt.Fprintf(&b, "recovery point after the rebuild: %s %s, %.1fs old (schedule 5m, objective %.0fs)", after.Kind, after.ID, age.Seconds(), after.ObjectiveSeconds)
	if age > 5*time.Minute {
		return "", fmt.Errorf("the recovery point after the rebuild is %s old, over the 5m schedule", age.Round(time.Second))
	}
	return b.String(), nil
}

// dropletDBURL is the URL of droplet's n8n database (droplet-sim's
// n8n_<id> on the fleet's Postgres).
func (d *demo) dropletDBURL(droplet string) string {
	u, err := url.Parse(d.local.DatabaseURL)
	if err != nil {
		return ""
	}
	u.Path = "/n8n_" + droplet
	return u.String()
}

// countExecutions counts the executions droplet wrote up to at in the
// database at dbURL.
func countExecutions(ctx context.Context, dbURL, droplet string, at time.Time) (int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM execution_entity WHERE droplet = $1 AND at <= $2`, droplet, at).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count executions of droplet %s: %w", droplet, err)
	}
	return n, nil
}
