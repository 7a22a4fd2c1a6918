package plan

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is a plan's totals, for people.
type Summary struct {
	Counts     map[Kind]int `json:"counts"`
	CostBefore float64      `json:"monthly_usd_before"`
	// DropletCost and SnapshotCost split CostBefore: the droplets and the
	// snapshot storage observed for declared tenants.
	DropletCost  float64            `json:"monthly_usd_droplets"`
	SnapshotCost float64            `json:"monthly_usd_snapshots"`
	CostDelta    float64            `json:"monthly_usd_delta"`
	APICalls     int                `json:"api_calls"`
	CallsByAcct  map[string]int     `json:"api_calls_by_account"`
	Minutes      map[string]float64 `json:"minutes_at_rate_limit_by_account"`
}

// RatePerMinute is DigitalOcean's per-token request limit, used to estimate
// how long a plan's API calls take at the most.
const RatePerMinute = 250

// Summarize totals a plan. The cost before is the monthly price of the
// droplets observed for declared tenants.
func Summarize(p Plan, d Desired, o Observed) Summary {
	s := Summary{Counts: map[Kind]int{}, CallsByAcct: map[string]int{}, Minutes: map[string]float64{}}
	if d.Fleet != nil {
		for _, dr := range o.Droplets {
			if _, ok := d.Tenants[dr.Workspace]; ok {
				s.DropletCost += d.Fleet.MonthlyUSD(dr.Size)
			}
		}
		for _, sn := range o.Snapshots {
			if _, ok := d.Tenants[sn.Workspace]; ok {
				s.SnapshotCost += d.Fleet.SnapshotMonthlyUSD(sn.SizeGB)
			}
		}
		s.CostBefore = s.DropletCost + s.SnapshotCost
	}
	for _, a := range p.Actions {
		s.Counts[a.Kind]++
		s.CostDelta += a.CostDelta
		s.APICalls += a.APICalls
		if a.APICalls > 0 {
			s.CallsByAcct[a.Account] += a.APICalls
		}
	}
	for acct, n := range s.CallsByAcct {
		s.Minutes[acct] = float64(n) / RatePerMinute
	}
	return s
}

