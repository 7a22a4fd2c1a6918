package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// knownMetrics are the series alerts.yml and the dashboard may name. Landed
// ones must exist in the Go sources (so renaming one in code fails this
// test); planned ones are named by issue 9 and may not exist yet.
var knownMetrics = []struct {
	name    string
	typ     string // counter, gauge, histogram
	planned bool
}{
	// reconciler/metrics.go
	{"genesis_reconcile_total", "counter", false},
	{"genesis_reconcile_duration_seconds", "histogram", false},
	{"genesis_actions_total", "counter", false},
	{"genesis_plan_refusals_total", "counter", false},
	{"genesis_tenants_lifecycle", "gauge", false},
	{"genesis_tenants_declared", "gauge", false},
	{"genesis_tenants_invalid", "gauge", false},
	{"genesis_orphans", "gauge", false},
	{"genesis_tenants_no_capacity", "gauge", false},
	{"genesis_leader", "gauge", false},
	{"genesis_insecure_no_auth", "gauge", false},
	{"genesis_events_listening", "gauge", false},
	{"genesis_git_last_commit_timestamp_seconds", "gauge", false},
	{"genesis_git_sync_errors_total", "counter", false},
	{"genesis_git_sync_duration_seconds", "histogram", false},
	{"genesis_tenants_backing_off", "gauge", false},
	{"genesis_action_retries_total", "counter", false},
	// reconciler/metrics.go, reconciler/actions/metrics.go, reconciler/watch.go
	{"genesis_fleet_monthly_cost_usd", "gauge", false},
	{"genesis_snapshot_bytes", "gauge", false},
	{"genesis_hibernate_prepare_total", "counter", false},
	{"genesis_idle_warnings_total", "counter", false},
	{"genesis_notifications_total", "counter", false},
	// reconciler/actions/metrics.go, reconciler/metrics.go: stable names
	{"genesis_dns_name_writes_total", "counter", false},
	{"genesis_dns_orphan_records", "gauge", false},
	// reconciler/cloud/transport.go, reconciler/metrics.go: the account pool
	{"genesis_do_account_failovers_total", "counter", false},
	{"genesis_account_headroom", "gauge", false},
	{"genesis_account_status", "gauge", false},
	{"genesis_watchdog_remediations_total", "counter", false},
	{"genesis_watchdog_tenants", "gauge", false},
	{"genesis_watchdog_outage", "gauge", false},
	// reconciler/cloud/transport.go
	{"genesis_do_requests_total", "counter", false},
	{"genesis_do_rate_remaining", "gauge", false},
	{"genesis_do_429_total", "counter", false},
	{"genesis_do_request_duration_seconds", "histogram", false},
	// The agent protocol (reconciler/agentapi), lifecycle and cost.
	{"genesis_manifests_served_total", "counter", false},
	{"genesis_manifest_longpolls_waiting", "gauge", false},
	{"genesis_enrollments_total", "counter", false},
	{"genesis_heartbeats_total", "counter", false},
	// reconciler/fleetstats
	{"genesis_heartbeat_age_seconds", "histogram", false},
	{"genesis_agent_version_lag", "histogram", false},
	{"genesis_fleetstats_errors_total", "counter", false},
	{"genesis_convergence_seconds", "histogram", false},
	{"genesis_manifest_expiry_seconds", "gauge", false},
	// reconciler/backup
	{"genesis_backups_total", "counter", false},
	{"genesis_recovery_point_age_seconds", "histogram", false},
	{"genesis_recovery_point_stale_tenants", "gauge", false},
	{"genesis_rollout_state", "gauge", false},
	{"genesis_rollout_wave", "gauge", false},
	{"genesis_rollout_members", "gauge", false},
	{"genesis_rollout_last_progress_timestamp_seconds", "gauge", false},
	{"genesis_rollout_wave_started_timestamp_seconds", "gauge", false},
	// reconciler/availability
	{"genesis_availability_probes_total", "counter", false},
	{"genesis_availability_probe_errors_total", "counter", false},
	{"genesis_availability_probe_duration_seconds", "histogram", false},
}

// prometheusMetrics are series Prometheus makes itself.
var prometheusMetrics = []string{"up"}

// Droplet budget (seed 4.2): 1 GiB of RAM and a 4 GiB swap file, of which
// the kernel, dockerd and sshd keep hostReserve.
const (
	dropletRAM  = 1 << 30
	dropletSwap = 4 << 30
	hostReserve = 128 << 20
)

