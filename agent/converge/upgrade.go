package converge

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"genesis.dev/fleet/agent/backup"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/schema"
)

// Rejections remembers the n8n versions that failed their upgrade (the
// agent's *agent.Rejections; converge does not import its caller).
type Rejections interface {
	// Rejected returns the rejection of target for part, if any.
	Rejected(part, target string) (schema.Rejection, bool)
	// Add records a rejection.
	Add(x schema.Rejection) error
	// Forget drops part's rejection unless it is of keep, when manifest
	// version is newer than the rejected one.
	Forget(part, keep string, version int64) error
}

// upgradeFile in the state directory records a version switch in
// progress: a restarted agent finds it and undoes the switch before
// anything else.
const upgradeFile = "n8n-upgrade.json"

// pendingUpgrade is what upgradeFile holds.
type pendingUpgrade struct {
	From    string    `json:"from"`
	To      string    `json:"to"`
	Backup  string    `json:"backup,omitempty"` // the local backup taken before the switch
	Started time.Time `json:"started"`
}

// The steps of a version switch, named in a rejection's reason.
const (
	upStepRestore = "restore the backup taken before the upgrade from it"
	upStepStart   = "start"
	upStepVerify  = "verify"
)

// RejectedError is an apply's answer while the manifest asks for a version
// this droplet rejected: n8n keeps running the current version.
type RejectedError struct{ Rejection schema.Rejection }

// RejectedChange is the rejection (the agent reports it in its heartbeat's
// rejected list, not as an apply error: the droplet runs fine at the
// version it had).
func (e *RejectedError) RejectedChange() schema.Rejection { return e.Rejection }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("n8n %s was rejected at %s: %s; waiting for a manifest with another version",
		e.Rejection.Target, e.Rejection.At.UTC().Format(time.RFC3339), e.Rejection.Reason)
}

// firstStart starts n8n on a new droplet at the manifest's version: it
// never ran (cloud-init leaves n8n to the agent, so its database is first
// migrated by the version the tenant runs), and everything else of the
// manifest needs it. There is nothing to back up or verify yet (the
// workflows are created next); a failure is an apply error, tried again.
func (c *Converger) firstStart(ctx context.Context, m *schema.Manifest) error {
	if c.cfg.Runtime == nil || m.N8N.Version == "" {
		return nil
	}
	rt, ok := c.cfg.Runtime.(interface{ Committed() (string, bool) })
	if !ok {
		return nil
	}
	if _, done := rt.Committed(); done {
		return nil
	}
	// Never switched, but n8n answers: it runs (a droplet set up before
	// this release started it with the image's default); the version step
	// moves it like any change.
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := c.cfg.N8N.Ready(rctx)
	cancel()
	if err == nil {
		return nil
	}
	c.log.InfoContext(ctx, "starting n8n for the first time", "version", m.N8N.Version)
	c.forgetVersion()
	if err := c.cfg.Runtime.SwitchTo(ctx, m.N8N.Version); err != nil {
		return fmt.Errorf("start n8n %s: %w", m.N8N.Version, err)
	}
	return c.cfg.Runtime.Commit(ctx, m.N8N.Version)
}

