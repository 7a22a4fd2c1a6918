package agentapi

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// regreet changes the greeting of workspace's workflow and nothing else
// (its credentials keep their ciphertexts), as a commit touching only a
// workflow parameter does.
func (w *world) regreet(ws, greeting string) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.snap.Tenants[ws]
	nt := *ts.Tenant
	nt.Spec.Workflows = append([]schema.Workflow(nil), nt.Spec.Workflows...)
	for i := range nt.Spec.Workflows {
		p := maps.Clone(nt.Spec.Workflows[i].Params)
		p["greeting"] = greeting
		nt.Spec.Workflows[i].Params = p
	}
	ts.Tenant, ts.Blob, ts.ValidBlob = &nt, ts.Blob+"+", ts.ValidBlob+"+"
	next := w.snap
	next.Tenants = maps.Clone(w.snap.Tenants)
	next.Tenants[ws] = ts
	w.snap = next
}

// TestCredentialsReused: a manifest whose credentials did not change
// carries the ciphertexts already sealed to the droplet (from the cache or,
// after a restart, from Postgres); a changed credential, or a new droplet
// key, is sealed afresh.
func TestCredentialsReused(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	m1, _ := w.manifest(a)
	sweep := func() schema.Manifest {
		t.Helper()
		if n, err := w.svc.Sweep(t.Context()); err != nil || n != 1 {
			t.Fatalf("Sweep = %d, %v; want 1", n, err)
		}
		m, _ := w.manifest(a)
		for _, c := range m.Credentials {
			if _, err := sealing.Open(a.id, c, "ws-acme", "1001"); err != nil {
				t.Fatalf("version %d: open %s: %v", m.Version, c.Name, err)
			}
		}
		return m
	}

	w.regreet("ws-acme", "Hi")
	m2 := sweep()
	if m2.Version != 2 || !strings.Contains(string(m2.Workflows[0].JSON), `"Hi"`) {
		t.Fatalf("version %d workflow %s", m2.Version, m2.Workflows[0].JSON)
	}
	if diff := cmp.Diff(m1.Credentials, m2.Credentials); diff != "" {
		t.Errorf("unchanged credentials were sealed again (-v1 +v2):\n%s", diff)
	}

	// A fresh replica's cache is empty: the ciphertexts come from Postgres.
	w.svc.flush()
	w.regreet("ws-acme", "Hey")
	m3 := sweep()
	if diff := cmp.Diff(m1.Credentials, m3.Credentials); diff != "" {
		t.Errorf("unchanged credentials after a cache flush (-v1 +v3):\n%s", diff)
	}
	// A sweep reads them for all its droplets in one statement.
	if strings.Contains(w.logs.String(), "unreadable") {
		t.Errorf("previous manifests were not read in one statement:\n%s", w.logs.String())
	}
	envs, err := w.st.ManifestEnvelopes(t.Context(), []store.ManifestRef{{Droplet: 1001, Version: m2.Version}, {Droplet: 1001, Version: 99}, {Droplet: 7, Version: 1}})
	if err != nil || len(envs) != 1 || len(envs[1001]) == 0 {
		t.Errorf("ManifestEnvelopes = %d envelopes, %v; want droplet 1001's version %d alone", len(envs), err, m2.Version)
	}

	// New ciphertexts in git: sealed again.
	w.setTenant("ws-acme", "blob2", tenantSpec{})
	m4 := sweep()
	for k := range m4.Credentials {
		if m4.Credentials[k].Sealed == m3.Credentials[k].Sealed || m4.Credentials[k].SHA256 == m3.Credentials[k].SHA256 {
			t.Errorf("credential %s kept its ciphertext after it changed in git", m4.Credentials[k].Name)
		}
	}
	if got := w.count(`SELECT count(*) FROM manifests WHERE creds_hash IS NULL`); got != 0 {
		t.Errorf("%d manifests without creds_hash", got)
	}

	// A droplet woken from a snapshot enrolls with a new key: nothing of
	// the old droplet's ciphertexts is reused.
	b := w.mustEnroll("ws-acme", 2, 1002, "203.0.113.8")
	mb, _ := w.manifest(b)
	for k, c := range mb.Credentials {
		if c.Sealed == m4.Credentials[k].Sealed {
			t.Errorf("credential %s of the new droplet reuses the old droplet's ciphertext", c.Name)
		}
		if _, err := sealing.Open(b.id, c, "ws-acme", "1002"); err != nil {
			t.Errorf("new droplet opens %s: %v", c.Name, err)
		}
	}
	if !strings.Contains(w.logs.String(), `"resealed":false`) || !strings.Contains(w.logs.String(), `"resealed":true`) {
		t.Errorf("manifest issued logs do not say whether credentials were sealed again")
	}
}

