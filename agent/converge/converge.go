package converge

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"genesis.dev/fleet/agent/backup"
	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/internal/atomicfile"
	"genesis.dev/fleet/schema"
)

// DefaultTag marks the n8n workflows the agent manages.
const DefaultTag = "genesis-managed"

// Runtime runs n8n at a version: the droplet's compose stack in production,
// a fake in tests.
type Runtime interface {
	// Current is the version last committed (before the first commit:
	// the version n8n reports).
	Current(ctx context.Context) (string, error)
	// SwitchTo runs n8n at version (recreating its container when the
	// version differs; starting it when it is stopped) and waits until it
	// is ready. It neither records the version nor goes back on failure:
	// the converger does both.
	SwitchTo(ctx context.Context, version string) error
	// Commit records version as the one n8n runs.
	Commit(ctx context.Context, version string) error
	// Stop stops n8n cleanly (a hibernation's snapshot follows); stopping
	// a stopped n8n is no error.
	Stop(ctx context.Context) error
	// Start starts n8n again after Stop and waits until it is ready.
	Start(ctx context.Context) error
}

// Config configures a Converger. Dir, N8N, Caddy and Ask are required.
type Config struct {
	// Dir is the agent's state directory.
	Dir string
	// N8N is a client for the droplet's n8n (its API key is set by the
	// converger).
	N8N *n8n.Client
	// Caddy loads configs through Caddy's admin API.
	Caddy *caddy.Client
	// CaddyConfig is rendered with the manifest's domains as Hosts.
	CaddyConfig caddy.Config
	// Ask is the on-demand TLS endpoint; it allows the manifest's domains.
	Ask *caddy.Ask
	// Runtime moves n8n to the manifest's version; nil leaves it alone.
	Runtime Runtime
	// DBPassword rotates n8n's database password in a secret rotation
	// (RotateSecrets); nil: only n8n's own secrets rotate.
	DBPassword *DBPassword
	// BeforeUpgrade runs before n8n moves to another version (the agent
	// takes a backup to storage when the manifest asks for backups); its
	// error stops the switch, which is tried again with the next apply.
	// nil: nothing.
	BeforeUpgrade func(ctx context.Context, from, to string) error
	// Backups keeps the local backup taken right before each version
	// switch: a failed switch restores it, a downgrade restores the one
	// taken before the upgrade from the older version. nil: a failed
	// switch only goes back to the previous image (the database stays as
	// the new version left it) and downgrades are refused.
	Backups *backup.Local
	// Rejections remembers versions that failed their switch, so they are
	// not tried again while the manifest asks for them. nil: a failed
	// version is tried again with every apply.
	Rejections Rejections
	// Now defaults to time.Now (a rejection's time, a repair's backoff).
	Now func() time.Time
	// Logger; default: discard.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for n8n's readiness in an Apply;
	// default 2 minutes.
	ReadyTimeout time.Duration
	// RepairBackoff is the first wait between ProbeN8N's restarts of a
	// down n8n (on Now's clock), doubling up to 16 times it; default 30 s.
	RepairBackoff time.Duration
	// Tag marks our workflows; default DefaultTag.
	Tag string
	// OwnerEmail is the n8n owner's e-mail; default agent@genesis.invalid.
	OwnerEmail string
}

