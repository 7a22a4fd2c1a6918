package main

// The reliability suite (make reliability; README "Reliability suite"): the
// real genesis-reconciler binary, real Postgres, the DigitalOcean simulator
// and a git state repository, under crashes and faults.
//
// Crash points are not picked by hand. Each scenario (create, hibernate,
// wake, destroy) is run once cleanly while a trigger on the operations
// table records every committed journal write (one row per transaction);
// then, for every recorded write k, the scenario is set up again from
// scratch and the binary is started with --crash-after-journal-writes k,
// which SIGKILLs it right after its kth committed journal write (see
// crashhook.go: deterministic, where polling the table from the test would
// let the reconciler run on past the point). A fresh process then has to
// bring the tenant to its declared state. Every case checks: no two
// droplets of one tenant, no orphan (the reconciler's and every simulator
// droplet belongs to a declared tenant), no droplet destroyed unless its
// tenant is declared absent or its snapshot exists, the declared state
// reached, and the time that took from the restart. The table goes to the
// test log and to $GENESIS_RELIABILITY_OUT (the README quotes it).

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/migrations"
	"genesis.dev/fleet/schema"
)

// relRow is one line of the suite's table.
type relRow struct {
	order                     int // place in the table
	scenario, point           string
	duplicates, orphans, lost int
	reached                   bool
	took                      time.Duration
}

type relReport struct {
	mu   sync.Mutex
	rows []relRow
}

func (r *relReport) add(row relRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row)
}

func (r *relReport) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	sort.SliceStable(r.rows, func(i, j int) bool { return r.rows[i].order < r.rows[j].order })
	var b strings.Builder
	b.WriteString("| scenario | crash point / fault | duplicates | orphans | data lost | declared state | time to declared state |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, row := range r.rows {
		reached := "reached"
		if !row.reached {
			reached = "**NOT reached**"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %s |\n", row.scenario, row.point, row.duplicates, row.orphans, row.lost, reached, row.took.Round(10*time.Millisecond))
	}
	return b.String()
}

// relWorld is a world whose simulator records every droplet it destroys.
type relWorld struct {
	*world
	keys      string    // with agents: the fleet's keys (fleetKeys)
	proxy     *tcpProxy // with agents: the reconciler's stable public address
	mu        sync.Mutex
	destroyed map[int]string   // droplet id -> name
	pg        *pgserver.Server // a case's own Postgres server, or nil
}

const relTenant = "ws-000"

// relWatchdog is the watchdog of the suite's fleets unless a case sets its own.
const relWatchdog = "  watchdog: {bootDeadline: 1h, cooldown: 1h}\n"

// newRelWorld makes a world of tenantsN running tenants. With agents, every
// simulated droplet runs the real genesis-agent (except those called
// silent: their boot command sleeps, as after a failed cloud-init), the
// fleet's recipient is a new age identity and rw.flags() gives the keys.
func newRelWorld(t *testing.T, tenantsN int, agents bool, watchdog string, silent ...string) *relWorld {
	return newRelWorldOn(t, pgtest.New(t), tenantsN, agents, watchdog, silent...)
}

