package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultMetadataURL is DigitalOcean's metadata endpoint for the droplet id.
const DefaultMetadataURL = "http://169.254.169.254/metadata/v1/id"

// DropletIDFromMetadata asks the metadata service for this droplet's id,
// trying up to attempts times (the service may not answer early in boot).
func DropletIDFromMetadata(ctx context.Context, client *http.Client, url string, attempts int) (string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	bo := Backoff{min: 500 * time.Millisecond, max: 5 * time.Second}
	var last error
	for i := 0; i < max(attempts, 1); i++ {
		if i > 0 && !sleep(ctx, bo.Next()) {
			return "", ctx.Err()
		}
		id, err := fetchDropletID(ctx, client, url)
		if err == nil {
			return id, nil
		}
		last = err
	}
	return "", fmt.Errorf("droplet id from %s: %w", url, last)
}

func fetchDropletID(ctx context.Context, client *http.Client, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(data))
	if err := CheckDropletID(id); err != nil {
		return "", err
	}
	return id, nil
}