func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not in PATH: install Debian's prometheus package (make deps)")
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"check config", []string{"check", "config", "prometheus.yml"}},
		{"check rules", []string{"check", "rules", "alerts.yml"}},
		{"test rules", []string{"test", "rules", "alerts_test.yml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(promtool, tc.args...)
			cmd.Dir = "prometheus"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
		})
	}
}

// TestDashboardQueriesParse runs every panel's query through promtool's
// PromQL parser, as recording rules, with Grafana's variables filled in.
func TestDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not in PATH: install Debian's prometheus package (make deps)")
	}
	vars := regexp.MustCompile(`\$\{?(\w+)\}?`)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, q := range dashboardQueries(t) {
		expr := vars.ReplaceAllStringFunc(q.expr, func(v string) string {
			if strings.HasPrefix(strings.Trim(v, "${}"), "__") {
				return "5m" // $__rate_interval, $__interval, $__range
			}
			return ".+" // template variables sit in label matchers
		})
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel_%d_%s", q.panel, q.ref), Expr: expr})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query does not parse: %v\n%s", err, out)
	}
}

// TestYAMLWellFormed parses every YAML document under deploy/, except
// cloud-init/, whose owner tests its template.
func TestYAMLWellFormed(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == "cloud-init" {
			return filepath.SkipDir
		}
		if d.IsDir() || (filepath.Ext(path) != ".yml" && filepath.Ext(path) != ".yaml") {
			return nil
		}
		n++
		docs, err := yamlDocs(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
		} else if len(docs) == 0 {
			t.Errorf("%s: no YAML document", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found %d YAML files under deploy/, want the prometheus, droplet and k8s files", n)
	}
}

func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName     string `yaml:"job_name"`
			MetricsPath string `yaml:"metrics_path"`
		} `yaml:"scrape_configs"`
	}
	decodeFile(t, "prometheus/prometheus.yml", &cfg)
	if !slices.Contains(cfg.RuleFiles, "alerts.yml") {
		t.Errorf("rule_files = %q, want alerts.yml", cfg.RuleFiles)
	}
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s: metrics_path %q, the reconciler serves /metrics", sc.JobName, sc.MetricsPath)
		}
	}
	// Every job an alert names must be scraped, or its alert can never fire
	// (or always does).
	job := regexp.MustCompile(`job="([^"]+)"`)
	for _, r := range alertRules(t) {
		for _, m := range job.FindAllStringSubmatch(r.Expr, -1) {
			if !jobs[m[1]] {
				t.Errorf("%s: job %q is not a scrape job of prometheus.yml", r.name(), m[1])
			}
		}
	}
}

func TestAlertRules(t *testing.T) {
	alerts := map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			continue
		}
		name := r.Alert
		if alerts[name] {
			t.Errorf("%s: defined twice", name)
		}
		alerts[name] = true
		if r.For == "" {
			t.Errorf("%s: no for: (one bad scrape would page)", name)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", name, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", name, a)
			}
		}
	}

	// Every alert has a case where it fires and one where it stays quiet;
	// every case names an alert that exists (promtool passes a quiet case
	// for a misspelled alert).
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	decodeFile(t, "prometheus/alerts_test.yml", &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, g := range tests.Tests {
		for _, c := range g.AlertRuleTest {
			if !alerts[c.Alertname] {
				t.Errorf("alerts_test.yml: no alert %q in alerts.yml", c.Alertname)
			}
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}
	for name := range alerts {
		if !fires[name] {
			t.Errorf("%s: no test case where it fires", name)
		}
		if !quiet[name] {
			t.Errorf("%s: no test case where it stays quiet", name)
		}
	}
}

// TestMetricNames checks every metric an alert or a panel names is a known
// one, and every landed known one still exists in the Go sources.
func TestMetricNames(t *testing.T) {
	known := map[string]bool{}
	for _, m := range knownMetrics {
		known[m.name] = true
		if m.typ == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[m.name+s] = true
			}
		}
	}
	for _, m := range prometheusMetrics {
		known[m] = true
	}
	rules := alertRules(t)
	for _, r := range rules {
		if r.Record != "" {
			known[r.Record] = true
		}
	}
	used := 0
	for _, r := range rules {
		for _, m := range metricNames(r.Expr) {
			used++
			if !known[m] {
				t.Errorf("alerts.yml %s: unknown metric %s", r.name(), m)
			}
		}
	}
	for _, q := range dashboardQueries(t) {
		for _, m := range metricNames(q.expr) {
			used++
			if strings.Contains(m, ":") {
				// Recording rules live in alerts.yml, which a Grafana
				// pointed at another Prometheus may not have.
				t.Errorf("dashboard panel %d %q: uses recording rule %s; use raw series", q.panel, q.title, m)
			} else if !known[m] {
				t.Errorf("dashboard panel %d %q: unknown metric %s", q.panel, q.title, m)
			}
		}
	}
	if used == 0 {
		t.Fatal("no metric found in alerts.yml or the dashboard")
	}

	inSource := sourceMetricNames(t)
	for _, m := range knownMetrics {
		switch {
		case !m.planned && !inSource[m.name]:
			t.Errorf("metric %s is not defined in the Go sources any more: update deploy/ (alerts, dashboard) and this list", m.name)
		case m.planned && inSource[m.name]:
			t.Logf("planned metric %s now exists in the Go sources: once that code is committed, mark it landed here", m.name)
		}
	}
}

