package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

const demoUsage = `Usage: genesis demo [--state DIR] [--once] [--bin DIR] [--workdir DIR]

Runs the local demo on the state repository in DIR (default state-example):

 1. validates it and prints the fleet it declares (id, state, region, size,
    monthly cost);
 2. starts a throwaway Postgres, the DigitalOcean simulator (genesis-dosim)
    with the fleet's accounts and realistic boot and action delays, a local
    git repository initialised from DIR, and genesis-reconciler on it with a
    push webhook, a fresh manifest-signing key and the age identity in
    DIR/demo-keys/age.key; every droplet the simulator boots runs a real
    genesis-agent (its disk is the droplet's simulated disk), which enrolls
    with its one-time token, pulls and verifies its signed manifest and sends
    heartbeats;
 3. shows, live, each tenant moving through the lifecycle states until every
    running tenant is ACTIVE_HEALTHY (its agent applied its manifest);
 4. plays a short story, each step with what happened and how long it took:
    commit a new tenant, hibernate one (snapshot, then destroy), wake it
    (new droplet from the snapshot), remove a tenant file (orphan reported,
    nothing destroyed), offboard one with state: absent;
 5. prints the fleet and the URLs of /metrics and /v1/fleet, and keeps
    everything running until Ctrl-C (then stops every process it started).

--once exits after the story with status 0, or 1 if a step failed (for CI).
The binaries are taken from --bin (default: beside this genesis binary;
make demo builds them into bin/).`

