// Command genesis-dosim serves a simulated DigitalOcean API v2 (package
// fakes/dosim) for development, tests, the demo and benchmarks. Point
// godo at it with godo.SetBaseURL("http://127.0.0.1:PORT/").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/logflag"
)

func main() { cliexit.Main("genesis-dosim", cliexit.Runner(run)) }

// accountsFlag collects raw --account values; they are parsed after flag
// parsing so that an error never echoes a token (the flag package quotes
// the whole value in its own errors).
type accountsFlag []string

func (a *accountsFlag) String() string { return "" }

func (a *accountsFlag) Set(v string) error {
	*a = append(*a, v)
	return nil
}

func accountNames(accs []dosim.Account) string {
	names := make([]string, len(accs))
	for i, acc := range accs {
		names[i] = acc.Name
	}
	return strings.Join(names, ",")
}

// parseAccount reads NAME:TOKEN:DROPLET_LIMIT; the token may itself contain
// colons (the name ends at the first, the limit starts after the last).
func parseAccount(v string) (dosim.Account, error) {
	name, rest, ok1 := strings.Cut(v, ":")
	i := strings.LastIndex(rest, ":")
	if !ok1 || i < 0 {
		return dosim.Account{}, fmt.Errorf("want NAME:TOKEN:DROPLET_LIMIT, got %q", redact(v))
	}
	token, limitS := rest[:i], rest[i+1:]
	limit, err := strconv.Atoi(limitS)
	if err != nil || limit < 0 {
		return dosim.Account{}, fmt.Errorf("account %s: droplet limit %q is not a non-negative integer", name, limitS)
	}
	acc := dosim.Account{Name: name, Token: token, DropletLimit: limit}
	if name == "" || token == "" {
		return acc, fmt.Errorf("want NAME:TOKEN:DROPLET_LIMIT, got %q", redact(v))
	}
	return acc, nil
}

// redact keeps tokens out of error messages.
func redact(v string) string {
	name, _, _ := strings.Cut(v, ":")
	return name + ":…"
}

