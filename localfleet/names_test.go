package localfleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/acmetest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

const (
	testZone      = "t.genesis.test"
	testActivator = "127.0.9.1"
	customerZone  = "acme.test"
	customerName  = "track.acme.test"
)

// namesWorld is a local fleet with stable names, the activator and
// Pebble, on a state repository of the test's own.
type namesWorld struct {
	t     testing.TB
	f     *Fleet
	repo  *testkit.StateRepo
	fleet *schema.Fleet
	work  string
	db    *pgx.Conn
	// client reaches the fleet's HTTPS as a customer's browser does:
	// names resolved through the simulator's DNS, only Pebble's roots
	// trusted.
	client *http.Client
}

// buildBins builds genesis-demo and genesis-agent into a temporary
// directory and returns it with the pinned Caddy.
func buildBins(t testing.TB) (bin, caddy string) {
	t.Helper()
	bin = t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../cmd/genesis-demo", "../cmd/genesis-agent").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command("../scripts/build-caddy").Output()
	if err != nil {
		t.Fatalf("scripts/build-caddy: %v", err)
	}
	return bin, strings.TrimSpace(string(out))
}

func startNamesWorld(t testing.TB, tenants ...*schema.Tenant) *namesWorld {
	t.Helper()
	pebbleBin := acmetest.Binary(t)
	w := &namesWorld{t: t, work: t.TempDir(), repo: testkit.NewStateRepo(t)}
	f := testkit.Fleet()
	f.Spec.Recipients = testkit.ExampleFleet(t).Spec.Recipients
	f.Spec.Safety = schema.Safety{MaxDestroyPerRun: 20, MaxHibernatePercent: 100}
	f.Spec.Accounts = append(f.Spec.Accounts, schema.Account{Name: "customer", Regions: []string{"sfo3"}, MaxDroplets: 1, TokenEnv: "TOKEN_CUSTOMER"})
	f.Spec.DNS = &schema.DNS{Zone: testZone, Account: "acct-a", TTL: schema.Duration(30 * time.Second), Activator: testActivator}
	f.Spec.Watchdog = schema.Watchdog{DegradedAfter: schema.Duration(3 * time.Second), CriticalAfter: schema.Duration(6 * time.Second),
		Cooldown: schema.Duration(4 * time.Second)}
	w.fleet = f
	w.repo.WriteFleet(f)
	for _, tn := range tenants {
		w.repo.WriteTenant(tn)
	}
	w.repo.Commit("a fleet with stable names")
	w.repo.Push()
	fl, db := startTestFleet(t, w.repo, f.Spec.Accounts, w.work, func(o *Options, caddy string) {
		o.Names = &Names{Zone: testZone, Account: "acct-a", ActivatorIP: testActivator, CaddyBin: caddy, PebbleBin: pebbleBin, Hold: 60 * time.Second}
	})
	w.f, w.db = fl, db
	pem, err := os.ReadFile(fl.Names.IssuerRoots)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no issuer roots")
	}
	// A browser waits tens of seconds for a connection; so does this
	// client (a thousand at once on a machine busy with other tests).
	dialer := &net.Dialer{Resolver: fl.Names.Resolver(), Timeout: 30 * time.Second}
	w.client = &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{
		DialContext:     dialer.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots},
		MaxConnsPerHost: 0, MaxIdleConnsPerHost: 100, DisableKeepAlives: true,
	}}
	// The customer's own zone, in another account: their tracking name is
	// a CNAME of the tenant's stable name.
	if _, _, err := fl.Client("customer").Domains.Create(t.Context(), &godo.DomainCreateRequest{Name: customerZone}); err != nil {
		t.Fatal(err)
	}
	return w
}

// tenantWith is a running tenant in nyc3 with domains.
func tenantWith(id string, domains ...string) *schema.Tenant {
	tn := testkit.Tenant(id, "nyc3")
	tn.Spec.Domains = domains
	return tn
}

func (w *namesWorld) row(id string) api.FleetTenant {
	w.t.Helper()
	resp, err := http.Get(w.f.URL + "/v1/fleet")
	if err != nil {
		return api.FleetTenant{}
	}
	defer resp.Body.Close()
	var doc api.Fleet
	if json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return api.FleetTenant{}
	}
	for _, r := range doc.Tenants {
		if r.Workspace == id {
			return r
		}
	}
	return api.FleetTenant{}
}