// TestRendersRace: a sweep and per-tenant renders (update_manifest
// actions after the same commit) race over 60 tenants. Every tenant gets
// exactly one new version, stored once, however the two interleave.
func TestRendersRace(t *testing.T) {
	w := newWorld(t)
	const n = 60
	agents := make([]*agent, n)
	for i := range n {
		ws := fmt.Sprintf("ws-race-%02d", i)
		w.setTenant(ws, "blob1", tenantSpec{})
		agents[i] = w.mustEnroll(ws, 1, 3000+i, fmt.Sprintf("203.0.113.%d", 10+i))
	}
	for round := 2; round <= 4; round++ {
		for i := range n {
			w.regreet(fmt.Sprintf("ws-race-%02d", i), fmt.Sprintf("round %d", round))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2*n+2)
		for range 2 {
			wg.Go(func() {
				if _, err := w.svc.Sweep(t.Context()); err != nil {
					errs <- err
				}
			})
		}
		for i := range n {
			wg.Go(func() {
				if err := w.svc.RenderWorkspace(t.Context(), fmt.Sprintf("ws-race-%02d", i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		if got := w.count(`SELECT count(*) FROM manifests WHERE workspace LIKE 'ws-race-%'`); got != n*round {
			t.Fatalf("round %d: %d manifests stored, want %d", round, got, n*round)
		}
		if got := w.count(`SELECT count(*) FROM fleet_status WHERE workspace LIKE 'ws-race-%' AND manifest_version_issued = $1`, round); got != n {
			t.Errorf("round %d: %d tenants record version %d as issued, want %d", round, got, round, n)
		}
	}
	for i, a := range agents {
		m, _ := w.manifest(a)
		if m.Version != 4 || !strings.Contains(string(m.Workflows[0].JSON), "round 4") {
			t.Errorf("tenant %d: version %d", i, m.Version)
		}
	}
}

// TestStoreRefusesStale: a manifest prepared before another render stored
// a version of its droplet is not stored (and is no error); the render
// that lost then reads the droplet again and finds nothing to issue.
func TestStoreRefusesStale(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	w.regreet("ws-acme", "Hi")
	snap, _ := w.desired()
	tgt, ok, err := w.svc.liveTarget(t.Context(), 0, "ws-acme")
	if err != nil || !ok {
		t.Fatalf("liveTarget: %v %v", ok, err)
	}
	first, err := w.svc.prepare(t.Context(), &snap, tgt, w.now())
	if err != nil || first == nil {
		t.Fatalf("prepare: %v %v", first, err)
	}
	second, err := w.svc.prepare(t.Context(), &snap, tgt, w.now())
	if err != nil || second == nil {
		t.Fatalf("prepare: %v %v", second, err)
	}
	if got, err := w.svc.store(t.Context(), []*issue{first}); err != nil || !got[0] {
		t.Fatalf("store first = %v, %v; want stored", got, err)
	}
	if got, err := w.svc.store(t.Context(), []*issue{second}); err != nil || got[0] {
		t.Fatalf("store second = %v, %v; want left out without an error", got, err)
	}
	// The loser's retry path: nothing new to issue.
	if err := w.svc.renderOne(t.Context(), tgt); err != nil {
		t.Fatal(err)
	}
	if got := w.count(`SELECT count(*) FROM manifests WHERE droplet_id = 1001`); got != 2 {
		t.Errorf("%d manifests stored, want 2", got)
	}
	w.svc.flush()
	if m, _ := w.manifest(a); m.Version != 2 {
		t.Errorf("served version %d, want 2", m.Version)
	}
}
