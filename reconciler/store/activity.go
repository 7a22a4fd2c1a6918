package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// The activator's reads and writes (reconciler/activator): where a tenant
// is (its lifecycle state and droplet address), and its activity when
// traffic wakes it, so idle hibernation does not put it back to sleep at
// once.

// Address is where a workspace's droplet is: its lifecycle state and
// public IP ("" without a droplet).
type Address struct {
	Lifecycle lifecycle.State
	IP        string
}

// Address reads workspace's lifecycle state and IP; ErrUnknownTenant when
// fleet_status has no row for it.
func (s *Store) Address(ctx context.Context, workspace string) (Address, error) {
	var a Address
	err := s.pool.QueryRow(ctx, `SELECT state, coalesce(host(ip), '') FROM fleet_status WHERE workspace = $1`, workspace).Scan(&a.Lifecycle, &a.IP)
	if errors.Is(err, pgx.ErrNoRows) {
		return Address{}, fmt.Errorf("address of %s: %w", workspace, ErrUnknownTenant)
	}
	if err != nil {
		return Address{}, fmt.Errorf("address of %s: %w", workspace, err)
	}
	return a, nil
}

// Addresses reads every workspace's lifecycle state and IP.
func (s *Store) Addresses(ctx context.Context) (map[string]Address, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, state, coalesce(host(ip), '') FROM fleet_status`)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Address)
	for rows.Next() {
		var ws string
		var a Address
		if err := rows.Scan(&ws, &a.Lifecycle, &a.IP); err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		out[ws] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	return out, nil
}

// RecordActivity records traffic to workspace now: last_activity_at moves
// forward (never back) and a pending idle warning is cleared, as a wake's
// outcome does. ErrUnknownTenant when fleet_status has no row for it.
func (s *Store) RecordActivity(ctx context.Context, workspace string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE fleet_status SET last_activity_at = GREATEST(last_activity_at, now()), idle_warned_at = NULL
		WHERE workspace = $1`, workspace)
	if err != nil {
		return fmt.Errorf("record activity of %s: %w", workspace, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("record activity of %s: %w", workspace, ErrUnknownTenant)
	}
	return nil
}
