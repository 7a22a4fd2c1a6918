package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/digitalocean/godo"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// built is a command built once per test binary, next to the reconciler
// binary (removed by TestMain).
type built struct {
	once sync.Once
	path string
	err  error
}

var agentBuild, cliBuild built

// get builds ../name the first time and returns the binary's path.
func (b *built) get(t *testing.T, name string) string {
	t.Helper()
	b.once.Do(func() {
		b.path = filepath.Join(filepath.Dir(binary), name)
		if out, err := exec.Command("go", "build", "-o", b.path, "../"+name).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// agentBinary is genesis-agent, built once.
func agentBinary(t *testing.T) string { return agentBuild.get(t, "genesis-agent") }

// fleetKeys writes a new fleet age identity (age.key) and manifest-signing
// key (signing.pem) into a new directory.
func fleetKeys(t *testing.T) (string, *age.X25519Identity) {
	t.Helper()
	keys := t.TempDir()
	fleetID, _ := age.GenerateX25519Identity()
	os.WriteFile(filepath.Join(keys, "age.key"), []byte(fleetID.String()+"\n"), 0o600)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	os.WriteFile(filepath.Join(keys, "signing.pem"), dsse.MarshalPrivateKeyPEM(priv), 0o600)
	return keys, fleetID
}

// tenantOf is tenant id in GET /v1/fleet (zero when it is not listed or
// the fleet cannot be read), and the fleet.
func tenantOf(t *testing.T, url, id string) (api.FleetTenant, api.Fleet) {
	doc, _ := getFleet(t, url)
	r, _ := doc.Tenant(id)
	return r, doc
}

// healthy: the tenant's live droplet's agent applied its newest manifest.
func healthy(t *testing.T, url, id string) bool {
	r, _ := tenantOf(t, url, id)
	return r.Lifecycle == "ACTIVE_HEALTHY" && r.ManifestIssued > 0 && r.ManifestApplied == r.ManifestIssued
}

func (w *world) hook(url string) {
	w.t.Helper()
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(body)
	req, _ := http.NewRequest("POST", url+"/hooks/git", bytes.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		w.t.Fatalf("webhook: %v %v", resp, err)
	}
	resp.Body.Close()
}

func (w *world) query(sql string, args ...any) pgx.Row {
	w.t.Helper()
	conn, err := pgx.Connect(context.Background(), w.db)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn.QueryRow(context.Background(), sql, args...)
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	conn, err := pgx.Connect(context.Background(), w.db)
	if err != nil {
		w.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) snapshots(tok string) []godo.Snapshot {
	w.t.Helper()
	ss, _, err := w.sim.Client(tok).Snapshots.ListDroplet(context.Background(), &godo.ListOptions{PerPage: 200})
	if err != nil {
		w.t.Fatal(err)
	}
	return ss
}

// TestHibernateAndWakeWithAgents runs the real reconciler and, on every
// simulated droplet, the real genesis-agent: a declared hibernation waits
// for the agent to confirm n8n stopped, then snapshots and destroys; a
// commit of state: running wakes it from the snapshot and the agent (its
// identity back with the disk) enrolls again and applies a running
// manifest; the idle policy hibernates it without touching git; the API's
// wake brings it back. Each wake's control-plane time is reported as total
// minus the simulator's boot delay.
func TestHibernateAndWakeWithAgents(t *testing.T) {
	const boot = 2 * time.Second
	agentBin := agentBinary(t)
	keys, fleetID := fleetKeys(t)

	repo := testkit.NewStateRepo(t)
	w := &world{t: t, state: repo, repo: repo.Dir, db: pgtest.New(t)}
	f := testFleet()
	f.Spec.Safety.MaxHibernatePercent = 100
	f.Spec.Recipients = []string{fleetID.Recipient().String()}
	fleet := testkit.FleetYAML(f)
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(fleet), 0o644)
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	tenant := func(state string) {
		tn := tenant("ws-acme", schema.State(state))
		tn.Spec.Hibernation = &schema.Hibernation{AfterIdle: schema.Duration(24 * time.Hour)}
		body := testkit.TenantYAML(tn)
		os.WriteFile(filepath.Join(w.repo, "tenants", "ws-acme.yaml"), []byte(body), 0o644)
		w.state.Git("add", "-A")
		w.state.Git("commit", "-q", "-m", "ws-acme "+state)
	}
	tenant("running")
	work := t.TempDir()
	bootCmd := "exec " + agentBin + " run --insecure-http --converge=false --heartbeat-interval 1s --poll-wait 5s --retry-max 500ms --log-format text"
	w.sim = dosimtest.Start(t, dosim.Config{WorkDir: work, DiskRoot: filepath.Join(work, "disks"), BootCmd: bootCmd, HookGrace: time.Second,
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}},
		Limits:   dosim.Limits{BootDelay: dosim.Duration(boot), ActionDelay: dosim.Duration(200 * time.Millisecond)}})
	p := w.start("--signing-key", filepath.Join(keys, "signing.pem"), "--age-identity", filepath.Join(keys, "age.key"),
		"--hibernate-prepare-timeout", "60s")
	testkit.WaitFor(t, "ws-acme healthy", func() bool { return healthy(t, p.url, "ws-acme") })
	first, doc := tenantOf(t, p.url, "ws-acme")
	if first.MonthlyUSD != 6 || doc.Cost.Droplets != 6 || doc.Cost.Total != 6 {
		t.Errorf("running cost: tenant %v, fleet %+v; want $6 droplets", first.MonthlyUSD, doc.Cost)
	}

	// Declared hibernation: the agent confirms, then snapshot and destroy.
	tenant("hibernated")
	w.hook(p.url)
	testkit.WaitFor(t, "HIBERNATED", func() bool { r, _ := tenantOf(t, p.url, "ws-acme"); return r.Lifecycle == "HIBERNATED" })
	var confirmed bool
	if err := w.query(`SELECT hibernate_confirmed FROM fleet_status WHERE workspace = 'ws-acme'`).Scan(&confirmed); err != nil || !confirmed {
		t.Errorf("hibernate_confirmed = %v (%v); the agent's n8n_stopped heartbeat should have confirmed", confirmed, err)
	}
	var prepared int
	w.query(`SELECT count(*) FROM audit_log WHERE action = 'hibernate.prepared' AND workspace = 'ws-acme'`).Scan(&prepared)
	if prepared != 1 {
		t.Errorf("hibernate.prepared audit entries = %d, want 1", prepared)
	}
	hib, doc := tenantOf(t, p.url, "ws-acme")
	if hib.SnapshotID == "" || hib.DropletID != 0 || hib.HibernatedByPol {
		t.Errorf("hibernated row %+v", hib)
	}
	if want := hib.SnapshotGB * 0.06; hib.MonthlyUSD != want || doc.Cost.Snapshots != want || doc.Cost.Droplets != 0 {
		t.Errorf("hibernated cost: tenant %v, fleet %+v; want snapshot %v", hib.MonthlyUSD, doc.Cost, want)
	}
	if n := len(w.dropletsByName()); n != 0 {
		t.Errorf("%d droplets left after hibernation", n)
	}

	// Wake by commit.
	wake := func(what string, trigger func()) time.Duration {
		start := time.Now()
		trigger()
		testkit.WaitFor(t, what+" healthy", func() bool {
			r, _ := tenantOf(t, p.url, "ws-acme")
			return r.DropletID != 0 && r.DropletID != first.DropletID && healthy(t, p.url, "ws-acme")
		})
		total := time.Since(start)
		t.Logf("%s: total %s, boot delay %s, control plane %s", what, total.Round(time.Millisecond), boot, (total - boot).Round(time.Millisecond))
		return total
	}
	wake("wake by commit", func() { tenant("running"); w.hook(p.url) })
	woken, _ := tenantOf(t, p.url, "ws-acme")
	if n := w.dropletsByName(); n["genesis-ws-acme-2"] != 1 || len(n) != 1 {
		t.Errorf("droplets after wake: %v", n)
	}

	// Idle policy: the agent has been idle 30 h and was warned 25 h ago.
	commits := strings.Count(gitLog(t, w.repo), "\n")
	w.exec(`UPDATE fleet_status SET last_activity_at = now() - interval '30 hours', idle_warned_at = now() - interval '25 hours' WHERE workspace = 'ws-acme'`)
	testkit.WaitFor(t, "idle hibernation", func() bool {
		r, _ := tenantOf(t, p.url, "ws-acme")
		return r.Lifecycle == "HIBERNATED" && r.HibernatedByPol
	})
	if got := strings.Count(gitLog(t, w.repo), "\n"); got != commits {
		t.Errorf("idle hibernation wrote git: %d commits, had %d", got, commits)
	}
	first = woken

	// Wake by API: 404 for an unknown tenant, 202 with the status.
	post := func(id string) (int, api.TenantStatus) {
		row, err := client.New(p.url, "", nil).Wake(t.Context(), id)
		var refused *client.Error
		switch {
		case errors.As(err, &refused):
			return refused.StatusCode, row
		case err != nil:
			t.Fatal(err)
		}
		return http.StatusAccepted, row
	}
	if code, _ := post("ws-nobody"); code != http.StatusNotFound {
		t.Errorf("wake of an unknown tenant: %d, want 404", code)
	}
	wake("wake by API", func() {
		if code, row := post("ws-acme"); code != http.StatusAccepted || row.Workspace != "ws-acme" {
			t.Errorf("wake: %d %+v, want 202 with the tenant", code, row)
		}
	})
	if code, _ := post("ws-acme"); code != http.StatusConflict {
		t.Errorf("wake of a running tenant: %d, want 409", code)
	}
	var requested int
	w.query(`SELECT count(*) FROM audit_log WHERE action = 'wake.requested' AND workspace = 'ws-acme'`).Scan(&requested)
	if requested != 1 {
		t.Errorf("wake.requested audit entries = %d, want 1", requested)
	}
	if n := len(w.snapshots("tok-a")) + len(w.snapshots("tok-b")); n != 2 {
		t.Errorf("snapshots = %d, want 2 (one per hibernation, none deleted before retention)", n)
	}
}

func gitLog(t *testing.T, repo string) string {
	out, err := exec.Command("git", "-C", repo, "log", "--oneline").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestKillDuringHibernation: kill -9 the reconciler when a hibernation has
// its snapshot but the destroy has not happened (the simulator holds the
// DELETE unanswered); the next reconciler resumes the journaled operation,
// finds the snapshot by its deterministic name (no second snapshot),
// destroys the droplet exactly once and records HIBERNATED.
func TestKillDuringHibernation(t *testing.T) {
	var deletes atomic.Int32
	repo := testkit.NewStateRepo(t)
	w := &world{t: t, state: repo, repo: repo.Dir, db: pgtest.New(t)}
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(testkit.FleetYAML(testFleet())), 0o644)
	for _, id := range []string{"ws-000", "ws-001"} {
		os.WriteFile(filepath.Join(w.repo, "tenants", id+".yaml"), []byte(testkit.TenantYAML(tenant(id, schema.StateRunning))), 0o644)
	}
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "fleet")
	w.sim = dosimtest.Start(t, dosim.Config{
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}},
		Limits:   dosim.Limits{ActionDelay: dosim.Duration(100 * time.Millisecond)},
	}, dosimtest.WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rec := &statusRecorder{ResponseWriter: rw}
			next.ServeHTTP(rec, r)
			if r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v2/droplets/") && rec.code == http.StatusNoContent {
				deletes.Add(1)
			}
		})
	}))
	p := w.start()
	testkit.WaitFor(t, "both droplets", func() bool { return allInitialized(t, p.url, 2) })
	// Destroys hang from now on.
	if _, err := w.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultTimeout, Route: "DELETE /v2/droplets/*", Count: 1000}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-000.yaml"), []byte(testkit.TenantYAML(tenant("ws-000", schema.StateHibernated))), 0o644)
	w.state.Git("commit", "-qam", "hibernate ws-000")
	w.hook(p.url)
	testkit.WaitFor(t, "the snapshot taken and the destroy pending", func() bool {
		var step string
		err := w.query(`SELECT coalesce(step, '') FROM operations WHERE workspace = 'ws-000' AND kind = 'hibernate' AND state = 'running'`).Scan(&step)
		return err == nil && step == "snapshotted"
	})
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	if n := w.dropletsByName()["genesis-ws-000-1"]; n != 1 {
		t.Fatalf("droplet gone before the restart (%d): the held DELETE went through", n)
	}
	w.sim.Sim.ClearFaults()
	p2 := w.start()
	testkit.WaitFor(t, "ws-000 HIBERNATED after the restart", func() bool {
		r, _ := tenantOf(t, p2.url, "ws-000")
		return r.Lifecycle == "HIBERNATED" && r.SnapshotID != ""
	})
	if got := w.dropletsByName(); got["genesis-ws-000-1"] != 0 || got["genesis-ws-001-1"] != 1 {
		t.Errorf("droplets after resume: %v", got)
	}
	var snaps []string
	for _, s := range append(w.snapshots("tok-a"), w.snapshots("tok-b")...) {
		snaps = append(snaps, s.Name)
	}
	if len(snaps) != 1 || snaps[0] != "genesis-ws-000-1-snap" {
		t.Errorf("snapshots = %v, want exactly genesis-ws-000-1-snap", snaps)
	}
	if n := deletes.Load(); n != 1 {
		t.Errorf("droplet deletes answered 204: %d, want exactly 1", n)
	}
	var attempts int
	var state string
	if err := w.query(`SELECT state, attempts FROM operations WHERE workspace = 'ws-000' AND kind = 'hibernate'`).Scan(&state, &attempts); err != nil || state != "succeeded" || attempts != 2 {
		t.Errorf("journal: state %q attempts %d (%v), want succeeded after 2 attempts", state, attempts, err)
	}
	r, _ := tenantOf(t, p2.url, "ws-000")
	if r.SnapshotID != "" {
		if _, _, err := w.sim.Client("tok-a").Snapshots.Get(context.Background(), r.SnapshotID); err != nil {
			if _, _, err2 := w.sim.Client("tok-b").Snapshots.Get(context.Background(), r.SnapshotID); err2 != nil {
				t.Errorf("recorded snapshot %s is not on DigitalOcean: %v", r.SnapshotID, err)
			}
		}
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
