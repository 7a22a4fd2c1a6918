package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"genesis.dev/fleet/schema"
)

// StartBackup asks the reconciler for a presigned upload URL of a new
// backup (POST /v1/agent/backups).
func (c *Client) StartBackup(ctx context.Context, credential string) (schema.BackupStart, error) {
	var out schema.BackupStart
	err := c.backupCall(ctx, credential, http.MethodPost, "/v1/agent/backups", nil, http.StatusCreated, &out)
	return out, err
}

// FinishBackup reports how backup id ended (POST /v1/agent/backups/{id}).
func (c *Client) FinishBackup(ctx context.Context, credential, id string, f schema.BackupFinish) error {
	return c.backupCall(ctx, credential, http.MethodPost, "/v1/agent/backups/"+url.PathEscape(id), f, http.StatusNoContent, nil)
}

// FetchBackup asks for a presigned download URL of backup id (GET
// /v1/agent/backups/{id}).
func (c *Client) FetchBackup(ctx context.Context, credential, id string) (schema.BackupFetch, error) {
	var out schema.BackupFetch
	err := c.backupCall(ctx, credential, http.MethodGet, "/v1/agent/backups/"+url.PathEscape(id), nil, http.StatusOK, &out)
	return out, err
}

// Restored reports that backup id was restored (errMsg "") or refused
// (POST /v1/agent/backups/{id}/restored).
func (c *Client) Restored(ctx context.Context, credential, id, errMsg string) error {
	return c.backupCall(ctx, credential, http.MethodPost, "/v1/agent/backups/"+url.PathEscape(id)+"/restored",
		schema.BackupFinish{Error: errMsg}, http.StatusNoContent, nil)
}

// backupCall sends body (nil: none) and decodes a want-status answer into
// out (nil: discarded).
func (c *Client) backupCall(ctx context.Context, credential, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+credential)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	op := method + " " + path
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return statusError(op, resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("%s: read response: %w", op, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: malformed response", op)
	}
	return nil
}
