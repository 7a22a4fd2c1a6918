package plan

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"genesis.dev/fleet/schema"
)

// Desired is the state repository at one commit, as the planner needs it.
type Desired struct {
	Commit string
	Fleet  *schema.Fleet
	// Tenants holds every tenant in git at its last valid version: a tenant
	// whose file is currently invalid is still here (and still reconciled
	// at that version); one whose file was removed is not.
	Tenants map[string]*schema.Tenant
	// Hashes is each tenant's content identity (its file's blob hash); a
	// change means its manifest must be rendered again.
	Hashes map[string]string
}

// Observed is what the reconciler saw of the world: DigitalOcean droplets and
// snapshots carrying the genesis tag, and its own records in Postgres.
type Observed struct {
	// Incomplete names each account whose listing failed or stopped part
	// way, with the reason. Nothing is destroyed or hibernated from an
	// incomplete view.
	Incomplete map[string]string
	Droplets   []Droplet
	Snapshots  []Snapshot
	// Status is fleet_status by workspace id.
	Status map[string]Status
	// InFlight holds the workspaces with an operation pending or running;
	// the planner leaves them alone until it ends.
	InFlight map[string]string
	// Held is the work queue's retry state by workspace: workspaces whose
	// last action failed. The planner leaves one alone while its Hold
	// holds (Hold.Holds) and reports it in Plan.Held.
	Held map[string]Hold `json:",omitempty"`
}

// Error kinds of a Hold (reconciler/cloud's ErrorKind names).
const (
	HoldTransient = "transient" // 5xx, 429, timeouts: jittered exponential backoff
	HoldTerminal  = "terminal"  // bad input (422): waits for a new tenant file or an operator
	HoldCapacity  = "capacity"  // no account had room: a known wait
	HoldPending   = "pending"   // the droplet had an action in progress: a known wait
	HoldNotFound  = "not_found" // the droplet went away: a known wait for the next observation
)

// HoldKinds lists every kind, for metrics that start at zero.
var HoldKinds = []string{HoldTransient, HoldTerminal, HoldCapacity, HoldPending, HoldNotFound}

// Hold is a workspace's persisted retry state (tenant_retries): its last
// action failed Attempts times in a row, the last time with an error of
// Kind, seen with the tenant file of hash Hash.
type Hold struct {
	Kind     string `json:"kind"`
	Attempts int    `json:"attempts"`
	// Until is when the workspace may be tried again; zero for a terminal
	// failure, which waits for new input.
	Until time.Time `json:"retry_after,omitzero"`
	// Hash is the tenant file's content identity (Desired.Hashes) when it
	// failed; "" when unknown.
	Hash   string `json:"tenant_hash,omitempty"`
	Error  string `json:"last_error,omitempty"`
	Action Kind   `json:"action,omitempty"`
}

// Holds reports whether h keeps its workspace out of a plan at now, given
// the tenant file's hash now. A changed file is new input and ends any
// hold; otherwise a terminal failure holds until an operator clears it and
// every other kind until Until.
func (h Hold) Holds(hash string, now time.Time) bool {
	if h.Hash != "" && hash != "" && h.Hash != hash {
		return false
	}
	if h.Kind == HoldTerminal {
		return true
	}
	return now.Before(h.Until)
}

// Held is a workspace the plan leaves alone because its last action failed.
type Held struct {
	Workspace string `json:"workspace"`
	Hold
}

// String is the hold for people: "backing off until T (attempt N, last
// error kind K)", or the terminal wait.
func (h Held) String() string {
	if h.Kind == HoldTerminal {
		return fmt.Sprintf("%s: waiting for a change of its file or POST /v1/tenants/%s/retry (attempt %d, last error kind %s): %s",
			h.Workspace, h.Workspace, h.Attempts, h.Kind, h.Error)
	}
	return fmt.Sprintf("%s: backing off until %s (attempt %d, last error kind %s): %s",
		h.Workspace, h.Until.UTC().Format(time.RFC3339), h.Attempts, h.Kind, h.Error)
}

// Complete reports whether every account was listed in full.
func (o *Observed) Complete() bool { return len(o.Incomplete) == 0 }

