package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/localfleet"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"

	"genesis.dev/fleet/internal/cliexit"
)

const demoUsage = `Usage: genesis-demo [run] [--state DIR] [--once] [--bin DIR] [--caddy PATH] [--workdir DIR]

Runs the local demo on the state repository in DIR (default state-example):

 1. validates it and prints the fleet it declares (id, state, region, size,
    monthly cost);
 2. starts a local fleet (package localfleet): a throwaway Postgres, the
    DigitalOcean simulator with the fleet's accounts and realistic boot and
    action delays, a local bare git repository initialised from DIR (its
    genesis.yaml with watchdog thresholds scaled for the demo: 6s, 12s,
    cooldown 30s), and the reconciler (in this process, wired as
    genesis-reconciler is) on it with a push webhook, a fresh
    manifest-signing key and the age identity in DIR/demo-keys/age.key;
    every droplet the simulator boots runs genesis-demo droplet (its disk is the droplet's
    simulated disk): an n8n emulator, a real Caddy (--caddy) and a real
    genesis-agent that enrolls with its one-time token, pulls and verifies
    its signed manifest, converges n8n (credentials opened with the
    droplet's own age identity, workflows created and activated) and Caddy
    (the tenant's domains routed to n8n) and sends heartbeats;
 3. shows, live, each tenant moving through the lifecycle states, and a
    progress line (tenants per state, manifests applied/issued, heartbeats
    of the last minute) until every running tenant is ACTIVE_HEALTHY;
 4. plays a short story, each step with what happened and how long it took:
    commit a new tenant, change a tenant's domain (its agent applies the new
    manifest; Caddy routes the new domain to n8n and no longer the old one),
    hibernate one (snapshot, then destroy), wake it through the state API
    (a JSON merge patch with the demo's token becomes a commit; new droplet
    from the snapshot; its correlation id is in every log line of the
    change), kill one droplet's agent (the watchdog: degraded, critical,
    reboot, healthy again), remove a tenant file (orphan reported, nothing
    destroyed), offboard one with state: absent;
 5. prints the fleet and the URLs of /metrics and /v1/fleet, and keeps
    everything running until Ctrl-C, then stops every process it started
    and checks that none is left.

--once exits after the story with status 0, or 1 if a step failed (for CI).
The droplets' binaries (genesis-demo, genesis-agent) are taken from --bin
(default: beside this genesis-demo binary; make demo builds them into bin/);
Caddy from --caddy (make caddy builds it).`

func runDemo(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("demo", demoUsage)
	dir := fs.String("state", "state-example", "state repository to run the demo on")
	once := fs.Bool("once", false, "run the story once and exit (for CI)")
	bin := fs.String("bin", "", "directory holding genesis-demo and genesis-agent, which droplets run (default: beside this binary)")
	heartbeat := fs.Duration("heartbeat", 2*time.Second, "agents' heartbeat interval (the demo's watchdog calls a droplet degraded after 6s without one)")
	work := fs.String("workdir", "", "directory for the demo's files (default: a temporary one, removed at exit)")
	boot := fs.Duration("boot-delay", 3*time.Second, "simulated droplet boot time")
	action := fs.Duration("action-delay", 2*time.Second, "simulated DigitalOcean action time (power off, snapshot)")
	timeout := fs.Duration("step-timeout", 4*time.Minute, "how long one step may take before the demo gives up")
	caddyBin := fs.String("caddy", filepath.Join(".cache", "caddy", "v2.11.9", "caddy"), "the Caddy `binary` every simulated droplet runs (make caddy builds it)")
	weedBin := fs.String("weed", "", "SeaweedFS's weed `binary` (make weed builds it): backups go to it as S3 storage and the story rebuilds a droplet from its backup; none: no backups")
	pebbleBin := fs.String("pebble", "", "Pebble's `binary` (make pebble builds it): tenants get stable names ("+demoZone+", served over DNS on loopback), certificates come from Pebble over ACME, and a click on a hibernated tenant's link wakes it through the activator; none: no stable names")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cliexit.Usage("demo takes no arguments, got %q", pos)
	}
	if fi, err := os.Stat(*dir); err != nil || !fi.IsDir() {
		return cliexit.Usage("--state %s: not a directory", *dir)
	}
	repo := schema.LoadDir(os.DirFS(*dir))
	fmt.Fprintf(e.Stdout, "== Genesis demo on %s\n\n", *dir)
	if len(repo.Errors) > 0 {
		for _, er := range repo.Errors {
			fmt.Fprintln(e.Stderr, er.Error())
		}
		return fmt.Errorf("the state repository %s is invalid (%d errors)", *dir, len(repo.Errors))
	}
	printDeclared(e.Stdout, repo)
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(exe)
	}
	for _, b := range []string{"genesis-demo", "genesis-agent"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build, or give --bin)", b, *bin)
		}
	}
	if fi, err := os.Stat(*caddyBin); err != nil || fi.IsDir() {
		return fmt.Errorf("caddy not found at %s (run make caddy, or give --caddy)", *caddyBin)
	}
	caddyAbs, err := filepath.Abs(*caddyBin)
	if err != nil {
		return err
	}
	if *weedBin != "" {
		if fi, err := os.Stat(*weedBin); err != nil || fi.IsDir() {
			return fmt.Errorf("weed not found at %s (run make weed, or give --weed)", *weedBin)
		}
	}
	if *pebbleBin != "" {
		if fi, err := os.Stat(*pebbleBin); err != nil || fi.IsDir() {
			return fmt.Errorf("pebble not found at %s (run make pebble, or give --pebble)", *pebbleBin)
		}
	}
	d := &demo{e: e, bin: *bin, caddy: caddyAbs, weed: *weedBin, pebble: *pebbleBin, stateSrc: *dir, fleet: repo.Fleet, boot: *boot, action: *action, timeout: *timeout,
		heartbeat: *heartbeat, start: time.Now(), tty: isTerminal(e.Stdout)}
	if *work == "" {
		tmp, err := os.MkdirTemp("", "genesis-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*work = tmp
	}
	d.work = *work
	err = d.up(ctx)
	if err == nil {
		err = d.story(ctx)
	}
	if err == nil && !*once {
		fmt.Fprintf(e.Stdout, "\nEverything keeps running; press Ctrl-C to stop and clean up.\n")
		<-ctx.Done()
	}
	return errors.Join(err, d.cleanUp())
}

