package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/godo"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/localfleet"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// The demo's stable names (with --pebble): the fleet's zone, the
// activator's loopback address, and the demo tenant's customer domain,
// whose zone the demo hosts in the simulator too (a CNAME of the
// tenant's stable name, as a customer sets up once).
const (
	demoZone         = "t.genesis.example"
	demoActivator    = "127.0.9.1"
	demoCustomerZone = "demo-inc.example"
	demoCustomerName = "track." + demoCustomerZone
)

// demoDNS gives the demo's copy of genesis.yaml a spec.dns: the zone in
// the first account, a 30 s TTL and the activator.
func demoDNS(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.SplitAfter(string(data), "\n")
	spec := slices.Index(lines, "spec:\n")
	if spec < 0 {
		return fmt.Errorf("%s: no top-level spec: to add the demo's spec.dns to", path)
	}
	if slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "  dns:") }) {
		return nil // the state repository declares its own
	}
	lines = slices.Insert(lines, spec+1, "  dns:\n", "    zone: "+demoZone+"\n", "    ttl: 30s\n", "    activator: "+demoActivator+"\n")
	return os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
}

// namesOptions is the local fleet's Names for the demo (nil without
// --pebble).
func (d *demo) namesOptions() *localfleet.Names {
	if d.pebble == "" {
		return nil
	}
	return &localfleet.Names{Zone: demoZone, Account: d.fleet.Spec.Accounts[0].Name, ActivatorIP: demoActivator,
		CaddyBin: d.caddy, PebbleBin: d.pebble}
}

// namesUp tells where the names are and hosts the demo customer's zone.
func (d *demo) namesUp(ctx context.Context) error {
	n := d.local.Names
	if n == nil {
		return nil
	}
	// Every declared tracking domain (and the "new-" one the story
	// renames it to) is its customer's CNAME of the tenant's stable name,
	// hosted in the simulator: the CA validates it, and clients find the
	// tenant, through DNS.
	cnames := map[string]string{demoCustomerName: "ws-demo"}
	repo := schema.LoadDir(os.DirFS(d.repo))
	for _, id := range repo.IDs() {
		for _, dom := range repo.Tenants[id].Spec.Domains {
			cnames[dom], cnames["new-"+dom] = id, id
		}
	}
	do := d.local.Client(d.fleet.Spec.Accounts[0].Name)
	zones := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(cnames)) {
		label, zone, ok := strings.Cut(name, ".")
		if !ok || !strings.Contains(zone, ".") {
			continue // an apex cannot be a CNAME
		}
		if !zones[zone] {
			if _, _, err := do.Domains.Create(ctx, &godo.DomainCreateRequest{Name: zone}); err != nil {
				return fmt.Errorf("create the customer zone %s: %w", zone, err)
			}
			zones[zone] = true
		}
		if _, _, err := do.Domains.CreateRecord(ctx, zone, &godo.DomainRecordEditRequest{Type: "CNAME", Name: label,
			Data: cnames[name] + "." + demoZone + ".", TTL: 300}); err != nil {
			return fmt.Errorf("create the customer's CNAME %s: %w", name, err)
		}
	}
	d.say("stable names: zone %s served over DNS at %s (dig @%s -p %s ws-acme.%s); certificates from Pebble (ACME) at %s, trusted roots %s",
		demoZone, n.DNSAddr, strings.Split(n.DNSAddr, ":")[0], strings.Split(n.DNSAddr, ":")[1], demoZone, n.ACMEDirectory, n.IssuerRoots)
	d.say("activator: a real Caddy on %s (on-demand TLS asking the reconciler's activator at %s); customer CNAME %s → ws-demo.%s",
		n.Activator, n.ActivatorHandler, demoCustomerName, demoZone)
	return nil
}

// clickWakes hibernates id as the idle policy does (git keeps saying
// running), then requests its customer's tracking link the way a
// recipient's browser does: the name resolves through DNS to the
// activator, which wakes the tenant once and holds the request until its
// n8n answers it.
func (d *demo) clickWakes(ctx context.Context, id string) (string, error) {
	var b strings.Builder
	if err := d.commitAndHook(ctx, "hibernate "+id, func() error { return d.writeTenant(id, schema.StateHibernated, "nyc1") }); err != nil {
		return "", err
	}
	before, err := d.waitStates(ctx, func(f api.Fleet) bool { return tenantIn(f, id).Lifecycle == string(lifecycle.Hibernated) })
	if err != nil {
		return "", err
	}
	old := tenantIn(mustFleet(d.fleetNow(ctx)), id)
	// The idle policy hibernates after days without activity; the demo
	// marks this hibernation as the policy's instead of waiting.
	conn, err := pgx.Connect(ctx, d.local.DatabaseURL)
	if err != nil {
		return "", err
	}
	_, err = conn.Exec(ctx, `UPDATE fleet_status SET hibernated_by_policy = true WHERE workspace = $1`, id)
	conn.Close(ctx)
	if err != nil {
		return "", err
	}
	if err := d.commitAndHook(ctx, id+" running again in git (the idle policy keeps it asleep)", func() error {
		return d.writeTenant(id, schema.StateRunning, "nyc1")
	}); err != nil {
		return "", err
	}
	n := d.local.Names
	addrs, _ := n.Resolver().LookupHost(ctx, demoCustomerName)
	fmt.Fprintf(&b, "hibernated in %.1fs (as if idle; git says running); %s → ws-demo.%s → %v (the activator)\n", before.Seconds(), demoCustomerName, demoZone, addrs)
	roots, err := d.issuerRoots()
	if err != nil {
		return "", err
	}
	dialer := &net.Dialer{Resolver: n.Resolver(), Timeout: 5 * time.Second}
	client := &http.Client{Timeout: d.timeout, Transport: &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: &tls.Config{RootCAs: roots}}}
	url := "https://" + net.JoinHostPort(demoCustomerName, strconv.Itoa(n.HTTPSPort)) + "/healthz"
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s %s", url, resp.Status, body)
	}
	cert := resp.TLS.PeerCertificates[0]
	fmt.Fprintf(&b, "GET %s → %s %s after %.1fs (held by the activator while %s woke; certificate for %v from %s)\n",
		url, resp.Status, strings.TrimSpace(string(body)), took.Seconds(), id, cert.DNSNames, cert.Issuer.CommonName)
	if _, err := d.waitStates(ctx, func(f api.Fleet) bool {
		t := tenantIn(f, id)
		return booted(t.Lifecycle) && t.DropletID != 0 && t.DropletID != old.DropletID
	}); err != nil {
		return "", err
	}
	now := tenantIn(mustFleet(d.fleetNow(ctx)), id)
	addrs, _ = n.Resolver().LookupHost(ctx, demoCustomerName)
	fmt.Fprintf(&b, "woken onto droplet %s; %s now → %v (its droplet, %s)", now.DropletName, demoCustomerName, addrs, now.IP)
	return b.String(), nil
}

// issuerRoots is the pool a client of the fleet's HTTPS trusts: Pebble's
// roots with stable names, else nil (each droplet's Caddy's own CA).
func (d *demo) issuerRoots() (*x509.CertPool, error) {
	if d.local.Names == nil {
		return nil, nil
	}
	pem, err := os.ReadFile(d.local.Names.IssuerRoots)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", d.local.Names.IssuerRoots)
	}
	return roots, nil
}

func mustFleet(f api.Fleet, _ error) api.Fleet { return f }