func TestMetricNamesParser(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`rate(genesis_x_total{a="b", c=~"d|e"}[5m])`, []string{"genesis_x_total"}},
		{`sum by (le) (x_bucket) / ignoring (le) y`, []string{"x_bucket", "y"}},
		{`1 - a / b > 0.1 and on () c >= 10`, []string{"a", "b", "c"}},
		{`histogram_quantile(0.99, sum by (le, endpoint) (rate(m_bucket{job=~"$job"}[$__rate_interval])))`, []string{"m_bucket"}},
		{`time() - max(t)`, []string{"t"}},
		{`up{job="x"} == 0 offset 5m`, []string{"up"}},
		{`x * 1e3 < 6 * 3600 unless y`, []string{"x", "y"}},
		{`(sum(increase(a{r="ok"}[15m])) or vector(0)) == bool 0`, []string{"a"}},
		{`a * on (job, instance) group_left () (b == 1)`, []string{"a", "b"}},
		{`avg_over_time(a[10m:1m])`, []string{"a"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			if diff := cmp.Diff(metricNames(tc.expr), tc.want); diff != "" {
				t.Errorf("metricNames(%q) (-got +want):\n%s", tc.expr, diff)
			}
		})
	}
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/genesis-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion float64 `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("not valid JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed for provisioning", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %v, want 36 or later", d.SchemaVersion)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error(`no template variable "datasource" of type datasource (query prometheus)`)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v outside the 24-column grid", p.ID, p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q: datasource uid %q, want ${datasource}", p.ID, p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q: no targets", p.ID, p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			queries++
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %d %q: target %s has no expr", p.ID, p.Title, tg.RefID)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %d %q: refId %q missing or repeated", p.ID, p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
	if queries < 20 {
		t.Errorf("%d queries; the dashboard should cover fleet, reconcile, DigitalOcean, agents and cost", queries)
	}
}

func TestKubernetes(t *testing.T) {
	type object struct {
		file       string
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string `yaml:"name"`
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
		node *yaml.Node
	}
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no k8s/*.yaml: %v", err)
	}
	var objs []object
	kinds := map[string][]object{}
	for _, f := range files {
		docs, err := yamlDocs(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, n := range docs {
			o := object{file: f, node: n}
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: an object without apiVersion, kind or metadata.name: %q %q %q", f, o.APIVersion, o.Kind, o.Metadata.Name)
			}
			switch o.Kind {
			case "Namespace", "Kustomization":
			default:
				if o.Metadata.Namespace != "genesis" {
					t.Errorf("%s: %s %s in namespace %q, want genesis", f, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
				}
			}
			objs = append(objs, o)
			kinds[o.Kind] = append(kinds[o.Kind], o)
		}
	}
	for _, k := range []string{"Namespace", "Deployment", "Service", "PodDisruptionBudget"} {
		if len(kinds[k]) == 0 {
			t.Errorf("no %s in k8s/", k)
		}
	}
	if len(kinds["Deployment"]) != 1 {
		t.Fatalf("%d Deployments, want 1", len(kinds["Deployment"]))
	}

	var dep deployment
	if err := kinds["Deployment"][0].node.Decode(&dep); err != nil {
		t.Fatal(err)
	}
	s := dep.Spec
	if s.Replicas < 2 {
		t.Errorf("replicas %d, want 2 or more (one leads, all serve agents)", s.Replicas)
	}
	podLabels := s.Template.Metadata.Labels
	if len(s.Selector.MatchLabels) == 0 || !subset(s.Selector.MatchLabels, podLabels) {
		t.Errorf("selector %v does not match the pod labels %v", s.Selector.MatchLabels, podLabels)
	}
	pod := s.Template.Spec
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken should be false: the reconciler never talks to Kubernetes")
	}
	secretVolumes := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretVolumes[v.Name] = true
		}
	}
	if len(pod.Containers) == 0 {
		t.Fatal("no containers")
	}
	for _, c := range pod.Containers {
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
			ports[strconv.Itoa(p.ContainerPort)] = true
		}
		for _, pr := range []struct {
			what string
			p    *probe
			path string
		}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
			switch {
			case pr.p == nil || pr.p.HTTPGet == nil:
				t.Errorf("container %s: no %s httpGet", c.Name, pr.what)
			case pr.p.HTTPGet.Path != pr.path:
				t.Errorf("container %s: %s on %q, want %s", c.Name, pr.what, pr.p.HTTPGet.Path, pr.path)
			case !ports[fmt.Sprint(pr.p.HTTPGet.Port)]:
				t.Errorf("container %s: %s port %v is not a container port", c.Name, pr.what, pr.p.HTTPGet.Port)
			}
		}
		sc := c.SecurityContext
		if !isTrue(pod.SecurityContext.RunAsNonRoot) && !isTrue(sc.RunAsNonRoot) {
			t.Errorf("container %s: runAsNonRoot is not set", c.Name)
		}
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: capabilities do not drop ALL", c.Name)
		}
		env := map[string]envVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		for _, name := range []string{"DATABASE_URL", "GENESIS_WEBHOOK_SECRET"} {
			if e, ok := env[name]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("container %s: %s must come from a Secret (secretKeyRef)", c.Name, name)
			}
		}
		secretish := regexp.MustCompile(`TOKEN|SECRET|PASSWORD|DATABASE_URL`)
		for _, e := range c.Env {
			// A *_FILE variable is a path into a Secret mount, checked below.
			if secretish.MatchString(e.Name) && !strings.HasSuffix(e.Name, "_FILE") && e.Value != "" {
				t.Errorf("container %s: %s has a literal value; secrets come from Secrets", c.Name, e.Name)
			}
		}
		fromSecret := false
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil && ef.SecretRef.Name != "" {
				fromSecret = true
			}
		}
		if !fromSecret {
			t.Errorf("container %s: no envFrom secretRef for the DigitalOcean tokens", c.Name)
		}
		// The key files are read from a read-only mount of a Secret.
		// No open mode by accident: the API tokens file is set, like the keys.
		for _, name := range []string{"GENESIS_AGE_IDENTITY", "GENESIS_SIGNING_KEY", "GENESIS_TOKENS_FILE"} {
			path := env[name].Value
			mounted := false
			for _, m := range c.VolumeMounts {
				if secretVolumes[m.Name] && m.ReadOnly && strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("container %s: %s=%q is not in a read-only Secret mount", c.Name, name, path)
			}
		}
	}

	for _, o := range kinds["Service"] {
		var svc struct {
			Spec struct {
				Selector map[string]string `yaml:"selector"`
				Ports    []struct {
					TargetPort any `yaml:"targetPort"`
				} `yaml:"ports"`
			} `yaml:"spec"`
		}
		if err := o.node.Decode(&svc); err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.Selector) == 0 || !subset(svc.Spec.Selector, podLabels) {
			t.Errorf("Service %s: selector %v does not select the reconciler's pods %v", o.Metadata.Name, svc.Spec.Selector, podLabels)
		}
	}
	for _, o := range kinds["PodDisruptionBudget"] {
		var pdb struct {
			Spec struct {
				MinAvailable any `yaml:"minAvailable"`
				Selector     struct {
					MatchLabels map[string]string `yaml:"matchLabels"`
				} `yaml:"selector"`
			} `yaml:"spec"`
		}
		if err := o.node.Decode(&pdb); err != nil {
			t.Fatal(err)
		}
		if !subset(pdb.Spec.Selector.MatchLabels, podLabels) || len(pdb.Spec.Selector.MatchLabels) == 0 {
			t.Errorf("PodDisruptionBudget %s: selector %v does not select the reconciler's pods", o.Metadata.Name, pdb.Spec.Selector.MatchLabels)
		}
	}

	// kustomization.yaml applies every manifest but the example Secrets.
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	decodeFile(t, "k8s/kustomization.yaml", &kust)
	var want []string
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && base != "secrets.example.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Clone(kust.Resources)
	slices.Sort(got)
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("kustomization.yaml resources (-got +want):\n%s", diff)
	}
}

type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
				SecurityContext              struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Name  string `yaml:"name"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env     []envVar `yaml:"env"`
	EnvFrom []struct {
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// TestSystemdUnits checks the units' hardening keys by parsing them as INI,
// and, where systemd-analyze exists, runs `systemd-analyze verify` (with the
// binary replaced by a stub: verify refuses a missing ExecStart binary) and
// `systemd-analyze security --offline` on them. Containers often lack
// systemd: there the INI checks are what runs.
func TestSystemdUnits(t *testing.T) {
	type want struct{ key, value string }
	hardening := []want{
		{"Restart", "always"}, {"NoNewPrivileges", "yes"}, {"ProtectSystem", "strict"},
		{"PrivateTmp", "yes"}, {"ProtectHome", "yes"}, {"CapabilityBoundingSet", ""},
		{"AmbientCapabilities", ""}, {"PrivateDevices", "yes"}, {"RestrictSUIDSGID", "yes"},
	}
	for _, tc := range []struct {
		file, binary string
		want         []want
		// readWrite are the only writable paths the unit may list.
		readWrite string
		present   []string
	}{
		{"droplet/genesis-agent.service", "/opt/genesis-agent/current",
			append(slices.Clone(hardening), want{"StateDirectory", "genesis-agent"}),
			"/var/lib/genesis-agent /opt/genesis-agent /opt/genesis", []string{"ExecStart", "MemoryMax"}},
		{"reconciler/genesis-reconciler.service", "/usr/local/bin/genesis-reconciler",
			append(slices.Clone(hardening), want{"DynamicUser", "yes"}, want{"LoadCredential", "tokens:/etc/genesis/tokens"}),
			"", []string{"ExecStart", "EnvironmentFile", "LoadCredential"}},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			unit := parseUnit(t, tc.file)
			svc := unit["Service"]
			for _, w := range tc.want {
				v, ok := svc[w.key]
				if !ok || v[len(v)-1] != w.value {
					t.Errorf("[Service] %s = %q, want %q", w.key, v, w.value)
				}
			}
			for _, k := range tc.present {
				if len(svc[k]) == 0 || svc[k][len(svc[k])-1] == "" {
					t.Errorf("[Service] %s is missing", k)
				}
			}
			var rw []string
			for _, v := range svc["ReadWritePaths"] {
				rw = append(rw, strings.Fields(v)...)
			}
			if tc.readWrite == "" && len(rw) > 0 {
				t.Errorf("ReadWritePaths = %q, want none", rw)
			}
			if tc.readWrite != "" && !slices.Equal(rw, strings.Fields(tc.readWrite)) {
				t.Errorf("ReadWritePaths = %q, want only %s", rw, tc.readWrite)
			}
			if !strings.HasPrefix(svc["ExecStart"][0], tc.binary) {
				t.Errorf("ExecStart %q does not start with %s", svc["ExecStart"][0], tc.binary)
			}
			if unit["Install"]["WantedBy"] == nil {
				t.Error("[Install] WantedBy is missing")
			}

			analyze, err := exec.LookPath("systemd-analyze")
			if err != nil {
				t.Log("systemd-analyze is not installed: checked the unit as INI only")
				return
			}
			dir := t.TempDir()
			stub := filepath.Join(dir, "stub")
			if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			copyPath := filepath.Join(dir, filepath.Base(tc.file))
			if err := os.WriteFile(copyPath, bytes.ReplaceAll(data, []byte(tc.binary), []byte(stub)), 0o644); err != nil {
				t.Fatal(err)
			}
			// verify exits 0 on unknown keys and bad values: any output fails.
			out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify: %v\n%s", err, out)
			}
			// Exposure 2.0 of 10 or less ("OK"); needs systemd 250 or later.
			out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", copyPath).CombinedOutput()
			switch {
			case err != nil && bytes.Contains(out, []byte("unrecognized option")):
				t.Logf("systemd-analyze security --offline is not supported here: %s", bytes.TrimSpace(out))
			case err != nil:
				t.Errorf("systemd-analyze security: exposure above 2.0 or failed: %v\n%s", err, out)
			default:
				for _, l := range strings.Split(string(out), "\n") {
					if strings.Contains(l, "Overall exposure") {
						t.Log(strings.TrimSpace(l))
					}
				}
			}
		})
	}
}