// Droplet is a droplet seen on DigitalOcean.
type Droplet struct {
	ID        int
	Name      string
	Account   string
	Region    string
	Size      string
	Status    string // new, active, off, archive
	Workspace string // from the genesis:ws:<id> tag; "" if none
	Created   time.Time
}

// Snapshot is a droplet snapshot seen on DigitalOcean.
type Snapshot struct {
	ID        string
	Name      string
	Account   string
	Region    string
	Workspace string
	SizeGB    float64
	Created   time.Time
}

// Status is the reconciler's record of one workspace (fleet_status).
type Status struct {
	Lifecycle  string
	Account    string
	DropletID  int
	Generation int
	SnapshotID string
	// HibernatedByPolicy is set when the idle policy hibernated the tenant
	// while git still says running: it stays hibernated until woken.
	HibernatedByPolicy bool
	// WakeRequested is set by the API's wake fast path.
	WakeRequested bool
	LastActivity  time.Time
	// IdleWarnedAt is when the tenant was last warned that idleness will
	// hibernate it (zero: never). A warning older than LastActivity is
	// void: activity after it cleared it.
	IdleWarnedAt time.Time
	// TenantHash is the tenant content its current manifest was rendered
	// from.
	TenantHash string
	// Replacing is the droplet a watchdog rebuild is replacing: it stays
	// until the new one (DropletID) reports healthy, and is not a stray
	// second droplet meanwhile.
	Replacing int
	// IP is the public IPv4 of DropletID ("" while unknown).
	IP string
	// NameTarget is the address the tenant's stable DNS name was last
	// written to say ("" when it has no record).
	NameTarget string
	// ReservedIP is the tenant's reserved IPv4 (spec.tiers.<t>.reservedIP;
	// "" for none), held by its droplet while it has one.
	ReservedIP string
}

// Action is one thing to do for one workspace.
type Action struct {
	Kind      Kind   `json:"kind"`
	Workspace string `json:"workspace"`
	Account   string `json:"account,omitempty"`
	Region    string `json:"region,omitempty"`
	Size      string `json:"size,omitempty"`
	Image     string `json:"image,omitempty"`
	Tier      string `json:"tier,omitempty"`
	Droplet   string `json:"droplet,omitempty"` // deterministic name
	DropletID int    `json:"droplet_id,omitempty"`
	Snapshot  string `json:"snapshot,omitempty"` // snapshot id (wake, delete_snapshot)
	// SnapshotName is the name of the snapshot a snapshot action takes
	// (ManualSnapshotName).
	SnapshotName string `json:"snapshot_name,omitempty"`
	// Restore is the backup a rebuild's new droplet restores before n8n
	// starts: the workspace's newest copy when it is newer than Snapshot.
	Restore string `json:"restore,omitempty"`
	Gen     int    `json:"generation,omitempty"`
	// Spare is the spare workspace whose droplet an assign_spare action
	// gives to Workspace.
	Spare string `json:"spare,omitempty"`
	// Target is the IPv4 address a point_name action writes into the
	// tenant's stable name ("" removes its records).
	Target    string  `json:"dns_target,omitempty"`
	Reason    string  `json:"reason"`
	APICalls  int     `json:"api_calls"`
	CostDelta float64 `json:"monthly_usd_delta"`
	// Alternates are other accounts to try, in order, when a create fails
	// for capacity or limit reasons.
	Alternates []string `json:"alternates,omitempty"`
	// Correlation is the id of the change that led to the action (the
	// commit's, see tenants.Correlation), carried into its logs and
	// journal entry. Compute leaves it empty; the reconciler sets it.
	Correlation string `json:"correlation_id,omitempty"`
}

func (a Action) String() string {
	s := fmt.Sprintf("%s %s", a.Kind, a.Workspace)
	if a.Droplet != "" {
		s += " droplet=" + a.Droplet
	}
	if a.Account != "" {
		s += " account=" + a.Account
	}
	return s
}

// Orphan is a droplet or snapshot tagged for a workspace that git no longer
// declares, or a second droplet for one workspace. It is reported, never
// destroyed automatically.
type Orphan struct {
	Workspace string `json:"workspace"`
	Account   string `json:"account"`
	Droplet   string `json:"droplet,omitempty"`
	DropletID int    `json:"droplet_id,omitempty"`
	Snapshot  string `json:"snapshot,omitempty"`
	// Record is a DNS record in the fleet's zone (spec.dns) that matches
	// no tenant: "<name> <type> <data>".
	Record string `json:"dns_record,omitempty"`
	Reason string `json:"reason"`
}

