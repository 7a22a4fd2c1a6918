package localfleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/pebble"
	"genesis.dev/fleet/internal/procgroup"
	"genesis.dev/fleet/reconciler/activator"
	"genesis.dev/fleet/reconciler/service"
)

// Names turns on what tenants' stable names need (spec.dns): the
// simulator serves its zones over DNS on loopback, the fleet's zone is
// created in it, Pebble (Let's Encrypt's test CA) issues every certificate
// over ACME, validating names through that DNS, and, with ActivatorIP, the
// reconciler runs the activator behind a real Caddy front.
//
// Every droplet's Caddy and the activator's front listen on their own
// loopback address (a droplet's 127.1.x.y, ActivatorIP) at the same two
// ports, picked once (Fleet.HTTPPort, Fleet.HTTPSPort): a client that
// resolves a name through the simulator's DNS reaches whichever one the
// name points at, as on the internet, and Pebble validates there. The
// droplets' boot command must run `genesis-demo droplet ... -- AGENT
// FLAGS`: Start inserts --http-port, --https-port, --acme-ca and
// --acme-ca-roots before its " -- ".
type Names struct {
	// Zone is the fleet's spec.dns.zone; Account is spec.dns.account
	// (the simulated account that hosts it).
	Zone, Account string
	// ActivatorIP is spec.dns.activator: a loopback address of
	// 127.0.0.0/8 the activator's front listens on ("": no activator).
	ActivatorIP string
	// CaddyBin is the Caddy binary the front runs (required with
	// ActivatorIP).
	CaddyBin string
	// PebbleBin is the pebble binary (internal/pebble.Build); required.
	PebbleBin string
	// Hold is the activator's --activator-hold (0: its default).
	Hold time.Duration
}

// NamesInfo is what a fleet with Names started.
type NamesInfo struct {
	// DNSAddr is the simulator's DNS server (host:port, UDP and TCP).
	DNSAddr string
	// HTTPPort and HTTPSPort are every droplet's and the front's ports.
	HTTPPort, HTTPSPort int
	// IssuerRoots is a PEM file of the roots Pebble's certificates chain
	// to: what a client of the fleet's HTTPS trusts.
	IssuerRoots string
	// ACMEDirectory and ACMECAFile are Pebble's ACME directory and the CA
	// of its API.
	ACMEDirectory, ACMECAFile string
	// Activator is the front's address (ActivatorIP:HTTPSPort; "" without
	// an activator); ActivatorHandler the reconciler's activator listener.
	Activator, ActivatorHandler string
}

// Resolver resolves names through the simulator's DNS only.
func (n *NamesInfo) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, n.DNSAddr)
	}}
}

// freePort is a port free on 127.0.0.1 (a listener on every address
// would have held it too), so free on every loopback address as well.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// prepareNames picks the ports, starts Pebble (its DNS server, the
// simulator's, listens from startDNS on) and returns the boot command with
// the droplets' certificate and port flags.
func (f *Fleet) prepareNames(ctx context.Context, o Options) (string, error) {
	n := o.Names
	if n.Zone == "" || n.Account == "" || n.PebbleBin == "" {
		return "", errors.New("localfleet: Names needs Zone, Account and PebbleBin")
	}
	if n.ActivatorIP != "" && n.CaddyBin == "" {
		return "", errors.New("localfleet: Names.ActivatorIP needs CaddyBin")
	}
	if !strings.Contains(o.BootCmd, " -- ") {
		return "", errors.New("localfleet: with Names, BootCmd must run `genesis-demo droplet ... -- AGENT-FLAGS`")
	}
	info := &NamesInfo{}
	f.Names = info
	dnsPort, err := freePort()
	if err != nil {
		return "", err
	}
	info.DNSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))
	if info.HTTPPort, err = freePort(); err != nil {
		return "", err
	}
	if info.HTTPSPort, err = freePort(); err != nil {
		return "", err
	}
	dir := filepath.Join(o.Work, "pebble")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	peb, err := pebble.Start(ctx, pebble.Options{Bin: n.PebbleBin, Dir: dir, DNSServer: info.DNSAddr, HTTPPort: info.HTTPPort, TLSPort: info.HTTPSPort})
	if err != nil {
		return "", fmt.Errorf("start pebble: %w", err)
	}
	f.closers = append(f.closers, closerFunc(peb.Stop))
	info.ACMEDirectory, info.ACMECAFile = peb.DirectoryURL, peb.ServerCAFile
	info.IssuerRoots = filepath.Join(dir, "issuer-roots.pem")
	if err := peb.WriteIssuerRoots(ctx, info.IssuerRoots); err != nil {
		return "", err
	}
	flags := fmt.Sprintf(" --http-port %d --https-port %d --acme-ca %s --acme-ca-roots %s -- ",
		info.HTTPPort, info.HTTPSPort, shellQuote(peb.DirectoryURL), shellQuote(peb.ServerCAFile))
	return strings.Replace(o.BootCmd, " -- ", flags, 1), nil
}

