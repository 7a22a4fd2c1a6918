package localfleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/browsertest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// consoleWorld is a local fleet behind a tokens file (an admin and a
// dashboard-only token), for the console's browser test.
type consoleWorld struct {
	t         *testing.T
	f         *Fleet
	repo      *testkit.StateRepo
	work      string
	db        *pgx.Conn
	admin     string // the admin token
	dashboard string // the dashboard-only token
}

// newToken returns a fresh random token and its tokens-file line.
func newToken(t *testing.T, name string, scopes ...string) (token, line string) {
	t.Helper()
	token = "gt_" + rand.Text()
	sum := sha256.Sum256([]byte(token))
	data, err := json.Marshal(map[string]any{"name": name, "sha256": hex.EncodeToString(sum[:]), "scopes": scopes})
	if err != nil {
		t.Fatal(err)
	}
	return token, string(data)
}

func startConsoleWorld(t *testing.T, tenants ...*schema.Tenant) *consoleWorld {
	t.Helper()
	w := &consoleWorld{t: t, work: t.TempDir(), repo: testkit.NewStateRepo(t)}
	var adminLine, dashLine string
	w.admin, adminLine = newToken(t, "ops-admin", "admin")
	w.dashboard, dashLine = newToken(t, "dashboard", "dashboard")
	tokens := filepath.Join(w.work, "tokens")
	if err := os.WriteFile(tokens, []byte(adminLine+"\n"+dashLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	f := testkit.Fleet()
	f.Spec.Recipients = testkit.ExampleFleet(t).Spec.Recipients
	f.Spec.Safety = schema.Safety{MaxDestroyPerRun: 20, MaxHibernatePercent: 100}
	f.Spec.Accounts = append(f.Spec.Accounts, schema.Account{Name: "acct-b", Regions: []string{"sfo3"}, MaxDroplets: 20, TokenEnv: "TOKEN_B"})
	w.repo.WriteFleet(f)
	for _, tn := range tenants {
		w.repo.WriteTenant(tn)
	}
	w.repo.Commit("a fleet for the console")
	w.repo.Push()
	w.f, w.db = startTestFleet(t, w.repo, f.Spec.Accounts, w.work, func(o *Options, _ string) { o.TokensFile = tokens })
	return w
}

// fleet reads GET /v1/fleet with the admin token (nil on any error).
func (w *consoleWorld) fleet() *api.Fleet {
	req, _ := http.NewRequest("GET", w.f.URL+"/v1/fleet", nil)
	req.Header.Set("Authorization", "Bearer "+w.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var doc api.Fleet
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return nil
	}
	return &doc
}

func (w *consoleWorld) lifecycle(id string) string {
	if doc := w.fleet(); doc != nil {
		for _, r := range doc.Tenants {
			if r.Workspace == id {
				return r.Lifecycle
			}
		}
	}
	return ""
}

func (w *consoleWorld) commit(msg string, edit func()) {
	w.t.Helper()
	edit()
	w.repo.Commit(msg)
	w.repo.Push()
}

// hibernateByPolicy hibernates id by commit, then makes it look as the
// idle policy's doing and declares it running again (which wakes nothing
// by itself: a wake through the API or the console does).
func (w *consoleWorld) hibernateByPolicy(tn *schema.Tenant) {
	w.t.Helper()
	id := tn.Metadata.ID
	w.commit("hibernate "+id, func() {
		h := *tn
		h.Spec.State = schema.StateHibernated
		w.repo.WriteTenant(&h)
	})
	testkit.Poll{Every: 100 * time.Millisecond, Within: 3 * time.Minute}.Until(w.t, id+" hibernated", func() bool {
		return w.lifecycle(id) == "HIBERNATED"
	})
	if _, err := w.db.Exec(context.Background(), `UPDATE fleet_status SET hibernated_by_policy = true WHERE workspace = $1`, id); err != nil {
		w.t.Fatal(err)
	}
	w.commit("running again", func() { w.repo.WriteTenant(tn) })
	head := w.repo.Head()
	testkit.Poll{Every: 100 * time.Millisecond, Within: time.Minute}.Until(w.t, "the reconciler at the running commit", func() bool {
		doc := w.fleet()
		return doc != nil && doc.Commit == head
	})
}

// TestConsoleInBrowser drives the fleet console in a real headless
// Chromium against a local fleet whose droplets run real agents: log in
// (a wrong token is refused), filter the overview by state, region and
// tier and search it by id, open a hibernated tenant (its event stream
// opens with a resync), wake it through the console's action
// and its confirmation, and watch its lifecycle change on the page through
// the server's event stream — WAKING, BOOTING, … ACTIVE_HEALTHY — without
// the page ever reloading; then log out, log in with a dashboard-only
// token and see an admin action (reboot) refused with the API's problem in
// #flash. Every page is photographed at desktop and phone widths (into
// $GENESIS_SCREENSHOTS when set) and checked for sideways scrolling and
// unlabelled form controls.
func TestConsoleInBrowser(t *testing.T) {
	alpha := testkit.Tenant("ws-alpha", "nyc3")
	bravo := testkit.Tenant("ws-bravo", "nyc3")
	bravo.Metadata.Tier = schema.TierStarter
	charlie := testkit.Tenant("ws-charlie", "sfo3")
	charlie.Metadata.Tier = schema.TierEnterprise
	w := startConsoleWorld(t, alpha, bravo, charlie)
	ids := []string{"ws-alpha", "ws-bravo", "ws-charlie"}
	for _, id := range ids {
		testkit.Poll{Every: 100 * time.Millisecond, Within: 6 * time.Minute}.Until(t, id+" healthy", func() bool {
			return w.lifecycle(id) == "ACTIVE_HEALTHY"
		})
	}
	w.hibernateByPolicy(charlie)

	shots := browsertest.ScreenshotDir(t)
	start := time.Now()
	b := browsertest.Start(t, browsertest.Options{})
	c := &consolePage{t: t, b: b, base: w.f.URL, shots: shots}

	// Log in: a wrong token is refused on the page, the admin's is taken.
	c.open("/console/login")
	c.waitVisible("form#login")
	c.photograph("login")
	c.login("not-a-token")
	if msg := c.text("#login-error"); msg == "" {
		t.Error("a wrong token: #login-error is empty")
	}
	c.login(w.admin)
	c.waitVisible("table#tenants")
	if scopes := strings.Fields(c.attr("body", "data-scopes")); !slices.Contains(scopes, "admin") {
		t.Errorf("logged in with the admin token: body data-scopes %q", scopes)
	}
	if got := c.rows(); !slices.Equal(got, ids) {
		t.Errorf("overview rows %q, want %q", got, ids)
	}
	if got := c.text("#total"); !strings.HasPrefix(got, "3 ") {
		t.Errorf("#total %q, want 3 tenants", got)
	}
	c.photograph("overview")

	// The dark theme: the toggle switches it at once (script) and the
	// choice is a cookie the next page is rendered with.
	was := evalString(c, `document.documentElement.getAttribute("data-theme") || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light")`)
	c.b.Do("toggle the theme", chromedp.Click(chromedp.CSS("#theme-toggle")))
	if now := evalString(c, `document.documentElement.getAttribute("data-theme") || ""`); now == was || now == "" {
		t.Errorf("the theme toggle left the theme %q (was %q)", now, was)
	} else {
		c.open("/console/")
		if got := evalString(c, `document.documentElement.getAttribute("data-theme") || ""`); got != now {
			t.Errorf("after a reload the theme is %q, want %q", got, now)
		}
		c.photograph("overview-" + now)
		c.b.Do("toggle the theme back", chromedp.Click(chromedp.CSS("#theme-toggle")))
	}

	// Filter by state: the hibernated tenant only.
	c.b.Do("choose state HIBERNATED", chromedp.SetValue(chromedp.CSS("#f-state"), "HIBERNATED"))
	c.submit("#f-apply", "table#tenants")
	if got := c.rows(); !slices.Equal(got, []string{"ws-charlie"}) {
		t.Errorf("state=HIBERNATED: rows %q (page %s)", got, c.b.Location())
	}
	if got := c.text("#total"); !strings.HasPrefix(got, "1 ") {
		t.Errorf("state=HIBERNATED: #total %q", got)
	}
	// Filter by region: sfo3 holds ws-charlie only; with the state
	// cleared.
	c.open("/console/")
	c.b.Do("choose region sfo3", chromedp.SetValue(chromedp.CSS("#f-region"), "sfo3"))
	c.submit("#f-apply", "table#tenants")
	if got := c.rows(); !slices.Equal(got, []string{"ws-charlie"}) {
		t.Errorf("region=sfo3: rows %q", got)
	}
	// Filter by tier (git's, as the leader recorded it in Postgres):
	// ws-bravo is the only starter.
	c.open("/console/")
	c.b.Do("choose tier starter", chromedp.SetValue(chromedp.CSS("#f-tier"), "starter"))
	c.submit("#f-apply", "table#tenants")
	if got := c.rows(); !slices.Equal(got, []string{"ws-bravo"}) {
		t.Errorf("tier=starter: rows %q", got)
	}
	// Search by id, typed as a person types.
	c.open("/console/")
	c.b.Do("type a search", chromedp.SendKeys(chromedp.CSS("#q"), "ws-bravo"))
	c.submit("#f-apply", "table#tenants")
	if got := c.rows(); !slices.Equal(got, []string{"ws-bravo"}) {
		t.Errorf("q=ws-bravo: rows %q", got)
	}
	if u := c.b.Location(); !strings.Contains(u, "q=ws-bravo") {
		t.Errorf("the search is not in the URL (bookmarkable): %s", u)
	}

	// Open the hibernated tenant from the overview.
	c.open("/console/?state=HIBERNATED")
	c.submit(`tr[data-tenant="ws-charlie"] a[href="/console/tenants/ws-charlie"]`, "h1#tenant-id")
	if got := c.text("#tenant-id"); got != "ws-charlie" {
		t.Errorf("#tenant-id %q", got)
	}
	if got := c.text("#lifecycle"); got != "HIBERNATED" {
		t.Errorf("ws-charlie's #lifecycle %q, want HIBERNATED", got)
	}
	for _, sec := range []string{"#health", "#history", "#manifest", "#backups", "#availability", "#cost", "#domains"} {
		if !c.b.Present(sec) {
			t.Errorf("the tenant page has no %s", sec)
		}
	}
	c.photograph("tenant-hibernated")
	// The page's event stream names the tenant it shows and opens with a
	// resync of its state (the script marks the body when one arrived).
	testkit.Poll{Every: 50 * time.Millisecond, Within: 20 * time.Second}.Until(t, "the tenant page's stream resynced", func() bool {
		return browsertest.Eval[string](b, `document.body.getAttribute("data-live-synced") || ""`) != ""
	})

	// Wake it through the console: a slower boot, so the page shows each
	// step.
	lim := w.f.Sim().Limits()
	lim.BootDelay = dosim.Duration(3 * time.Second)
	if err := w.f.Sim().SetLimits(lim); err != nil {
		t.Fatal(err)
	}
	c.submit(`form.action[data-action="wake"] button`, "#confirm-yes")
	if !c.b.Present("#confirm-no") {
		t.Error("the confirmation has no #confirm-no")
	}
	c.photograph("confirm")
	c.submit("#confirm-yes", "h1#tenant-id")
	if got := c.text("#tenant-id"); got != "ws-charlie" {
		t.Fatalf("after the wake: on %q (%s)", got, c.b.Location())
	}
	c.flash("ok", regexp.MustCompile(`(?i)wak`))
	// From here the page must not reload: a marker on window survives
	// only while it does not, and a MutationObserver records every
	// lifecycle the event stream writes.
	first := c.text("#lifecycle")
	browsertest.Eval[bool](b, `(() => {
		window.__genesisMarker = "not reloaded";
		window.__genesisSeen = [document.getElementById("lifecycle").textContent.trim()];
		const el = document.getElementById("lifecycle");
		new MutationObserver(() => {
			const s = el.textContent.trim();
			if (window.__genesisSeen[window.__genesisSeen.length - 1] !== s) window.__genesisSeen.push(s);
		}).observe(el, {childList: true, characterData: true, subtree: true});
		return true;
	})()`)
	woke := time.Now()
	b.WaitText("#lifecycle", regexp.MustCompile(`^ACTIVE_HEALTHY$`), 4*time.Minute)
	seen := browsertest.Eval[[]string](b, `window.__genesisSeen`)
	if marker := browsertest.Eval[string](b, `window.__genesisMarker || ""`); marker != "not reloaded" {
		t.Errorf("the tenant page was reloaded while it woke (marker %q)", marker)
	}
	t.Logf("ws-charlie woke in %s; the page showed %q, then %q live", time.Since(woke).Round(time.Millisecond), first, seen)
	if first == "ACTIVE_HEALTHY" || len(seen) < 2 {
		t.Errorf("the page saw no live change: first %q, then %q", first, seen)
	}
	waking := func(s string) bool {
		return slices.Contains([]string{"WAKING", "PROVISIONING", "BOOTING", "INITIALIZING", "HANDSHAKE", "CONFIGURING", "DEPLOYING"}, s)
	}
	if !slices.ContainsFunc(seen, waking) {
		t.Errorf("no waking step shown live: first %q, then %q", first, seen)
	}
	// Reloaded, the whole page tells of the woken tenant.
	c.open("/console/tenants/ws-charlie")
	c.waitVisible("h1#tenant-id")
	c.photograph("tenant")

	// The other pages.
	c.open("/console/rollouts")
	c.waitVisible("table#rollouts")
	c.photograph("rollouts")
	c.open("/console/accounts")
	c.waitVisible("table#accounts")
	c.photograph("accounts")

	// Log out; the console asks for a token again.
	c.submit("form#logout button", "form#login")
	c.open("/console/")
	c.waitVisible("form#login")

	// A dashboard-only token sees the fleet but may not reboot.
	c.login(w.dashboard)
	c.waitVisible("table#tenants")
	if scopes := strings.Fields(c.attr("body", "data-scopes")); !slices.Equal(scopes, []string{"dashboard"}) {
		t.Errorf("logged in with the dashboard token: body data-scopes %q", scopes)
	}
	c.open("/console/tenants/ws-alpha")
	c.waitVisible("h1#tenant-id")
	if !c.b.Present(`form.action[data-action="reboot"] button`) {
		t.Fatal("the tenant page offers no reboot action to a dashboard-only token")
	}
	c.submit(`form.action[data-action="reboot"] button`, "#confirm-yes")
	c.submit("#confirm-yes", "h1#tenant-id")
	msg := c.flash("error", regexp.MustCompile(`(?i)403|forbidden|admin`))
	t.Logf("a dashboard token's reboot: %q", msg)
	c.photograph("refused")
	if got := w.lifecycle("ws-alpha"); got != "ACTIVE_HEALTHY" {
		t.Errorf("ws-alpha after a refused reboot: %s", got)
	}
	t.Logf("browser part took %s; screenshots in %s", time.Since(start).Round(time.Millisecond), shots)
}

// evalString evaluates a JavaScript expression to a string in the page.
func evalString(c *consolePage, expr string) string {
	c.t.Helper()
	return browsertest.Eval[string](c.b, expr)
}

// consolePage drives the console's pages in the browser.
type consolePage struct {
	t     *testing.T
	b     *browsertest.Browser
	base  string
	shots string
}

func (c *consolePage) open(path string) {
	c.t.Helper()
	c.b.Navigate(c.base + path)
}

func (c *consolePage) waitVisible(sel string) {
	c.t.Helper()
	c.b.WaitVisible(sel)
}

func (c *consolePage) text(sel string) string {
	c.t.Helper()
	return c.b.Text(sel)
}

func (c *consolePage) attr(sel, name string) string {
	c.t.Helper()
	return browsertest.Eval[string](c.b, fmt.Sprintf(`document.querySelector(%q).getAttribute(%q) || ""`, sel, name))
}

// submit clicks sel (a button or link that navigates) and waits for the
// next page to show want.
func (c *consolePage) submit(sel, want string) {
	c.t.Helper()
	c.b.ClickNavigate(sel)
	c.b.WaitVisible(want)
}

// login submits token on the login page.
func (c *consolePage) login(token string) {
	c.t.Helper()
	if !c.b.Present("form#login") {
		c.open("/console/login")
	}
	browsertest.Eval[bool](c.b, `(document.getElementById("token").value = "") === ""`)
	c.b.Do("type the token", chromedp.SendKeys(chromedp.CSS("#token"), token))
	c.submit("#login-submit", "body")
}

// rows lists the overview's tenants.
func (c *consolePage) rows() []string {
	c.t.Helper()
	return browsertest.Eval[[]string](c.b, `[...document.querySelectorAll("#tenants tr[data-tenant]")].map(r => r.getAttribute("data-tenant"))`)
}

// flash waits for #flash to hold kind ("ok" or "error") and text matching
// re, and returns its text.
func (c *consolePage) flash(kind string, re *regexp.Regexp) string {
	c.t.Helper()
	msg := c.b.WaitText("#flash", re, 10*time.Second)
	if cls := c.attr("#flash", "class"); !slices.Contains(strings.Fields(cls), kind) {
		c.t.Errorf("#flash %q has class %q, want %q", msg, cls, kind)
	}
	return msg
}

// photograph checks the page at desktop and phone widths — no sideways
// scrolling, every form control labelled — and saves a full-page
// screenshot of each as console-NAME-WIDTH.png.
func (c *consolePage) photograph(name string) {
	c.t.Helper()
	for _, v := range []browsertest.Viewport{browsertest.Phone(), browsertest.Desktop()} {
		c.b.SetViewport(v)
		l := c.b.CheckLayout()
		if l.ScrollsSideways() {
			c.t.Errorf("%s at %s width scrolls sideways: scrollWidth %d > %d; too wide: %q", name, v.Name, l.ScrollWidth, l.ClientWidth, l.Wide)
		}
		if len(l.Unlabelled) > 0 {
			c.t.Errorf("%s: form controls without an accessible name: %q", name, l.Unlabelled)
		}
		c.b.Screenshot(c.shots, "console-"+name+"-"+v.Name)
	}
}