func (w *namesWorld) commit(msg string, edit func()) {
	w.t.Helper()
	edit()
	w.repo.Commit(msg)
	w.repo.Push()
}

// healthyOn waits until id runs healthy on a droplet other than not, and
// returns its row as first seen healthy.
func (w *namesWorld) healthyOn(id string, not int64) api.FleetTenant {
	w.t.Helper()
	var r api.FleetTenant
	testkit.Poll{Every: 50 * time.Millisecond, Within: 3 * time.Minute}.Until(w.t, id+" healthy on a new droplet", func() bool {
		r = w.row(id)
		return r.Lifecycle == "ACTIVE_HEALTHY" && r.DropletID != 0 && r.DropletID != not && r.IP != ""
	})
	return r
}

func (w *namesWorld) resolve(name string) []string {
	ips, err := w.f.Names.Resolver().LookupHost(context.Background(), name)
	if err != nil {
		return nil
	}
	slices.Sort(ips)
	return ips
}

// get fetches https://name:<port>/path as a customer's client does.
func (w *namesWorld) get(name, path string) (*http.Response, []byte, error) {
	resp, err := w.client.Get("https://" + net.JoinHostPort(name, strconv.Itoa(w.f.Names.HTTPSPort)) + path)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// handshake completes a TLS handshake with name's HTTPS server (trusting
// only Pebble's roots) and sends nothing, retrying for up to a minute.
func (w *namesWorld) handshake(name string) {
	w.t.Helper()
	tr := w.client.Transport.(*http.Transport)
	testkit.Poll{Every: 500 * time.Millisecond, Within: time.Minute}.Until(w.t, "a TLS handshake with "+name, func() bool {
		ctx, cancel := context.WithTimeout(w.t.Context(), 20*time.Second)
		defer cancel()
		raw, err := tr.DialContext(ctx, "tcp", net.JoinHostPort(name, strconv.Itoa(w.f.Names.HTTPSPort)))
		if err != nil {
			return false
		}
		defer raw.Close()
		return tls.Client(raw, &tls.Config{RootCAs: tr.TLSClientConfig.RootCAs, ServerName: name}).HandshakeContext(ctx) == nil
	})
}

// reaches: at the moment id is first seen healthy on its new droplet, its
// stable name already says the droplet's address — so a client's cached
// answer is stale for at most the record's TTL after the droplet became
// healthy — and a client resolving the stable name and the customer's
// CNAME gets the droplet's n8n over HTTPS with a certificate Pebble
// issued over ACME.
func (w *namesWorld) reaches(id string, r api.FleetTenant, names ...string) {
	w.t.Helper()
	stable := id + "." + testZone
	if got := w.resolve(stable); !slices.Equal(got, []string{r.IP}) {
		w.t.Errorf("%s healthy on droplet %d (%s) but its stable name says %v", id, r.DropletID, r.IP, got)
	}
	if r.StableName != stable || r.NameTarget != r.IP {
		w.t.Errorf("/v1/fleet: stable_name %q dns_target %q, want %q and %q", r.StableName, r.NameTarget, stable, r.IP)
	}
	for _, name := range append([]string{stable}, names...) {
		var resp *http.Response
		var body []byte
		var err error
		// The droplet's Caddy gets its certificate at the first
		// handshake (on-demand, ACME): the first request may take a
		// moment, never a wrong answer.
		testkit.Poll{Every: 200 * time.Millisecond, Within: time.Minute}.Until(w.t, "https://"+name, func() bool {
			resp, body, err = w.get(name, "/healthz")
			return err == nil
		})
		if resp.StatusCode != 200 || !strings.Contains(string(body), "ok") {
			w.t.Errorf("https://%s/healthz: %d %s", name, resp.StatusCode, body)
		}
		cert := resp.TLS.PeerCertificates[0]
		if !slices.Contains(cert.DNSNames, name) || !strings.Contains(cert.Issuer.CommonName, "Pebble") {
			w.t.Errorf("https://%s: certificate for %v issued by %q, want one for the name from Pebble", name, cert.DNSNames, cert.Issuer.CommonName)
		}
		if host, _, _ := net.SplitHostPort(resp.Request.URL.Host); host != name {
			w.t.Errorf("request went to %s", resp.Request.URL.Host)
		}
	}
}

// TestStableNames: a tenant's stable name and its customer's CNAME follow
// it through a resize, a rebuild, a hibernation and a wake, each time
// reaching the new droplet over HTTPS with an ACME certificate; while it
// sleeps the name points at the activator, and a request to the
// customer's name wakes it and is answered by its n8n.
func TestStableNames(t *testing.T) {
	w := startNamesWorld(t, tenantWith("ws-a", customerName))
	if _, _, err := w.f.Client("customer").Domains.CreateRecord(context.Background(), customerZone,
		&godo.DomainRecordEditRequest{Type: "CNAME", Name: "track", Data: "ws-a." + testZone + ".", TTL: 300}); err != nil {
		t.Fatal(err)
	}
	r := w.healthyOn("ws-a", 0)
	t.Logf("created: droplet %d at %s", r.DropletID, r.IP)
	w.reaches("ws-a", r, customerName)

	// Resize: snapshot, destroy, a new droplet at the new size.
	w.commit("resize ws-a", func() {
		tn := tenantWith("ws-a", customerName)
		tn.Spec.Droplet.Size = "s-1vcpu-2gb"
		w.repo.WriteTenant(tn)
	})
	r2 := w.healthyOn("ws-a", r.DropletID)
	t.Logf("resized: droplet %d at %s", r2.DropletID, r2.IP)
	w.reaches("ws-a", r2, customerName)

	// Rebuild: the droplet dies for good (its disk refuses to boot); the
	// watchdog reboots, power-cycles, then builds a new one.
	w.breakDroplet(r2.DropletID)
	r3 := w.healthyOn("ws-a", r2.DropletID)
	t.Logf("rebuilt: droplet %d at %s", r3.DropletID, r3.IP)
	w.reaches("ws-a", r3, customerName)
	// The dead droplet is retired (snapshotted, then destroyed) once
	// the new one is healthy.
	testkit.Poll{Every: 100 * time.Millisecond, Within: 3 * time.Minute}.Until(t, "the dead droplet retired", func() bool {
		return w.droplets("ws-a") == 1
	})

	// Hibernate (as the idle policy does: git still says running): the
	// name points at the activator.
	w.hibernateByPolicy("ws-a")
	if got := w.resolve("ws-a." + testZone); !slices.Equal(got, []string{testActivator}) {
		t.Errorf("hibernated: the stable name says %v, want the activator %s", got, testActivator)
	}
	if got := w.resolve(customerName); !slices.Equal(got, []string{testActivator}) {
		t.Errorf("hibernated: the customer's name says %v, want the activator %s", got, testActivator)
	}
	// A click on the customer's link wakes it and is answered by its n8n.
	start := time.Now()
	resp, body, err := w.get(customerName, "/healthz")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("request to a hibernated tenant: %v", err)
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), "ok") {
		t.Fatalf("request to a hibernated tenant: %d %s", resp.StatusCode, body)
	}
	t.Logf("a request to hibernated ws-a was answered by its n8n after %s (simulator boot delay %s)", took.Round(time.Millisecond), w.f.Sim().Limits().BootDelay)
	r4 := w.healthyOn("ws-a", r3.DropletID)
	w.reaches("ws-a", r4, customerName)
	if n := w.count(`SELECT count(*) FROM operations WHERE workspace = 'ws-a' AND kind = 'wake'`); n != 1 {
		t.Errorf("wakes of ws-a: %d, want 1", n)
	}
	// The zone holds nothing but the tenant's name.
	if recs := w.f.Sim().Snapshot(); len(recs.Domains) == 0 {
		t.Error("the simulator lists no zones")
	}
}