// newRelWorldOn is newRelWorld on the database at db.
func newRelWorldOn(t *testing.T, db string, tenantsN int, agents bool, watchdog string, silent ...string) *relWorld {
	repo := testkit.NewStateRepo(t)
	rw := &relWorld{world: &world{t: t, state: repo, repo: repo.Dir, db: db}, destroyed: map[int]string{}}
	w := rw.world
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	fleet := testFleet()
	fleet.Spec.Safety.MaxHibernatePercent = 100
	simCfg := dosim.Config{
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}},
		Limits:   dosim.Limits{BootDelay: dosim.Duration(50 * time.Millisecond), ActionDelay: dosim.Duration(30 * time.Millisecond)},
	}
	if agents {
		keys, fleetID := fleetKeys(t)
		rw.keys, rw.proxy = keys, startProxy(t)
		fleet.Spec.Recipients = []string{fleetID.Recipient().String()}
		work := t.TempDir()
		cmd := "exec " + agentBinary(t) + " run --insecure-http --converge=false --heartbeat-interval 500ms --poll-wait 2s --retry-max 300ms --log-format text"
		for _, name := range silent {
			cmd = `[ "$DOSIM_DROPLET_NAME" = ` + name + ` ] && exec sleep 600; ` + cmd
		}
		simCfg.WorkDir, simCfg.DiskRoot, simCfg.BootCmd, simCfg.HookGrace = work, filepath.Join(work, "disks"), cmd, time.Second
	}
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(testkit.FleetYAML(fleet)+watchdog), 0o644)
	for i := range tenantsN {
		id := fmt.Sprintf("ws-%03d", i)
		os.WriteFile(filepath.Join(w.repo, "tenants", id+".yaml"), []byte(testkit.TenantYAML(tenant(id, schema.StateRunning))), 0o644)
	}
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "fleet")
	deleteRoute := regexp.MustCompile(`^/v2/droplets/(\d+)$`)
	w.sim = dosimtest.Start(t, simCfg, dosimtest.WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(resp http.ResponseWriter, r *http.Request) {
			m := deleteRoute.FindStringSubmatch(r.URL.Path)
			if r.Method != http.MethodDelete || m == nil {
				next.ServeHTTP(resp, r)
				return
			}
			id, _ := strconv.Atoi(m[1])
			name := rw.simDroplets()[id]
			rec := &statusRecorder{ResponseWriter: resp}
			next.ServeHTTP(rec, r)
			if rec.code == http.StatusNoContent {
				rw.mu.Lock()
				rw.destroyed[id] = name
				rw.mu.Unlock()
			}
		})
	}))
	// The journal trace: one row per write of the operations table,
	// with its transaction, made by the database itself.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := migrations.Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE journal_trace (n bigserial PRIMARY KEY, tx bigint, op bigint, workspace text, kind text, state text, step text);
		CREATE FUNCTION journal_trace() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO journal_trace (tx, op, workspace, kind, state, step)
				VALUES (txid_current(), NEW.id, NEW.workspace, NEW.kind, NEW.state, coalesce(NEW.step, ''));
			RETURN NEW;
		END $$;
		CREATE TRIGGER journal_trace AFTER INSERT OR UPDATE ON operations FOR EACH ROW EXECUTE FUNCTION journal_trace();
		CREATE TABLE tenant_droplets (droplet_id bigint, workspace text, state text, PRIMARY KEY (droplet_id, state));
		CREATE FUNCTION tenant_droplets() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.droplet_id IS NOT NULL THEN
				INSERT INTO tenant_droplets VALUES (NEW.droplet_id, NEW.workspace, NEW.state) ON CONFLICT DO NOTHING;
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER tenant_droplets AFTER INSERT OR UPDATE ON fleet_status FOR EACH ROW EXECUTE FUNCTION tenant_droplets();`); err != nil {
		t.Fatal(err)
	}
	return rw
}

// simDroplets is every droplet at the simulator, id -> name.
// flags are the reconciler's flags for this world.
func (rw *relWorld) flags(extra ...string) []string {
	out := append(append([]string{}, relFlags...), extra...)
	if rw.keys != "" {
		out = append(out, "--agent-insecure-http", "--public-url", "http://"+rw.proxy.ln.Addr().String(), "--signing-key", filepath.Join(rw.keys, "signing.pem"), "--age-identity", filepath.Join(rw.keys, "age.key"))
	}
	return out
}

// run starts the reconciler with rw.flags(extra...). With agents, the
// agents reach it through rw.proxy: the address in their user data stays
// valid across restarts, as a service's address does in production.
func (rw *relWorld) run(extra ...string) *proc {
	rw.t.Helper()
	p := rw.start(rw.flags(extra...)...)
	if rw.proxy != nil {
		rw.proxy.mu.Lock()
		rw.proxy.target = strings.TrimPrefix(p.url, "http://")
		rw.proxy.mu.Unlock()
	}
	return p
}

func (rw *relWorld) simDropletNamed(name string) bool {
	for _, n := range rw.simDroplets() {
		if n == name {
			return true
		}
	}
	return false
}

func (rw *relWorld) simDroplets() map[int]string {
	out := map[int]string{}
	for _, d := range rw.sim.Sim.Snapshot().Droplets {
		id, _ := d["id"].(int)
		name, _ := d["name"].(string)
		out[id] = name
	}
	return out
}

// commitState declares ws-000's state and commits it.
func (rw *relWorld) commitState(state string) {
	body := testkit.TenantYAML(tenant(relTenant, schema.State(state)))
	os.WriteFile(filepath.Join(rw.repo, "tenants", relTenant+".yaml"), []byte(body), 0o644)
	rw.state.Git("commit", "-qam", relTenant+" "+state)
}

// journalPoint is one committed journal write: a transaction's last row.
type journalPoint struct{ kind, state, step string }

func (p journalPoint) String() string {
	if p.step == "" {
		return p.kind + "/" + p.state
	}
	return p.kind + "/" + p.state + "/" + p.step
}

// trace is the committed journal writes after mark (a journal_trace n),
// one per transaction, in commit order (serial: one tenant acts).
func (rw *relWorld) trace(mark int64) []journalPoint {
	rw.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, rw.db)
	if err != nil {
		rw.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT DISTINCT ON (tx) kind, state, step FROM journal_trace WHERE n > $1 ORDER BY tx, n DESC`, mark)
	if err != nil {
		rw.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (journalPoint, error) {
		var p journalPoint
		return p, r.Scan(&p.kind, &p.state, &p.step)
	})
	if err != nil {
		rw.t.Fatal(err)
	}
	return out
}

