package dosim_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
)

// TestTagsAndRename drives the tag endpoints and the rename action through
// godo: what hot-spare assignment does to a spare's droplet.
func TestTagsAndRename(t *testing.T) {
	srv := dosimtest.Start(t, dosim.Config{
		Accounts: []dosim.Account{{Name: "alpha", Token: tokenA, DropletLimit: 10}, {Name: "bravo", Token: tokenB, DropletLimit: 10}},
		Limits:   dosim.Limits{RatePerMinute: -1, RatePerHour: -1, BootDelay: dosim.Duration(30 * time.Second), ActionDelay: dosim.Duration(10 * time.Second)},
		Seed:     1,
	})
	srv.Sim.Freeze(true)
	ctx := context.Background()
	a, b := srv.Client(tokenA), srv.Client(tokenB)
	d, _, err := a.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "genesis-spare-fra1-1-1", Region: "fra1", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: []string{"genesis", "genesis:spare", "genesis:ws:spare-fra1-1"}})
	if err != nil {
		t.Fatal(err)
	}
	res := []godo.Resource{{ID: strconv.Itoa(d.ID), Type: godo.DropletResourceType}}

	// A tag that does not exist yet cannot be put on a droplet.
	if _, err := a.Tags.TagResources(ctx, "genesis:ws:ws-acme", &godo.TagResourcesRequest{Resources: res}); statusOf(err) != 404 {
		t.Fatalf("tag with an unknown tag: %v, want 404", err)
	}
	if _, _, err := a.Tags.Create(ctx, &godo.TagCreateRequest{Name: "genesis:ws:ws-acme"}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // tagging twice is a no-op
		if _, err := a.Tags.TagResources(ctx, "genesis:ws:ws-acme", &godo.TagResourcesRequest{Resources: res}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := a.Tags.UntagResources(ctx, "genesis:spare", &godo.UntagResourcesRequest{Resources: res}); err != nil {
			t.Fatal(err)
		}
	}
	// Another account sees neither the droplet nor the tag.
	if _, err := b.Tags.TagResources(ctx, "genesis:ws:ws-acme", &godo.TagResourcesRequest{Resources: res}); statusOf(err) != 404 {
		t.Fatalf("tag from another account: %v, want 404", err)
	}
	got, _, err := a.Droplets.Get(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"genesis", "genesis:ws:spare-fra1-1", "genesis:ws:ws-acme"}, got.Tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	tagged, _, err := a.Droplets.ListByTag(ctx, "genesis:ws:ws-acme", nil)
	if err != nil || len(tagged) != 1 {
		t.Fatalf("list by the new tag: %v, %v", tagged, err)
	}

	// Bad bodies are refused naming the field.
	for _, bad := range []godo.Resource{{ID: "x", Type: godo.DropletResourceType}, {ID: "1", Type: godo.VolumeResourceType}} {
		_, err := a.Tags.TagResources(ctx, "genesis", &godo.TagResourcesRequest{Resources: []godo.Resource{bad}})
		if statusOf(err) != 422 {
			t.Errorf("tag %+v: %v, want 422", bad, err)
		}
	}
	if _, _, err := a.Tags.Create(ctx, &godo.TagCreateRequest{Name: "bad tag!"}); statusOf(err) != 422 {
		t.Errorf("create a bad tag: %v, want 422", err)
	}

	// Rename: an action; the name changes when it completes.
	srv.Sim.Advance(31 * time.Second) // booted
	act, _, err := a.DropletActions.Rename(ctx, d.ID, "genesis-ws-acme-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.DropletActions.Rename(ctx, d.ID, "bad name!"); statusOf(err) != 422 {
		t.Errorf("rename to a bad name: %v, want 422", err)
	}
	srv.Sim.Advance(11 * time.Second)
	if act, _, err = a.Actions.Get(ctx, act.ID); err != nil || act.Status != godo.ActionCompleted {
		t.Fatalf("rename action: %+v, %v", act, err)
	}
	got, _, _ = a.Droplets.Get(ctx, d.ID)
	if got.Name != "genesis-ws-acme-1" {
		t.Errorf("name after rename = %q", got.Name)
	}
}

func statusOf(err error) int {
	if er, ok := err.(*godo.ErrorResponse); ok && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}
