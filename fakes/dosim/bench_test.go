package dosim_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
)

// BenchmarkListDroplets200 lists 1,000 droplets 200 per page through godo
// (5 requests per iteration).
func BenchmarkListDroplets200(b *testing.B) {
	srv := dosimtest.Start(b, dosim.Config{
		Accounts: []dosim.Account{{Name: "bench", Token: "t", DropletLimit: 1000}},
		Limits:   dosim.Limits{RatePerMinute: -1, RatePerHour: -1},
	})
	c := srv.Client("t")
	ctx := context.Background()
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("d-%d", i)
	}
	dosimtest.CreateTagged(b, c, names, "genesis")
	b.ResetTimer()
	for b.Loop() {
		n := 0
		opt := &godo.ListOptions{Page: 1, PerPage: 200}
		for {
			ds, resp, err := c.Droplets.ListByTag(ctx, "genesis", opt)
			if err != nil {
				b.Fatal(err)
			}
			n += len(ds)
			if resp.Links.IsLastPage() {
				break
			}
			opt.Page++
		}
		if n != 1000 {
			b.Fatalf("listed %d", n)
		}
	}
}