const usageText = `Usage: genesis-dosim [flags]

Serves a simulated DigitalOcean API v2 at the root (/v2/...) for godo, and an
unauthenticated control API under /_sim/ (see docs/dosim.md). Prints the base
URL (ending in "/") on stdout once listening; logs go to stderr.

Accounts come from --account, else from $DOSIM_ACCOUNTS (comma-separated
NAME:TOKEN:DROPLET_LIMIT), else one account default:dosim-token:25.

With --dns-listen, the hosted zones of every account (/v2/domains and their
records) are also answered authoritatively over DNS (UDP and TCP) on that
loopback address, e.g. for Pebble's -dnsserver or a Go net.Resolver; the bound
address is logged as dns_addr. Reserved IPs (/v2/reserved_ips, 127.2.x.y) are
data only: no traffic is routed to them.

Boot hook environment: DOSIM_DROPLET_ID, DOSIM_DROPLET_NAME, DOSIM_DROPLET_IP
(127.1.x.y), DOSIM_DROPLET_TAGS (comma-separated), DOSIM_DROPLET_REGION,
DOSIM_DROPLET_SIZE, DOSIM_ACCOUNT, DOSIM_USER_DATA_FILE and, with
--disk-root, DOSIM_DISK_DIR.

Flags:
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genesis-dosim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	var rawAccounts accountsFlag
	listen := fs.String("listen", "127.0.0.1:8090", "`address` to listen on (port 0 picks a free port)")
	fs.Var(&rawAccounts, "account", "account as `NAME:TOKEN:DROPLET_LIMIT` (repeatable)")
	perMinute := fs.Int("rate-per-minute", dosim.DefaultRatePerMinute, "requests per token per sliding minute (negative: unlimited)")
	perHour := fs.Int("rate-per-hour", dosim.DefaultRatePerHour, "requests per token per sliding hour (negative: unlimited)")
	bootDelay := fs.Duration("boot-delay", 3*time.Second, "how long a new droplet stays \"new\" before it is active with an address")
	actionDelay := fs.Duration("action-delay", 2*time.Second, "how long a droplet action stays \"in-progress\"")
	faultRate := fs.Float64("fault-rate", 0, "probability (0..1) that an API request fails with a random 500")
	latency := fs.Duration("latency", 0, "delay added to every API request")
	seed := fs.Uint64("seed", 1, "seed for request ids and random faults (same seed, same run)")
	statePath := fs.String("state", "", "JSON `file` the state is loaded from and saved to after every change (atomic rename)")
	diskRoot := fs.String("disk-root", "", "`directory` holding one directory per droplet (droplets/ID) and per snapshot (snapshots/ID)")
	bootCmd := fs.String("boot-cmd", "", "shell `command` run (sh -c) for every droplet that becomes active; stopped on power off, shutdown and destroy")
	hookGrace := fs.Duration("hook-grace", 3*time.Second, "time between SIGTERM and SIGKILL when a boot command is stopped")
	dnsListen := fs.String("dns-listen", "", "loopback `address` (host:port, UDP and TCP) to serve every account's domains over DNS on, e.g. 127.0.0.1:5353 (port 0 picks a free port, logged as dns_addr); off when empty")
	publicURL := fs.String("public-url", "", "base `URL` (ending in /) used in links instead of http://<Host header>/")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &cliexit.Error{Code: 2} // the flag package printed it
	}
	usage := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "genesis-dosim: "+format+"\n", a...)
		fs.Usage()
		return &cliexit.Error{Code: 2} // printed above
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments: %v", fs.Args())
	}
	log, err := logflag.New(stderr, *logFormat, *logLevel)
	if err != nil {
		return usage("%v", err)
	}
	if *publicURL != "" && !strings.HasSuffix(*publicURL, "/") {
		return usage("--public-url must end in /")
	}
	var accounts []dosim.Account
	for _, v := range rawAccounts {
		acc, err := parseAccount(v)
		if err != nil {
			return usage("--account: %v", err)
		}
		accounts = append(accounts, acc)
	}
	if len(accounts) == 0 {
		if env := getenv("DOSIM_ACCOUNTS"); env != "" {
			for _, v := range strings.Split(env, ",") {
				acc, err := parseAccount(strings.TrimSpace(v))
				if err != nil {
					return usage("$DOSIM_ACCOUNTS: %v", err)
				}
				accounts = append(accounts, acc)
			}
		} else {
			accounts = append(accounts, dosim.Account{Name: "default", Token: "dosim-token", DropletLimit: 25})
		}
	}
	cfg := dosim.Config{
		Accounts: accounts,
		Limits: dosim.Limits{
			RatePerMinute: *perMinute, RatePerHour: *perHour,
			BootDelay: dosim.Duration(*bootDelay), ActionDelay: dosim.Duration(*actionDelay),
			FaultRate: *faultRate, Latency: dosim.Duration(*latency),
		},
		Seed:       *seed,
		StatePath:  *statePath,
		DiskRoot:   *diskRoot,
		BootCmd:    *bootCmd,
		HookOutput: stderr,
		HookGrace:  *hookGrace,
		Logger:     log,
		PublicURL:  *publicURL,
	}
	if *perMinute == 0 || *perHour == 0 {
		return usage("--rate-per-minute and --rate-per-hour must not be 0 (negative means unlimited)")
	}
	sim, err := dosim.New(cfg)
	if err != nil {
		return fmt.Errorf("start simulator: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		sim.Close()
		return fmt.Errorf("listen: %w", err)
	}
	var dnsSrv *dosim.DNSServer
	if *dnsListen != "" {
		if dnsSrv, err = sim.ListenDNS(*dnsListen); err != nil {
			ln.Close()
			sim.Close()
			return fmt.Errorf("--dns-listen: %w", err)
		}
		log.Info("dns listening", "component", "genesis-dosim", "dns_addr", dnsSrv.Addr())
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	base := "http://" + ln.Addr().String() + "/"
	log.Info("listening", "component", "genesis-dosim", "url", base, "accounts", accountNames(accounts),
		"state", *statePath, "disk_root", *diskRoot, "boot_cmd", *bootCmd != "")
	fmt.Fprintln(stdout, base)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error { return sim.Run(gctx) })
	if dnsSrv != nil {
		g.Go(func() error { return dnsSrv.Serve(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		log.Info("stopped", "component", "genesis-dosim")
		return err
	})
	return g.Wait()
}