// count runs a query of one integer on a connection of its own (the
// database may have just terminated every backend).
func (rw *relWorld) count(sql string) int64 {
	rw.t.Helper()
	ctx := context.Background()
	for try := 0; ; try++ {
		conn, err := pgx.Connect(ctx, rw.db)
		if err == nil {
			var n int64
			err = conn.QueryRow(ctx, sql).Scan(&n)
			conn.Close(ctx)
			if err == nil {
				return n
			}
		}
		if try == 20 {
			rw.t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (rw *relWorld) traceMark() int64 {
	return rw.count(`SELECT coalesce(max(n), 0) FROM journal_trace`)
}

func (rw *relWorld) inFlight() int {
	return int(rw.count(`SELECT count(*) FROM operations WHERE state IN ('pending', 'running')`))
}

// declared reports whether ws-000 is in the declared state: running with
// one active droplet, hibernated with a snapshot and no droplet, or absent
// with no droplet; with nothing in flight.
func (rw *relWorld) declared(url, state string) bool {
	r, _ := tenantOf(rw.t, url, relTenant)
	var mine int
	for _, d := range rw.sim.Sim.Snapshot().Droplets {
		if strings.HasPrefix(d["name"].(string), "genesis-"+relTenant+"-") {
			mine++
		}
	}
	if rw.inFlight() != 0 {
		return false
	}
	switch state {
	case "running":
		return mine == 1 && r.DropletID != 0 && (r.Lifecycle == "INITIALIZING" || strings.HasPrefix(r.Lifecycle, "ACTIVE"))
	case "rebuilt": // the replacement healthy, the silent droplet retired
		return mine == 1 && healthy(rw.t, url, relTenant) && rw.simDropletNamed("genesis-"+relTenant+"-2")
	case "hibernated":
		return mine == 0 && r.Lifecycle == "HIBERNATED" && r.SnapshotID != ""
	default:
		return mine == 0
	}
}

// check counts duplicates, orphans and destroyed data once ws-000 (and the
// other declared tenants) are in their declared state.
func (rw *relWorld) check(url string, tenants []string, absent bool) (dup, orphans, lost int) {
	perTenant := map[string]int{}
	for _, name := range rw.simDroplets() {
		ws := ""
		for _, id := range tenants {
			if strings.HasPrefix(name, "genesis-"+id+"-") {
				ws = id
			}
		}
		if ws == "" {
			orphans++
			continue
		}
		perTenant[ws]++
	}
	for _, n := range perTenant {
		if n > 1 {
			dup += n - 1
		}
	}
	if doc, err := getFleet(rw.t, url); err != nil {
		rw.t.Errorf("/v1/fleet: %v", err)
	} else {
		orphans += len(doc.Orphans)
	}
	snapped := map[string]bool{}
	for _, s := range rw.sim.Sim.Snapshot().Snapshots {
		snapped[s["resource_id"].(string)] = true
	}
	rw.mu.Lock()
	defer rw.mu.Unlock()
	for id, name := range rw.destroyed {
		if absent && strings.HasPrefix(name, "genesis-"+relTenant+"-") {
			continue // declared absent
		}
		// A droplet held a tenant's data once fleet_status recorded it
		// as the tenant's in a state past its first boot (DEPLOYING and
		// on: n8n ran) or hibernating. A failed create's rollback, or a
		// droplet rebuilt because it never came up, held none.
		held := rw.count(fmt.Sprintf(`SELECT count(*) FROM tenant_droplets WHERE droplet_id = %d
			AND (state LIKE 'ACTIVE%%' OR state IN ('DEPLOYING', 'HIBERNATING'))`, id)) > 0
		if held && !snapped[strconv.Itoa(id)] {
			rw.t.Errorf("droplet %d (%s) destroyed without a snapshot", id, name)
			lost++
		}
	}
	return dup, orphans, lost
}

func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
}

// waitDeclared waits (up to 60 s) for the declared state and returns how
// long it took.
func (rw *relWorld) waitDeclared(url, state string) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < 60*time.Second {
		if rw.declared(url, state) {
			return time.Since(start), true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return time.Since(start), false
}

// relScenario is a lifecycle path: setup brings ws-000 to where the
// scenario starts (with a reconciler it stops) and commits the change the
// scenario carries out.
type relScenario struct {
	name, want string
	world      func(t *testing.T) *relWorld
	setup      func(rw *relWorld)
}

// relFlags: passes every second, not every 200 ms like the other tests of
// this package: DigitalOcean allows 250 requests a minute per account, and
// a pass lists droplets and snapshots of each account.
var relFlags = []string{"--resync", "1s", "--poll-interval", "1s", "--hibernate-prepare-timeout", "200ms", "--watchdog-every", "1h"}

func relScenarios() []relScenario {
	converge := func(rw *relWorld, state string) {
		p := rw.run()
		if _, ok := rw.waitDeclared(p.url, state); !ok {
			rw.t.Fatalf("setup: %s not %s", relTenant, state)
		}
		p.stop(rw.t)
	}
	plain := func(t *testing.T) *relWorld { return newRelWorld(t, 1, false, relWatchdog) }
	return []relScenario{
		{"create", "running", plain, func(rw *relWorld) {}},
		{"hibernate", "hibernated", plain, func(rw *relWorld) { converge(rw, "running"); rw.commitState("hibernated") }},
		{"wake", "running", plain, func(rw *relWorld) {
			converge(rw, "running")
			rw.commitState("hibernated")
			converge(rw, "hibernated")
			rw.commitState("running")
		}},
		{"destroy", "absent", plain, func(rw *relWorld) { converge(rw, "running"); rw.commitState("absent") }},
		// The watchdog's rebuild: the first droplet's agent never starts
		// (its boot command sleeps); once it is up (INITIALIZING) the
		// fleet's bootDeadline is cut to 2 s, the watchdog rebuilds it with
		// a new droplet whose agent comes up, and retires the silent one.
		{"rebuild", "rebuilt", func(t *testing.T) *relWorld {
			return newRelWorld(t, 1, true, relWatchdog, "genesis-"+relTenant+"-1")
		}, func(rw *relWorld) {
			converge(rw, "running")
			b, _ := os.ReadFile(filepath.Join(rw.repo, "genesis.yaml"))
			os.WriteFile(filepath.Join(rw.repo, "genesis.yaml"), []byte(strings.Replace(string(b), relWatchdog,
				"  watchdog: {bootDeadline: 2s, cooldown: 20s}\n", 1)), 0o644)
			rw.state.Git("commit", "-qam", "bootDeadline 2s")
		}},
	}
}

// TestReliability is the reliability suite; make reliability runs it.
func TestReliability(t *testing.T) {
	if os.Getenv("GENESIS_RELIABILITY") == "" {
		t.Skip("requires GENESIS_RELIABILITY=1: the reliability suite runs with make reliability (README: Reliability suite)")
	}
	report := &relReport{}
	began := time.Now()
	t.Cleanup(func() {
		table := report.markdown()
		t.Logf("reliability suite (%s):\n%s", time.Since(began).Round(time.Second), table)
		if out := os.Getenv("GENESIS_RELIABILITY_OUT"); out != "" {
			if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
				t.Error(err)
			}
		}
	})
	for i, sc := range relScenarios() {
		t.Run("crash/"+sc.name, func(t *testing.T) {
			// The clean run enumerates the crash points.
			rw := sc.world(t)
			sc.setup(rw)
			mark := rw.traceMark()
			p := rw.run("--watchdog-every", "300ms")
			took, ok := rw.waitDeclared(p.url, sc.want)
			if !ok {
				t.Fatalf("clean run: %s not %s", relTenant, sc.want)
			}
			points := rw.trace(mark)
			dup, orph, lost := rw.check(p.url, []string{relTenant}, sc.want == "absent")
			report.add(relRow{100 * i, sc.name, "none (clean run: " + strconv.Itoa(len(points)) + " journal writes)", dup, orph, lost, true, took})
			p.stop(t)
			if len(points) == 0 {
				t.Fatal("the clean run wrote no journal entry")
			}
			t.Logf("%s: crash points %v", sc.name, points)
			for k, want := range points {
				t.Run(fmt.Sprintf("after-%d-%s", k+1, strings.ReplaceAll(want.String(), "/", "-")), func(t *testing.T) {
					t.Parallel() // each case has its own database, simulator and repository
					rw := sc.world(t)
					sc.setup(rw)
					mark := rw.traceMark()
					crash := rw.run("--watchdog-every", "300ms", "--crash-after-journal-writes", strconv.Itoa(k+1))
					exited := make(chan struct{})
					go func() { crash.cmd.Wait(); close(exited) }()
					select {
					case <-exited:
					case <-time.After(60 * time.Second):
						t.Fatalf("the reconciler did not reach journal write %d (%s)", k+1, want)
					}
					if ws, ok := crash.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
						t.Fatalf("the reconciler exited with %v, want killed by SIGKILL at journal write %d", crash.cmd.ProcessState, k+1)
					}
					got := rw.trace(mark)
					point := fmt.Sprintf("SIGKILL after write %d/%d: %s", k+1, len(points), want)
					if len(got) != k+1 || got[k] != want {
						t.Errorf("journal at the kill: %v, want the clean run's first %d: %v", got, k+1, points[:k+1])
						point += fmt.Sprintf(" (journal differed: %v)", got)
					}
					p := rw.run("--watchdog-every", "300ms")
					took, ok := rw.waitDeclared(p.url, sc.want)
					if !ok {
						t.Errorf("%s not %s after the restart", relTenant, sc.want)
					}
					dup, orph, lost := rw.check(p.url, []string{relTenant}, sc.want == "absent")
					report.add(relRow{100*i + k + 1, sc.name, point, dup, orph, lost, ok, took})
					if dup+orph+lost != 0 {
						t.Errorf("duplicates %d, orphans %d, data lost %d; want 0", dup, orph, lost)
					}
				})
			}
		})
	}
	t.Run("faults", func(t *testing.T) { relFaults(t, report) })
	t.Run("partition", func(t *testing.T) { relPartition(t, report) })
}

// tcpProxy forwards 127.0.0.1 connections to target; while cut it closes
// every connection it holds and refuses new ones (a network partition).
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func startProxy(t *testing.T) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.partition(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tcpProxy) serve(c net.Conn) {
	defer c.Close()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	if !p.track(c, up) {
		return
	}
	go io.Copy(up, c)
	io.Copy(c, up)
}

// partition cuts (on) or restores (off) the link.
func (p *tcpProxy) partition(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}

// relPartition runs the real genesis-agent on two simulated droplets,
// talking to the reconciler through a TCP proxy; the proxy cuts the link
// past the watchdog's critical threshold, then restores it: both tenants
// heal with no destroy, reboot or rebuild (the outage guard: every droplet
// silent at once is the network, not the droplets).
func relPartition(t *testing.T, report *relReport) {
	rw := newRelWorld(t, 2, true, "  watchdog: {degradedAfter: 2s, criticalAfter: 4s, cooldown: 2s, bootDeadline: 1m}\n")
	both := []string{"ws-000", "ws-001"}
	proxy := rw.proxy
	p := rw.run("--watchdog-every", "300ms")
	allHealthy := func() bool {
		for _, id := range both {
			if !healthy(t, p.url, id) {
				return false
			}
		}
		return rw.inFlight() == 0
	}
	testkit.WaitFor(t, "both tenants healthy through the proxy", allHealthy)
	before := map[string]int64{}
	for _, id := range both {
		r, _ := tenantOf(t, p.url, id)
		before[id] = r.DropletID
	}
	proxy.partition(true)
	// Past criticalAfter plus a cooldown: without the outage guard the
	// watchdog would have rebooted both.
	testkit.WaitFor(t, "both tenants seen silent", func() bool {
		for _, id := range both {
			r, _ := tenantOf(t, p.url, id)
			if r.Lifecycle != "ACTIVE_CRITICAL" {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * time.Second)
	proxy.partition(false)
	start := time.Now()
	ok := true
	for deadline := time.Now().Add(60 * time.Second); !allHealthy(); time.Sleep(25 * time.Millisecond) {
		if time.Now().After(deadline) {
			ok = false
			t.Error("tenants not healthy 60 s after the partition ended")
			break
		}
	}
	took := time.Since(start)
	for _, id := range both {
		if r, _ := tenantOf(t, p.url, id); r.DropletID != before[id] {
			t.Errorf("%s: droplet %d after the partition, was %d", id, r.DropletID, before[id])
		}
	}
	var steps, reboots []string
	for _, a := range rw.sim.Sim.Snapshot().Actions {
		switch typ, _ := a["type"].(string); typ {
		case "create":
		case "reboot":
			reboots = append(reboots, fmt.Sprint(a["resource_id"]))
		default:
			steps = append(steps, typ)
		}
	}
	if len(steps) != 0 {
		t.Errorf("droplet actions during the partition: %v, want none", steps)
	}
	point := "agent ↔ reconciler TCP proxy cut past criticalAfter, then restored"
	if len(reboots) > 0 {
		point += fmt.Sprintf(" (%d droplet(s) rebooted as the partition ended)", len(reboots))
	}
	dup, orph, lost := rw.check(p.url, both, false)
	lost += len(rw.destroyed)
	report.add(relRow{2000, "partition", point, dup, orph, lost, ok, took})
	if dup+orph+lost != 0 {
		t.Errorf("duplicates %d, orphans %d, data lost %d; want 0", dup, orph, lost)
	}
	// The outage guard holds remediation for a grace after the outage
	// (watchdog.Policy.OutageGrace): agents that reconnect after the first
	// ones back are not rebooted for the outage's silence.
	t.Run("no reboot as the partition ends", func(t *testing.T) {
		if len(reboots) > 0 {
			t.Errorf("droplets rebooted as the partition ended: %v, want none", reboots)
		}
	})
}

// relFaults injects DigitalOcean and Postgres faults while two tenants are
// created or run.
func relFaults(t *testing.T, report *relReport) {
	retry0 := 0
	both := []string{"ws-000", "ws-001"}
	allRunning := func(rw *relWorld, url string) bool {
		for _, id := range both {
			r, _ := tenantOf(rw.t, url, id)
			if r.DropletID == 0 || r.Lifecycle != "INITIALIZING" && !strings.HasPrefix(r.Lifecycle, "ACTIVE") {
				return false
			}
		}
		n := 0
		for range rw.simDroplets() {
			n++
		}
		return n == len(both) && rw.inFlight() == 0
	}
	for i, tc := range []struct {
		name string
		// ownPostgres runs the case on a Postgres server of its own (in
		// rw.pg), which it may restart.
		ownPostgres bool
		// before runs before the reconciler starts, during after it
		// started (with the process's URL).
		before func(rw *relWorld)
		during func(rw *relWorld, url string)
	}{
		{name: "DigitalOcean 500 on create (x4)", before: func(rw *relWorld) {
			rw.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "POST /v2/droplets", Status: 500, Count: 4})
		}},
		{name: "DigitalOcean 429 on every route (x6)", before: func(rw *relWorld) {
			rw.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Status: 429, RetryAfter: &retry0, Count: 6})
		}},
		{name: "DigitalOcean timeout on create (x2, 2 s hold)", before: func(rw *relWorld) {
			rw.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultTimeout, Route: "POST /v2/droplets", Hold: dosim.Duration(2 * time.Second), Count: 2})
		}},
		{name: "DigitalOcean create action errored (x1)", before: func(rw *relWorld) {
			rw.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultActionError, Count: 1})
		}},
		{name: "partial droplet listing (page cut, then 500 x3) while converged", during: func(rw *relWorld, url string) {
			testkit.WaitFor(rw.t, "both tenants running", func() bool { return allRunning(rw, url) })
			rw.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultPartialList, Route: "GET /v2/droplets", OKPages: 1, Truncate: true, Count: 3})
			testkit.WaitFor(rw.t, "the partial listing served", func() bool { return len(rw.sim.Sim.Snapshot().Faults) == 0 })
			time.Sleep(time.Second) // a few passes on what it observed
		}},
		{name: "Postgres: every backend terminated mid-create", during: func(rw *relWorld, url string) {
			testkit.WaitFor(rw.t, "a create journaled", func() bool { return rw.inFlight() > 0 })
			rw.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
		}},
		{name: "Postgres restarted mid-create (pg_ctl restart -m fast)", ownPostgres: true, during: func(rw *relWorld, url string) {
			testkit.WaitFor(rw.t, "a create journaled", func() bool { return rw.inFlight() > 0 })
			if err := rw.pg.Restart(context.Background()); err != nil {
				rw.t.Fatal(err)
			}
		}},
		{name: "Postgres: the leader's lock connection cut mid-create", during: func(rw *relWorld, url string) {
			testkit.WaitFor(rw.t, "a create journaled", func() bool { return rw.inFlight() > 0 })
			rw.exec(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rw *relWorld
			if tc.ownPostgres {
				srv, err := pgserver.Start(t.Context(), pgserver.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { srv.Stop() })
				if err := srv.CreateDatabase(t.Context(), "genesis"); err != nil {
					t.Fatal(err)
				}
				rw = newRelWorldOn(t, srv.URL("genesis"), 2, false, relWatchdog)
				rw.pg = srv
			} else {
				rw = newRelWorld(t, 2, false, relWatchdog)
			}
			rw.sim.Sim.SetLimits(dosim.Limits{BootDelay: dosim.Duration(300 * time.Millisecond), ActionDelay: dosim.Duration(30 * time.Millisecond)})
			if tc.before != nil {
				tc.before(rw)
			}
			start := time.Now()
			p := rw.run()
			if tc.during != nil {
				tc.during(rw, p.url)
			}
			ok := true
			deadline := time.Now().Add(60 * time.Second)
			for !allRunning(rw, p.url) {
				if time.Now().After(deadline) {
					ok = false
					for _, id := range both {
						r, _ := tenantOf(rw.t, p.url, id)
						t.Logf("%s: %+v", id, r)
					}
					t.Logf("simulator accounts: %+v; limits %+v", rw.sim.Sim.Snapshot().Accounts, rw.sim.Sim.Limits())
					if resp, err := http.Get(p.url + "/metrics"); err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						for _, l := range strings.Split(string(b), "\n") {
							if strings.HasPrefix(l, "genesis_do_requests_total") || strings.HasPrefix(l, "genesis_do_rate") || strings.HasPrefix(l, "genesis_do_429") {
								t.Log(l)
							}
						}
					}
					t.Errorf("tenants not running within 60 s; simulator droplets %v, in flight %d", rw.sim.Sim.Snapshot().Droplets, rw.inFlight())
					break
				}
				time.Sleep(25 * time.Millisecond)
			}
			took := time.Since(start)
			dup, orph, lost := rw.check(p.url, both, false)
			report.add(relRow{1000 + i, "fault", tc.name, dup, orph, lost, ok, took})
			if dup+orph+lost != 0 {
				t.Errorf("duplicates %d, orphans %d, data lost %d; want 0", dup, orph, lost)
			}
		})
	}
}