// parseUnit reads a systemd unit as INI: section → key → every value in
// order (systemd's lists append; an empty assignment resets).
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			if unit[section] == nil {
				unit[section] = map[string][]string{}
			}
		case section == "":
			t.Fatalf("%s:%d: a key outside a section", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.TrimSpace(k) == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not key=value: %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			unit[section][k] = append(unit[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if unit[s] == nil {
			t.Fatalf("%s: no [%s] section", path, s)
		}
	}
	return unit
}

func TestCompose(t *testing.T) {
	type service struct {
		Image        string            `yaml:"image"`
		Restart      string            `yaml:"restart"`
		MemLimit     string            `yaml:"mem_limit"`
		MemswapLimit string            `yaml:"memswap_limit"`
		Ports        []string          `yaml:"ports"`
		NetworkMode  string            `yaml:"network_mode"`
		Volumes      []string          `yaml:"volumes"`
		Environment  map[string]string `yaml:"environment"`
		Healthcheck  struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	}
	var c struct {
		Services map[string]service `yaml:"services"`
		Volumes  map[string]any     `yaml:"volumes"`
	}
	decodeFile(t, "droplet/compose.yaml", &c)

	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if diff := cmp.Diff(names, []string{"caddy", "n8n", "postgres"}); diff != "" {
		t.Fatalf("services (-got +want):\n%s", diff)
	}

	// Images: n8n pinned to a 1.123.x release (through N8N_VERSION with a
	// pinned default), Postgres 16, Caddy 2.
	images := []struct{ service, pattern string }{
		{"n8n", `^docker\.n8n\.io/n8nio/n8n:(\$\{N8N_VERSION:-1\.123\.\d+\}|1\.123\.\d+)$`},
		{"postgres", `^postgres:16(\.\d+)*(-alpine|-bookworm)?$`},
		{"caddy", `^caddy:2(\.\d+)*(-alpine)?$`},
	}
	for _, im := range images {
		if got := c.Services[im.service].Image; !regexp.MustCompile(im.pattern).MatchString(got) {
			t.Errorf("%s: image %q does not match %s", im.service, got, im.pattern)
		}
	}

	// Volumes as in the seed (4.2).
	mounts := map[string][]string{
		"caddy":    {"caddy_data:/data", "caddy_config:/config"},
		"n8n":      {"n8n_data:/home/node/.n8n"},
		"postgres": {"db_storage:/var/lib/postgresql/data"},
	}
	for svc, want := range mounts {
		for _, m := range want {
			if !slices.Contains(c.Services[svc].Volumes, m) {
				t.Errorf("%s: volume %s is missing (have %q)", svc, m, c.Services[svc].Volumes)
			}
			if _, ok := c.Volumes[strings.Split(m, ":")[0]]; !ok {
				t.Errorf("volume %s is not declared at the top level", strings.Split(m, ":")[0])
			}
		}
	}

	// Exposure: n8n only on loopback, Postgres not published, Caddy on the
	// host's 80 and 443.
	if len(c.Services["n8n"].Ports) == 0 {
		t.Error("n8n: not published on 127.0.0.1 (the agent and Caddy reach it there)")
	}
	for _, p := range c.Services["n8n"].Ports {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("n8n: port %q is not bound to 127.0.0.1", p)
		}
	}
	if len(c.Services["postgres"].Ports) > 0 || c.Services["postgres"].NetworkMode != "" {
		t.Errorf("postgres: published (%q, network_mode %q); it stays on the stack's network", c.Services["postgres"].Ports, c.Services["postgres"].NetworkMode)
	}
	caddy := c.Services["caddy"]
	if caddy.NetworkMode != "host" && !(slices.Contains(caddy.Ports, "80:80") && slices.Contains(caddy.Ports, "443:443")) {
		t.Errorf("caddy: neither on the host network nor publishing 80 and 443 (%q)", caddy.Ports)
	}

	// Memory: every service limited; the sum, with the agent's MemoryMax,
	// fits the droplet's RAM and RAM plus swap.
	agentMax := parseBytes(t, "agent MemoryMax", parseUnit(t, "droplet/genesis-agent.service")["Service"]["MemoryMax"][0])
	ram, total := agentMax, agentMax
	for _, n := range names {
		s := c.Services[n]
		if s.MemLimit == "" || s.MemswapLimit == "" {
			t.Errorf("%s: mem_limit %q, memswap_limit %q: both are needed", n, s.MemLimit, s.MemswapLimit)
			continue
		}
		mem, swap := parseBytes(t, n+" mem_limit", s.MemLimit), parseBytes(t, n+" memswap_limit", s.MemswapLimit)
		if swap < mem {
			t.Errorf("%s: memswap_limit %s is below mem_limit %s (it is RAM plus swap)", n, s.MemswapLimit, s.MemLimit)
		}
		ram += mem
		total += swap
		if len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s: no healthcheck", n)
		}
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("%s: restart %q; it must come back after a crash or reboot", n, s.Restart)
		}
	}
	if ram > dropletRAM-hostReserve {
		t.Errorf("memory limits with the agent sum to %d MiB; the droplet has %d MiB for them", ram>>20, (dropletRAM-hostReserve)>>20)
	}
	if total > dropletRAM+dropletSwap-hostReserve {
		t.Errorf("memory+swap limits with the agent sum to %d MiB; RAM and swap leave %d MiB", total>>20, (dropletRAM+dropletSwap-hostReserve)>>20)
	}
	t.Logf("RAM limits %d MiB, RAM+swap limits %d MiB (agent included)", ram>>20, total>>20)
}

