package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

const demoUsage = `Usage: genesis demo [--state DIR] [--once]

Runs the local demo on the state repository in DIR (default state-example):
validates it and prints the fleet it declares (id, state, region, size and
monthly cost per tenant), then says which parts of the demo are still to come.
--once exits when the story is done (for CI); exit status 1 if the state
repository is invalid.`

func runDemo(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "demo", demoUsage)
	dir := fs.String("state", "state-example", "state repository to run the demo on")
	fs.Bool("once", false, "run the story once and exit (for CI)")
	pos, err := parse(e, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("demo takes no arguments, got %q", pos)
	}
	repo, err := loadRepo(*dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "== Genesis demo on %s\n\n", *dir)
	if len(repo.Errors) > 0 {
		for _, er := range repo.Errors {
			fmt.Fprintln(e.stderr, er.Error())
		}
		return fmt.Errorf("the state repository %s is invalid (%d errors)", *dir, len(repo.Errors))
	}
	fmt.Fprintf(e.stdout, "validated: %d tenants, %d templates, %d accounts in regions %v\n\n",
		len(repo.Tenants), len(repo.Templates), len(repo.Fleet.Spec.Accounts), repo.Fleet.Regions())
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tTIER\tSTATE\tREGION\tSIZE\tN8N\tDOMAINS\tMONTHLY")
	var total float64
	for _, id := range repo.IDs() {
		t := repo.Tenants[id]
		size := t.Size(repo.Fleet)
		cost := 0.0
		if t.Spec.State == "running" {
			cost = repo.Fleet.MonthlyUSD(size)
		}
		total += cost
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t$%.2f\n", id, t.Metadata.Tier, t.Spec.State,
			t.Spec.Droplet.Region, size, t.N8NVersion(repo.Fleet), len(t.Spec.Domains), cost)
	}
	fmt.Fprintf(tw, "\t\t\t\t\t\t\t$%.2f\n", total)
	tw.Flush()
	fmt.Fprint(e.stdout, `
Monthly cost counts running droplets only; hibernated tenants cost their
snapshot storage, absent ones nothing.

Still to come in this demo: the DigitalOcean simulator with booting droplets,
the reconciler converging the fleet, agents enrolling and applying signed
manifests, heartbeats, hibernation and wake, and the story of changes.
`)
	return nil
}
