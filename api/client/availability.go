package client

import (
	"context"
	"net/http"
	"strconv"

	"genesis.dev/fleet/api"
)

// Availability is GET /v1/availability?worst=N.
func (c *Client) Availability(ctx context.Context, worst int) (api.Availability, error) {
	var a api.Availability
	err := c.do(ctx, http.MethodGet, "/v1/availability?worst="+strconv.Itoa(worst), nil, nil, http.StatusOK, &a)
	return a, err
}