// startDNS serves the simulator's zones on NamesInfo.DNSAddr and creates
// the fleet's zone.
func (f *Fleet) startDNS(ctx context.Context, runCtx context.Context, n *Names) error {
	dns, err := f.sim.ListenDNS(f.Names.DNSAddr)
	if err != nil {
		return fmt.Errorf("start the simulator's DNS: %w", err)
	}
	f.runs++
	go func() { f.done <- dns.Serve(runCtx) }()
	if _, _, err := f.Client(n.Account).Domains.Create(ctx, &godo.DomainCreateRequest{Name: n.Zone}); err != nil {
		return fmt.Errorf("create zone %s in the simulator: %w", n.Zone, err)
	}
	return nil
}

// activatorConfig sets the reconciler's activator up for the front.
func (f *Fleet) activatorConfig(n *Names, c *service.Config) {
	if n == nil || n.ActivatorIP == "" {
		return
	}
	c.Activator.Listen = "127.0.0.1:0"
	c.Activator.DropletPort = f.Names.HTTPSPort
	c.Activator.DropletCA = f.Names.IssuerRoots
	if n.Hold > 0 {
		c.Activator.Hold = n.Hold
	}
}

// startFront runs the activator's Caddy front on ActivatorIP:HTTPSPort,
// with certificates from Pebble for the names the activator's /ask allows.
func (f *Fleet) startFront(ctx context.Context, o Options) error {
	n := o.Names
	if n == nil || n.ActivatorIP == "" {
		return nil
	}
	handler := f.svc.ActivatorAddr()
	if handler == "" {
		return errors.New("localfleet: the reconciler runs no activator")
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	f.Names.Activator = net.JoinHostPort(n.ActivatorIP, strconv.Itoa(f.Names.HTTPSPort))
	f.Names.ActivatorHandler = handler
	cfg, err := activator.RenderFront(activator.Front{Listen: f.Names.Activator, Upstream: handler, AskURL: "http://" + handler + "/ask",
		ACMECA: f.Names.ACMEDirectory, ACMERoots: f.Names.ACMECAFile, AdminListen: admin, GracePeriod: 2 * time.Second})
	if err != nil {
		return err
	}
	home := filepath.Join(o.Work, "activator-caddy")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(home, "caddy.json")
	if err := os.WriteFile(conf, cfg, 0o600); err != nil {
		return err
	}
	logw, err := f.logFile(filepath.Join(o.Work, "activator-caddy.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(n.CaddyBin, "run", "--config", conf)
	cmd.Env = []string{"HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"), "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := procgroup.Start(cmd); err != nil {
		return fmt.Errorf("start the activator's caddy: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	f.closers = append(f.closers, closerFunc(func() error {
		procgroup.Stop(cmd, exited, 5*time.Second)
		return nil
	}))
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/config/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the activator's caddy exited (see %s)", filepath.Join(o.Work, "activator-caddy.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("the activator's caddy admin API did not answer within 30s")
		}
	}
}

// Client is a DigitalOcean client of the simulator for account (a
// customer's zone, a record changed by hand).
func (f *Fleet) Client(account string) *godo.Client {
	c := godo.NewFromToken(f.tokens[account])
	c.BaseURL, _ = c.BaseURL.Parse(f.SimURL)
	return c
}

// Sim is the fleet's simulator (its control API in process).
func (f *Fleet) Sim() *dosim.Sim { return f.sim }

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