// version moves n8n to the manifest's version: see the package doc, "n8n
// upgrades".
func (c *Converger) version(ctx context.Context, m *schema.Manifest) error {
	if c.cfg.Runtime == nil || m.N8N.Version == "" {
		return nil
	}
	want := m.N8N.Version
	if r := c.cfg.Rejections; r != nil {
		if err := r.Forget(schema.RejectN8N, want, m.Version); err != nil {
			c.log.WarnContext(ctx, "forget n8n rejection", "err", err)
		}
	}
	cur, err := c.cfg.Runtime.Current(ctx)
	if err != nil {
		return fmt.Errorf("n8n version: %w", err)
	}
	var p pendingUpgrade
	if ok, err := loadJSON(c.cfg.Dir, upgradeFile, &p); err != nil {
		return fmt.Errorf("n8n version: %w", err)
	} else if ok {
		if err := c.resume(ctx, p, cur); err != nil {
			return err
		}
	}
	if cur == want {
		return nil
	}
	if r := c.cfg.Rejections; r != nil {
		if x, ok := r.Rejected(schema.RejectN8N, want); ok {
			return &RejectedError{Rejection: x}
		}
	}
	down := VersionLess(want, cur)
	var from backup.LocalBackup // a downgrade's backup: taken before the upgrade from want
	if down {
		ok := false
		if c.cfg.Backups != nil {
			if from, ok, err = c.cfg.Backups.Before(want); err != nil {
				return fmt.Errorf("n8n version %s: %w", want, err)
			}
		}
		if !ok {
			return c.reject(ctx, m, fmt.Sprintf("downgrade from %s refused: n8n cannot run an older version on a database a newer one migrated, and no backup taken before the upgrade from %s is kept", cur, want))
		}
	}
	// cur "": n8n never ran on this droplet (a new droplet starts it at
	// its first manifest's version): there is nothing to back up yet (a
	// rebuilt droplet's restored data is the backup it came from).
	first := cur == ""
	if c.cfg.BeforeUpgrade != nil && !first {
		if err := c.cfg.BeforeUpgrade(ctx, cur, want); err != nil {
			return fmt.Errorf("n8n version %s: before the upgrade from %s: %w", want, cur, err)
		}
	}
	if versionRE.MatchString(cur) {
		// Pin what runs now: before a first commit the runtime asks n8n,
		// which would name the new version after a crash mid-switch.
		if err := c.cfg.Runtime.Commit(ctx, cur); err != nil {
			return fmt.Errorf("n8n version %s: %w", want, err)
		}
	}
	p = pendingUpgrade{From: cur, To: want, Started: c.now()}
	if c.cfg.Backups != nil && !first {
		b, err := c.cfg.Backups.Take(ctx, cur, want)
		if err != nil {
			return fmt.Errorf("n8n version %s: back up before the switch: %w", want, err)
		}
		p.Backup = b.ID
	}
	if err := saveJSON(c.cfg.Dir, upgradeFile, p); err != nil {
		return fmt.Errorf("n8n version %s: %w", want, err)
	}
	c.log.InfoContext(ctx, "switching n8n version", "from", cur, "to", want, "downgrade", down, "backup", p.Backup)
	c.switching.Store(&switchInProgress{from: cur, to: want, since: time.Now()})
	defer c.switching.Store(nil)
	c.forgetVersion()
	defer c.forgetVersion()
	step, verified, err := c.switchTo(ctx, m, down, from)
	if err != nil {
		undo := c.undo(ctx, p)
		reason := fmt.Sprintf("%s failed: %v", step, err)
		if undo != nil {
			reason += fmt.Sprintf("; undoing it failed too: %v", undo)
		} else {
			reason += c.undone(p)
		}
		return c.reject(ctx, m, reason)
	}
	if err := c.cfg.Runtime.Commit(ctx, want); err != nil {
		return fmt.Errorf("n8n version %s: %w", want, err)
	}
	if err := os.Remove(filepath.Join(c.cfg.Dir, upgradeFile)); err != nil {
		return fmt.Errorf("n8n version %s: %w", want, err)
	}
	c.log.InfoContext(ctx, "n8n version switched", "from", cur, "to", want, "verified", verified)
	return nil
}

// switchTo runs n8n at the manifest's version (after restoring from, for
// a downgrade) and verifies it; a failure names its step.
func (c *Converger) switchTo(ctx context.Context, m *schema.Manifest, down bool, from backup.LocalBackup) (step, verified string, err error) {
	if down {
		if err := c.cfg.Runtime.Stop(ctx); err != nil {
			return upStepRestore, "", err
		}
		if err := c.cfg.Backups.Restore(ctx, from.ID); err != nil {
			return upStepRestore, "", err
		}
	}
	if err := c.cfg.Runtime.SwitchTo(ctx, m.N8N.Version); err != nil {
		return upStepStart, "", err
	}
	verified, err = c.verify(ctx, m)
	if err != nil {
		return upStepVerify, "", err
	}
	return "", verified, nil
}

// undone says what undo restored.
func (c *Converger) undone(p pendingUpgrade) string {
	if p.Backup == "" {
		return fmt.Sprintf("; went back to n8n %s (no local backup: the database was not restored)", p.From)
	}
	return fmt.Sprintf("; restored the database from backup %s and went back to n8n %s", p.Backup, p.From)
}