// parseBytes reads a Docker or systemd size: 512m, 2g, 96M, 1048576.
func parseBytes(t *testing.T, what, s string) int64 {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)([bBkKmMgG]?)$`).FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		t.Fatalf("%s: bad size %q", what, s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return n << map[string]int{"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(m[2])]
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("reconciler/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	goVersion := ""
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "FROM" {
			froms = append(froms, strings.Join(f[1:], " "))
		}
		if len(f) == 2 && f[0] == "ARG" && strings.HasPrefix(f[1], "GO_VERSION=") {
			goVersion = strings.TrimPrefix(f[1], "GO_VERSION=")
		}
	}
	if len(froms) != 2 {
		t.Fatalf("FROM lines %q, want a build stage and a runtime stage", froms)
	}
	if !regexp.MustCompile(`^golang:\S+ AS build$`).MatchString(froms[0]) {
		t.Errorf("build stage %q, want golang:... AS build", froms[0])
	}
	if !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot$`).MatchString(froms[1]) {
		t.Errorf("runtime stage %q, want gcr.io/distroless/static...:nonroot", froms[1])
	}
	for _, s := range []string{"CGO_ENABLED=0", "./cmd/genesis-reconciler", "USER nonroot", "ENTRYPOINT"} {
		if !bytes.Contains(data, []byte(s)) {
			t.Errorf("no %q in the Dockerfile", s)
		}
	}
	if _, err := os.Stat("../cmd/genesis-reconciler"); err != nil {
		t.Errorf("the Dockerfile builds ./cmd/genesis-reconciler: %v", err)
	}
	// The build image's Go must be the module's.
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("no go directive in go.mod")
	}
	if goVersion != string(m[1]) {
		t.Errorf("ARG GO_VERSION=%s, go.mod says go %s", goVersion, m[1])
	}
}