// droplets counts the simulator's droplets of workspace id.
func (w *namesWorld) droplets(id string) int {
	n := 0
	for _, d := range w.f.Sim().Snapshot().Droplets {
		if name, _ := d["name"].(string); strings.HasPrefix(name, "genesis-"+id+"-") {
			n++
		}
	}
	return n
}

func (w *namesWorld) count(sql string, args ...any) int {
	w.t.Helper()
	var n int
	if err := w.db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

// breakDroplet makes droplet id's disk refuse to boot (genesis-demo
// droplet's "broken" file) and kills its processes.
func (w *namesWorld) breakDroplet(id int64) {
	w.t.Helper()
	disk := filepath.Join(w.work, "disks", "droplets", strconv.FormatInt(id, 10))
	if err := os.WriteFile(filepath.Join(disk, "broken"), []byte("broken by the test\n"), 0o644); err != nil {
		w.t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(disk, "droplet-sim.json"))
	if err != nil {
		w.t.Fatal(err)
	}
	var info struct {
		PID      int `json:"pid"`
		CaddyPID int `json:"caddy_pid"`
		AgentPID int `json:"agent_pid"`
	}
	if err := json.Unmarshal(data, &info); err != nil {
		w.t.Fatal(err)
	}
	for _, pid := range []int{info.AgentPID, info.CaddyPID, info.PID} {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// hibernateByPolicy hibernates id by commit, then makes it look as the
// idle policy's doing (a 72 h idle period does not fit in a test) and
// declares it running again, which by itself wakes nothing.
func (w *namesWorld) hibernateByPolicy(ids ...string) {
	w.t.Helper()
	w.commit("hibernate", func() {
		for _, id := range ids {
			tn := w.tenant(id)
			tn.Spec.State = schema.StateHibernated
			w.repo.WriteTenant(tn)
		}
	})
	testkit.Poll{Every: 100 * time.Millisecond, Within: 3 * time.Minute}.Until(w.t, "hibernated", func() bool {
		return w.count(`SELECT count(*) FROM fleet_status WHERE workspace = ANY($1) AND state = 'HIBERNATED'`, ids) == len(ids)
	})
	if _, err := w.db.Exec(context.Background(), `UPDATE fleet_status SET hibernated_by_policy = true WHERE workspace = ANY($1)`, ids); err != nil {
		w.t.Fatal(err)
	}
	w.commit("running again", func() {
		for _, id := range ids {
			tn := w.tenant(id)
			tn.Spec.State = schema.StateRunning
			w.repo.WriteTenant(tn)
		}
	})
	head := w.repo.Head()
	testkit.Poll{Every: 100 * time.Millisecond, Within: time.Minute}.Until(w.t, "the reconciler at the running commit", func() bool {
		resp, err := http.Get(w.f.URL + "/v1/fleet")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var doc api.Fleet
		return json.NewDecoder(resp.Body).Decode(&doc) == nil && doc.Commit == head
	})
	// Every name points at the activator once the hibernation wrote it.
	testkit.Poll{Every: 100 * time.Millisecond, Within: time.Minute}.Until(w.t, "names at the activator", func() bool {
		return w.count(`SELECT count(*) FROM fleet_status WHERE workspace = ANY($1) AND host(dns_target) = $2 AND state = 'HIBERNATED'`, ids, testActivator) == len(ids)
	})
}

// tenant reads id's file back.
func (w *namesWorld) tenant(id string) *schema.Tenant {
	w.t.Helper()
	file := schema.TenantsDir + "/" + id + ".yaml"
	tn, errs := schema.DecodeTenant(file, []byte(w.repo.Read(file)))
	if errs != nil {
		w.t.Fatal(errs)
	}
	return tn
}

// TestWakeOnRequestFlood: 1,000 concurrent requests to five hibernated
// tenants' names (200 each, the activator's default per-tenant bound) cause
// exactly one wake each; every request is answered
// by its tenant's n8n or, past the activator's bounds, by a 503 with
// Retry-After — never an error or another tenant's answer.
func TestWakeOnRequestFlood(t *testing.T) {
	var tenants []*schema.Tenant
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("ws-f%02d", i)
		ids = append(ids, id)
		tenants = append(tenants, tenantWith(id))
	}
	w := startNamesWorld(t, tenants...)
	for _, id := range ids {
		// Onboarding competes with every other package's tests in CI:
		// a generous bound (the flood below is what is measured).
		var r api.FleetTenant
		testkit.Poll{Every: 100 * time.Millisecond, Within: 6 * time.Minute}.Until(t, id+" healthy", func() bool {
			r = w.row(id)
			return r.Lifecycle == "ACTIVE_HEALTHY" && r.DropletID != 0 && r.IP != ""
		})
	}
	w.hibernateByPolicy(ids...)
	// The activator's Caddy gets each name's certificate on demand at the
	// first handshake (an ACME order from Pebble): a name hibernated for
	// a while has one. Get them first with bare TLS handshakes (no
	// request, so no wake): a thousand handshakes waiting on five orders
	// on a machine busy with other tests is Pebble's load test, not the
	// activator's (CI saw whole names' handshakes fail then: EOF).
	for _, id := range ids {
		w.handshake(id + "." + testZone)
	}
	before := w.count(`SELECT count(*) FROM operations WHERE kind = 'wake'`)
	var mu sync.Mutex
	outcomes := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := ids[i%len(ids)]
			resp, body, err := w.get(id+"."+testZone, "/healthz")
			key := ""
			switch {
			case err != nil:
				key = "error: " + err.Error()
			case resp.StatusCode == 200 && strings.Contains(string(body), "ok"):
				key = "200"
			case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
				key = "503"
			default:
				key = fmt.Sprintf("%d %.80s", resp.StatusCode, body)
			}
			mu.Lock()
			outcomes[key]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("1,000 concurrent requests to %d hibernated tenants took %s: %v", len(ids), time.Since(start).Round(time.Millisecond), outcomes)
	for k := range outcomes {
		if k != "200" && k != "503" {
			t.Errorf("unexpected outcome %q (%d requests)", k, outcomes[k])
		}
	}
	if outcomes["200"] == 0 {
		t.Error("no request was answered by a woken tenant")
	}
	if n := w.count(`SELECT count(*) FROM operations WHERE kind = 'wake'`) - before; n != len(ids) {
		t.Errorf("wakes: %d, want %d (one per tenant)", n, len(ids))
	}
	for _, id := range ids {
		if n := w.count(`SELECT count(*) FROM operations WHERE kind = 'wake' AND workspace = $1`, id); n != 1 {
			t.Errorf("%s woken %d times", id, n)
		}
	}
}

// BenchmarkWakeOnRequest measures what a visitor of a hibernated tenant
// waits: one request to its customer's name, resolved through DNS to the
// activator, held while the tenant wakes, answered by its n8n — with the
// simulator's boot delay at 0 and at the seed's 15 s wake budget. The
// baseline, measured in the same run, is the dashboard's wake (POST
// /v1/tenants/{id}/wake) until the woken tenant's n8n answers a request
// through its name: the ratio is what waking through the activator adds.
func BenchmarkWakeOnRequest(b *testing.B) {
	w := startNamesWorld(b, tenantWith("ws-a", customerName), tenantWith("ws-b"))
	if _, _, err := w.f.Client("customer").Domains.CreateRecord(context.Background(), customerZone,
		&godo.DomainRecordEditRequest{Type: "CNAME", Name: "track", Data: "ws-a." + testZone + ".", TTL: 300}); err != nil {
		b.Fatal(err)
	}
	w.healthyOn("ws-a", 0)
	w.healthyOn("ws-b", 0)
	for _, boot := range []time.Duration{0, 15 * time.Second} {
		b.Run("boot="+boot.String(), func(b *testing.B) {
			lim := w.f.Sim().Limits()
			lim.BootDelay = dosim.Duration(boot)
			if err := w.f.Sim().SetLimits(lim); err != nil {
				b.Fatal(err)
			}
			var byRequest, byAPI time.Duration
			for range b.N {
				w.hibernateByPolicy("ws-a", "ws-b")
				// Baseline: the dashboard wakes ws-b.
				start := time.Now()
				resp, err := http.Post(w.f.URL+"/v1/tenants/ws-b/wake", "application/json", nil)
				if err != nil || resp.StatusCode != http.StatusAccepted {
					b.Fatalf("POST wake: %v %v", resp, err)
				}
				resp.Body.Close()
				// As a dashboard does: once the tenant is healthy its name
				// says its droplet (the wake wrote it), and the first
				// request through it gets n8n's answer. (Asked earlier, the
				// name would still lead to the activator.)
				testkit.Poll{Every: 20 * time.Millisecond, Within: 3 * time.Minute}.Until(b, "ws-b answers", func() bool {
					if w.row("ws-b").Lifecycle != "ACTIVE_HEALTHY" {
						return false
					}
					resp, _, err := w.get("ws-b."+testZone, "/healthz")
					return err == nil && resp.StatusCode == 200
				})
				byAPI += time.Since(start)
				// A visitor's click on ws-a's customer name.
				start = time.Now()
				resp, body, err := w.get(customerName, "/healthz")
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("request to hibernated ws-a: %v %v %s", resp, err, body)
				}
				byRequest += time.Since(start)
			}
			n := float64(b.N)
			b.ReportMetric(byRequest.Seconds()/n, "s/wake-by-request")
			b.ReportMetric(byAPI.Seconds()/n, "s/wake-by-api")
			b.ReportMetric(byRequest.Seconds()/byAPI.Seconds(), "request/api")
		})
	}
}