// undo puts back what p's switch changed: stops n8n, restores the backup
// taken before it, runs the previous version again and waits until it is
// ready, then drops the record of the switch.
func (c *Converger) undo(ctx context.Context, p pendingUpgrade) error {
	c.log.WarnContext(ctx, "undoing n8n version switch", "from", p.From, "to", p.To, "backup", p.Backup)
	if p.Backup != "" && c.cfg.Backups != nil {
		if err := c.cfg.Runtime.Stop(ctx); err != nil {
			return fmt.Errorf("stop n8n %s: %w", p.To, err)
		}
		if err := c.cfg.Backups.Restore(ctx, p.Backup); err != nil {
			return fmt.Errorf("restore backup %s: %w", p.Backup, err)
		}
	}
	if p.From != "" {
		if err := c.cfg.Runtime.SwitchTo(ctx, p.From); err != nil {
			return fmt.Errorf("run n8n %s again: %w", p.From, err)
		}
	}
	if err := os.Remove(filepath.Join(c.cfg.Dir, upgradeFile)); err != nil {
		return err
	}
	c.forgetVersion()
	return nil
}

// resume finishes a switch a stopped agent left: committed (cur is its
// target) it is done, else it is undone.
func (c *Converger) resume(ctx context.Context, p pendingUpgrade, cur string) error {
	if cur == p.To {
		return os.Remove(filepath.Join(c.cfg.Dir, upgradeFile))
	}
	c.log.WarnContext(ctx, "an n8n version switch was interrupted", "from", p.From, "to", p.To)
	if err := c.undo(ctx, p); err != nil {
		return fmt.Errorf("n8n version: undo the interrupted switch to %s: %w", p.To, err)
	}
	return nil
}

// reject records that the manifest's version is refused and returns the
// apply's error.
func (c *Converger) reject(ctx context.Context, m *schema.Manifest, reason string) error {
	x := schema.Rejection{Version: m.Version, Part: schema.RejectN8N, Target: m.N8N.Version, Reason: reason, At: c.now().UTC()}
	c.log.ErrorContext(ctx, "n8n version rejected", "version", x.Target, "reason", reason)
	if r := c.cfg.Rejections; r != nil {
		if err := r.Add(x); err != nil {
			c.log.ErrorContext(ctx, "record n8n rejection", "err", err)
		}
	}
	return &RejectedError{Rejection: x}
}

func (c *Converger) now() time.Time {
	if c.cfg.Now != nil {
		return c.cfg.Now()
	}
	return time.Now()
}

// upgradeCheck is the body of the synthetic webhook call that verifies an
// upgrade.
type upgradeCheck struct {
	Genesis string `json:"genesis"`
	Version string `json:"n8n_version"`
}

// verify checks n8n after a switch: every managed workflow of m is active,
// and a synthetic call to one managed webhook (the first workflow by name
// with a webhook trigger) starts its workflow. It returns what it checked.
func (c *Converger) verify(ctx context.Context, m *schema.Manifest) (string, error) {
	api := c.keyed.Load()
	if api == nil {
		return "readiness only (n8n not bootstrapped)", nil
	}
	listed, err := api.ListWorkflows(ctx, n8n.WorkflowFilter{Tags: []string{c.cfg.Tag}})
	if err != nil {
		return "", fmt.Errorf("list workflows: %w", err)
	}
	active := map[string]bool{}
	for _, wf := range listed {
		active[wf.ID] = wf.Active
	}
	names := make([]string, 0, len(m.Workflows))
	for _, w := range m.Workflows {
		names = append(names, w.Name)
	}
	slices.Sort(names)
	for _, name := range names {
		rec, ok := c.rec.Workflows[name]
		if !ok || !active[rec.ID] {
			return "", fmt.Errorf("workflow %s is not active", name)
		}
	}
	for _, name := range names {
		i := slices.IndexFunc(m.Workflows, func(w schema.ManifestWorkflow) bool { return w.Name == name })
		method, path, ok := WebhookOf(m.Workflows[i].JSON)
		if !ok {
			continue
		}
		var body any
		if method != "GET" && method != "HEAD" {
			body = upgradeCheck{Genesis: "upgrade-check", Version: m.N8N.Version}
		}
		if err := api.CallWebhook(ctx, method, path, body); err != nil {
			return "", fmt.Errorf("synthetic execution of workflow %s (%s /webhook/%s): %w", name, method, path, err)
		}
		return fmt.Sprintf("%d active workflows, synthetic execution of %s", len(names), name), nil
	}
	return fmt.Sprintf("%d active workflows, readiness; no managed workflow has a webhook trigger", len(names)), nil
}

