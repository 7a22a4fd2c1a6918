package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/internal/syncio"
)

// usageErr is a command-line mistake (exit status 2).
func usageErr(format string, args ...any) error { return cliexit.Usage(format, args...) }

const usage = `Usage: genesis-load SCENARIO [flags]
       genesis-load gobench [--input FILE] [--markdown FILE] [--json]

Simulates --agents agents against a reconciler on real Postgres and reports
throughput and latency percentiles, each against a baseline measured in the
same run. Without --reconciler it makes a git state repository (one tenant per
agent) and starts a throwaway Postgres and the reconciler genesis-reconciler
runs, without its control loop and DigitalOcean (the state repository's reader
triggered by a signed push webhook, enrollment, manifests, heartbeats,
/metrics) on 127.0.0.1 as a subprocess of itself (genesis-load serve; --server
inproc runs it in this process), and stops it at the end.

Scenarios:
  heartbeat  every agent enrolls, then heartbeats every 60s/--speedup for
             --duration; reports heartbeats/s written to Postgres end to end
             and request latency, against a raw batched INSERT ... ON CONFLICT
             of the same rows through pgx
  longpoll   every agent parks on GET /v1/manifest?wait=60s with If-None-Match;
             a commit then changes every tenant; reports fan-out time
             (commit -> new manifest received) p50/p99/max and the process RSS
  converge   every agent long-polls, verifies the manifest it gets (signature,
             payload, credentials opened with its own age identity) and
             heartbeats the applied version; reports commit -> applied as
             recorded in fleet_status, p50/p99/max
  http304    conditional GET of a cached manifest (304) vs a bare net/http
             handler answering 304, with wrk when installed, else a Go load
             generator (the report says which)
  scale      the fleet past one process (make bench-scale): starts --replicas
             reconciler processes on one Postgres (replica 0 follows pushes and
             sweeps, the others serve agents and hear of manifests through
             Postgres notifications) and spreads the agents over --agent-procs
             processes, each under the open-file limit, dialing from --sources
             loopback addresses of 127.0.0.0/8 each (so ephemeral ports do not
             run out); agent i talks to replica i mod --replicas. It reports
             RSS per replica and per parked long-poll; a fleet-wide template
             change -> every agent has its manifest (p50/p99/max) against
             signing and storing as many manifests alone; and heartbeats from
             every agent at --heartbeat-rate per second across the replicas
             (written/s, p99, Postgres CPU) against the one-statement batch
             alone. Everything stays on loopback and ends within --time-limit.
  gobench    read 'go test -bench' output (--input, default stdin) and report the repository's
             benchmark pairs as ratios (used by make bench)

--reconciler URL targets a running reconciler (127.0.0.1 or localhost only);
it then needs --database-url (the reconciler's database, loopback only) to
record fake droplets and mint their one-time tokens, and supports heartbeat
only (the fake tenants are not in its state, so they get no manifests). Use a
throwaway reconciler: the load tool writes rows for tenants its state
repository does not declare.

Exit status: 0 success, 1 failure (including counts that do not add up),
2 usage error.

Flags:
`

// config is the parsed command line.
type config struct {
	scenario       string
	agents         int
	duration       time.Duration
	speedup        float64
	reconciler     string
	databaseURL    string
	credentials    int
	connections    int
	wrk            string
	jsonOut        bool
	markdown       string
	logFormat      string
	logLevel       string
	serverLogLevel string
	input          string
	server         string
	// scale
	replicas      int
	agentProcs    int
	sources       int
	heartbeatRate float64
	// replicaMemLimit is GOMEMLIMIT for each scale replica ("" : none).
	replicaMemLimit string
	// accountDroplets is how many droplets each DigitalOcean account of
	// the scale run holds.
	accountDroplets int
	// editPhase adds the scale run's phase of a commit that edits every
	// tenant file.
	editPhase bool
	// tls serves the scale run's replicas over TLS, each agent on its own
	// HTTP/2 connection.
	tls bool
	// reconcilerBin is the genesis-reconciler binary the scale run's
	// serve replicas run ("": beside this executable, else in PATH).
	reconcilerBin string
	timeLimit     time.Duration
	enroll        string
	// gobench
	as string
}