// cleanUp stops everything and checks that no process the demo (or a
// droplet) started is left.
func (d *demo) cleanUp() error {
	fmt.Fprintln(d.e.Stdout)
	d.say("stopping every process the demo started")
	d.stop()
	alive, n, err := localfleet.Leftovers(d.pidLog())
	if err != nil {
		return err
	}
	if len(alive) > 0 {
		return fmt.Errorf("processes left running: %s", strings.Join(alive, "; "))
	}
	d.say("all %d processes the demo and its droplets started are gone", n)
	return nil
}

func printDeclared(w io.Writer, repo *schema.Repo) {
	fmt.Fprintf(w, "validated: %d tenants, %d templates, %d accounts in regions %v\n\n",
		len(repo.Tenants), len(repo.Templates), len(repo.Fleet.Spec.Accounts), repo.Fleet.Regions())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tTIER\tSTATE\tREGION\tSIZE\tN8N\tDOMAINS\tMONTHLY")
	var total float64
	for _, id := range repo.IDs() {
		t := repo.Tenants[id]
		size := t.Size(repo.Fleet)
		cost := 0.0
		if t.Spec.State == schema.StateRunning {
			cost = repo.Fleet.MonthlyUSD(size)
		}
		total += cost
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t$%.2f\n", id, t.Metadata.Tier, t.Spec.State,
			t.Spec.Droplet.Region, size, t.N8NVersion(repo.Fleet), len(t.Spec.Domains), cost)
	}
	fmt.Fprintf(tw, "\t\t\t\t\t\t\t$%.2f\n", total)
	tw.Flush()
	fmt.Fprintln(w)
}

// demo is the running demo: the processes it started and where.
type demo struct {
	e            cliexit.Env
	bin, work    string
	caddy        string
	weed         string // SeaweedFS for backups ("": none)
	pebble       string // Pebble for stable names and ACME ("": none)
	tty          bool
	shown        bool // a progress line is on the terminal's last line
	lastProgress time.Time
	lastLine     string
	beats        beatWindow
	stateSrc     string
	fleet        *schema.Fleet
	boot, action time.Duration
	heartbeat    time.Duration
	timeout      time.Duration
	start        time.Time
	local        *localfleet.Fleet
	repo, api    string
	secret       string
	// bare is the shared state repository the reconciler reads and the
	// state API pushes to; repo is the demo's working clone of it.
	bare   string
	token  string         // the demo's API token (scope admin); only its hash is configured
	client *client.Client // the admin API with the demo's token
	seen   map[string]string
}

