package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/localfleet"
)

// droplet reads droplet-sim.json from the simulated disk of a droplet.
func (d *demo) droplet(id int64) (dropletInfo, error) {
	path := filepath.Join(d.work, "disks", "droplets", strconv.FormatInt(id, 10), dropletInfoFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return dropletInfo{}, fmt.Errorf("droplet %d: %w", id, err)
	}
	return parseDropletInfo(data)
}

// dropletOf returns the droplet a workspace runs on, from the fleet.
func (d *demo) dropletOf(ctx context.Context, workspace string) (api.FleetTenant, dropletInfo, error) {
	f, err := d.fleetNow(ctx)
	if err != nil {
		return api.FleetTenant{}, dropletInfo{}, err
	}
	row := tenantIn(f, workspace)
	if row.DropletID == 0 {
		return row, dropletInfo{}, fmt.Errorf("%s has no droplet (%s)", workspace, row.Lifecycle)
	}
	info, err := d.droplet(row.DropletID)
	return row, info, err
}

// killAgent kills (SIGKILL) the genesis-agent of a workspace's droplet,
// found through droplet-sim.json on its disk, and waits until it is gone.
// n8n and Caddy keep running: the droplet falls silent.
func (d *demo) killAgent(ctx context.Context, workspace string) (dropletInfo, error) {
	_, info, err := d.dropletOf(ctx, workspace)
	if err != nil {
		return info, err
	}
	if err := killAgent(ctx, info); err != nil {
		return info, fmt.Errorf("%s: %w", workspace, err)
	}
	return info, nil
}

// killAgent kills the agent droplet-sim.json names and waits until it is
// gone.
func killAgent(ctx context.Context, info dropletInfo) error {
	if err := syscall.Kill(info.AgentPID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill the agent of droplet %s (pid %d): %w", info.DropletID, info.AgentPID, err)
	}
	for deadline := time.Now().Add(10 * time.Second); !localfleet.ProcessGone(info.AgentPID); {
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent of droplet %s (pid %d) is still running", info.DropletID, info.AgentPID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// routeResult is what one HTTPS request through a droplet's Caddy got.
type routeResult struct {
	status int    // 0 when no HTTP answer came
	n8n    string // n8n's settings mode ("public"), when n8n answered
	err    error  // why no HTTP answer came (e.g. the TLS handshake failed)
}

func (r routeResult) String() string {
	switch {
	case r.err != nil:
		return "no answer: " + r.err.Error()
	case r.n8n != "":
		return fmt.Sprintf("%d from n8n (its %s settings)", r.status, r.n8n)
	}
	return fmt.Sprintf("%d from Caddy, not n8n", r.status)
}

// routed reports whether n8n answered.
func (r routeResult) routed() bool { return r.status == http.StatusOK && r.n8n != "" }

// request sends GET https://host/rest/settings to the droplet's Caddy
// (host as SNI and Host), trusting only Caddy's local CA from the droplet's
// disk, and reports whether n8n answered.
func request(ctx context.Context, info dropletInfo, host string, roots *x509.CertPool) routeResult {
	pool := roots
	if pool == nil {
		root, err := os.ReadFile(info.CaddyRoot)
		if err != nil {
			return routeResult{err: fmt.Errorf("caddy's local CA: %w", err)}
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(root) {
			return routeResult{err: fmt.Errorf("caddy's local CA %s: no certificate", info.CaddyRoot)}
		}
	}
	addr := net.JoinHostPort(info.IP, strconv.Itoa(info.HTTPSPort))
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/rest/settings", nil)
	if err != nil {
		return routeResult{err: err}
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return routeResult{err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	out := routeResult{status: resp.StatusCode}
	// n8n answers an anonymous caller with its public settings.
	var settings struct {
		Data struct {
			SettingsMode string `json:"settingsMode"`
		} `json:"data"`
	}
	if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &settings) == nil {
		out.n8n = settings.Data.SettingsMode
	}
	return out
}

func (d *demo) pidLog() string { return filepath.Join(d.work, "pids.log") }
