package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/certreload/selfsigned"
	"genesis.dev/fleet/internal/loadstate"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// The scale scenario (issue 23) runs the design's answer to "past one
// machine" on this one: --replicas reconciler processes on one Postgres,
// agents spread over --agent-procs processes (each below the open-file
// limit) that dial from many 127.0.0.0/8 source addresses, every agent
// assigned to a replica in turn as a DNS round robin would. Replica 0
// follows pushes and sweeps (the leader's part); the others serve agents
// and learn of manifests through Postgres notifications.

// replica is one reconciler process of a scale run.
type replica struct {
	url string
	pid int
	// debug is its --debug-listen address ("": none; set with
	// GENESIS_LOAD_PROFILE_DIR).
	debug string
}

// scaleWorker is one `genesis-load agents` process.
type scaleWorker struct {
	agents   int
	stdin    io.WriteCloser
	events   chan workerEvent
	received atomic.Int64
}

func (w *scaleWorker) send(cmd string) error {
	_, err := io.WriteString(w.stdin, cmd+"\n")
	return err
}

// wait returns the worker's next event named name (skipping progress).
func (w *scaleWorker) wait(ctx context.Context, name string) (workerEvent, error) {
	for {
		select {
		case e, ok := <-w.events:
			if !ok {
				return workerEvent{}, errors.New("agent process ended (its log is above)")
			}
			if e.Event == "error" {
				return e, fmt.Errorf("agent process: %s", e.Error)
			}
			if e.Event == name {
				return e, nil
			}
		case <-ctx.Done():
			return workerEvent{}, fmt.Errorf("waiting for %s: %w", name, ctx.Err())
		}
	}
}