// Converger is the agent's Applier. Apply calls are serialised.
type Converger struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	api    *n8n.Client                // with the API key, once bootstrapped
	keyed  atomic.Pointer[n8n.Client] // api, readable without mu (Apply holds it long)
	access n8nAccess
	rec    record

	// owner is the n8n owner's e-mail and password (access without the
	// key), readable without mu, for N8NVersion's login.
	owner atomic.Pointer[n8nAccess]
	// The version n8n reported, reused for versionTTL (reading it costs a
	// login); version changes clear it.
	verMu sync.Mutex
	ver   string
	verAt time.Time

	// switching is the n8n version switch in progress (nil: none), for
	// ProbeN8N.
	switching atomic.Pointer[switchInProgress]
	// caddyWant is the Caddy config the last manifest asked for (nil:
	// none yet), which ProbeCaddy checks Caddy still runs.
	caddyWant atomic.Pointer[[]byte]
	// caddyRepairs counts the reloads ProbeCaddy made.
	caddyRepairs atomic.Int64
	// stableName is the last manifest's stable name ("" : none, or the
	// tenant hibernates); certSeen is the stable name Caddy was last seen
	// serving a certificate for (ProbeCaddy checks until it has).
	stableName, certSeen atomic.Pointer[string]
	// managed is rec.Workflows as of the last save (name and n8n id of
	// each managed workflow), for ProbeWorkflows without mu; converging is
	// set while Apply's workflows step runs.
	managed    atomic.Pointer[[]managedWorkflow]
	converging atomic.Bool
	// held counts the holders of n8n's repairs (HoldRepairs): a backup or
	// a restore stopped n8n on purpose.
	held atomic.Int32
	// asleep is set from before a hibernation stops n8n until a wake
	// started it again (rec.N8NStopped, readable without mu): ProbeN8N
	// never restarts n8n then.
	asleep atomic.Bool
	// n8nRepair is ProbeN8N's restart backoff (repairMu guards it).
	repairMu  sync.Mutex
	n8nRepair repairState
}

// repairState is a local repair's backoff: the attempts since the
// component was last seen well, and when the next one may run.
type repairState struct {
	attempts int
	next     time.Time
	repairs  int64
}

// switchInProgress is an n8n version switch (or its undo) under way.
type switchInProgress struct {
	from, to string
	since    time.Time
}

// MaxSwitchQuiet bounds how long a switch in progress reports n8n as in
// maintenance instead of down: a switch stuck longer shows as it is.
const MaxSwitchQuiet = 10 * time.Minute

// versionTTL is how long N8NVersion reuses what n8n reported.
const versionTTL = 5 * time.Minute

