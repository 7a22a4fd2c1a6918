package agentapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// logLines counts the JSON log lines after the first skip bytes by message
// and level ("manifest issued/INFO"), and returns the lines themselves.
func logLines(t *testing.T, logs string, skip int) (map[string]int, []map[string]any) {
	t.Helper()
	counts := map[string]int{}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs[skip:]), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		counts[fmt.Sprint(m["msg"], "/", m["level"])]++
		lines = append(lines, m)
	}
	return counts, lines
}

// TestFleetWideLogsBounded: a sweep that issues many manifests logs the
// first eachLogged of them at info, the others at debug, and one line
// saying how many it issued, for which commit; a one-tenant change is
// logged at info whatever came before. "manifest applied" is bounded the
// same way per minute, and the first line of the next minute says how many
// went to debug. Every manifest is counted in the metrics all the same.
func TestFleetWideLogsBounded(t *testing.T) {
	w := newWorld(t)
	n := eachLogged + 5
	agents := make([]*agent, n)
	for i := range n {
		ws := fmt.Sprintf("ws-%04d", i)
		w.setTenant(ws, "blob-0", tenantSpec{})
		agents[i] = w.mustEnroll(ws, 1, 3000+i, fmt.Sprintf("203.0.113.%d", i+1))
	}
	w.firstManifest()

	mark := len(w.logs.String())
	w.changeAll(n, 1)
	if issued, err := w.svc.Sweep(t.Context()); err != nil || issued != n {
		t.Fatalf("sweep: %d issued (%v), want %d", issued, err, n)
	}
	counts, lines := logLines(t, w.logs.String(), mark)
	if counts["manifest issued/INFO"] != eachLogged || counts["manifest issued/DEBUG"] != n-eachLogged {
		t.Errorf("a sweep of %d: manifest issued lines %v, want %d at info and %d at debug", n, counts, eachLogged, n-eachLogged)
	}
	var summary map[string]any
	for _, l := range lines {
		if l["msg"] == "manifest sweep issued many; past the first, each at debug" {
			summary = l
		}
	}
	if summary == nil || summary["level"] != "INFO" || summary["issued"] != float64(n) || summary["commit"] != fmt.Sprintf("%040x", 1) {
		t.Errorf("sweep summary %v, want one at info with issued %d and the commit", summary, n)
	}

	// One tenant changes: its line is at info, and no summary.
	mark = len(w.logs.String())
	w.setTenant("ws-0000", "blob-2", tenantSpec{greeting: "Hello, round 2"})
	w.setCommit(fmt.Sprintf("%040x", 2))
	if issued, err := w.svc.Sweep(t.Context()); err != nil || issued != 1 {
		t.Fatalf("one-tenant sweep: %d issued (%v)", issued, err)
	}
	if counts, _ := logLines(t, w.logs.String(), mark); counts["manifest issued/INFO"] != 1 || len(counts) != 1 {
		t.Errorf("a one-tenant sweep logged %v, want one manifest issued at info", counts)
	}

	// Every agent reports version 2 applied.
	mark = len(w.logs.String())
	for i, a := range agents {
		if code := w.beat(a.cred, hb(fmt.Sprintf("ws-%04d", i), fmt.Sprint(3000+i), 1, 2, true)); code != http.StatusAccepted {
			t.Fatalf("heartbeat: %d", code)
		}
	}
	poll.Until(t, "every agent's convergence observed", func() bool {
		return testutil.CollectAndCount(w.svc.m.convergence) == 1 && histCount(w.svc.m.convergence) == uint64(n)
	})
	counts, _ = logLines(t, w.logs.String(), mark)
	if counts["manifest applied/INFO"] != eachLogged || counts["manifest applied/DEBUG"] != n-eachLogged {
		t.Errorf("%d applied within a minute: %v, want %d at info and %d at debug", n, counts, eachLogged, n-eachLogged)
	}
	// A minute on, the next one is at info, after a line saying how many
	// were at debug.
	w.advance(time.Minute)
	mark = len(w.logs.String())
	if code := w.beat(agents[0].cred, hb("ws-0000", "3000", 2, 3, true)); code != http.StatusAccepted {
		t.Fatalf("heartbeat: %d", code)
	}
	poll.Until(t, "the next applied line", func() bool { return strings.Contains(w.logs.String()[mark:], `"msg":"manifest applied"`) })
	counts, lines = logLines(t, w.logs.String(), mark)
	if counts["manifest applied/INFO"] != 1 || counts["manifest applied lines written at debug in the last window/INFO"] != 1 {
		t.Errorf("the next minute: %v", counts)
	}
	for _, l := range lines {
		if l["msg"] == "manifest applied lines written at debug in the last window" && l["lines"] != float64(n-eachLogged) {
			t.Errorf("summary says %v lines, want %d", l["lines"], n-eachLogged)
		}
	}

	// Renders of their own (an update_manifest action per tenant, as a
	// commit editing every tenant plans) are bounded per minute as well.
	mark = len(w.logs.String())
	w.changeAll(n, 3)
	for i := range n {
		if err := w.svc.RenderWorkspace(t.Context(), fmt.Sprintf("ws-%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if counts, _ := logLines(t, w.logs.String(), mark); counts["manifest issued/INFO"] != eachLogged || counts["manifest issued/DEBUG"] != n-eachLogged {
		t.Errorf("%d renders of their own within a minute: %v, want %d at info and %d at debug", n, counts, eachLogged, n-eachLogged)
	}
}

// histCount is how many observations h holds.
func histCount(h prometheus.Histogram) uint64 {
	var m dto.Metric
	h.Write(&m)
	return m.GetHistogram().GetSampleCount()
}