// WebhookOf returns the method and path of the first enabled webhook
// trigger of a workflow's JSON (a path with a :parameter does not count:
// the agent cannot make up its value). Bad JSON has none.
func WebhookOf(workflow json.RawMessage) (method, path string, ok bool) {
	var doc struct {
		Nodes []struct {
			Type       string          `json:"type"`
			Disabled   bool            `json:"disabled"`
			WebhookID  string          `json:"webhookId"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"nodes"`
	}
	if json.Unmarshal(workflow, &doc) != nil {
		return "", "", false
	}
	for _, n := range doc.Nodes {
		if n.Disabled || !strings.HasSuffix(strings.ToLower(n.Type), ".webhook") {
			continue
		}
		var p struct {
			Path       any `json:"path"`
			HTTPMethod any `json:"httpMethod"`
		}
		_ = json.Unmarshal(n.Parameters, &p)
		path, _ := p.Path.(string)
		method, _ := p.HTTPMethod.(string)
		path = strings.Trim(path, "/")
		method = strings.ToUpper(cmp.Or(method, "GET"))
		if path == "" || !methodRE(method) {
			continue
		}
		if strings.Contains(path, ":") {
			// A path with :parameters is served under the node's
			// webhookId (n8n's dynamic webhooks): fill each parameter
			// with a value templates can recognise.
			if !webhookIDRE.MatchString(n.WebhookID) {
				continue
			}
			segs := strings.Split(path, "/")
			for i, sg := range segs {
				if strings.HasPrefix(sg, ":") {
					segs[i] = SyntheticParam
				}
			}
			path = n.WebhookID + "/" + strings.Join(segs, "/")
		}
		return method, path, true
	}
	return "", "", false
}

// SyntheticParam is what the verification's synthetic call puts in a
// webhook path's :parameters.
const SyntheticParam = "genesis-upgrade-check"

// webhookIDRE bounds a node's webhookId used in a path.
var webhookIDRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,64}$`)

func methodRE(m string) bool {
	switch m {
	case "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD":
		return true
	}
	return false
}

// VersionLess reports whether n8n version a is older than b: numeric
// major.minor.patch, then a release is newer than its pre-releases (whose
// parts compare like semver's). Versions that do not parse are never
// less, so an unknown version is treated as an upgrade.
func VersionLess(a, b string) bool {
	va, oka := parseVersion(a)
	vb, okb := parseVersion(b)
	if !oka || !okb {
		return false
	}
	for i := range 3 {
		if va.num[i] != vb.num[i] {
			return va.num[i] < vb.num[i]
		}
	}
	switch {
	case va.pre == "" || vb.pre == "":
		return va.pre != "" && vb.pre == ""
	}
	pa, pb := strings.Split(va.pre, "."), strings.Split(vb.pre, ".")
	for i := range min(len(pa), len(pb)) {
		if pa[i] == pb[i] {
			continue
		}
		na, ea := strconv.ParseUint(pa[i], 10, 64)
		nb, eb := strconv.ParseUint(pb[i], 10, 64)
		switch {
		case ea == nil && eb == nil:
			return na < nb
		case ea == nil:
			return true
		case eb == nil:
			return false
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

type parsedVersion struct {
	num [3]uint64
	pre string
}

func parseVersion(v string) (parsedVersion, bool) {
	if !versionRE.MatchString(v) {
		return parsedVersion{}, false
	}
	core, pre, _ := strings.Cut(v, "-")
	parts := strings.SplitN(core, ".", 4)
	if len(parts) < 3 {
		return parsedVersion{}, false
	}
	var p parsedVersion
	for i := range 3 {
		n, err := strconv.ParseUint(parts[i], 10, 64)
		if err != nil {
			return parsedVersion{}, false
		}
		p.num[i] = n
	}
	if len(parts) == 4 { // 1.2.3.4: what follows the patch counts as a pre-release
		pre = strings.Trim(parts[3]+"."+pre, ".")
	}
	p.pre = pre
	return p, true
}