var scenarios = map[string]bool{"heartbeat": true, "longpoll": true, "converge": true, "http304": true, "gobench": true, "scale": true}

// defaultAgents is each scenario's --agents default (modest: make bench
// runs them all on 2 cores in a few minutes).
var defaultAgents = map[string]int{"heartbeat": 2000, "longpoll": 2000, "converge": 1000, "http304": 100, "scale": 2000}

// agentsPerProc is how many agents one agent process of the scale scenario
// holds by default: one socket each, well under a 20,000 open-file limit.
const agentsPerProc = 15_000

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("genesis-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if len(args) == 0 {
		fs.Usage()
		return c, usageErr("a scenario is required")
	}
	if a := args[0]; a == "-h" || a == "-help" || a == "--help" || a == "help" {
		fs.Usage()
		return c, flag.ErrHelp
	}
	c.scenario = args[0]
	if !scenarios[c.scenario] {
		return c, usageErr("unknown scenario %q (heartbeat, longpoll, converge, http304, scale, gobench)", c.scenario)
	}
	fs.IntVar(&c.agents, "agents", 0, "number of simulated agents (default: heartbeat 2000, longpoll 2000, converge 1000, http304 100)")
	fs.DurationVar(&c.duration, "duration", 0, "heartbeat and http304: how long to send load (default 20s and 5s per measurement); longpoll and converge: the most to wait for every agent (default 2m); scale: the heartbeat phase (default 30s)")
	fs.Float64Var(&c.speedup, "speedup", 60, "heartbeat: time compression; each agent heartbeats every 60s/speedup")
	fs.StringVar(&c.reconciler, "reconciler", getenv("GENESIS_LOAD_RECONCILER"), "target a running reconciler at this URL (loopback only) instead of starting one ($GENESIS_LOAD_RECONCILER)")
	fs.StringVar(&c.databaseURL, "database-url", getenv("DATABASE_URL"), "with --reconciler: its Postgres (loopback only), to record fake droplets and mint their tokens ($DATABASE_URL)")
	fs.IntVar(&c.credentials, "credentials", 2, "sealed credentials per tenant (each manifest re-seals them to the droplet)")
	fs.IntVar(&c.connections, "connections", 64, "heartbeat and scale: most heartbeat requests in flight (scale: split over the agent processes); http304: connections")
	fs.StringVar(&c.wrk, "wrk", "wrk", "http304: the wrk binary (looked up in PATH); \"off\" uses the Go load generator")
	fs.BoolVar(&c.jsonOut, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&c.markdown, "markdown", "", "write or update this scenario's rows in the generated section of this Markdown `FILE` (bench/results.md)")
	fs.StringVar(&c.server, "server", "subprocess", "where the reconciler under load runs: subprocess (its own process, so its RSS and CPU are its own) or inproc")
	fs.StringVar(&c.input, "input", "-", "gobench: the 'go test -bench' output to read (- is stdin)")
	fs.StringVar(&c.as, "as", "", "gobench: the scenario name its rows get in --markdown (default \"go test -bench\"; a run replaces all rows of its scenario, so make bench-scale uses its own)")
	fs.IntVar(&c.replicas, "replicas", 2, "scale: reconciler processes on the one Postgres")
	fs.IntVar(&c.agentProcs, "agent-procs", 0, "scale: processes the agents are spread over (default: one per 15,000 agents, at least 2)")
	fs.IntVar(&c.sources, "sources", 4, "scale: loopback source addresses each agent process dials from (127.20.0.1, 127.21.0.1, ...; ~28,000 ephemeral ports each)")
	fs.Float64Var(&c.heartbeatRate, "heartbeat-rate", 16_700, "scale: heartbeats per second the whole fleet offers (each agent every agents/rate seconds)")
	fs.StringVar(&c.enroll, "enroll", "bulk", "scale: bulk records the agents as enrolled in Postgres and the leader's sweep renders their first manifests (100,000 enrollments through HTTP take most of the time bound here); http enrolls each through POST /v1/enroll with its replica")
	fs.StringVar(&c.replicaMemLimit, "replica-memory-limit", "", "scale: GOMEMLIMIT of each replica (e.g. 600MiB; a soft limit: the Go runtime collects harder near it, as the systemd unit and the pod set it from their memory limit); empty: none")
	fs.IntVar(&c.accountDroplets, "account-droplets", 1000, "scale: droplets per DigitalOcean account (the fleet spreads over agents/N accounts, each with its own token and rate budget, as production does; the leader lists every account each pass, 200 droplets a page)")
	fs.BoolVar(&c.editPhase, "edit-phase", false, "scale: after the template change, also commit an edit of every tenant file and measure it (every replica decodes the fleet again; ~6 min more at 100,000)")
	fs.BoolVar(&c.tls, "tls", false, "scale: the replicas serve TLS (a certificate of the run's own, HTTP/2 offered) and every agent keeps a connection of its own for its polls and heartbeats, as agents on droplets connect (the figures go under scenario scale-tls); default: plain HTTP/1.1 over pooled connections")
	fs.StringVar(&c.reconcilerBin, "reconciler-bin", "", "scale: the genesis-reconciler binary replicas 1… run as --role serve (default: genesis-reconciler beside this executable, else in PATH)")
	fs.DurationVar(&c.timeLimit, "time-limit", 15*time.Minute, "scale: the most the whole run may take (setup included); it stops there and reports what it measured")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level of the load tool")
	fs.StringVar(&c.serverLogLevel, "server-log-level", "warn", "log level of the in-process reconciler")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, usageErr("%v", err)
	}
	switch {
	case fs.NArg() > 0:
		return c, usageErr("unexpected arguments %q", fs.Args())
	case c.agents < 0 || c.agents > 1_000_000:
		return c, usageErr("--agents must be between 1 and 1000000")
	case c.duration < 0 || c.duration > 24*time.Hour:
		return c, usageErr("--duration must be positive and at most 24h")
	case c.speedup <= 0 || c.speedup > 100_000:
		return c, usageErr("--speedup must be in (0, 100000]")
	case c.credentials < 1 || c.credentials > 8:
		return c, usageErr("--credentials must be between 1 and 8")
	case c.connections < 1 || c.connections > 10_000:
		return c, usageErr("--connections must be between 1 and 10000")
	case c.server != "subprocess" && c.server != "inproc":
		return c, usageErr("--server must be subprocess or inproc")
	case c.replicas < 1 || c.replicas > 32:
		return c, usageErr("--replicas must be between 1 and 32")
	case c.agentProcs < 0 || c.agentProcs > 64:
		return c, usageErr("--agent-procs must be between 1 and 64")
	case c.accountDroplets < 1:
		return c, usageErr("--account-droplets must be at least 1")
	case c.sources < 1 || c.sources > 1000:
		return c, usageErr("--sources must be between 1 and 1000")
	case c.heartbeatRate <= 0 || c.heartbeatRate > 1_000_000:
		return c, usageErr("--heartbeat-rate must be in (0, 1000000]")
	case c.enroll != "bulk" && c.enroll != "http":
		return c, usageErr("--enroll must be bulk or http")
	case c.replicaMemLimit != "" && !memLimit.MatchString(c.replicaMemLimit):
		return c, usageErr("--replica-memory-limit %q: want a GOMEMLIMIT value such as 600MiB or 2GiB", c.replicaMemLimit)
	case c.tls && c.scenario != "scale":
		return c, usageErr("--tls is for the scale scenario")
	case c.timeLimit <= 0 || c.timeLimit > 24*time.Hour:
		return c, usageErr("--time-limit must be positive and at most 24h")
	}
	if c.agents == 0 {
		c.agents = defaultAgents[c.scenario]
	}
	if c.scenario == "scale" {
		if c.agentProcs == 0 {
			c.agentProcs = max(2, (c.agents+agentsPerProc-1)/agentsPerProc)
		}
		if c.duration == 0 {
			c.duration = 30 * time.Second
		}
		if c.reconciler != "" {
			return c, usageErr("scale starts its own replicas; drop --reconciler")
		}
	}
	if c.reconciler != "" {
		if err := loopbackURL("--reconciler", c.reconciler); err != nil {
			return c, err
		}
		if c.scenario != "heartbeat" {
			return c, usageErr("%s needs a reconciler the load tool starts (its state repository declares the agents' tenants, so they get manifests); drop --reconciler", c.scenario)
		}
		if c.databaseURL == "" {
			return c, usageErr("--reconciler needs --database-url (the reconciler's Postgres) to mint tokens for fake droplets")
		}
		if err := loopbackURL("--database-url", c.databaseURL); err != nil {
			return c, err
		}
	}
	return c, nil
}