// scaleScenario runs the whole scale scenario within c.timeLimit.
func scaleScenario(ctx context.Context, c config, log, serverLog *slog.Logger, stderr io.Writer) (_ *report, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeLimit)
	defer cancel()
	began := time.Now()
	f := &fleet{log: log, started: true, serverOnly: true}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 64 * c.replicas, IdleConnTimeout: 2 * time.Minute}
	f.http = &http.Client{Transport: tr}
	f.closers = append(f.closers, tr.CloseIdleConnections)
	defer f.close()

	// Postgres, the state repository, the keys.
	pg, err := pgserver.Start(ctx, pgserver.Options{})
	if err != nil {
		return nil, err
	}
	f.closers = append(f.closers, func() {
		if err := pg.Stop(); err != nil {
			log.Error("stop Postgres", "err", err)
		}
	})
	if err := pg.CreateDatabase(ctx, "genesis"); err != nil {
		return nil, err
	}
	dbURL := pg.URL("genesis")
	fleetID, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer := dsse.NewSigner(priv)
	f.trusted = dsse.Trusted{}
	f.trusted.Add(signer.Public())
	var secret [32]byte
	rand.Read(secret[:])
	f.secret = []byte(hex.EncodeToString(secret[:]))
	dir, err := os.MkdirTemp("", "genesis-load-scale-")
	if err != nil {
		return nil, err
	}
	f.closers = append(f.closers, func() { os.RemoveAll(dir) })
	if c.tls {
		// The replicas serve TLS (HTTP/2 offered) with a certificate of
		// this run's own, which the load tool and the agents trust alone.
		pair, err := selfsigned.Make(dir, "genesis-load", selfsigned.Options{})
		if err != nil {
			return nil, err
		}
		f.tls = &pair
		tr.TLSClientConfig = &tls.Config{RootCAs: pair.Pool(), MinVersion: tls.VersionTLS12}
	}
	fleetFile := loadstate.Fleet(max(c.agents, 1), c.accountDroplets, fleetID.Recipient().String())
	if f.repo, err = newStateRepo(ctx, dir, fleetFile, fleetID.Recipient(), c.agents, c.credentials, 1000); err != nil {
		return nil, err
	}
	accounts := loadstate.Accounts(max(c.agents, 1), c.accountDroplets)
	cfg, err := writeKeys(dir, f.repo.dir, fleetID, priv)
	if err != nil {
		return nil, err
	}
	cfg.WebhookSecret = string(f.secret)
	log.Info("state repository made", "tenants", c.agents, "took", time.Since(began).Round(time.Millisecond).String())

	// The fleet exists before any replica runs: Postgres with the schema
	// and the accounts, the simulator with one running droplet per tenant,
	// and their fleet_status rows, tokens and (--enroll bulk) agents, as
	// a fleet that has been running for a while is. The leader's first
	// pass then finds nothing to create.
	if f.st, err = store.Open(ctx, dbURL, serverLog); err != nil {
		return nil, err
	}
	f.closers = append(f.closers, f.st.Close)
	f.tokens = agentapi.New(agentapi.Config{Store: f.st, Logger: serverLog})
	fleetDoc, ferrs := schema.DecodeFleet(schema.FleetFile, fleetFile)
	if len(ferrs) > 0 {
		return nil, fmt.Errorf("the load fleet's genesis.yaml: %v", ferrs)
	}
	if err := f.st.SyncAccounts(ctx, fleetDoc); err != nil {
		return nil, err
	}
	as := make([]*simAgent, c.agents)
	for i := range as {
		as[i] = &simAgent{i: i, ws: tenantID(i), droplet: fmt.Sprint(dropletBase + i), name: plan.DropletName(tenantID(i), 1),
			ip: fmt.Sprintf("100.%d.%d.%d", 64+i>>16, (i>>8)&255, i&255), account: loadstate.AccountName(i/c.accountDroplets, accounts)}
	}
	provisioned := time.Now()
	var calls doCalls
	do, doTokens, err := startSimulator(ctx, f, as, accounts, &calls, serverLog)
	if err != nil {
		return nil, err
	}
	if err := seedDroplets(ctx, f, as, c.enroll == "bulk"); err != nil {
		return nil, err
	}
	log.Info("droplets recorded", "droplets", c.agents, "took", time.Since(provisioned).Round(time.Millisecond).String())

	// The replicas, all the genesis-reconciler binary: replica 0 alone
	// (--role full: it takes the leader lock, observes the simulator,
	// plans and sweeps), then the others together (--role serve: they
	// follow the same state repository, hear of a push through Postgres
	// and never sweep), as a production serving tier runs.
	bin, err := reconcilerBinary(c.reconcilerBin)
	if err != nil {
		return nil, err
	}
	reps := make([]replica, c.replicas)
	start := func(k int) error {
		var err error
		if reps[k], err = f.startReplica(ctx, c, bin, k, cfg, dbURL, do, doTokens, stderr); err != nil {
			return fmt.Errorf("replica %d: %w", k, err)
		}
		return nil
	}
	leaderStart := time.Now()
	if err := start(0); err != nil {
		return nil, err
	}
	f.url, f.serverPID = reps[0].url, reps[0].pid
	var firstRender time.Duration
	if c.enroll == "bulk" {
		// The leader's sweep renders every recorded droplet's first
		// manifest once it leads and has read the state repository; the
		// serve replicas start after it, so that their own loading (each
		// decodes the whole fleet) is not part of the figure.
		if err := waitManifests(ctx, f, c.agents, max(time.Minute, time.Until(deadlineOf(ctx))/2)); err != nil {
			return nil, err
		}
		firstRender = time.Since(leaderStart)
		log.Info("first manifests rendered by the leader's sweep", "droplets", c.agents, "took", firstRender.Round(time.Millisecond).String())
	}
	servesStart := time.Now()
	var g errgroup.Group
	for k := 1; k < c.replicas; k++ {
		g.Go(func() error { return start(k) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	log.Info("serve replicas ready", "replicas", c.replicas-1, "took", time.Since(servesStart).Round(time.Millisecond).String())

	// The agent processes.
	workers, err := startWorkers(ctx, c, f, dir, as, reps, stderr)
	if err != nil {
		return nil, err
	}
	enrollStart := time.Now()
	var enrollH2, enrollH1 int64
	for _, w := range workers {
		e, err := w.wait(ctx, "fetched")
		if err != nil {
			return nil, fmt.Errorf("enroll: %w", err)
		}
		enrollH2, enrollH1 = enrollH2+e.HTTP2, enrollH1+e.HTTP1
	}
	log.Info("agents enrolled and holding their first manifest", "agents", c.agents, "took", time.Since(enrollStart).Round(time.Millisecond).String())

	rep := &report{Scenario: c.scenario, Agents: c.agents,
		Command: fmt.Sprintf("genesis-load scale --agents %d --replicas %d --agent-procs %d --sources %d --credentials %d --heartbeat-rate %g --duration %s --enroll %s",
			c.agents, c.replicas, len(workers), c.sources, c.credentials, c.heartbeatRate, c.duration, c.enroll), Counts: map[string]int64{}}
	if c.replicaMemLimit != "" {
		rep.Command += " --replica-memory-limit " + c.replicaMemLimit
	}
	if c.editPhase {
		rep.Command += " --edit-phase"
	}
	transport := "plain HTTP/1.1, the agents of a process sharing a pool of connections (one per parked poll, at most --connections for heartbeats)"
	if c.tls {
		rep.Scenario = "scale-tls"
		rep.Command += " --tls"
		transport = "TLS with HTTP/2 offered, every agent on a connection of its own carrying its polls and heartbeats, as an agent on a droplet connects (http.DefaultTransport's settings)"
		rep.Counts["agent responses over HTTP/2 (enrolment and first manifest)"] = enrollH2
		rep.Counts["agent responses over HTTP/1.x (enrolment and first manifest)"] = enrollH1
		rep.check(enrollH1 == 0 && enrollH2 > 0, "--tls: %d responses over HTTP/2 and %d over HTTP/1.x; every agent should speak HTTP/2 with its replica", enrollH2, enrollH1)
	}
	if firstRender > 0 {
		rep.add(figure{Measure: fmt.Sprintf("first manifests of %s droplets, one sweep of the leader", thousands(strconv.Itoa(c.agents))),
			Value: firstRender.Seconds(), Unit: "s",
			Note: "agents recorded as enrolled in bulk: the leader's start → every droplet has a stored manifest (it reads the state repository, takes the lock, observes DigitalOcean, plans and sweeps: render, seal, sign, store; polled every 0.5 s; the serve replicas start after)"})
	}

	// 1. Parked long-polls: RSS per replica before and after.
	rss0 := make([]int64, len(reps))
	for k, r := range reps {
		rss0[k], _ = rssOf(r.pid)
	}
	for _, w := range workers {
		if err := w.send("park"); err != nil {
			return nil, err
		}
	}
	for _, w := range workers {
		if _, err := w.wait(ctx, "parked"); err != nil {
			return nil, err
		}
	}
	parkStart := time.Now()
	// Over TLS most agents dial again here (their connections idled past
	// the 90 s keep-alive while the others enrolled): a reconnect storm of
	// handshakes, as after a load balancer's failover.
	parked, perReplica, err := waitParkedAll(ctx, f, reps, c.agents, map[bool]time.Duration{false: 3 * time.Minute, true: 6 * time.Minute}[c.tls])
	if err != nil {
		log.Warn("not every long-poll parked", "err", err)
	}
	parkTook := time.Since(parkStart)
	log.Info("long-polls parked", "parked", parked, "took", parkTook.Round(time.Millisecond).String())
	time.Sleep(2 * time.Second) // let the replicas settle before reading RSS
	heapProfiles(ctx, f, reps, "parked")
	var rssNotes []string
	var maxRSS, maxPer float64
	for k, r := range reps {
		rss, _ := rssOf(r.pid)
		per := 0.0
		if perReplica[k] > 0 {
			per = float64(rss-rss0[k]) / float64(perReplica[k])
		}
		maxRSS, maxPer = max(maxRSS, float64(rss)/(1<<20)), max(maxPer, per/1024)
		rssNotes = append(rssNotes, fmt.Sprintf("r%d %d parked, %d → %d MiB (%.1f KiB/poll%s)", k, perReplica[k], rss0[k]>>20, rss>>20, per/1024, goMemory(ctx, f, r)))
	}
	var rss0Max int64
	for _, v := range rss0 {
		rss0Max = max(rss0Max, v)
	}
	rep.Counts["long-polls parked"] = parked
	rep.add(figure{Measure: fmt.Sprintf("%s agents parked across %d replicas: largest replica RSS", thousands(strconv.Itoa(c.agents)), c.replicas),
		Value: maxRSS, Unit: "MiB", Baseline: "the largest replica's RSS before parking", BaselineValue: float64(rss0Max) / (1 << 20),
		Goal: "100,000 parked in ≤ 4 GB (all replicas)", Verdict: verdict(parked >= 100_000 && sumRSS(reps) <= 4<<30) + scaleSuffix(parked),
		Note: fmt.Sprintf("every replica is the genesis-reconciler binary, r0 --role full (the leader), r1… --role serve; agents over %s; %d long-polls parked (genesis_manifest_longpolls_waiting summed over the replicas) %.1f s after the agents were told to park; %s; all replicas together %.0f MiB",
			transport, parked, parkTook.Seconds(), strings.Join(rssNotes, "; "), sumRSS(reps)/(1<<20))})
	perNote := "(RSS parked − RSS before parking) ÷ long-polls parked on that replica; before parking every agent had enrolled and fetched its manifest, so its credential and manifest entry were cached already: this is the parked request itself (goroutine, connection, buffers)"
	if c.tls {
		perNote += "; over TLS a lower bound: at the baseline the connections of the agents that enrolled last were still open (the others idled out after 90 s and dialed again to park), and RSS kept what the enrolment's handshakes had used; compare the replicas' totals and goroutine stacks with a plain run's"
	}
	rep.add(figure{Measure: "RSS per parked long-poll (largest of the replicas)", Value: maxPer, Unit: "KiB", Note: perNote})

	// 2. A fleet-wide template change → every agent has its manifest.
	// The heartbeat phase (and, with --edit-phase, the edit) keep their
	// time.
	reserve := c.duration + time.Minute
	if c.editPhase {
		// At 100,000: the commit of every file (~1 min), every replica
		// decoding the fleet again on 2 cores (~2 min), signing and the
		// fan-out (~2 min).
		reserve += 6 * time.Minute
	}
	tpl, err := fanOut(ctx, f, reps, workers, c.agents, reserve, func() error { return f.repo.changeTemplate(ctx, 1) })
	if err != nil {
		return nil, err
	}
	log.Info("template change fanned out", "agents", len(tpl.lat), "max", percentile(tpl.lat, 1).Round(time.Millisecond).String())
	var envBytes float64
	_ = f.st.Pool().QueryRow(ctx, `SELECT coalesce(avg(octet_length(envelope)), 0)::float8 FROM manifests WHERE commit = $1`, tpl.commit).Scan(&envBytes)
	rawSign, rawErr := rawSignStore(ctx, f, signer, c.agents, int(envBytes))
	if rawErr != nil {
		log.Warn("raw sign-and-store baseline failed", "err", rawErr)
	}
	rawBaseline := fmt.Sprintf("signing and storing %s manifests of the same size alone (ed25519 on every core, 256 rows a statement, 2 writers)", thousands(strconv.Itoa(c.agents)))
	rep.Counts["agents with the new manifest"] = int64(len(tpl.lat))
	rep.Counts["manifests stored for the commit"] = tpl.stored
	rep.add(figure{Measure: fmt.Sprintf("fleet-wide template change → all %s agents have their manifest", thousands(strconv.Itoa(c.agents))),
		Value: ms(percentile(tpl.lat, 1)) / 1000, Unit: "s", Baseline: rawBaseline, BaselineValue: rawSign.Seconds(),
		Verdict: map[bool]string{true: "", false: "not every agent"}[tpl.all],
		Note:    "commit of templates/workflows/welcome.json → " + tpl.note(c.agents, envBytes)})
	rep.add(figure{Measure: "fleet-wide template change → received p50", Value: ms(percentile(tpl.lat, 0.5)), Unit: "ms"})
	rep.add(figure{Measure: "fleet-wide template change → received p99", Value: ms(percentile(tpl.lat, 0.99)), Unit: "ms"})

	// 2b. With --edit-phase: one commit edits every tenant file (each
	// workflow's parameter), so every replica decodes every tenant again
	// while the previous Snapshot is still held.
	if c.editPhase {
		edit, err := fanOut(ctx, f, reps, workers, c.agents, c.duration+time.Minute, func() error {
			began := time.Now()
			err := f.repo.importAll(ctx, 1)
			log.Info("every tenant file edited and committed", "tenants", c.agents, "took", time.Since(began).Round(time.Millisecond).String())
			return err
		})
		if err != nil {
			return nil, err
		}
		log.Info("edit of every tenant fanned out", "agents", len(edit.lat), "max", percentile(edit.lat, 1).Round(time.Millisecond).String())
		rep.Counts["agents with the edited tenants' manifest"] = int64(len(edit.lat))
		rep.Counts["manifests stored for the edit"] = edit.stored
		var maxPeak, maxBefore int64
		for k := range reps {
			maxPeak, maxBefore = max(maxPeak, edit.peaks[k]), max(maxBefore, edit.before[k])
		}
		rep.add(figure{Measure: fmt.Sprintf("a commit editing every tenant file → all %s agents have their manifest", thousands(strconv.Itoa(c.agents))),
			Value: ms(percentile(edit.lat, 1)) / 1000, Unit: "s", Baseline: rawBaseline, BaselineValue: rawSign.Seconds(),
			Verdict: map[bool]string{true: "", false: "not every agent"}[edit.all],
			Note:    "commit of every tenants/*.yaml (each workflow's greeting) → " + edit.note(c.agents, envBytes)})
		rep.add(figure{Measure: "a commit editing every tenant file: largest replica's peak RSS during it", Value: float64(maxPeak) / (1 << 20), Unit: "MiB",
			Baseline: "the largest replica's RSS when the commit was made", BaselineValue: float64(maxBefore) / (1 << 20),
			Note: edit.peakSince() + "; every replica decodes the 100,000 edited files while its previous Snapshot is held, sharing what the edit left alone (schema.Tenant.ShareFrom)"})
		// The leader's own work for the edit: an update_manifest action
		// per tenant records its new hash (no DigitalOcean call), after a
		// pass that lists every account.
		j, err := waitJournaled(ctx, f, edit.commit, c.agents, max(10*time.Second, min(10*time.Minute, time.Until(deadlineOf(ctx))-c.duration-time.Minute)))
		if err != nil {
			return nil, err
		}
		rep.Counts["update_manifest operations succeeded for the edit"] = j.succeeded
		verdict := ""
		if j.succeeded < int64(c.agents) {
			verdict = "not every tenant"
		}
		rep.add(figure{Measure: fmt.Sprintf("a commit editing every tenant file → the leader has recorded all %s tenants' new hash", thousands(strconv.Itoa(c.agents))),
			Value: j.last.Sub(edit.committed).Seconds(), Unit: "s", Verdict: verdict,
			Note: fmt.Sprintf("one update_manifest operation per tenant journaled and succeeded, from the commit to the last one's finished_at (the agents do not wait for them: the sweep issues their manifests); %d of %d succeeded within %s, the first %.1f s after the commit; %d DigitalOcean accounts of %d droplets, every one listed by each pass",
				j.succeeded, c.agents, j.bound.Round(time.Second), j.first.Sub(edit.committed).Seconds(), accounts, c.accountDroplets)})
		log.Info("edit journaled by the leader", "succeeded", j.succeeded, "of", c.agents)
	}

	// 3. Heartbeats from every agent at --heartbeat-rate across the replicas.
	if c.duration > 0 && time.Until(deadlineOf(ctx)) > c.duration+time.Minute {
		if err := heartbeatsAtScale(ctx, c, f, reps, workers, as, pg, rep, log); err != nil {
			return nil, err
		}
	} else {
		rep.check(false, "no time left for the heartbeat phase within --time-limit %s", c.timeLimit)
	}
	heapProfiles(ctx, f, reps, "end")
	// The leader observed DigitalOcean and had nothing to change there:
	// every tenant's droplet exists as declared.
	rep.Counts["DigitalOcean reads (the leader's observations)"] = calls.reads.Load()
	rep.Counts["DigitalOcean writes"] = calls.writes.Load()
	rep.check(calls.writes.Load() == 0, "the leader made %d DigitalOcean writes; every droplet existed as declared", calls.writes.Load())
	// The edit of every tenant file is the one change the leader acts on
	// (update_manifest: the tenant's recorded hash moves; DigitalOcean is
	// not called).
	var ops, updates int64
	if err := f.st.Pool().QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE kind = 'update_manifest') FROM operations`).Scan(&ops, &updates); err == nil {
		rep.Counts["operations the leader journaled"] = ops
		if c.editPhase {
			rep.Counts["update_manifest operations (the edit)"] = updates
			ops -= updates
		}
		rep.check(ops == 0, "the leader journaled %d operations besides the edit's update_manifest; every tenant's droplet and hash were recorded as a create records them", ops)
	}
	log.Info("scale run done", "took", time.Since(began).Round(time.Second).String())
	return rep, nil
}

// goMemory is where the Go runtime of replica r says its memory is, from
// its /metrics: ", heap in use H MiB, goroutine stacks S MiB" ("" when
// the scrape fails). Stacks are one or two goroutines per connection
// (a parked request's and net/http's background read), which no heap
// profile shows.
func goMemory(ctx context.Context, f *fleet, r replica) string {
	m, err := scrapeAt(ctx, f, r.url)
	if err != nil || m["go_memstats_heap_inuse_bytes"] == 0 {
		return ""
	}
	return fmt.Sprintf(", heap in use %.0f MiB, goroutine stacks %.0f MiB", m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_memstats_stack_inuse_bytes"]/(1<<20))
}

func scaleSuffix(parked int64) string {
	if parked < 100_000 {
		return fmt.Sprintf(" (at %d, not 100,000)", parked)
	}
	return ""
}

func sumRSS(reps []replica) float64 {
	var s int64
	for _, r := range reps {
		rss, _ := rssOf(r.pid)
		s += rss
	}
	return float64(s)
}

func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}

// seedDroplets records as' droplets in bulk, as a create's outcome
// records each (a fleet_status row with the droplet's id, name, address and
// boot state) with a one-time provisioning token bound to it, 5,000 rows a
// statement. The journal is left out (the other scenarios go through it,
// one droplet at a time): at 100,000 droplets it would take most of the
// run's time bound.
func seedDroplets(ctx context.Context, f *fleet, as []*simAgent, enrolled bool) error {
	state := string(lifecycle.Finished(lifecycle.Create, enrolled))
	now := time.Now()
	// Enrolled in bulk: 1,000 agent identities shared in turn (a manifest
	// is still sealed and signed for each droplet).
	var recipients []string
	if enrolled {
		for range min(len(as), 1000) {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			recipients = append(recipients, id.Recipient().String())
		}
	}
	// The tenant's file and commit each row was made from, as a create's
	// outcome records them: the leader then finds nothing changed in git.
	head, err := f.repo.head(ctx)
	if err != nil {
		return err
	}
	for lo := 0; lo < len(as); lo += 5000 {
		batch := as[lo:min(len(as), lo+5000)]
		var ws, names, ips, recips, blobs, accts []string
		var ids []int64
		var hashes, creds, pubs [][]byte
		for _, a := range batch {
			var b [32]byte
			rand.Read(b[:])
			a.token = base64.RawURLEncoding.EncodeToString(b[:])
			h := sha256.Sum256([]byte(a.token))
			ws, names, ips, ids, hashes = append(ws, a.ws), append(names, a.name), append(ips, a.ip), append(ids, int64(dropletBase+a.i)), append(hashes, h[:])
			blobs, accts = append(blobs, gitBlobHash(f.repo.tenantFile(a.i, 0))), append(accts, a.account)
			if enrolled {
				rand.Read(b[:])
				a.cred = base64.RawURLEncoding.EncodeToString(b[:])
				ch := sha256.Sum256([]byte(a.cred))
				pub := make([]byte, 32)
				rand.Read(pub)
				creds, pubs, recips = append(creds, ch[:]), append(pubs, pub), append(recips, recipients[a.i%len(recipients)])
			}
		}
		err := pgxBegin(ctx, f, func(q execer) error {
			if _, err := q.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, droplet_name, account, region, size, ip, state, desired_state, generation, tenant_hash, last_commit)
				SELECT w, d, n, a, $7, $8, ip::inet, $9, 'running', 1, b, $10 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(w, d, n, ip, b, a)`,
				ws, ids, names, ips, blobs, accts, loadstate.Region, loadstate.Size, state, head); err != nil {
				return fmt.Errorf("record droplets: %w", err)
			}
			if _, err := q.Exec(ctx, `INSERT INTO enrollment_tokens (token_hash, workspace, droplet_name, droplet_id, created_at, expires_at)
				SELECT h, w, n, d, $5, $6 FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bigint[]) AS t(h, w, n, d)`,
				hashes, ws, names, ids, now, now.Add(agentapi.DefaultTokenTTL)); err != nil {
				return fmt.Errorf("mint tokens: %w", err)
			}
			if !enrolled {
				return nil
			}
			if _, err := q.Exec(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash, enrolled_at)
				SELECT d, w, r, k, c, $6 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::bytea[]) AS t(d, w, r, k, c)`,
				ids, ws, recips, pubs, creds, now); err != nil {
				return fmt.Errorf("record agents: %w", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// gitBlobHash is git's object id of a file holding data (what the
// reconciler records as a tenant's hash: its file's blob).
func gitBlobHash(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// waitManifests waits until n load droplets have a manifest.
func waitManifests(ctx context.Context, f *fleet, n int, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		var got int
		if err := f.st.Pool().QueryRow(ctx, `SELECT count(DISTINCT droplet_id) FROM manifests WHERE workspace LIKE 'load-%'`).Scan(&got); err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d droplets have a first manifest after %s", got, n, bound)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// journaled is what waitJournaled saw of the leader's update_manifest
// operations for one commit.
type journaled struct {
	succeeded   int64
	first, last time.Time // first and last finished_at
	bound       time.Duration
}

// waitJournaled waits, at most bound, until n update_manifest operations
// of commit have succeeded.
func waitJournaled(ctx context.Context, f *fleet, commit string, n int, bound time.Duration) (journaled, error) {
	j := journaled{bound: bound}
	deadline := time.Now().Add(bound)
	for {
		var first, last *time.Time
		if err := f.st.Pool().QueryRow(ctx, `SELECT count(*), min(finished_at), max(finished_at) FROM operations WHERE kind = 'update_manifest' AND commit = $1 AND state = 'succeeded'`, commit).Scan(&j.succeeded, &first, &last); err != nil {
			return j, err
		}
		if first != nil && last != nil {
			j.first, j.last = *first, *last
		}
		if j.succeeded >= int64(n) || time.Now().After(deadline) {
			if j.last.IsZero() {
				j.first, j.last = time.Now(), time.Now()
			}
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// execer is what seedDroplets runs statements on.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func pgxBegin(ctx context.Context, f *fleet, fn func(execer) error) error {
	return pgx.BeginFunc(ctx, f.st.Pool(), func(tx pgx.Tx) error { return fn(tx) })
}

// startWorkers starts c.agentProcs agent processes, each with its share of
// the agents (agent i talks to replica i mod R) and its own source
// addresses 127.(20+w).0.1…
func startWorkers(ctx context.Context, c config, f *fleet, dir string, as []*simAgent, reps []replica, stderr io.Writer) ([]*scaleWorker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	urls := make([]string, len(reps))
	for k, r := range reps {
		urls[k] = r.url
	}
	procs := c.agentProcs
	per := (len(as) + procs - 1) / procs
	var workers []*scaleWorker
	for w := 0; w < procs && w*per < len(as); w++ {
		share := as[w*per : min(len(as), (w+1)*per)]
		job := workerJob{URLs: urls, Conns: max(8, c.connections/procs)}
		if f.tls != nil {
			job.CA = string(f.tls.CertPEM)
		}
		for s := range c.sources {
			job.Sources = append(job.Sources, fmt.Sprintf("127.%d.%d.%d", 20+w, s/250, 1+s%250))
		}
		for _, a := range share {
			job.Agents = append(job.Agents, workerAgent{WS: a.ws, Droplet: a.droplet, Name: a.name, Token: a.token, Cred: a.cred, Replica: a.i % len(reps)})
		}
		data, err := json.Marshal(job)
		if err != nil {
			return nil, err
		}
		jobFile := filepath.Join(dir, fmt.Sprintf("agents-%d.json", w))
		if err := os.WriteFile(jobFile, data, 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(exe, "agents", "--job", jobFile, "--log-level", c.logLevel)
		cmd.Env = append(os.Environ(), serveEnv+"=1")
		cmd.Stderr = stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start agent process %d: %w", w, err)
		}
		sw := &scaleWorker{agents: len(share), stdin: stdin, events: make(chan workerEvent, 64)}
		exited := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 256<<20)
			for sc.Scan() {
				var e workerEvent
				if json.Unmarshal(sc.Bytes(), &e) != nil {
					continue
				}
				if e.Event == "progress" {
					sw.received.Store(e.Received)
					continue
				}
				sw.events <- e
			}
			close(sw.events)
			exited <- cmd.Wait()
		}()
		f.closers = append(f.closers, func() {
			stdin.Close()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				f.log.Error("agent process did not stop; killing it", "pid", cmd.Process.Pid)
				cmd.Process.Kill()
				<-exited
			}
		})
		workers = append(workers, sw)
	}
	return workers, nil
}

// waitParkedAll waits until the replicas together report n long-polls
// waiting; it returns the total and each replica's count.
func waitParkedAll(ctx context.Context, f *fleet, reps []replica, n int, bound time.Duration) (int64, []int64, error) {
	deadline := time.Now().Add(bound)
	for {
		per := make([]int64, len(reps))
		var total int64
		for k, r := range reps {
			m, err := scrapeAt(ctx, f, r.url)
			if err != nil {
				return 0, per, err
			}
			per[k] = int64(m["genesis_manifest_longpolls_waiting"])
			total += per[k]
		}
		if total >= int64(n) {
			return total, per, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return total, per, fmt.Errorf("only %d of %d long-polls parked after %s", total, n, bound)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrapeAt scrapes the replica at url.
func scrapeAt(ctx context.Context, f *fleet, url string) (map[string]float64, error) {
	return f.scrapeURL(ctx, url)
}

// waitReceived waits until the workers' agents together received n new
// manifests, or bound passes.
func waitReceived(ctx context.Context, workers []*scaleWorker, n int, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var got int64
		for _, w := range workers {
			got += w.received.Load()
		}
		if got >= int64(n) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// heartbeatsAtScale has every agent heartbeat so that the fleet offers
// c.heartbeatRate per second across the replicas for c.duration, waits
// until the replicas wrote everything queued, and compares the written
// rate with the one-statement batch alone (rawUpsert).
func heartbeatsAtScale(ctx context.Context, c config, f *fleet, reps []replica, workers []*scaleWorker, as []*simAgent, pg *pgserver.Server, rep *report, log *slog.Logger) error {
	iv := time.Duration(float64(c.agents) / c.heartbeatRate * float64(time.Second))
	before := make([]heartbeatCounts, len(reps))
	for k, r := range reps {
		m, err := scrapeAt(ctx, f, r.url)
		if err != nil {
			return err
		}
		before[k] = heartbeatsOf(m)
	}
	pgCPU0, pgAt0 := postgresCPU(pg), time.Now()
	log.Info("heartbeats starting", "agents", c.agents, "interval", iv.String(), "offered_per_s", int(c.heartbeatRate), "duration", c.duration.String())
	for _, w := range workers {
		if err := w.send(fmt.Sprintf("heartbeat %s %s", iv, c.duration)); err != nil {
			return err
		}
	}
	var sent, accepted, rejected, netErrs, late, sumSeq, h2, h1 int64
	var lat []time.Duration
	first := time.Now()
	for _, w := range workers {
		e, err := w.wait(ctx, "heartbeats")
		if err != nil {
			return err
		}
		sent, accepted, rejected, netErrs, late, sumSeq = sent+e.Sent, accepted+e.Accepted, rejected+e.Rejected, netErrs+e.NetErrs, late+e.Late, sumSeq+e.SumSeq
		h2, h1 = h2+e.HTTP2, h1+e.HTTP1
		if t := time.Unix(0, e.FirstAt); t.Before(first) {
			first = t
		}
		for _, us := range e.LatUS {
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	// Until every replica wrote what it queued (bounded).
	var got heartbeatCounts
	drained := time.Now()
	for deadline := time.Now().Add(time.Minute); ; {
		got = heartbeatCounts{}
		for k, r := range reps {
			m, err := scrapeAt(ctx, f, r.url)
			if err != nil {
				return err
			}
			d := heartbeatsOf(m).minus(before[k])
			got = heartbeatCounts{got.queued + d.queued, got.written + d.written, got.dropped + d.dropped, got.replay + d.replay,
				got.queueFull + d.queueFull, got.badRequest + d.badRequest, got.unauthorized + d.unauthorized, got.forbidden + d.forbidden}
		}
		drained = time.Now()
		if got.written+got.dropped >= got.queued || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	pgCPU1, pgAt1 := postgresCPU(pg), time.Now()
	slices.Sort(lat)
	elapsed := drained.Sub(first)
	rate := float64(got.written) / elapsed.Seconds()
	raw, rawRows, err := rawUpsert(ctx, f, as, int64(len(as)))
	if err != nil {
		return err
	}
	pgCores := (pgCPU1 - pgCPU0) / pgAt1.Sub(pgAt0).Seconds()
	for k, v := range map[string]int64{"heartbeats sent": sent, "heartbeats accepted (202)": accepted, "heartbeats rejected (4xx/5xx)": rejected,
		"heartbeat network errors": netErrs, "heartbeat generator fell behind": late, "heartbeats queued (replicas)": got.queued,
		"heartbeats written (replicas)": got.written, "heartbeats dropped (replicas)": got.dropped, "heartbeat queue full (503)": got.queueFull} {
		rep.Counts[k] = v
	}
	if c.tls {
		rep.Counts["agent responses over HTTP/2 (the whole run)"] = h2
		rep.Counts["agent responses over HTTP/1.x (the whole run)"] = h1
		rep.check(h1 == 0, "--tls: %d responses over HTTP/1.x; every agent should speak HTTP/2 with its replica", h1)
	}
	rep.check(sent == accepted+rejected+netErrs, "heartbeats: sent %d != accepted %d + rejected %d + errors %d", sent, accepted, rejected, netErrs)
	rep.check(accepted == got.queued+got.replay, "heartbeats: accepted %d != queued %d + replays %d on the replicas", accepted, got.queued, got.replay)
	rep.check(got.written+got.dropped == got.queued, "heartbeats: the replicas wrote %d + dropped %d of %d queued", got.written, got.dropped, got.queued)
	var dbSeq int64
	if err := f.st.Pool().QueryRow(ctx, `SELECT coalesce(sum(last_heartbeat_seq), 0)::bigint FROM agents WHERE workspace LIKE 'load-%'`).Scan(&dbSeq); err == nil {
		rep.check(dbSeq == sumSeq, "heartbeats: agents.last_heartbeat_seq sums to %d, the agents' last accepted to %d", dbSeq, sumSeq)
	}
	offered := c.heartbeatRate
	rep.add(figure{Measure: fmt.Sprintf("heartbeats from %s agents across %d replicas, written to Postgres", thousands(strconv.Itoa(c.agents)), len(reps)),
		Value: rate, Unit: "/s", Baseline: fmt.Sprintf("the one-statement batch alone (raw INSERT … ON CONFLICT of %d rows through pgx, 1,000 a statement)", rawRows),
		BaselineValue: raw, Goal: fmt.Sprintf("%s/s offered (1,000,000 agents at 60 s: 16,667/s)", thousands(strconv.Itoa(int(offered)))),
		Verdict: verdict(rate >= 0.97*offered),
		Note: fmt.Sprintf("each agent every %s for %s (%.0f/s offered); %d written in %.1f s (first send → last write); request p50 %.1f ms, p99 %.1f ms; %d answered 503 (queue full); Postgres %.2f cores (its processes' CPU time over the phase) of %d",
			iv.Round(time.Millisecond), c.duration, offered, got.written, elapsed.Seconds(), ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), got.queueFull, pgCores, runtime.NumCPU())})
	rep.add(figure{Measure: "heartbeat request latency p99, across the replicas", Value: ms(percentile(lat, 0.99)), Unit: "ms"})
	rep.add(figure{Measure: "Postgres CPU during the heartbeats", Value: pgCores, Unit: "cores", Note: fmt.Sprintf("of %d", runtime.NumCPU())})
	return nil
}

// postgresCPU is the CPU seconds the cluster's processes (the postmaster
// and its children) have used.
func postgresCPU(pg *pgserver.Server) float64 {
	b, err := os.ReadFile(filepath.Join(pg.Dir(), "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces): state ppid ...
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != pm && ppid != pm {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stt, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + stt
	}
	return float64(ticks) / 100 // USER_HZ
}

// rawSignStore is the fan-out's baseline: sign n payloads of size bytes
// (ed25519 DSSE, on every core) and store them 256 to a statement from 2
// writers into a table shaped like manifests' stored columns, without its
// triggers or any HTTP. It returns the wall time.
func rawSignStore(ctx context.Context, f *fleet, signer *dsse.Signer, n, size int) (time.Duration, error) {
	if size <= 0 {
		size = 4096
	}
	pool := f.st.Pool()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS load_raw_manifests (droplet_id bigint, version bigint, envelope bytea NOT NULL,
		digest bytea NOT NULL, issued_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (droplet_id, version))`); err != nil {
		return 0, err
	}
	defer pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS load_raw_manifests`)
	// An envelope is base64 of the payload plus ~200 bytes: aim at size.
	payload := make([]byte, max(64, (size-200)*3/4))
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	type signed struct {
		d   int64
		env []byte
	}
	start := time.Now()
	out := make(chan signed, 1024)
	var next atomic.Int64
	var signers sync.WaitGroup
	var signErr atomic.Value
	for range runtime.GOMAXPROCS(0) {
		signers.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && ctx.Err() == nil; i = next.Add(1) - 1 {
				p := append([]byte(strconv.FormatInt(i, 10)+":"), payload...)
				env, err := signer.Sign(schema.ManifestPayloadType, p)
				if err != nil {
					signErr.Store(err)
					return
				}
				out <- signed{d: dropletBase + i, env: env}
			}
		})
	}
	go func() { signers.Wait(); close(out) }()
	var writers errgroup.Group
	for range 2 {
		writers.Go(func() error {
			batch := make([]signed, 0, 256)
			flush := func() error {
				if len(batch) == 0 {
					return nil
				}
				ds := make([]int64, len(batch))
				envs := make([][]byte, len(batch))
				digests := make([][]byte, len(batch))
				for k, s := range batch {
					sum := sha256.Sum256(s.env)
					ds[k], envs[k], digests[k] = s.d, s.env, sum[:]
				}
				now := time.Now()
				_, err := pool.Exec(ctx, `INSERT INTO load_raw_manifests (droplet_id, version, envelope, digest, issued_at, expires_at)
					SELECT d, 1, e, g, $4, $5 FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS t(d, e, g)`, ds, envs, digests, now, now.Add(24*time.Hour))
				batch = batch[:0]
				return err
			}
			for s := range out {
				batch = append(batch, s)
				if len(batch) == cap(batch) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return flush()
		})
	}
	if err := writers.Wait(); err != nil {
		for range out { // let the signers finish
		}
		return 0, err
	}
	if err, ok := signErr.Load().(error); ok {
		return 0, err
	}
	return time.Since(start), nil
}

// reconcilerBinary finds the genesis-reconciler binary: bin when given,
// else beside this executable (make build puts both in one folder), else
// in PATH.
func reconcilerBinary(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "genesis-reconciler")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("genesis-reconciler")
	if err != nil {
		return "", errors.New("no genesis-reconciler binary beside genesis-load or in PATH: build it (make build) or pass --reconciler-bin")
	}
	return p, nil
}

// startSimulator serves the DigitalOcean simulator on 127.0.0.1 with the
// load fleet's accounts (each with its own token; no server-side rate
// limit: the leader's own budget per token paces it, as against
// DigitalOcean) and one running droplet per agent in the agent's account,
// tagged as the reconciler tags the droplets it creates. It returns the
// API's URL and the accounts' tokens, and counts the API's requests in
// calls.
func startSimulator(ctx context.Context, f *fleet, as []*simAgent, accounts int, calls *doCalls, log *slog.Logger) (string, []string, error) {
	tokens := make([]string, accounts)
	seeds := make(map[string][]dosim.Seed, accounts)
	for _, a := range as {
		seeds[a.account] = append(seeds[a.account], dosim.Seed{ID: dropletBase + a.i, Name: a.name, Region: loadstate.Region, Size: loadstate.Size, Image: loadstate.Image,
			Tags: plan.Tags(a.ws, a.account, string(schema.TierPro)), IP: a.ip})
	}
	var accts []dosim.Account
	for k := range tokens {
		var b [16]byte
		rand.Read(b[:])
		tokens[k] = hex.EncodeToString(b[:])
		name := loadstate.AccountName(k, accounts)
		accts = append(accts, dosim.Account{Name: name, Token: tokens[k], DropletLimit: len(seeds[name]) + 100})
	}
	sim, err := dosim.New(dosim.Config{Accounts: accts, Limits: dosim.Limits{RatePerMinute: -1, RatePerHour: -1}, Seed: 1, Logger: log.With("component", "dosim")})
	if err != nil {
		return "", nil, err
	}
	for name, ss := range seeds {
		if err := sim.SeedDroplets(name, ss); err != nil {
			return "", nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	h := sim.Handler()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			calls.reads.Add(1)
		} else {
			calls.writes.Add(1)
		}
		h.ServeHTTP(w, r)
	})}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{}, 2)
	go func() { sim.Run(runCtx); done <- struct{}{} }()
	go func() { srv.Serve(ln); done <- struct{}{} }()
	f.addCloser(func() {
		srv.Close()
		cancel()
		<-done
		<-done
	})
	return "http://" + ln.Addr().String() + "/", tokens, nil
}

// doCalls counts the DigitalOcean API's requests of a scale run.
type doCalls struct{ reads, writes atomic.Int64 }

// startReplica runs bin, the genesis-reconciler binary, as replica k on
// the run's state repository, database and keys, listening on a free
// loopback port, and returns once its /readyz answers: replica 0 with
// --role full and the simulator as DigitalOcean (each account's token in
// the variable genesis.yaml names), the others with --role serve. The
// webhook's secret goes in its environment, not its arguments; no other
// GENESIS_* variable of this process reaches it. The watchdog runs hourly:
// the load's agents heartbeat only in the heartbeat phase, and silent
// droplets would be remediated (the watchdog is measured elsewhere). It is
// stopped with SIGTERM as the run ends.
func (f *fleet) startReplica(ctx context.Context, c config, bin string, k int, cfg serverConfig, dbURL, doURL string, doTokens []string, stderr io.Writer) (replica, error) {
	id := fmt.Sprintf("load-%d", k)
	role := map[bool]string{true: "full", false: "serve"}[k == 0]
	cmd := exec.Command(bin, "--role", role, "--replica-id", id, "--state-repo", cfg.StateRepo, "--database-url", dbURL,
		"--signing-key", cfg.SigningKey, "--age-identity", cfg.AgeIdentity, "--listen", "127.0.0.1:0", "--do-api-url", doURL,
		"--watchdog-every", "1h", "--insecure-no-auth", "--log-format", c.logFormat, "--log-level", c.serverLogLevel)
	if f.tls != nil {
		cmd.Args = append(cmd.Args, "--tls-cert", f.tls.CertFile, "--tls-key", f.tls.KeyFile)
	} else {
		cmd.Args = append(cmd.Args, "--agent-insecure-http")
	}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GENESIS_") && !strings.HasPrefix(e, "DATABASE_URL=") && !strings.HasPrefix(e, "GOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, "GENESIS_WEBHOOK_SECRET="+cfg.WebhookSecret)
	if k == 0 {
		for j, t := range doTokens {
			cmd.Env = append(cmd.Env, loadstate.TokenEnvOf(j, len(doTokens))+"="+t)
		}
	}
	if c.replicaMemLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+c.replicaMemLimit)
	}
	debug := ""
	if os.Getenv(profileDirEnv) != "" {
		var err error
		if debug, err = freeLoopbackAddr(); err != nil {
			return replica{}, err
		}
		cmd.Args = append(cmd.Args, "--debug-listen", debug)
	}
	cmd.Stderr = stderr
	lines, err := f.startChild(cmd, "replica "+id, func() { cmd.Process.Signal(syscall.SIGTERM) })
	if err != nil {
		return replica{}, err
	}
	var url string
	select {
	case line := <-lines:
		var ok bool
		if url, ok = strings.CutPrefix(strings.TrimSpace(line), "listening on "); !ok {
			return replica{}, fmt.Errorf("%s ended before it listened (its log is above)", bin)
		}
	case <-ctx.Done():
		return replica{}, ctx.Err()
	}
	if err := loopbackURL("replica url", url); err != nil {
		return replica{}, err
	}
	if err := waitReady(ctx, &http.Client{Timeout: 5 * time.Second, Transport: f.http.Transport}, url); err != nil {
		return replica{}, err
	}
	return replica{url: url, pid: cmd.Process.Pid, debug: debug}, nil
}

// freeLoopbackAddr is a loopback address with a port free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// heapProfiles writes each replica's heap profile (after a collection) to
// $GENESIS_LOAD_PROFILE_DIR/<replica>.<moment>.heap.pprof, when that is
// set: where a replica's memory goes at that moment of the run.
func heapProfiles(ctx context.Context, f *fleet, reps []replica, moment string) {
	dir := os.Getenv(profileDirEnv)
	if dir == "" {
		return
	}
	for k, r := range reps {
		if r.debug == "" {
			continue
		}
		name := filepath.Join(dir, fmt.Sprintf("load-%d.%s.heap.pprof", k, moment))
		if err := fetchTo(ctx, f.http, "http://"+r.debug+"/debug/pprof/heap?gc=1", name); err != nil {
			f.log.Warn("heap profile", "replica", k, "err", err)
		}
	}
}

// fetchTo writes the body of GET url to the file name.
func fetchTo(ctx context.Context, cl *http.Client, url, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	out, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// fanned is what one fleet-wide change did (fanOut).
type fanned struct {
	lat           []time.Duration // commit → each agent's new manifest, sorted
	it            issueTimes
	commit        string
	stored        int64
	all           bool
	bound         time.Duration
	committed     time.Time // when the change was committed
	seen          time.Time // when the issued count was read last
	before, peaks []int64   // per replica: RSS at the commit, peak RSS (VmHWM) since
	// resetErr is why VmHWM could not be reset at the commit (another
	// kernel, no permission): the peaks are then since each replica started.
	resetErr error
}

// fanOut makes change (a commit), pushes it, and waits until every agent
// has received a new manifest or the time left, less reserve, runs out.
// Each replica's peak RSS is measured from the commit on: VmHWM is reset
// first (Linux's clear_refs).
func fanOut(ctx context.Context, f *fleet, reps []replica, workers []*scaleWorker, agents int, reserve time.Duration, change func() error) (fanned, error) {
	var out fanned
	for _, w := range workers {
		if err := w.send("mark"); err != nil {
			return out, err
		}
		if _, err := w.wait(ctx, "marked"); err != nil {
			return out, err
		}
	}
	// A progress line sent just before the mark may arrive after it.
	for settle := time.Now().Add(5 * time.Second); time.Now().Before(settle); time.Sleep(50 * time.Millisecond) {
		var got int64
		for _, w := range workers {
			got += w.received.Load()
		}
		if got == 0 {
			break
		}
	}
	out.before, out.peaks = make([]int64, len(reps)), make([]int64, len(reps))
	for k, r := range reps {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", r.pid), []byte("5"), 0); err != nil && out.resetErr == nil {
			out.resetErr = err
		}
		out.before[k], _ = rssOf(r.pid)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	issuedCh, err := watchIssued(watchCtx, f, agents)
	if err != nil {
		return out, err
	}
	if err := change(); err != nil {
		return out, err
	}
	committed := time.Now()
	out.committed = committed
	if err := f.push(ctx); err != nil {
		return out, err
	}
	out.commit, _ = f.repo.head(ctx)
	out.bound = max(10*time.Second, min(5*time.Minute, time.Until(deadlineOf(ctx))-reserve))
	out.all = waitReceived(ctx, workers, agents, out.bound)
	for _, w := range workers {
		if err := w.send("report"); err != nil {
			return out, err
		}
		e, err := w.wait(ctx, "received")
		if err != nil {
			return out, err
		}
		for _, t := range e.Times {
			if t >= committed.UnixNano() {
				out.lat = append(out.lat, time.Unix(0, t).Sub(committed))
			}
		}
	}
	slices.Sort(out.lat)
	select {
	case out.it = <-issuedCh:
	case <-time.After(2 * time.Second):
		stopWatch()
		out.it = <-issuedCh
	}
	out.seen = time.Now()
	for k, r := range reps {
		_, out.peaks[k] = rssOf(r.pid)
	}
	out.stored, _ = issuedFor(ctx, f, out.commit)
	return out, nil
}

// peakSince says what the peaks cover: from the commit when VmHWM was
// reset, else the whole life of each replica.
func (o fanned) peakSince() string {
	if o.resetErr != nil {
		return fmt.Sprintf("peak RSS (VmHWM) since the replica started, NOT since the commit (resetting it failed: %v)", o.resetErr)
	}
	return "peak RSS (VmHWM, reset through /proc/PID/clear_refs at the commit) until every agent had it"
}

// note says what fanOut measured, for a figure's note.
func (o fanned) note(agents int, envBytes float64) string {
	lastStored := "the last"
	last := o.it.last
	if last.IsZero() {
		lastStored, last = "not all of them by the end; the newest seen", o.seen
	}
	peaks := make([]string, len(o.peaks))
	for k := range o.peaks {
		peaks[k] = fmt.Sprintf("r%d %d → %d MiB", k, o.before[k]>>20, o.peaks[k]>>20)
	}
	stored := "the leader stored no manifest"
	if !o.it.first.IsZero() {
		stored = fmt.Sprintf("the leader stored the first manifest %.0f ms and %s %.0f ms after the commit", ms(o.it.first.Sub(o.committed)), lastStored, ms(last.Sub(o.committed)))
	}
	note := fmt.Sprintf("each agent's long-poll answered with its new manifest, seen by the agent processes; %d of %d agents got it within %s; p50 %.0f ms, p99 %.0f ms, max %.0f ms; %s (%d stored, %.0f-byte envelopes); RSS at the commit → %s, per replica: %s",
		len(o.lat), agents, o.bound.Round(time.Second), ms(percentile(o.lat, 0.5)), ms(percentile(o.lat, 0.99)), ms(percentile(o.lat, 1)),
		stored, o.it.issued, envBytes, o.peakSince(), strings.Join(peaks, ", "))
	if !o.all {
		note += fmt.Sprintf("; NOT every agent got it: %d missing", agents-len(o.lat))
	}
	return note
}