func runDemo(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "demo", demoUsage)
	dir := fs.String("state", "state-example", "state repository to run the demo on")
	once := fs.Bool("once", false, "run the story once and exit (for CI)")
	bin := fs.String("bin", "", "directory holding genesis-dosim, genesis-reconciler and genesis-agent (default: beside this binary)")
	heartbeat := fs.Duration("heartbeat", 5*time.Second, "agents' heartbeat interval")
	work := fs.String("workdir", "", "directory for the demo's files (default: a temporary one, removed at exit)")
	boot := fs.Duration("boot-delay", 3*time.Second, "simulated droplet boot time")
	action := fs.Duration("action-delay", 2*time.Second, "simulated DigitalOcean action time (power off, snapshot)")
	timeout := fs.Duration("step-timeout", 3*time.Minute, "how long one step may take before the demo gives up")
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
	printDeclared(e.stdout, repo)
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(exe)
	}
	for _, b := range []string{"genesis-dosim", "genesis-reconciler", "genesis-agent"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build, or give --bin)", b, *bin)
		}
	}
	d := &demo{e: e, bin: *bin, stateSrc: *dir, fleet: repo.Fleet, boot: *boot, action: *action, timeout: *timeout, heartbeat: *heartbeat, start: time.Now()}
	if *work == "" {
		tmp, err := os.MkdirTemp("", "genesis-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*work = tmp
	}
	d.work = *work
	defer d.stop()
	if err := d.up(ctx); err != nil {
		return err
	}
	if err := d.story(ctx); err != nil {
		return err
	}
	if *once {
		return nil
	}
	fmt.Fprintf(e.stdout, "\nEverything keeps running; press Ctrl-C to stop and clean up.\n")
	<-ctx.Done()
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
	e              env
	bin, work      string
	stateSrc       string
	fleet          *schema.Fleet
	boot, action   time.Duration
	heartbeat      time.Duration
	timeout        time.Duration
	start          time.Time
	pg             *pgserver.Server
	procs          []*exec.Cmd
	repo, api, sim string
	secret         string
	seen           map[string]string
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.e.stdout, "[%6.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) up(ctx context.Context) error {
	d.say("starting a throwaway Postgres")
	var err error
	if d.pg, err = pgserver.Start(ctx, pgserver.Options{}); err != nil {
		return err
	}
	if err := d.pg.CreateDatabase(ctx, "genesis"); err != nil {
		return err
	}
	env := os.Environ()
	// The agent every simulated droplet boots: cloud-init's user data and
	// the droplet's id and disk come from the simulator's hook variables;
	// --converge=false because no n8n or Caddy runs under the simulator.
	bootCmd := fmt.Sprintf("exec %s run --converge=false --heartbeat-interval %s --poll-wait 20s --log-format json",
		shellQuote(filepath.Join(d.bin, "genesis-agent")), d.heartbeat)
	simArgs := []string{"--listen", "127.0.0.1:0", "--boot-delay", d.boot.String(), "--action-delay", d.action.String(),
		"--disk-root", filepath.Join(d.work, "disks"), "--log-format", "json", "--boot-cmd", bootCmd, "--hook-grace", "2s"}
	for _, a := range d.fleet.Spec.Accounts {
		tok := "demo-token-" + a.Name
		simArgs = append(simArgs, "--account", fmt.Sprintf("%s:%s:%d", a.Name, tok, a.MaxDroplets))
		env = append(env, a.TokenEnv+"="+tok)
	}
	d.say("starting the DigitalOcean simulator with %d accounts (boot %s, actions %s)", len(d.fleet.Spec.Accounts), d.boot, d.action)
	if d.sim, err = d.spawn(ctx, "genesis-dosim", simArgs, env); err != nil {
		return err
	}
	d.repo = filepath.Join(d.work, "state")
	if err := copyTree(d.stateSrc, d.repo); err != nil {
		return err
	}
	if err := d.git("init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := d.commit("import " + d.stateSrc); err != nil {
		return err
	}
	d.say("state repository: %s (git, branch main)", d.repo)
	d.secret = "demo-webhook-secret"
	port, err := freeAddr()
	if err != nil {
		return err
	}
	signing := filepath.Join(d.work, "signing.pem")
	if err := writeSigningKey(signing); err != nil {
		return err
	}
	ageKey := filepath.Join(d.stateSrc, "demo-keys", "age.key")
	if _, err := os.Stat(ageKey); err != nil {
		return fmt.Errorf("the demo opens sealed credentials with %s: %w", ageKey, err)
	}
	recArgs := []string{"--state-repo", d.repo, "--database-url", d.pg.URL("genesis"), "--do-api-url", d.sim, "--listen", port,
		"--poll-interval", "10s", "--resync", "1s", "--webhook-secret", d.secret, "--cache-dir", filepath.Join(d.work, "cache"),
		"--signing-key", signing, "--age-identity", ageKey, "--public-url", "http://" + port}
	d.say("manifest-signing key: %s (new); credentials open with %s (demo only)", signing, ageKey)
	d.say("starting genesis-reconciler")
	if d.api, err = d.spawn(ctx, "genesis-reconciler", recArgs, env); err != nil {
		return err
	}
	d.api = strings.TrimSuffix(strings.TrimPrefix(d.api, "listening on "), "/")
	d.say("reconciler API at %s", d.api)
	fmt.Fprintln(d.e.stdout)
	var want []string
	repo := schema.LoadDir(os.DirFS(d.repo))
	for _, id := range repo.IDs() {
		if repo.Tenants[id].Spec.State == schema.StateRunning {
			want = append(want, id)
		}
	}
	d.say("onboarding the fleet: %d running tenants", len(want))
	took, err := d.waitStates(ctx, func(f fleetDoc) bool {
		for _, id := range want {
			if !booted(f.get(id).Lifecycle) {
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
func booted(state string) bool { return state == "ACTIVE_HEALTHY" }

// writeSigningKey makes a fresh ed25519 manifest-signing key for the demo.
func writeSigningKey(path string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	return os.WriteFile(path, dsse.MarshalPrivateKeyPEM(key), 0o600)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (d *demo) story(ctx context.Context) error {
	fmt.Fprintf(d.e.stdout, "\n== The story\n\n")
	steps := []struct {
		title string
		edit  func() error
		done  func(fleetDoc) bool
	}{{
		title: "commit a new tenant ws-demo (running in nyc1)",
		edit: func() error {
			return d.writeTenant("ws-demo", schema.StateRunning, "nyc1")
		},
		done: func(f fleetDoc) bool { return booted(f.get("ws-demo").Lifecycle) },
	}, {
		title: "hibernate ws-demo (state: hibernated → snapshot, then destroy)",
		edit:  func() error { return d.writeTenant("ws-demo", schema.StateHibernated, "nyc1") },
		done:  func(f fleetDoc) bool { return f.get("ws-demo").Lifecycle == "HIBERNATED" },
	}, {
		title: "wake ws-demo (state: running → new droplet from its snapshot)",
		edit:  func() error { return d.writeTenant("ws-demo", schema.StateRunning, "nyc1") },
		done:  func(f fleetDoc) bool { return booted(f.get("ws-demo").Lifecycle) && f.get("ws-demo").Generation() >= 2 },
	}, {
		title: "remove the file of ws-stark (orphan reported, nothing destroyed)",
		edit:  func() error { return os.Remove(filepath.Join(d.repo, "tenants", "ws-stark.yaml")) },
		done: func(f fleetDoc) bool {
			for _, o := range f.Orphans {
				if o.Workspace == "ws-stark" && o.Droplet != "" {
					return true
				}
			}
			return false
		},
	}, {
		title: "offboard ws-demo (state: absent → droplet destroyed)",
		edit:  func() error { return d.writeTenant("ws-demo", schema.StateAbsent, "nyc1") },
		done:  func(f fleetDoc) bool { return f.get("ws-demo").Lifecycle == "DESTROYED" },
	}}
	for i, s := range steps {
		d.say("step %d: %s", i+1, s.title)
		if err := s.edit(); err != nil {
			return err
		}
		if err := d.commit(s.title); err != nil {
			return err
		}
		if err := d.hook(ctx); err != nil {
			return err
		}
		took, err := d.waitStates(ctx, s.done)
		if err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s.title, err)
		}
		d.say("step %d done in %.1fs", i+1, took.Seconds())
	}
	f, err := d.fleetNow(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.e.stdout, "\n== The fleet\n\n")
	tw := tabwriter.NewWriter(d.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tDESIRED\tLIFECYCLE\tDROPLET\tACCOUNT\tIP\tSNAPSHOT")
	for _, t := range f.Tenants {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Workspace, dashS(t.Desired), t.Lifecycle, dashS(t.DropletName), dashS(t.Account), dashS(t.IP), dashS(t.SnapshotID))
	}
	tw.Flush()
	for _, o := range f.Orphans {
		fmt.Fprintf(d.e.stdout, "orphan: %s %s in %s: %s\n", o.Workspace, o.Droplet, o.Account, o.Reason)
	}
	fmt.Fprintf(d.e.stdout, "\nFleet:   %s/v1/fleet\nMetrics: %s/metrics\nLogs:    %s\n", d.api, d.api, d.work)
	return nil
}

func dashS(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fleetDoc is the part of GET /v1/fleet the demo reads.
type fleetDoc struct {
	Tenants []struct {
		Workspace   string `json:"workspace"`
		Desired     string `json:"desired_state"`
		Lifecycle   string `json:"lifecycle"`
		DropletName string `json:"droplet_name"`
		Account     string `json:"account"`
		IP          string `json:"ip"`
		SnapshotID  string `json:"snapshot_id"`
	} `json:"tenants"`
	Orphans []struct {
		Workspace string `json:"workspace"`
		Droplet   string `json:"droplet"`
		Account   string `json:"account"`
		Reason    string `json:"reason"`
	} `json:"orphans"`
}

type tenantRow struct{ Lifecycle, DropletName string }

func (t tenantRow) Generation() int {
	i := strings.LastIndex(t.DropletName, "-")
	n := 0
	if i >= 0 {
		fmt.Sscanf(t.DropletName[i+1:], "%d", &n)
	}
	return n
}

func (f fleetDoc) get(id string) tenantRow {
	for _, t := range f.Tenants {
		if t.Workspace == id {
			return tenantRow{t.Lifecycle, t.DropletName}
		}
	}
	return tenantRow{}
}

func (d *demo) fleetNow(ctx context.Context) (fleetDoc, error) {
	var f fleetDoc
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.api+"/v1/fleet", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return f, err
	}
	defer resp.Body.Close()
	return f, json.NewDecoder(resp.Body).Decode(&f)
}

// waitStates polls the fleet, printing every lifecycle change, until done.
func (d *demo) waitStates(ctx context.Context, done func(fleetDoc) bool) (time.Duration, error) {
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
				st := f.get(id).Lifecycle
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
				return time.Since(start), nil
			}
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

func (d *demo) writeTenant(id string, state schema.State, region string) error {
	body := fmt.Sprintf("# yaml-language-server: $schema=../../schema/tenant.schema.json\napiVersion: genesis.dev/v1\nkind: Tenant\nmetadata:\n  id: %s\n  name: Demo Inc\n  tier: pro\nspec:\n  state: %s\n  droplet: {region: %s}\n", id, state, region)
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

// spawn starts a binary with its logs in the work dir and returns the first
// line it prints on stdout (its URL).
func (d *demo) spawn(ctx context.Context, name string, args, env []string) (string, error) {
	logf, err := os.Create(filepath.Join(d.work, name+".log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(d.bin, name), args...)
	cmd.Env = env
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		lines <- strings.TrimSpace(line)
		io.Copy(logf, r)
	}()
	select {
	case line := <-lines:
		if line == "" {
			return "", fmt.Errorf("%s exited at start; see %s", name, logf.Name())
		}
		return line, nil
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("%s did not start within 30s; see %s", name, logf.Name())
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// stop ends every process the demo started (newest first) and Postgres.
func (d *demo) stop() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if d.pg != nil {
		d.pg.Stop()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
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