// loopbackURL refuses a URL whose host is not a loopback address or
// "localhost": the load tool never loads anything but this machine.
func loopbackURL(flagName, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return usageErr("%s: not a URL with a host", flagName)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return usageErr("%s: %q is not a loopback address; the load tool only targets 127.0.0.1 or localhost", flagName, host)
	}
	return nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return serveMain(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "agents" {
		return agentsMain(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	// Two loggers and the reconciler subprocess's output share stderr.
	stderr = &syncio.Writer{W: stderr}
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logflag.New(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return usageErr("%v", err)
	}
	serverLog, err := logflag.New(stderr, c.logFormat, c.serverLogLevel)
	if err != nil {
		return usageErr("--server-log-level: %v", err)
	}
	log = log.With("component", "load")
	var rep *report
	switch c.scenario {
	case "gobench":
		if rep, err = goBenchFile(c.input, log); err == nil && c.as != "" {
			rep.Scenario, rep.Command = c.as, "" // the notes carry each command
		}
	case "scale":
		rep, err = scaleScenario(ctx, c, log, serverLog, stderr)
	default:
		rep, err = runScenario(ctx, c, log, serverLog, stderr)
	}
	if err != nil {
		return err
	}
	if c.jsonOut {
		if err := rep.writeJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.writeTable(stdout)
	}
	if c.markdown != "" {
		if err := updateMarkdown(c.markdown, rep, machineInfo(), time.Now()); err != nil {
			return err
		}
		log.Info("results written", "file", c.markdown)
	}
	if len(rep.Inconsistent) > 0 {
		return fmt.Errorf("counts do not add up: %s", strings.Join(rep.Inconsistent, "; "))
	}
	return nil
}

// runScenario starts (or reaches) the reconciler and runs c.scenario.
func runScenario(ctx context.Context, c config, log, serverLog *slog.Logger, stderr io.Writer) (*report, error) {
	fl, err := startFleet(ctx, c, log, serverLog, stderr)
	if err != nil {
		return nil, err
	}
	defer fl.close()
	switch c.scenario {
	case "heartbeat":
		return heartbeatScenario(ctx, c, fl, log)
	case "longpoll":
		return longpollScenario(ctx, c, fl, log)
	case "converge":
		return convergeScenario(ctx, c, fl, log)
	case "http304":
		return http304Scenario(ctx, c, fl, log)
	}
	return nil, usageErr("unknown scenario %q", c.scenario)
}

// memLimit is a GOMEMLIMIT value: bytes with an optional IEC unit.
var memLimit = regexp.MustCompile(`^[1-9][0-9]{0,15}(B|KiB|MiB|GiB|TiB)?$`)