// --- helpers ---------------------------------------------------------------

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (r rule) name() string { return r.Alert + r.Record }

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	decodeFile(t, "prometheus/alerts.yml", &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("alerts.yml: no rules")
	}
	return rules
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

type query struct {
	panel      int
	title, ref string
	expr       string
}

func dashboardQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile("grafana/genesis-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/genesis-fleet.json: %v", err)
	}
	var qs []query
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, query{panel: p.ID, title: p.Title, ref: tg.RefID, expr: tg.Expr})
		}
	}
	return qs
}

var (
	promqlStrings   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGroupings = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlKeywords  = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true,
		"without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"atan2": true, "inf": true, "nan": true, "start": true, "end": true,
	}
)

// metricNames returns the metric names a PromQL expression selects, in
// order: identifiers that are not inside strings, label matchers, ranges or
// grouping clauses, not functions or aggregations (followed by "("), not
// keywords and not numbers or durations.
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, "{}")
	s = promqlRanges.ReplaceAllString(s, "[]")
	s = promqlGroupings.ReplaceAllString(s, " ")
	isStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isPart := func(c byte) bool { return isStart(c) || (c >= '0' && c <= '9') }
	var names []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isPart(s[i]) || s[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(s) && isPart(s[j]) {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\n' || s[k] == '\t') {
				k++
			}
			if (k >= len(s) || s[k] != '(') && !promqlKeywords[strings.ToLower(word)] {
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	return names
}

// sourceMetricNames returns every "genesis_..." string literal in the
// module's Go sources (tests and deploy/ aside).
func sourceMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"(genesis_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".cache", "bin", "testdata", "node_modules", "deploy":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllSubmatch(data, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// yamlDocs parses every document of a YAML file.
func yamlDocs(path string) ([]*yaml.Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		docs = append(docs, &n)
	}
}

