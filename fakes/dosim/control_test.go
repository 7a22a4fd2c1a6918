package dosim_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
)

func TestControlAPI(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	d := e.create(e.a, "ctl", "genesis")

	// Clock: advance over HTTP boots the droplet.
	r := e.raw(t, "POST", "_sim/clock", "", `{"advance":"30s"}`)
	var clock struct {
		Now    time.Time `json:"now"`
		Frozen bool      `json:"frozen"`
	}
	if err := json.Unmarshal([]byte(r.body), &clock); err != nil || r.status != 200 || !clock.Frozen || clock.Now.Sub(epoch) < 30*time.Second {
		t.Fatalf("advance: %d %s", r.status, r.body)
	}
	if got, _, _ := e.a.Droplets.Get(ctx, d.ID); got.Status != "active" {
		t.Errorf("after advancing over HTTP: %s", got.Status)
	}

	// Faults over HTTP, listed until used.
	r = e.raw(t, "POST", "_sim/faults", "", `{"kind":"error","status":500,"count":4,"route":"GET /v2/droplets/*"}`)
	if r.status != 201 || !strings.Contains(r.body, `"id":1`) {
		t.Fatalf("inject: %d %s", r.status, r.body)
	}
	if r = e.raw(t, "GET", "_sim/faults", "", ""); !strings.Contains(r.body, `"route":"GET /v2/droplets/*"`) {
		t.Errorf("faults list: %s", r.body)
	}
	if _, _, err := e.a.Droplets.Get(ctx, d.ID); err == nil {
		t.Error("get succeeded through the injected fault")
	}
	if r = e.raw(t, "POST", "_sim/faults", "", `{"kind":"boom"}`); r.status != 422 || !strings.Contains(r.body, "kind: want one of") {
		t.Errorf("bad fault: %d %s", r.status, r.body)
	}
	e.raw(t, "POST", "_sim/faults", "", `{"kind":"timeout"}`)
	if r = e.raw(t, "DELETE", "_sim/faults", "", ""); r.status != 204 {
		t.Errorf("clear faults: %d", r.status)
	}

	// Limits: PATCH keeps what it does not mention.
	r = e.raw(t, "PATCH", "_sim/limits", "", `{"rate_per_minute":1000,"action_delay":"1s"}`)
	var lim struct {
		RatePerMinute int    `json:"rate_per_minute"`
		RatePerHour   int    `json:"rate_per_hour"`
		BootDelay     string `json:"boot_delay"`
		ActionDelay   string `json:"action_delay"`
	}
	json.Unmarshal([]byte(r.body), &lim)
	if diff := cmp.Diff(lim, struct {
		RatePerMinute int    `json:"rate_per_minute"`
		RatePerHour   int    `json:"rate_per_hour"`
		BootDelay     string `json:"boot_delay"`
		ActionDelay   string `json:"action_delay"`
	}{1000, -1, "30s", "1s"}); r.status != 200 || diff != "" {
		t.Errorf("limits %d (-got +want):\n%s", r.status, diff)
	}
	if r = e.raw(t, "PATCH", "_sim/limits", "", `{"fault_rate":2}`); r.status != 422 {
		t.Errorf("fault_rate 2: %d %s", r.status, r.body)
	}

	// Accounts: add one and use it.
	if r = e.raw(t, "POST", "_sim/accounts", "", `{"name":"charlie","token":"token-charlie","droplet_limit":1}`); r.status != 200 {
		t.Fatalf("add account: %d %s", r.status, r.body)
	}
	if r = e.raw(t, "POST", "_sim/accounts", "", `{"name":"dup","token":"token-charlie","droplet_limit":1}`); r.status != 422 {
		t.Errorf("duplicate token: %d %s", r.status, r.body)
	}
	charlie := e.Client("token-charlie")
	if acct, _, err := charlie.Account.Get(ctx); err != nil || acct.DropletLimit != 1 {
		t.Errorf("charlie: %+v %v", acct, err)
	}

	// State lists everything, without tokens.
	r = e.raw(t, "GET", "_sim/state", "", "")
	var st struct {
		Accounts []struct {
			Name     string `json:"name"`
			Droplets int    `json:"droplets"`
		} `json:"accounts"`
		Droplets []struct {
			ID      int    `json:"id"`
			Account string `json:"account"`
			Status  string `json:"status"`
		} `json:"droplets"`
		Actions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"actions"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.body, tokenA) {
		t.Errorf("state lists a token")
	}
	if len(st.Accounts) != 3 || st.Accounts[0].Name != "alpha" || st.Accounts[0].Droplets != 1 ||
		len(st.Droplets) != 1 || st.Droplets[0].Account != "alpha" || st.Droplets[0].Status != "active" ||
		len(st.Actions) != 1 || st.Actions[0].Status != "completed" {
		t.Errorf("state: %s", r.body)
	}

	// Reset drops resources but keeps accounts.
	if r = e.raw(t, "POST", "_sim/reset", "", ""); r.status != 204 {
		t.Fatalf("reset: %d", r.status)
	}
	if ds, _, err := e.a.Droplets.List(ctx, nil); err != nil || len(ds) != 0 {
		t.Errorf("after reset: %d droplets, %v", len(ds), err)
	}
	if _, _, err := charlie.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "c", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}}); err != nil {
		t.Errorf("charlie after reset: %v", err)
	}
	if r = e.raw(t, "GET", "_sim/nope", "", ""); r.status != 404 {
		t.Errorf("unknown control route: %d", r.status)
	}
}