// WriteText prints a plan for a terminal.
func WriteText(w io.Writer, p Plan, s Summary, commit string) {
	if commit != "" {
		fmt.Fprintf(w, "Plan at commit %s\n", commit)
	}
	if len(p.Refused) > 0 {
		fmt.Fprintln(w, "REFUSED by the fleet's safety limits (nothing will run until a person overrides):")
		for _, r := range p.Refused {
			fmt.Fprintf(w, "  - %s: %s\n", r.Reason, r.Detail)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	list := p.Actions
	if len(list) == 0 {
		list = p.Withheld
	}
	if len(list) == 0 {
		fmt.Fprintln(w, "No changes: the fleet matches the state repository.")
	} else {
		fmt.Fprintln(tw, "TENANT\tACTION\tDROPLET\tACCOUNT\tSIZE\tMONTHLY\tAPI CALLS\tWHY")
		for _, a := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", a.Workspace, a.Kind, dash(a.Droplet), dash(a.Account), dash(a.Size), money(a.CostDelta), a.APICalls, a.Reason)
		}
		tw.Flush()
	}
	for _, o := range p.Orphans {
		fmt.Fprintf(w, "orphan: %s %s in %s: %s (never destroyed automatically)\n", dash(o.Workspace), dash(o.Droplet+o.Snapshot+o.Record), o.Account, o.Reason)
	}
	for _, id := range p.NoCapacity {
		fmt.Fprintf(w, "no capacity: %s (no account serving its region has room)\n", id)
	}
	for _, d := range p.Deferred {
		fmt.Fprintf(w, "deferred: %s\n", d)
	}
	for _, h := range p.Held {
		fmt.Fprintf(w, "held: %s\n", h)
	}
	for _, iw := range p.IdleWarnings {
		fmt.Fprintf(w, "idle warning: %s idle since %s; hibernates at %s at the earliest\n", iw.Workspace,
			iw.LastActivity.Format(time.RFC3339), iw.HibernateAt.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Monthly cost now: $%.2f (droplets $%.2f, snapshots $%.2f).\n", s.CostBefore, s.DropletCost, s.SnapshotCost)
	fmt.Fprintf(w, "Monthly cost: $%.2f → $%.2f (%s). DigitalOcean API calls: %d%s.\n",
		s.CostBefore, s.CostBefore+s.CostDelta, money(s.CostDelta), s.APICalls, minutes(s))
}

// WriteMarkdown prints a plan as a pull-request comment.
func WriteMarkdown(w io.Writer, p Plan, s Summary, commit string) {
	fmt.Fprintln(w, "<!-- genesis-plan -->")
	fmt.Fprintln(w, "### genesis plan")
	if commit != "" {
		fmt.Fprintf(w, "\nAt commit `%s`.\n", commit)
	}
	if len(p.Refused) > 0 {
		fmt.Fprintln(w, "\n> [!WARNING]\n> **Refused by the fleet's safety limits**: nothing runs until a person overrides (`--allow-mass-change`).")
		for _, r := range p.Refused {
			fmt.Fprintf(w, "> - `%s`: %s\n", r.Reason, r.Detail)
		}
	}
	var kinds []string
	for k, n := range s.Counts {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	fmt.Fprintf(w, "\n**%s** · monthly cost $%.2f → $%.2f (**%s**) · %d DigitalOcean API calls%s\n",
		orNone(strings.Join(kinds, ", ")), s.CostBefore, s.CostBefore+s.CostDelta, money(s.CostDelta), s.APICalls, minutes(s))
	fmt.Fprintf(w, "\nCurrent monthly cost: droplets $%.2f + snapshot storage $%.2f = **$%.2f**.\n", s.DropletCost, s.SnapshotCost, s.CostBefore)
	list := p.Actions
	if len(list) == 0 {
		list = p.Withheld
	}
	if len(list) > 0 {
		fmt.Fprintln(w, "\n| tenant | action | droplet | account | size | monthly | API calls | why |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
		for _, a := range list {
			fmt.Fprintf(w, "| `%s` | %s | %s | %s | %s | %s | %d | %s |\n", a.Workspace, a.Kind, code(a.Droplet), dash(a.Account), dash(a.Size), money(a.CostDelta), a.APICalls, a.Reason)
		}
	} else {
		fmt.Fprintln(w, "\nNo changes: the fleet matches the state repository.")
	}
	if len(p.Orphans) > 0 {
		fmt.Fprintln(w, "\n**Orphans** (reported, never destroyed automatically):")
		for _, o := range p.Orphans {
			fmt.Fprintf(w, "- %s %s in `%s`: %s\n", code(o.Workspace), code(o.Droplet+o.Snapshot+o.Record), o.Account, o.Reason)
		}
	}
	if len(p.NoCapacity) > 0 {
		fmt.Fprintf(w, "\n**No capacity** for: %s\n", strings.Join(p.NoCapacity, ", "))
	}
	for _, iw := range p.IdleWarnings {
		fmt.Fprintf(w, "\n_Idle warning:_ `%s` idle since %s; hibernates at %s at the earliest\n", iw.Workspace,
			iw.LastActivity.Format(time.RFC3339), iw.HibernateAt.Format(time.RFC3339))
	}
	for _, d := range p.Deferred {
		fmt.Fprintf(w, "\n_Deferred:_ %s\n", d)
	}
	for _, h := range p.Held {
		fmt.Fprintf(w, "\n_Held:_ %s\n", h)
	}
}

func minutes(s Summary) string {
	longest := 0.0
	for _, m := range s.Minutes {
		longest = max(longest, m)
	}
	switch {
	case longest == 0:
		return ""
	case longest < 1:
		return fmt.Sprintf(" (≥ %.0f s at %d requests/min per account)", longest*60, RatePerMinute)
	}
	return fmt.Sprintf(" (≥ %.1f min at %d requests/min per account)", longest, RatePerMinute)
}

func money(v float64) string {
	switch {
	case v > 0:
		return fmt.Sprintf("+$%.2f", v)
	case v < 0:
		return fmt.Sprintf("-$%.2f", -v)
	}
	return "$0.00"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func code(s string) string {
	if s == "" {
		return "-"
	}
	return "`" + s + "`"
}

func orNone(s string) string {
	if s == "" {
		return "no actions"
	}
	return s
}