// Refusal is a safety limit a plan broke.
type Refusal struct {
	Reason string `json:"reason"` // max_destroy, max_hibernate_percent
	Detail string `json:"detail"`
}

// Plan is what Compute decided.
type Plan struct {
	Actions []Action `json:"actions"`
	// Withheld are the actions not run: everything when the plan is
	// refused, or destructive actions deferred by an incomplete view.
	Withheld   []Action  `json:"withheld,omitempty"`
	Refused    []Refusal `json:"refused,omitempty"`
	Orphans    []Orphan  `json:"orphans,omitempty"`
	NoCapacity []string  `json:"no_capacity,omitempty"`
	// Deferred explains why Withheld actions wait (incomplete view).
	Deferred []string `json:"deferred,omitempty"`
	// IdleWarnings are tenants to warn that idleness will hibernate them
	// (non-destructive: the reconciler records and sends them).
	IdleWarnings []IdleWarning `json:"idle_warnings,omitempty"`
	// Held are the workspaces left alone because their last action failed
	// and their hold (Observed.Held) still holds, by workspace.
	Held []Held `json:"held,omitempty"`
}

// Empty reports whether there is nothing to do.
func (p Plan) Empty() bool { return len(p.Actions) == 0 }

// Tag values. Every droplet the reconciler makes carries all of them, so it
// can be found again by tag after a crash.
const TagFleet = "genesis"

// Tags are the tags of a workspace's droplet.
func Tags(workspace, account, tier string) []string {
	if region, _, ok := schema.ParseSpareWorkspace(workspace); ok {
		return SpareTags(workspace, account, region)
	}
	return []string{TagFleet, "genesis:ws:" + workspace, "genesis:account:" + account, "genesis:tier:" + tier}
}

// WorkspaceTag is the tag naming a droplet's workspace.
func WorkspaceTag(workspace string) string { return "genesis:ws:" + workspace }

// WorkspaceFromTags returns the workspace of a droplet's tags, or "". A
// tenant's tag wins over a spare's (a spare part way through assignment).
func WorkspaceFromTags(tags []string) string {
	found := ""
	for _, t := range tags {
		if ws, ok := strings.CutPrefix(t, "genesis:ws:"); ok && (found == "" || schema.IsSpareWorkspace(found)) {
			found = ws
		}
	}
	return found
}

// DropletName is the deterministic name of a workspace's droplet of one
// generation: a retried create finds the droplet the last try made.
func DropletName(workspace string, gen int) string {
	return fmt.Sprintf("genesis-%s-%d", workspace, gen)
}

// SnapshotName is the deterministic name of the snapshot taken of a
// generation's droplet.
func SnapshotName(workspace string, gen int) string {
	return fmt.Sprintf("genesis-%s-%d-snap", workspace, gen)
}

// ManualSnapshotName is the name of an operator's snapshot of a
// generation's droplet taken at at: SnapshotName plus a UTC stamp, so it is
// never the name a hibernation looks for (a hibernation that found it
// would destroy the droplet with an older copy) and two are never alike.
func ManualSnapshotName(workspace string, gen int, at time.Time) string {
	return SnapshotName(workspace, gen) + "-" + at.UTC().Format("20060102150405")
}

// TrimSnapshotStamp is name without ManualSnapshotName's stamp (name
// itself when it has none).
func TrimSnapshotStamp(name string) string {
	i := strings.LastIndex(name, "-snap-")
	if i < 0 {
		return name
	}
	stamp := name[i+len("-snap-"):]
	if _, err := time.Parse("20060102150405", stamp); err != nil || len(stamp) != 14 {
		return name
	}
	return name[:i+len("-snap")]
}

// ParseGeneration returns the generation in a droplet or snapshot name of
// workspace (an operator's snapshot's too), or 0.
func ParseGeneration(workspace, name string) int {
	rest, ok := strings.CutPrefix(TrimSnapshotStamp(name), "genesis-"+workspace+"-")
	if !ok {
		return 0
	}
	rest = strings.TrimSuffix(rest, "-snap")
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 {
		return 0
	}
	return n
}