// New loads what earlier runs recorded in cfg.Dir and returns a Converger.
func New(cfg Config) (*Converger, error) {
	if cfg.Dir == "" || cfg.N8N == nil || cfg.Caddy == nil || cfg.Ask == nil {
		return nil, errors.New("converge: Dir, N8N, Caddy and Ask are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	cfg.Tag = cmp.Or(cfg.Tag, DefaultTag)
	cfg.OwnerEmail = cmp.Or(cfg.OwnerEmail, "agent@genesis.invalid")
	c := &Converger{cfg: cfg, log: cfg.Logger.With("component", "converge")}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads what cfg.Dir records about n8n (the login and key, the ids
// of what the converger made); c.mu is held or c is new.
func (c *Converger) load() error {
	c.access, c.rec, c.api = n8nAccess{}, record{}, nil
	c.owner.Store(nil)
	c.keyed.Store(nil)
	if _, err := loadJSON(c.cfg.Dir, n8nFile, &c.access); err != nil {
		return fmt.Errorf("converge: %w", err)
	}
	if c.access.Password != "" {
		c.owner.Store(&n8nAccess{Email: c.access.Email, Password: c.access.Password})
	}
	if c.access.APIKey != "" {
		c.api = c.cfg.N8N.WithAPIKey(c.access.APIKey)
		c.keyed.Store(c.api)
	}
	if _, err := loadJSON(c.cfg.Dir, stateFile, &c.rec); err != nil {
		return fmt.Errorf("converge: %w", err)
	}
	c.asleep.Store(c.rec.N8NStopped)
	if c.rec.Credentials == nil {
		c.rec.Credentials = map[string]credentialRecord{}
	}
	if c.rec.Workflows == nil {
		c.rec.Workflows = map[string]workflowRecord{}
	}
	c.publishManaged()
	return nil
}

// AccessDir is the folder in n8n's data directory where the converger's
// records (n8n.json: the owner login and API key; converge.json: the ids
// of what it made) travel with a backup: n8n's database holds that owner,
// that key and those ids, so a droplet that restores the backup must use
// them, not its own (it would get 401s and make everything twice). The
// backup is encrypted to the workspace's recipients like the rest.
const AccessDir = ".genesis-agent"

// ExportAccess copies the converger's records into dataDir's AccessDir
// (before a backup is taken). Missing records are fine.
// It takes no lock: an n8n upgrade backs up from inside Apply, and the
// records are written whole (rename), so a copy is never half of one.
func (c *Converger) ExportAccess(dataDir string) error {
	dst := filepath.Join(dataDir, AccessDir)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("converge: export access: %w", err)
	}
	for _, name := range []string{n8nFile, stateFile} {
		data, err := os.ReadFile(filepath.Join(c.cfg.Dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("converge: export access: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			return fmt.Errorf("converge: export access: %w", err)
		}
	}
	return nil
}

// AdoptAccess takes the records a restored backup brought in dataDir's
// AccessDir as the converger's own (after a restore): the restored n8n is
// the backed-up droplet's. A backup without them (taken before this
// release) leaves the records as they are.
func (c *Converger) AdoptAccess(dataDir string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	src := filepath.Join(dataDir, AccessDir)
	data, err := os.ReadFile(filepath.Join(src, n8nFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("converge: adopt access: %w", err)
	}
	var probe n8nAccess
	if err := json.Unmarshal(data, &probe); err != nil || probe.APIKey == "" && probe.Password == "" {
		return fmt.Errorf("converge: adopt access: %s in the restored data is not a login record", n8nFile)
	}
	state, err := os.ReadFile(filepath.Join(src, stateFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("converge: adopt access: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(c.cfg.Dir, n8nFile), data, 0o600); err != nil {
		return fmt.Errorf("converge: adopt access: %w", err)
	}
	if state == nil {
		err = os.Remove(filepath.Join(c.cfg.Dir, stateFile))
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	} else {
		err = atomicfile.Write(filepath.Join(c.cfg.Dir, stateFile), state, 0o600)
	}
	if err != nil {
		return fmt.Errorf("converge: adopt access: %w", err)
	}
	return c.load()
}

// Apply makes n8n and Caddy match m; credentials holds the plaintext of
// each manifest credential by name. See the package doc for the order.
func (c *Converger) Apply(ctx context.Context, m *schema.Manifest, credentials map[string]json.RawMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	if m.State == string(schema.StateHibernated) {
		return c.stopForHibernation(ctx, m)
	}
	if err := c.startAfterHibernation(ctx); err != nil {
		return err
	}
	if err := c.firstStart(ctx, m); err != nil {
		return &StepError{Step: StepVersion, Err: err}
	}
	api, err := c.bootstrap(ctx)
	if err != nil {
		return &StepError{Step: StepBootstrap, Err: err}
	}
	if err := c.createCredentials(ctx, api, m, credentials); err != nil {
		return &StepError{Step: StepCredentials, Err: err}
	}
	if err := c.workflows(ctx, api, m); err != nil {
		return &StepError{Step: StepWorkflows, Err: err}
	}
	if err := c.deleteRetired(ctx, api); err != nil {
		return &StepError{Step: StepCredentials, Err: err}
	}
	if err := c.caddy(ctx, m); err != nil {
		return &StepError{Step: StepCaddy, Err: err}
	}
	if err := c.version(ctx, m); err != nil {
		return &StepError{Step: StepVersion, Err: err}
	}
	c.log.InfoContext(ctx, "manifest converged", "version", m.Version, "credentials", len(m.Credentials),
		"workflows", len(m.Workflows), "domains", len(m.Domains), "duration", time.Since(start))
	return nil
}

// The steps of Apply, in order; a failure names its step (bounded values,
// used as a metric label by the agent).
const (
	StepBootstrap   = "bootstrap"
	StepCredentials = "credentials"
	StepWorkflows   = "workflows"
	StepCaddy       = "caddy"
	StepVersion     = "version"
)

// StepError is a failure of one step of Apply.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Err.Error() }

func (e *StepError) Unwrap() error { return e.Err }

// ApplyStep names the step that failed.
func (e *StepError) ApplyStep() string { return e.Step }

func (c *Converger) save() error {
	if err := saveJSON(c.cfg.Dir, stateFile, c.rec); err != nil {
		return fmt.Errorf("converge: %w", err)
	}
	c.publishManaged()
	return nil
}

// bootstrap waits for n8n and makes the owner and API key the first time.
func (c *Converger) bootstrap(ctx context.Context) (*n8n.Client, error) {
	if err := c.cfg.N8N.Ready(ctx); err != nil {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.ReadyTimeout)
		err = c.cfg.N8N.WaitReady(wctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("n8n not ready: %w", err)
		}
	}
	if c.api != nil {
		return c.api, nil
	}
	if c.access.Password == "" {
		// Recorded before the owner exists: a crash after the setup can
		// still log in.
		c.access = n8nAccess{Email: c.cfg.OwnerEmail, Password: newPassword()}
		if err := saveJSON(c.cfg.Dir, n8nFile, c.access); err != nil {
			return nil, fmt.Errorf("n8n bootstrap: %w", err)
		}
	}
	key, err := c.cfg.N8N.Bootstrap(ctx, c.access.Email, c.access.Password)
	if err != nil {
		return nil, fmt.Errorf("n8n %w", err)
	}
	c.access.APIKey = key
	c.owner.Store(&n8nAccess{Email: c.access.Email, Password: c.access.Password})
	if err := saveJSON(c.cfg.Dir, n8nFile, c.access); err != nil {
		return nil, fmt.Errorf("n8n bootstrap: %w", err)
	}
	c.api = c.cfg.N8N.WithAPIKey(key)
	c.keyed.Store(c.api)
	c.log.InfoContext(ctx, "n8n bootstrapped")
	return c.api, nil
}

// createCredentials creates new and changed credentials and retires the
// ids of changed and undeclared ones.
func (c *Converger) createCredentials(ctx context.Context, api *n8n.Client, m *schema.Manifest, plain map[string]json.RawMessage) error {
	declared := map[string]bool{}
	for _, mc := range m.Credentials {
		declared[mc.Name] = true
		old, ok := c.rec.Credentials[mc.Name]
		if ok && old.SHA256 == mc.SHA256 && old.Type == mc.Type {
			continue
		}
		data, have := plain[mc.Name]
		if !have {
			return fmt.Errorf("credential %s: no plaintext", mc.Name)
		}
		cr, err := api.CreateCredential(ctx, n8n.NewCredential{Name: mc.Name, Type: mc.Type, Data: data})
		if err != nil {
			return fmt.Errorf("credential %s: %w", mc.Name, err)
		}
		if ok {
			c.rec.Retired = append(c.rec.Retired, old.ID)
		}
		c.rec.Credentials[mc.Name] = credentialRecord{ID: cr.ID, Type: mc.Type, SHA256: mc.SHA256}
		if err := c.save(); err != nil {
			return err
		}
		c.log.InfoContext(ctx, "n8n credential created", "credential", mc.Name, "type", mc.Type, "id", cr.ID, "rotated", ok)
	}
	changed := false
	for _, name := range slices.Sorted(maps.Keys(c.rec.Credentials)) {
		if !declared[name] {
			c.rec.Retired = append(c.rec.Retired, c.rec.Credentials[name].ID)
			delete(c.rec.Credentials, name)
			changed = true
		}
	}
	if changed {
		return c.save()
	}
	return nil
}

// deleteRetired deletes credentials no workflow of ours uses any more.
func (c *Converger) deleteRetired(ctx context.Context, api *n8n.Client) error {
	for len(c.rec.Retired) > 0 {
		id := c.rec.Retired[0]
		if err := api.DeleteCredential(ctx, id); err != nil && !n8n.IsNotFound(err) {
			return fmt.Errorf("delete retired credential %s: %w", id, err)
		}
		c.rec.Retired = c.rec.Retired[1:]
		if err := c.save(); err != nil {
			return err
		}
		c.log.InfoContext(ctx, "n8n credential deleted", "id", id)
	}
	return nil
}

// workflows creates, updates and activates the declared workflows and
// deletes the ones of ours no longer declared.
func (c *Converger) workflows(ctx context.Context, api *n8n.Client, m *schema.Manifest) error {
	c.converging.Store(true)
	defer c.converging.Store(false)
	ids := map[string]string{}
	for name, cr := range c.rec.Credentials {
		ids[name] = cr.ID
	}
	var desired []desiredWorkflow
	names := map[string]bool{}
	for _, w := range m.Workflows {
		if names[w.Name] {
			return fmt.Errorf("workflow %s: declared twice", w.Name)
		}
		names[w.Name] = true
		d, err := renderWorkflow(w, m.Credentials, ids)
		if err != nil {
			return err
		}
		desired = append(desired, d)
	}
	tag, err := api.EnsureTag(ctx, c.cfg.Tag)
	if err != nil {
		return fmt.Errorf("workflow tag: %w", err)
	}
	listed, err := api.ListWorkflows(ctx, n8n.WorkflowFilter{Tags: []string{c.cfg.Tag}})
	if err != nil {
		return fmt.Errorf("list workflows: %w", err)
	}
	ours := map[string]n8n.Workflow{}
	for _, wf := range listed {
		ours[wf.ID] = wf
	}
	keep := map[string]bool{}
	for _, d := range desired {
		id, err := c.workflow(ctx, api, d, tag, ours)
		if err != nil {
			return err
		}
		keep[id] = true
	}
	for _, wf := range listed {
		if keep[wf.ID] {
			continue
		}
		if err := api.DeleteWorkflow(ctx, wf.ID); err != nil && !n8n.IsNotFound(err) {
			return fmt.Errorf("delete workflow %q: %w", wf.Name, err)
		}
		c.log.InfoContext(ctx, "n8n workflow deleted", "workflow", wf.Name, "id", wf.ID)
	}
	changed := false
	for name := range c.rec.Workflows {
		if !names[name] {
			delete(c.rec.Workflows, name)
			changed = true
		}
	}
	if changed {
		return c.save()
	}
	return nil
}

// workflow converges one declared workflow and returns its n8n id.
func (c *Converger) workflow(ctx context.Context, api *n8n.Client, d desiredWorkflow, tag n8n.Tag, ours map[string]n8n.Workflow) (string, error) {
	rec := c.rec.Workflows[d.name]
	wf, found := ours[rec.ID]
	if rec.ID != "" && !found {
		// Recorded but not tagged (a crash before tagging, or a user
		// removed the tag): it is ours by the record.
		got, err := api.GetWorkflow(ctx, rec.ID)
		switch {
		case err == nil:
			wf, found = got, true
		case n8n.IsNotFound(err):
			rec = workflowRecord{}
		default:
			return "", fmt.Errorf("workflow %s: %w", d.name, err)
		}
	}
	if !found {
		adopted, ok, err := c.adopt(ctx, api, d, ours)
		if err != nil {
			return "", err
		}
		if ok {
			wf, found, rec = adopted, true, workflowRecord{ID: adopted.ID}
		}
	}
	if !found {
		created, err := api.CreateWorkflow(ctx, d.spec)
		if err != nil {
			return "", fmt.Errorf("create workflow %s: %w", d.name, err)
		}
		wf, rec = created, workflowRecord{ID: created.ID, Hash: d.hash}
		c.rec.Workflows[d.name] = rec
		if err := c.save(); err != nil {
			return "", err
		}
		c.log.InfoContext(ctx, "n8n workflow created", "workflow", d.name, "id", wf.ID)
	} else if rec != c.rec.Workflows[d.name] {
		c.rec.Workflows[d.name] = rec
		if err := c.save(); err != nil {
			return "", err
		}
	}
	if !slices.ContainsFunc(wf.Tags, func(t n8n.Tag) bool { return t.ID == tag.ID }) {
		ids := []string{tag.ID}
		for _, t := range wf.Tags {
			ids = append(ids, t.ID)
		}
		if _, err := api.SetWorkflowTags(ctx, wf.ID, ids); err != nil {
			return "", fmt.Errorf("tag workflow %s: %w", d.name, err)
		}
	}
	if rec.Hash != d.hash {
		updated, err := api.UpdateWorkflow(ctx, wf.ID, d.spec)
		if err != nil {
			return "", fmt.Errorf("update workflow %s: %w", d.name, err)
		}
		wf.Active = updated.Active
		c.rec.Workflows[d.name] = workflowRecord{ID: wf.ID, Hash: d.hash}
		if err := c.save(); err != nil {
			return "", err
		}
		c.log.InfoContext(ctx, "n8n workflow updated", "workflow", d.name, "id", wf.ID)
	}
	if !wf.Active {
		if _, err := api.ActivateWorkflow(ctx, wf.ID); err != nil {
			return "", fmt.Errorf("activate workflow %s: %w", d.name, err)
		}
		c.log.InfoContext(ctx, "n8n workflow activated", "workflow", d.name, "id", wf.ID)
	}
	return wf.ID, nil
}

// adopt finds a workflow an earlier run created but did not record: one of
// ours by name, or an untagged one with our name and exactly our content.
func (c *Converger) adopt(ctx context.Context, api *n8n.Client, d desiredWorkflow, ours map[string]n8n.Workflow) (n8n.Workflow, bool, error) {
	recorded := map[string]bool{}
	for _, r := range c.rec.Workflows {
		recorded[r.ID] = true
	}
	for _, id := range slices.Sorted(maps.Keys(ours)) {
		if wf := ours[id]; wf.Name == d.spec.Name && !recorded[id] {
			return wf, true, nil
		}
	}
	same, err := api.ListWorkflows(ctx, n8n.WorkflowFilter{Name: d.spec.Name})
	if err != nil {
		return n8n.Workflow{}, false, fmt.Errorf("workflow %s: %w", d.name, err)
	}
	for _, wf := range same {
		if recorded[wf.ID] || len(wf.Tags) > 0 {
			continue
		}
		if jsonEqual(wf.Nodes, d.spec.Nodes) && jsonEqual(wf.Connections, d.spec.Connections) {
			c.log.InfoContext(ctx, "n8n workflow adopted", "workflow", d.name, "id", wf.ID)
			return wf, true, nil
		}
	}
	return n8n.Workflow{}, false, nil
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ca, _ := json.Marshal(x)
	cb, _ := json.Marshal(y)
	return bytes.Equal(ca, cb)
}

// caddy gives the ask endpoint and Caddy the manifest's domains.
func (c *Converger) caddy(ctx context.Context, m *schema.Manifest) error {
	cfg := c.cfg.CaddyConfig
	cfg.Hosts = m.Domains
	raw, _, err := caddy.Render(cfg)
	if err != nil {
		return err
	}
	c.cfg.Ask.Set(m.Domains)
	c.caddyWant.Store(&raw)
	name := m.StableName
	c.stableName.Store(&name)
	if _, err := c.cfg.Caddy.Load(ctx, raw); err != nil {
		return err
	}
	return nil
}

func (c *Converger) forgetVersion() {
	c.verMu.Lock()
	c.ver = ""
	c.verMu.Unlock()
}

// ProbeN8N reports whether n8n is ready.
func (c *Converger) ProbeN8N(ctx context.Context) schema.ComponentHealth {
	if sw := c.switching.Load(); sw != nil && time.Since(sw.since) < MaxSwitchQuiet {
		// n8n is down on purpose while its version switches (and, on a
		// failure, while it is undone): not a fault for the watchdog to
		// reboot the droplet over mid-switch. A failed switch ends in a
		// rejection the heartbeat reports.
		return schema.ComponentHealth{OK: true, Detail: fmt.Sprintf("maintenance: n8n %s -> %s since %s", sw.from, sw.to, sw.since.UTC().Format(time.RFC3339))}
	}
	err := c.cfg.N8N.Ready(ctx)
	if err == nil {
		c.repairMu.Lock()
		c.n8nRepair.attempts, c.n8nRepair.next = 0, time.Time{}
		c.repairMu.Unlock()
		return schema.ComponentHealth{OK: true}
	}
	return c.repairN8N(ctx, err)
}

// ContainerState is a Runtime that can tell whether n8n's container runs
// (Compose); ProbeN8N repairs only through one.
type ContainerState interface {
	ContainerUp(ctx context.Context) (bool, error)
}

// repairN8N is ProbeN8N's local repair of a down n8n (its container
// crashed or was killed, and nothing brought it back): it starts n8n again
// through the runtime, at most once per backoff (RepairBackoff doubling,
// so a crash-looping n8n is not restarted in a tight loop), never while n8n
// is meant to be down (a hibernation stopped it). It reports what it did in the
// component's detail, which the heartbeat carries; while n8n stays down the
// droplet stays ACTIVE_DEGRADED, and past spec.watchdog.criticalAfter the
// watchdog's ladder (reboot, power cycle, rebuild) takes over.
func (c *Converger) repairN8N(ctx context.Context, down error) schema.ComponentHealth {
	cs, ok := c.cfg.Runtime.(ContainerState)
	// Not while n8n is down on purpose (a hibernation, a backup or a
	// restore), nor before it was ever set up here (a new droplet's n8n
	// starts with its first manifest; a rebuilt one's after its restore).
	if !ok || c.asleep.Load() || c.held.Load() > 0 || c.keyed.Load() == nil {
		return schema.ComponentHealth{OK: false, Detail: down.Error()}
	}
	// Only an exited container is started again: one that runs holds an
	// n8n starting up, or wedged (the watchdog's ladder, not a restart
	// loop here).
	up, err := cs.ContainerUp(ctx)
	switch {
	case err != nil:
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%v; its container's state is unknown: %v", down, err)}
	case up:
		return schema.ComponentHealth{OK: false, Detail: down.Error()}
	}
	rt := c.cfg.Runtime
	now := c.now()
	c.repairMu.Lock()
	if now.Before(c.n8nRepair.next) {
		st := c.n8nRepair
		c.repairMu.Unlock()
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%v; %d restarts failed, next at %s", down, st.attempts, st.next.UTC().Format(time.RFC3339))}
	}
	c.n8nRepair.attempts++
	base := cmp.Or(c.cfg.RepairBackoff, 30*time.Second)
	c.n8nRepair.next = now.Add(base << min(c.n8nRepair.attempts-1, 4))
	attempt := c.n8nRepair.attempts
	c.repairMu.Unlock()
	c.log.WarnContext(ctx, "n8n is down; starting it again", "err", down, "attempt", attempt)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.ReadyTimeout)
	defer cancel()
	if err := rt.Start(rctx); err != nil {
		c.log.ErrorContext(ctx, "restarting n8n failed", "err", err, "attempt", attempt)
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%v; restart %d failed: %v", down, attempt, err)}
	}
	c.repairMu.Lock()
	c.n8nRepair.attempts, c.n8nRepair.next = 0, time.Time{}
	c.n8nRepair.repairs++
	c.repairMu.Unlock()
	c.forgetVersion()
	c.log.InfoContext(ctx, "n8n started again", "attempt", attempt)
	return schema.ComponentHealth{OK: true, Detail: fmt.Sprintf("repaired: n8n was down (%v); started it again", down)}
}

// HoldRepairs keeps ProbeN8N from starting n8n until the returned release
// is called: the agent holds it while a backup or a restore has n8n
// stopped on purpose (starting it then would write into the data being
// copied or replaced).
func (c *Converger) HoldRepairs() (release func()) {
	c.held.Add(1)
	var once sync.Once
	return func() { once.Do(func() { c.held.Add(-1) }) }
}

// N8NRepairs is how many times ProbeN8N started a down n8n again.
func (c *Converger) N8NRepairs() int64 {
	c.repairMu.Lock()
	defer c.repairMu.Unlock()
	return c.n8nRepair.repairs
}

// ProbeCaddy reports whether Caddy runs the config the manifest asked for,
// and repairs it when Caddy lost it: a Caddy restarted with its initial
// config (a crash, the droplet's restart policy) answers on its admin API
// but routes nothing, while the client still remembers the digest it
// loaded and would never load it again. The probe compares the running
// config's digest with the wanted one and, when they differ, forgets the
// remembered one and loads the config again — a local repair, reported
// in the component's detail (the heartbeat carries it) and counted
// (CaddyRepairs).
func (c *Converger) ProbeCaddy(ctx context.Context) schema.ComponentHealth {
	running, err := c.cfg.Caddy.Running(ctx)
	if err != nil {
		return schema.ComponentHealth{OK: false, Detail: err.Error()}
	}
	want := c.caddyWant.Load()
	if want == nil {
		return schema.ComponentHealth{OK: true}
	}
	d, err := caddy.DigestOf(*want)
	if err != nil || d == running {
		return c.probeCertificate(ctx)
	}
	c.log.WarnContext(ctx, "caddy is not running the config the manifest asked for; loading it again", "running", string(running), "want", string(d))
	c.cfg.Caddy.Forget()
	if _, err := c.cfg.Caddy.Load(ctx, *want); err != nil {
		return schema.ComponentHealth{OK: false, Detail: "caddy lost its config and reloading it failed: " + err.Error()}
	}
	c.caddyRepairs.Add(1)
	return schema.ComponentHealth{OK: true, Detail: "repaired: caddy had lost its config; reloaded"}
}

// probeCertificate is ProbeCaddy's check that Caddy serves a certificate
// for the manifest's stable name: a TLS handshake with the name, on Caddy's
// HTTPS listener, must present a leaf that names it and is valid now. The
// handshake is also what makes Caddy get the certificate (on-demand TLS),
// so a new droplet asks its CA at once instead of at its first visitor's
// request. Until a handshake succeeds the component is down, which keeps a
// woken, rebuilt or resized droplet out of ACTIVE_HEALTHY (and so the
// activator from sending visitors to it) while its certificate is still
// being issued. Once seen, the name is not checked again: renewals are
// Caddy's, and the availability prober sees expiry from outside (a failed
// renewal must page, not walk the watchdog's reboot ladder). Whether the
// chain leads to a trusted root is the prober's check too; the ACME CA and
// Caddy's internal CA both pass here.
func (c *Converger) probeCertificate(ctx context.Context) schema.ComponentHealth {
	name := ""
	if p := c.stableName.Load(); p != nil {
		name = *p
	}
	if seen := c.certSeen.Load(); name == "" || (seen != nil && *seen == name) {
		return schema.ComponentHealth{OK: true}
	}
	port := c.cfg.CaddyConfig.HTTPSPort
	if port == 0 {
		port = caddy.DefaultHTTPSPort
	}
	addr := net.JoinHostPort(cmp.Or(c.cfg.CaddyConfig.BindHost, "127.0.0.1"), strconv.Itoa(port))
	if err := checkCertificate(ctx, addr, name, c.now); err != nil {
		return schema.ComponentHealth{OK: false, Detail: "no certificate for " + name + " yet: " + err.Error()}
	}
	c.certSeen.Store(&name)
	c.log.InfoContext(ctx, "caddy serves a certificate for the stable name", "name", name)
	return schema.ComponentHealth{OK: true}
}

// checkCertificate makes a TLS handshake with addr for name and checks the
// leaf certificate names it and is valid at now, read when the certificate
// arrives: the handshake itself can make Caddy get it, valid from that
// second on, after a time read before the handshake.
func checkCertificate(ctx context.Context, addr, name string, now func() time.Time) error {
	d := tls.Dialer{Config: &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: true, // the chain is not this check's (see probeCertificate)
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate presented")
			}
			leaf := cs.PeerCertificates[0]
			if err := leaf.VerifyHostname(name); err != nil {
				return err
			}
			if t := now(); t.Before(leaf.NotBefore) || t.After(leaf.NotAfter) {
				return fmt.Errorf("certificate valid %s to %s, not now", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			return nil
		},
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// CaddyRepairs is how many times ProbeCaddy reloaded a lost Caddy config.
func (c *Converger) CaddyRepairs() int64 { return c.caddyRepairs.Load() }

// LastActivity is when n8n's newest execution started: the zero time when
// there is none, or before n8n is bootstrapped (no API key yet).
func (c *Converger) LastActivity(ctx context.Context) (time.Time, error) {
	api := c.keyed.Load()
	if api == nil {
		return time.Time{}, nil
	}
	return api.LastExecution(ctx)
}

// N8NVersion is the version n8n itself reports: in the settings it gives
// the signed-in owner once bootstrapped (n8n 1.x hides it from anonymous
// callers), else anonymously. A result is reused for versionTTL.
func (c *Converger) N8NVersion(ctx context.Context) (string, error) {
	c.verMu.Lock()
	defer c.verMu.Unlock()
	if c.ver != "" && time.Since(c.verAt) < versionTTL {
		return c.ver, nil
	}
	var v string
	var err error
	if o := c.owner.Load(); o != nil {
		v, err = c.cfg.N8N.VersionAs(ctx, o.Email, o.Password)
	} else {
		v, err = c.cfg.N8N.Version(ctx)
	}
	if err != nil {
		return "", err
	}
	c.ver, c.verAt = v, time.Now()
	return v, nil
}