// decodeFile decodes a single-document YAML file into v.
func decodeFile(t *testing.T, path string, v any) {
	t.Helper()
	docs, err := yamlDocs(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(docs) != 1 {
		t.Fatalf("%s: %d YAML documents, want 1", path, len(docs))
	}
	if err := docs[0].Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func subset(sub, of map[string]string) bool {
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}

func isTrue(b *bool) bool { return b != nil && *b }

// TestNoOpenModeShipped: the shipped unit and Deployment give the
// reconciler its API tokens file, and nothing shipped turns on
// --insecure-no-auth (day-2 rule 1).
func TestNoOpenModeShipped(t *testing.T) {
	unit := parseUnit(t, "reconciler/genesis-reconciler.service")
	if !slices.Contains(unit["Service"]["Environment"], "GENESIS_TOKENS_FILE=%d/tokens") {
		t.Errorf("the reconciler unit does not set GENESIS_TOKENS_FILE=%%d/tokens: Environment = %q", unit["Service"]["Environment"])
	}
	dep, err := os.ReadFile("k8s/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`name: GENESIS_PUBLIC_URL\s+value: https://`).Match(dep) {
		t.Error("the Deployment does not give agents an https:// GENESIS_PUBLIC_URL (they refuse plain http)")
	}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		// The alert that watches for the flag names it; so does its test.
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, ".md") || strings.HasPrefix(path, "prometheus/") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, bad := range []string{"insecure-no-auth", "GENESIS_INSECURE_NO_AUTH"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s turns on %s", path, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConnectionBudget: the unit's and the pod's limits hold the design
// point of README "Connection budget": 50,000 agents per replica at up to
// two open files each plus 256 for Postgres and git, and a GOMEMLIMIT below
// the memory limit.
func TestConnectionBudget(t *testing.T) {
	const agents, perAgent, reserve = 50_000, 2, 256
	unit := parseUnit(t, "reconciler/genesis-reconciler.service")["Service"]
	nofile, err := strconv.Atoi(unit["LimitNOFILE"][len(unit["LimitNOFILE"])-1])
	if err != nil || nofile < agents*perAgent+reserve {
		t.Errorf("LimitNOFILE = %v (%v), want at least %d", unit["LimitNOFILE"], err, agents*perAgent+reserve)
	}
	gib := func(s string) float64 {
		for _, u := range []struct {
			suffix string
			f      float64
		}{{"GiB", 1}, {"Gi", 1}, {"G", 1}, {"MiB", 1.0 / 1024}, {"Mi", 1.0 / 1024}} {
			if n, ok := strings.CutSuffix(s, u.suffix); ok {
				v, err := strconv.ParseFloat(n, 64)
				if err == nil {
					return v * u.f
				}
			}
		}
		t.Fatalf("size %q", s)
		return 0
	}
	var unitLimit string
	if v := unit["MemoryMax"]; len(v) > 0 {
		unitLimit = v[len(v)-1]
	}
	var unitGoMem string
	for _, e := range unit["Environment"] {
		if v, ok := strings.CutPrefix(e, "GOMEMLIMIT="); ok {
			unitGoMem = v
		}
	}
	if unitLimit == "" || unitGoMem == "" || gib(unitGoMem) >= gib(unitLimit) {
		t.Errorf("unit: MemoryMax %q, GOMEMLIMIT %q: want both, GOMEMLIMIT below MemoryMax", unitLimit, unitGoMem)
	}
	data, err := os.ReadFile("k8s/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var dep struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Env       []envVar `yaml:"env"`
						Resources struct {
							Limits map[string]string `yaml:"limits"`
						} `yaml:"resources"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(data, &dep); err != nil {
		t.Fatal(err)
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		goMem := ""
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				goMem = e.Value
			}
		}
		limit := c.Resources.Limits["memory"]
		if goMem == "" || limit == "" || gib(goMem) >= gib(limit) || gib(limit) != gib(unitLimit) {
			t.Errorf("pod: memory limit %q, GOMEMLIMIT %q: want both, GOMEMLIMIT below the limit, the limit as the unit's %q", limit, goMem, unitLimit)
		}
	}
}