func (d *demo) say(format string, args ...any) {
	if d.shown {
		fmt.Fprint(d.e.Stdout, "\r\033[K")
		d.shown = false
	}
	fmt.Fprintf(d.e.Stdout, "[%6.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) up(ctx context.Context) error {
	// What every simulated droplet boots: n8n (the emulator), Caddy and the
	// agent, converging for real; cloud-init's user data and the droplet's
	// id, address and disk come from the simulator's hook variables.
	bootCmd := fmt.Sprintf("exec %s droplet --caddy-bin %s --agent-bin %s --pid-log %s -- --heartbeat-interval %s --poll-wait 20s --log-format json --backup-first-within 2s",
		shellQuote(filepath.Join(d.bin, "genesis-demo")), shellQuote(d.caddy), shellQuote(filepath.Join(d.bin, "genesis-agent")),
		shellQuote(d.pidLog()), d.heartbeat)
	if d.weed != "" {
		// With backups, n8n runs the way it does on a droplet: through
		// docker compose (the docker emulator), so the agent switches its
		// version with a backup, a verification and an undo.
		bootCmd = strings.Replace(bootCmd, " -- ", " --n8n-runtime compose -- ", 1)
	}
	d.repo = filepath.Join(d.work, "state")
	if err := copyTree(d.stateSrc, d.repo); err != nil {
		return err
	}
	if err := demoWatchdog(filepath.Join(d.repo, "genesis.yaml")); err != nil {
		return err
	}
	if err := demoRolloutTimes(filepath.Join(d.repo, "genesis.yaml")); err != nil {
		return err
	}
	if d.pebble != "" {
		if err := demoDNS(filepath.Join(d.repo, "genesis.yaml")); err != nil {
			return err
		}
	}
	if err := d.git("init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := d.commit("import " + d.stateSrc); err != nil {
		return err
	}
	// The reconciler (and its state API) work on a bare repository; the
	// demo edits a clone and pushes, as an admin would.
	d.bare = filepath.Join(d.work, "state.git")
	if out, err := exec.Command("git", "clone", "-q", "--bare", d.repo, d.bare).CombinedOutput(); err != nil {
		return fmt.Errorf("git clone --bare: %v: %s", err, out)
	}
	if err := d.git("remote", "add", "origin", d.bare); err != nil {
		return err
	}
	d.say("state repository: %s (bare, branch main; the demo's clone: %s)", d.bare, d.repo)
	tokensFile, err := d.writeToken()
	if err != nil {
		return err
	}
	d.say("API token (scope admin): %s (curl -H \"Authorization: Bearer $(cat %s)\" .../v1/tenants)",
		filepath.Join(d.work, "api-token"), filepath.Join(d.work, "api-token"))
	d.secret = "demo-webhook-secret"
	ageKey := filepath.Join(d.stateSrc, "demo-keys", "age.key")
	if _, err := os.Stat(ageKey); err != nil {
		return fmt.Errorf("the demo opens sealed credentials with %s: %w", ageKey, err)
	}
	d.say("starting a throwaway Postgres, the DigitalOcean simulator with %d accounts (boot %s, actions %s) and the reconciler",
		len(d.fleet.Spec.Accounts), d.boot, d.action)
	if d.local, err = localfleet.Start(ctx, localfleet.Options{StateRepo: "file://" + d.bare, Accounts: d.fleet.Spec.Accounts, Work: d.work,
		AgeIdentity: ageKey, TokensFile: tokensFile, WebhookSecret: d.secret, BootDelay: d.boot, ActionDelay: d.action,
		BootCmd: bootCmd, HookGrace: 2 * time.Second, WeedBin: d.weed, Names: d.namesOptions()}); err != nil {
		return err
	}
	if err := d.namesUp(ctx); err != nil {
		return err
	}
	d.say("manifest-signing key: %s (new); credentials open with %s (demo only)", d.local.SigningKey, ageKey)
	d.api = strings.TrimSuffix(d.local.URL, "/")
	d.client = client.New(d.api, d.token, nil)
	d.say("reconciler API at %s", d.api)
	if b := d.local.Backup; b != nil {
		d.say("backups: a real S3 server (SeaweedFS) at %s, bucket %s; the reconciler's backup key %s", b.Spec.Storage.Endpoint, b.Spec.Storage.Bucket, b.KeyFile)
		if err := d.declareBackups(ctx, b.Spec); err != nil {
			return err
		}
	}
	fmt.Fprintln(d.e.Stdout)
	var want []string
	repo := schema.LoadDir(os.DirFS(d.repo))
	if len(repo.Errors) > 0 {
		return fmt.Errorf("the demo's state repository: %v", repo.Errors[0])
	}
	for _, id := range repo.IDs() {
		if repo.Tenants[id].Spec.State == schema.StateRunning {
			want = append(want, id)
		}
	}
	d.say("onboarding the fleet: %d running tenants", len(want))
	took, err := d.waitStates(ctx, func(f api.Fleet) bool {
		for _, id := range want {
			if !booted(tenantIn(f, id).Lifecycle) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("onboarding: %w", err)
	}
	d.say("all %d running tenants ACTIVE_HEALTHY in %.1fs: agents enrolled, verified and applied their signed manifests", len(want), took.Seconds())
	return nil
}

// booted reports a droplet whose agent has applied its current manifest.
func booted(state string) bool { return state == string(lifecycle.ActiveHealthy) }

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// storyStep is one step of the story: run does it and waits until it
// happened, and returns what happened (printed with how long it took).
type storyStep struct {
	title string
	run   func(ctx context.Context) (string, error)
}

// commitStep is a step that edits the state repository, commits, sends the
// push webhook and waits until done holds.
func (d *demo) commitStep(title string, edit func() error, done func(api.Fleet) bool) storyStep {
	return storyStep{title: title, run: func(ctx context.Context) (string, error) {
		if err := d.commitAndHook(ctx, title, edit); err != nil {
			return "", err
		}
		_, err := d.waitStates(ctx, done)
		return "", err
	}}
}

func (d *demo) story(ctx context.Context) error {
	fmt.Fprintf(d.e.Stdout, "\n== The story\n\n")
	running := d.runningTenants()
	if len(running) < 2 {
		return fmt.Errorf("the story needs two running tenants in %s, found %d", d.stateSrc, len(running))
	}
	// The kill-agent step's tenant: one the other steps leave alone.
	victim := running[len(running)-1]
	steps := []storyStep{
		d.commitStep("commit a new tenant ws-demo (running in nyc1)",
			func() error { return d.writeTenant("ws-demo", schema.StateRunning, "nyc1") },
			func(f api.Fleet) bool { return booted(tenantIn(f, "ws-demo").Lifecycle) }),
		{title: "change a domain of " + running[0] + " (its agent applies the new manifest; Caddy routes it)",
			run: func(ctx context.Context) (string, error) { return d.changeDomain(ctx, running[0]) }},
		d.commitStep("hibernate ws-demo (state: hibernated → snapshot, then destroy)",
			func() error { return d.writeTenant("ws-demo", schema.StateHibernated, "nyc1") },
			func(f api.Fleet) bool { return tenantIn(f, "ws-demo").Lifecycle == string(lifecycle.Hibernated) }),
		{title: "wake ws-demo through the API (PATCH state: running → a commit → new droplet from its snapshot)",
			run: func(ctx context.Context) (string, error) { return d.wakeThroughAPI(ctx, "ws-demo") }},
		{title: "a stranger and a forged patch are refused (no token: 401; a field name carrying a commit trailer: 400, nothing committed)",
			run: func(ctx context.Context) (string, error) { return d.strangers(ctx, "ws-demo") }},
		{title: "kill the agent of " + victim + " (silent → degraded → critical → reboot → healthy)",
			run: func(ctx context.Context) (string, error) { return d.silence(ctx, victim) }},
		{title: "an operator snapshots " + victim + " now (genesis action snapshot: a live snapshot, journaled; the tenant stays healthy) and reads its health detail",
			run: func(ctx context.Context) (string, error) { return d.operatorSnapshot(ctx, victim) }},
	}
	if d.local.Names != nil {
		steps = append(steps, storyStep{title: "a click on a hibernated tenant's link wakes it (ws-demo hibernated as if idle; " + demoCustomerName + " → its stable name → the activator → wake → its n8n answers)",
			run: func(ctx context.Context) (string, error) { return d.clickWakes(ctx, "ws-demo") }})
	}
	if d.local.Backup != nil {
		steps = append(steps, d.rolloutSteps()...)
		steps = append(steps, storyStep{title: "break the droplet of " + running[0] + " for good (the watchdog rebuilds it from its newest backup; the dead one is snapshotted before it goes)",
			run: func(ctx context.Context) (string, error) { return d.rebuildFromBackup(ctx, running[0]) }})
	}
	steps = append(steps, []storyStep{
		d.commitStep("remove the file of ws-stark (orphan reported, nothing destroyed; the table says desired undeclared, ORPHANED)",
			func() error { return os.Remove(filepath.Join(d.repo, "tenants", "ws-stark.yaml")) },
			func(f api.Fleet) bool {
				if tenantIn(f, "ws-stark").Lifecycle != string(lifecycle.Orphaned) {
					return false
				}
				for _, o := range f.Orphans {
					if o.Workspace == "ws-stark" && o.Droplet != "" {
						return true
					}
				}
				return false
			}),
		d.commitStep("offboard ws-demo (state: absent → droplet destroyed)",
			func() error { return d.writeTenant("ws-demo", schema.StateAbsent, "nyc1") },
			func(f api.Fleet) bool { return tenantIn(f, "ws-demo").Lifecycle == string(lifecycle.Destroyed) }),
	}...)
	for i, s := range steps {
		d.say("step %d: %s", i+1, s.title)
		start := time.Now()
		what, err := s.run(ctx)
		if err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s.title, err)
		}
		for _, line := range strings.Split(what, "\n") {
			if line != "" {
				d.say("  %s", line)
			}
		}
		d.say("step %d done in %.1fs", i+1, time.Since(start).Seconds())
	}
	f, err := d.fleetNow(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.e.Stdout, "\n== The fleet\n\n")
	tw := tabwriter.NewWriter(d.e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tDESIRED\tLIFECYCLE\tDROPLET\tACCOUNT\tIP\tMANIFEST\tHEARTBEAT\tSNAPSHOT\tRECOVERY POINT")
	now := time.Now()
	for _, t := range f.Tenants {
		manifest, beat := "-", "-"
		if t.ManifestIssued > 0 {
			manifest = fmt.Sprintf("%d/%d", t.ManifestApplied, t.ManifestIssued)
		}
		if !t.LastHeartbeat.IsZero() {
			beat = fmt.Sprintf("%.0fs ago", now.Sub(t.LastHeartbeat).Seconds())
		}
		recovery := "-"
		if rp := t.RecoveryPoint; rp != nil && rp.Kind != "" {
			recovery = fmt.Sprintf("%s %.0fs ago", rp.Kind, now.Sub(rp.At).Seconds())
			if rp.Stale {
				recovery += " (stale)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Workspace, dashS(t.Desired), t.Lifecycle, dashS(t.DropletName),
			dashS(t.Account), dashS(t.IP), manifest, beat, dashS(t.SnapshotID), recovery)
	}
	tw.Flush()
	for _, o := range f.Orphans {
		fmt.Fprintf(d.e.Stdout, "orphan: %s %s in %s: %s\n", o.Workspace, o.Droplet, o.Account, o.Reason)
	}
	fmt.Fprintf(d.e.Stdout, "\nFleet:   %s/v1/fleet\nMetrics: %s/metrics\nLogs:    %s\n", d.api, d.api, d.work)
	return nil
}

// runningTenants lists the tenants of the demo's repository that declare
// state: running, by id.
func (d *demo) runningTenants() []string {
	repo := schema.LoadDir(os.DirFS(d.repo))
	var out []string
	for _, id := range repo.IDs() {
		if repo.Tenants[id].Spec.State == schema.StateRunning {
			out = append(out, id)
		}
	}
	return out
}

// changeDomain replaces the first domain of a running tenant with a new
// one in git, waits until its agent applied the new manifest, and checks
// through the droplet's Caddy that the new domain reaches n8n and the old
// one no longer does.
func (d *demo) changeDomain(ctx context.Context, id string) (string, error) {
	repo := schema.LoadDir(os.DirFS(d.repo))
	t := repo.Tenants[id]
	if t == nil || len(t.Spec.Domains) == 0 {
		return "", fmt.Errorf("%s declares no domain to change", id)
	}
	old := t.Spec.Domains[0]
	renamed := "new-" + old
	row, info, err := d.dropletOf(ctx, id)
	if err != nil {
		return "", err
	}
	roots, err := d.issuerRoots()
	if err != nil {
		return "", err
	}
	before := request(ctx, info, old, roots)
	if !before.routed() {
		return "", fmt.Errorf("before the change, https://%s on droplet %d: %s", old, row.DropletID, before)
	}
	path := filepath.Join(d.repo, "tenants", id+".yaml")
	edit := func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		changed := strings.Replace(string(data), "- "+old+"\n", "- "+renamed+"\n", 1)
		if changed == string(data) {
			return fmt.Errorf("%s: no line \"- %s\" to change", path, old)
		}
		return os.WriteFile(path, []byte(changed), 0o644)
	}
	start := time.Now()
	if err := d.commitAndHook(ctx, "change a domain of "+id+": "+old+" → "+renamed, edit); err != nil {
		return "", err
	}
	var now api.FleetTenant
	if _, err := d.waitStates(ctx, func(f api.Fleet) bool {
		now = tenantIn(f, id)
		return now.ManifestIssued > row.ManifestIssued && now.ManifestApplied >= now.ManifestIssued && booted(now.Lifecycle)
	}); err != nil {
		return "", err
	}
	applied := time.Since(start)
	after, gone := request(ctx, info, renamed, roots), request(ctx, info, old, roots)
	if !after.routed() {
		return "", fmt.Errorf("https://%s on droplet %d: %s", renamed, row.DropletID, after)
	}
	if gone.routed() {
		return "", fmt.Errorf("https://%s on droplet %d still reaches n8n: %s", old, row.DropletID, gone)
	}
	caddyAt := net.JoinHostPort(info.IP, strconv.Itoa(info.HTTPSPort))
	return fmt.Sprintf("before: https://%s via Caddy %s → %s\n"+
		"committed %s → %s; manifest v%d issued and applied by the agent of droplet %d in %.1fs\n"+
		"after:  https://%s via Caddy %s → %s (domain routed: true)\n"+
		"after:  https://%s via Caddy %s → %s (domain routed: false)",
		old, caddyAt, before, old, renamed, now.ManifestIssued, row.DropletID, applied.Seconds(),
		renamed, caddyAt, after, old, caddyAt, gone), nil
}

// silence kills the agent of a tenant's droplet and follows the watchdog:
// no heartbeat for degradedAfter → ACTIVE_DEGRADED, for criticalAfter →
// ACTIVE_CRITICAL, then a reboot (REBOOTING; the simulator restarts the
// droplet's boot command, so a new agent starts from the droplet's disk)
// and the agent's heartbeat → ACTIVE_HEALTHY.
func (d *demo) silence(ctx context.Context, id string) (string, error) {
	info, err := d.killAgent(ctx, id)
	if err != nil {
		return "", err
	}
	killed := time.Now()
	// A droplet back from its reboot may report a component still
	// starting (degraded) in its first heartbeat, before healthy.
	want := lifecycle.Strings([]lifecycle.State{lifecycle.ActiveDegraded, lifecycle.ActiveCritical, lifecycle.Rebooting, lifecycle.ActiveDegraded, lifecycle.ActiveHealthy})
	var seen []string
	at := map[string]time.Duration{}
	if _, err := d.waitStates(ctx, func(f api.Fleet) bool {
		st := tenantIn(f, id).Lifecycle
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
			// (Not the healthy state it was in when the agent died.)
			if _, ok := at[st]; !ok && len(seen) > 1 {
				at[st] = time.Since(killed)
			}
		}
		return booted(st) && len(seen) > 1
	}); err != nil {
		return "", err
	}
	// After the healthy state it started in, the states must come in the
	// ladder's order (a poll may miss a short-lived one, never reorder
	// them); degraded and critical must both be seen.
	for len(seen) > 0 && booted(seen[0]) {
		seen = seen[1:]
	}
	next := 0
	ordered := true
	for _, st := range seen {
		i := slices.Index(want[next:], st)
		if i < 0 {
			ordered = false
			break
		}
		next += i + 1
	}
	if _, ok := at[string(lifecycle.ActiveCritical)]; !ok || !ordered || !slices.Contains(seen, string(lifecycle.ActiveDegraded)) {
		return "", fmt.Errorf("lifecycle of %s after its agent was killed: %v, want %v in order", id, seen, want)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "killed genesis-agent (pid %d) on droplet %s; n8n and Caddy keep running\n", info.AgentPID, info.DropletID)
	printed := map[string]bool{}
	for _, st := range want {
		if t, ok := at[st]; ok && !printed[st] {
			printed[st] = true
			fmt.Fprintf(&b, "%-16s after %.1fs\n", st, t.Seconds())
		}
	}
	fmt.Fprintf(&b, "(the watchdog rebooted droplet %s; a new agent on the same disk sends heartbeats again)", info.DropletID)
	return b.String(), nil
}

func dashS(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// tenantIn is tenant id of f: a zero row (no lifecycle, no droplet) while
// the fleet does not list it.
func tenantIn(f api.Fleet, id string) api.FleetTenant {
	t, _ := f.Tenant(id)
	return t
}

// generation is the number in the deterministic name of t's droplet
// (genesis-<id>-<n>): a woken tenant's droplet has a higher one.
func generation(t api.FleetTenant) int { return plan.ParseGeneration(t.Workspace, t.DropletName) }

func (d *demo) fleetNow(ctx context.Context) (api.Fleet, error) { return d.client.Fleet(ctx) }

// waitStates polls the fleet, printing every lifecycle change, until done.
func (d *demo) waitStates(ctx context.Context, done func(api.Fleet) bool) (time.Duration, error) {
	start := time.Now()
	if d.seen == nil {
		d.seen = map[string]string{}
	}
	for {
		f, err := d.fleetNow(ctx)
		if err == nil {
			var ids []string
			for _, t := range f.Tenants {
				ids = append(ids, t.Workspace)
			}
			sort.Strings(ids)
			for _, id := range ids {
				st := tenantIn(f, id).Lifecycle
				if prev, ok := d.seen[id]; !ok || prev != st {
					if ok {
						d.say("  %-12s %s → %s", id, prev, st)
					} else {
						d.say("  %-12s %s", id, st)
					}
					d.seen[id] = st
				}
			}
			if done(f) {
				// The line as it ends (e.g. every manifest applied).
				d.progress(ctx, f, true)
				return time.Since(start), nil
			}
			d.progress(ctx, f, false)
		}
		if time.Since(start) > d.timeout {
			return 0, fmt.Errorf("not done after %s (see the logs in %s)", d.timeout, d.work)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// progress shows the progress line: redrawn in place on a terminal, else
// printed every few seconds (or now, with force) when it changed.
func (d *demo) progress(ctx context.Context, f api.Fleet, force bool) {
	now := time.Now()
	every := 2 * time.Second
	if d.tty {
		every = time.Second
	}
	if !force && now.Sub(d.lastProgress) < every {
		return
	}
	d.lastProgress = now
	beats := 0
	if n, ok := d.heartbeatsTotal(ctx); ok {
		beats = d.beats.add(now, n)
	}
	line := progressLine(f, beats, now)
	switch {
	case d.tty:
		fmt.Fprintf(d.e.Stdout, "\r\033[K[%6.1fs] %s", time.Since(d.start).Seconds(), line)
		d.shown = true
	case line != d.lastLine:
		d.say("%s", line)
	}
	d.lastLine = line
}

// heartbeatsTotal reads the reconciler's count of heartbeats written.
func (d *demo) heartbeatsTotal(ctx context.Context) (float64, bool) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.api+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, false
	}
	return counterValue(string(body), "genesis_heartbeats_total", `result="written"`)
}

// isTerminal reports whether w is a terminal (the progress line is then
// redrawn in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// demoWatchdog rewrites the watchdog thresholds of the demo's copy of
// genesis.yaml to seconds (degraded 6s, critical 12s, cooldown 30s: the
// time a rebuilt droplet gets to boot, restore its backup and report
// healthy), so a
// silent droplet is noticed and rebooted while the demo watches. Only the
// lines of the spec.watchdog block (two-space indented) are touched; the
// result is validated with the rest of the repository.
func demoWatchdog(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.SplitAfter(string(data), "\n")
	want := []string{"degradedAfter: 6s", "criticalAfter: 12s", "cooldown: 30s"}
	block := slices.Index(lines, "  watchdog:\n")
	if block < 0 {
		spec := slices.Index(lines, "spec:\n")
		if spec < 0 {
			return fmt.Errorf("%s: no top-level spec: to add the demo's watchdog to", path)
		}
		lines = slices.Insert(lines, spec+1, "  watchdog:\n")
		block = spec + 1
	}
	end := block + 1
	for end < len(lines) && (strings.HasPrefix(lines[end], "   ") || strings.TrimSpace(lines[end]) == "") {
		end++
	}
	for _, kv := range want {
		key := kv[:strings.IndexByte(kv, ':')+1]
		i := slices.IndexFunc(lines[block+1:end], func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), key) })
		if i >= 0 {
			lines[block+1+i] = "    " + kv + "\n"
		} else {
			lines = slices.Insert(lines, block+1, "    "+kv+"\n")
			end++
		}
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
}

// commitAndHook edits the state repository, commits, and sends the push
// webhook.
func (d *demo) commitAndHook(ctx context.Context, msg string, edit func() error) error {
	// Changes made through the API since are on the bare repository.
	if err := d.git("pull", "-q", "--rebase", "origin", "main"); err != nil {
		return err
	}
	if err := edit(); err != nil {
		return err
	}
	if err := d.commit(msg); err != nil {
		return err
	}
	if err := d.git("push", "-q", "origin", "HEAD:main"); err != nil {
		return err
	}
	return d.hook(ctx)
}

// writeToken makes the demo's API token and the tokens file holding only
// its hash.
func (d *demo) writeToken() (string, error) {
	tok, err := auth.NewToken()
	if err != nil {
		return "", err
	}
	d.token = tok
	line, err := json.Marshal(map[string]any{"name": "demo-dashboard", "sha256": auth.Hash(tok), "scopes": []string{"admin"}})
	if err != nil {
		return "", err
	}
	// The token itself, for a person to call the API while the demo runs
	// (never printed or logged).
	if err := os.WriteFile(filepath.Join(d.work, "api-token"), []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	path := filepath.Join(d.work, "tokens.jsonl")
	return path, os.WriteFile(path, append(line, '\n'), 0o600)
}

// strangers shows what a caller without a token and a dashboard sending a
// hostile patch get: refusals that name the problem, and no commit.
func (d *demo) strangers(ctx context.Context, id string) (string, error) {
	var out []string
	stranger := client.New(d.api, "", nil)
	for _, r := range []struct {
		call string
		do   func() error
	}{
		{"GET /v1/fleet", func() error { _, err := stranger.Fleet(ctx); return err }},
		{"POST /v1/tenants/" + id + "/wake", func() error { _, err := stranger.Wake(ctx, id); return err }},
	} {
		if _, err := refusal(r.do(), http.StatusUnauthorized); err != nil {
			return "", fmt.Errorf("%s without a token: %w", r.call, err)
		}
		out = append(out, fmt.Sprintf("%s without a token → 401", r.call))
	}
	head := func() (string, error) {
		b, err := exec.CommandContext(ctx, "git", "-C", d.bare, "rev-parse", "main").Output()
		return strings.TrimSpace(string(b)), err
	}
	before, err := head()
	if err != nil {
		return "", err
	}
	// No If-Match either: the field name is refused before anything else.
	_, err = d.client.PatchTenant(ctx, id, "", []byte(`{"spec":{"state":"running"},"x\n\nSigned-off-by: Mallory <m@example.com>":null}`), "")
	refused, err := refusal(err, http.StatusBadRequest)
	if err != nil {
		return "", fmt.Errorf("hostile patch: %w", err)
	}
	after, err := head()
	if err != nil {
		return "", err
	}
	if before != after {
		return "", fmt.Errorf("hostile patch refused, but the branch head moved: %s → %s", before, after)
	}
	out = append(out, fmt.Sprintf("PATCH with a field name carrying a Signed-off-by trailer → 400 %q; branch head unchanged (%s)", refused.Problem.Detail, before[:12]))
	return strings.Join(out, "\n"), nil
}

// refusal is the *client.Error of an API call refused with status, or an
// error saying what the call got instead.
func refusal(err error, status int) (*client.Error, error) {
	var e *client.Error
	switch {
	case err == nil:
		return nil, fmt.Errorf("accepted, want %d", status)
	case !errors.As(err, &e):
		return nil, err
	case e.StatusCode != status:
		return nil, fmt.Errorf("%w, want %d", err, status)
	}
	return e, nil
}

// wakeThroughAPI wakes a hibernated tenant as the dashboard does: the
// state API turns a JSON merge patch into a commit (git stays the source
// of truth), which the reconciler plans from at once.
func (d *demo) wakeThroughAPI(ctx context.Context, id string) (string, error) {
	t, err := d.client.Tenant(ctx, id)
	if err != nil {
		return "", err
	}
	const corr = "demo-wake-1"
	res, err := d.client.PatchTenant(ctx, id, t.ETag, []byte(`{"spec":{"state":"running"}}`), corr)
	if err != nil {
		return "", err
	}
	if len(res.Commit) < 12 {
		return "", fmt.Errorf("PATCH /v1/tenants/%s: commit %q", id, res.Commit)
	}
	took, err := d.waitStates(ctx, func(f api.Fleet) bool { return booted(tenantIn(f, id).Lifecycle) && generation(tenantIn(f, id)) >= 2 })
	if err != nil {
		return "", err
	}
	f, _ := d.fleetNow(ctx)
	return fmt.Sprintf("PATCH /v1/tenants/%s {\"spec\":{\"state\":\"running\"}} (If-Match %s) → commit %s by demo-dashboard, correlation id %s\n"+
		"woken from its snapshot onto droplet %s in %.1fs (grep %s in the logs shows the plan, the wake, the manifest and the heartbeat)",
		id, client.EntityTag(t.ETag), res.Commit[:12], corr, tenantIn(f, id).DropletName, took.Seconds(), corr), nil
}

func (d *demo) writeTenant(id string, state schema.State, region string) error {
	body := fmt.Sprintf("# yaml-language-server: $schema=../../schema/tenant.schema.json\napiVersion: genesis.dev/v1\nkind: Tenant\nmetadata:\n  id: %s\n  name: Demo Inc\n  tier: pro\nspec:\n  state: %s\n  droplet: {region: %s}\n", id, state, region)
	if d.pebble != "" && id == "ws-demo" {
		// The tracking domain its customer CNAMEd to the stable name.
		body += "  domains: [" + demoCustomerName + "]\n"
	}
	return os.WriteFile(filepath.Join(d.repo, "tenants", id+".yaml"), []byte(body), 0o644)
}

func (d *demo) git(args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", d.repo, "-c", "user.name=Genesis demo", "-c", "user.email=demo@genesis.invalid"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", args[0], err, out)
	}
	return nil
}

func (d *demo) commit(msg string) error {
	if err := d.git("add", "-A"); err != nil {
		return err
	}
	return d.git("commit", "-q", "-m", msg)
}

// hook posts a signed push webhook so the reconciler fetches at once.
func (d *demo) hook(ctx context.Context) error {
	body := []byte(`{"ref":"refs/heads/main"}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.api+"/hooks/git", bytes.NewReader(body))
	req.Header.Set(tenants.SignatureHeader, tenants.Sign([]byte(d.secret), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("webhook: %s", resp.Status)
	}
	return nil
}

// stop stops the local fleet: the reconciler, the simulator with every
// droplet's boot command, and Postgres.
func (d *demo) stop() {
	if d.local != nil {
		if err := d.local.Stop(); err != nil {
			d.say("stopping the local fleet: %v", err)
		}
	}
}

// copyTree copies the files of src into dst (no symlinks, no .git).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if de.IsDir() {
			if de.Name() == ".git" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !de.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
}