// TestSeedDroplets: seeded droplets are active at once and listed by tag
// as created ones are; a bad seed records none of its batch, and the
// account's droplet limit holds.
func TestSeedDroplets(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	seeds := []dosim.Seed{
		{ID: 9_000_000_001, Name: "seed-1", Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-22-04-x64", Tags: []string{"genesis", "genesis:ws:one"}, IP: "100.64.0.1"},
		{ID: 9_000_000_002, Name: "seed-2", Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-22-04-x64", Tags: []string{"genesis"}},
	}
	if err := e.Sim.SeedDroplets("alpha", seeds); err != nil {
		t.Fatal(err)
	}
	got, _, err := e.a.Droplets.ListByTag(ctx, "genesis", &godo.ListOptions{PerPage: 200})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != 9_000_000_001 || got[0].Status != "active" || got[0].Name != "seed-1" || got[0].Tags[1] != "genesis:ws:one" {
		t.Fatalf("listed %+v, want both seeds, active", got)
	}
	if ip, _ := got[0].PublicIPv4(); ip != "100.64.0.1" {
		t.Errorf("seed-1's address %q, want 100.64.0.1", ip)
	}
	// A create after seeding takes an id past the seeds'.
	if d := e.create(e.a, "after-seed", "genesis"); d.ID <= 9_000_000_002 {
		t.Errorf("a created droplet's id %d collides with the seeds' range", d.ID)
	}
	for name, tc := range map[string]struct {
		account string
		seeds   []dosim.Seed
		want    string
	}{
		"taken id":       {"alpha", []dosim.Seed{{ID: 9_000_000_010, Name: "ok", Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-22-04-x64"}, seeds[0]}, "is taken"},
		"unknown size":   {"alpha", []dosim.Seed{{ID: 9_000_000_004, Name: "x", Region: "nyc3", Size: "huge", Image: "ubuntu-22-04-x64"}}, "known region, size and image"},
		"no account":     {"charlie", seeds[:1], `account "charlie" does not exist`},
		"over the limit": {"bravo", []dosim.Seed{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4}, {ID: 5}, {ID: 6}}, "droplet limit of 5"},
	} {
		if err := e.Sim.SeedDroplets(tc.account, tc.seeds); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
	if _, _, err := e.a.Droplets.Get(ctx, 9_000_000_010); err == nil {
		t.Error("a batch with a bad seed recorded its good one")
	}
}
