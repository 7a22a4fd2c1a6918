package cloud

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// recorder is a simulator middleware that records every request that
// reaches it ("METHOD /path"). hold, when set, is called with each request
// after the simulator answered it and before the answer is written back;
// it may cancel the caller (a response lost to a crash or a cut).
type recorder struct {
	mu   sync.Mutex
	reqs []string
	hold func(r *http.Request) (drop bool)
}

func (rc *recorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, r.Method+" "+r.URL.Path)
		hold := rc.hold
		rc.mu.Unlock()
		if hold == nil {
			next.ServeHTTP(w, r)
			return
		}
		dosimtest.ServeLate(next, w, r, func() bool { return !hold(r) })
	})
}

// since returns the requests recorded from index n on.
func (rc *recorder) since(n int) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs[n:])
}

func (rc *recorder) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func mutatingOnly(reqs []string) []string {
	var out []string
	for _, r := range reqs {
		m, _, _ := strings.Cut(r, " ")
		if mutating(m) {
			out = append(out, r)
		}
	}
	return out
}

// fenceScene is a simulator with one tenant's droplet (generation 1), a
// hibernation snapshot of an earlier generation and a spare droplet, so
// every kind of mutating call has something to act on.
type fenceScene struct {
	e       *env
	rec     *recorder
	droplet int
	snap    string
	spare   int
}

func newFenceScene(t *testing.T, requireLease bool) *fenceScene {
	t.Helper()
	rec := &recorder{}
	e := newEnv(t, envOpts{sim: unlimitedSim(), wrap: rec.wrap, requireLease: requireLease})
	ctx := WithLease(context.Background(), NewLease(context.Background(), 1, nil))
	old, err := e.pool.Execute(ctx, createAction("acme", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.pool.Execute(ctx, hibernateAction("acme", "a", old.DropletID), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur := createAction("acme", "a")
	cur.Droplet, cur.Gen = plan.DropletName("acme", 2), 2
	c, err := e.pool.Execute(ctx, cur, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spare := schema.SpareWorkspace("nyc3", 1)
	sa := createAction(spare, "a")
	sa.Kind = plan.CreateSpare
	sa.Droplet = plan.DropletName(spare, 1)
	s, err := e.pool.Execute(ctx, sa, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fenceScene{e: e, rec: rec, droplet: c.DropletID, snap: h.SnapshotID, spare: s.DropletID}
}

// mutations are one action of every kind that mutates DigitalOcean, on the
// scene's droplets.
func (s *fenceScene) mutations() map[string]func(context.Context) error {
	base := plan.Action{Workspace: "acme", Account: "a", Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-24-04-x64", Tier: "starter"}
	with := func(f func(a *plan.Action)) plan.Action {
		a := base
		f(&a)
		return a
	}
	exec := func(a plan.Action) func(context.Context) error {
		return func(ctx context.Context) error { _, err := s.e.pool.Execute(ctx, a, ExecOptions{}); return err }
	}
	cur := plan.DropletName("acme", 2)
	return map[string]func(context.Context) error{
		"create": exec(with(func(a *plan.Action) {
			a.Kind, a.Workspace, a.Droplet, a.Gen = plan.Create, "other", plan.DropletName("other", 1), 1
		})),
		"wake": exec(with(func(a *plan.Action) {
			a.Kind, a.Workspace, a.Droplet, a.Gen, a.Snapshot = plan.Wake, "other", plan.DropletName("other", 3), 3, s.snap
		})),
		"rebuild": exec(with(func(a *plan.Action) {
			a.Kind, a.Droplet, a.Gen, a.Snapshot = plan.Rebuild, plan.DropletName("acme", 3), 3, s.snap
		})),
		"hibernate":       exec(with(func(a *plan.Action) { a.Kind, a.Droplet, a.DropletID = plan.Hibernate, cur, s.droplet })),
		"resize":          exec(with(func(a *plan.Action) { a.Kind, a.Droplet, a.DropletID, a.Gen = plan.Resize, cur, s.droplet, 3 })),
		"destroy":         exec(with(func(a *plan.Action) { a.Kind, a.Droplet, a.DropletID = plan.Destroy, cur, s.droplet })),
		"delete_snapshot": exec(with(func(a *plan.Action) { a.Kind, a.Snapshot = plan.DeleteSnapshot, s.snap })),
		"reboot":          exec(with(func(a *plan.Action) { a.Kind, a.Droplet, a.DropletID = plan.Reboot, cur, s.droplet })),
		"power_cycle":     exec(with(func(a *plan.Action) { a.Kind, a.Droplet, a.DropletID = plan.PowerCycle, cur, s.droplet })),
		"assign_spare": exec(with(func(a *plan.Action) {
			a.Kind, a.Workspace, a.Spare, a.DropletID = plan.AssignSpare, "other", schema.SpareWorkspace("nyc3", 1), s.spare
		})),
		"rename": func(ctx context.Context) error {
			return s.e.pool.Rename(ctx, "a", s.spare, plan.DropletName("other", 1))
		},
	}
}

// TestFence: a leader that lost its lease makes no mutating DigitalOcean
// request. A revoked lease makes no request at all; a lease whose proof
// fails (the lock's session died before the ping noticed) may still read,
// but its first mutating request is not sent and the lease is revoked; a
// Pool that requires a lease refuses a mutating request without one. In
// every case the caller sees ErrFenced (KindFenced), not an action error,
// and nothing changed in the simulator.
func TestFence(t *testing.T) {
	dead := errors.New("leader lock session: conn closed")
	cases := []struct {
		name string
		// lease builds the context's lease (nil: none).
		lease func(ctx context.Context) *Lease
		// require makes the Pool refuse mutating requests without a lease.
		require bool
		// noRequests: not even a read reaches the simulator.
		noRequests bool
	}{
		{name: "revoked lease", noRequests: true, lease: func(ctx context.Context) *Lease {
			l := NewLease(ctx, 7, nil)
			l.Revoke(dead)
			return l
		}},
		{name: "lock session died, not yet noticed", lease: func(ctx context.Context) *Lease {
			return NewLease(ctx, 7, func(context.Context) error { return dead })
		}},
		{name: "no lease where one is required", require: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newFenceScene(t, tc.require)
			before := s.e.sim.Snapshot()
			for kind, call := range s.mutations() {
				t.Run(kind, func(t *testing.T) {
					ctx := context.Background()
					var l *Lease
					if tc.lease != nil {
						l = tc.lease(ctx)
						ctx = WithLease(ctx, l)
					}
					n := s.rec.len()
					err := call(ctx)
					if !IsFenced(err) {
						t.Fatalf("err = %v, want ErrFenced", err)
					}
					got := s.rec.since(n)
					if tc.noRequests && len(got) != 0 {
						t.Errorf("requests reached the simulator: %v, want none", got)
					}
					if m := mutatingOnly(got); len(m) != 0 {
						t.Errorf("mutating requests reached the simulator: %v, want none", m)
					}
					if l != nil && l.Valid() == nil {
						t.Errorf("lease still valid after a failed proof")
					}
					if l != nil && l.Context().Err() == nil {
						t.Errorf("lease context not cancelled")
					}
				})
			}
			after := s.e.sim.Snapshot()
			if len(after.Droplets) != len(before.Droplets) || len(after.Snapshots) != len(before.Snapshots) || len(after.Actions) != len(before.Actions) {
				t.Errorf("simulator changed: droplets %d→%d, snapshots %d→%d, actions %d→%d", len(before.Droplets), len(after.Droplets),
					len(before.Snapshots), len(after.Snapshots), len(before.Actions), len(after.Actions))
			}
			if got := s.e.counter("genesis_do_requests_total", map[string]string{"code": "fenced"}); got < 1 && !tc.noRequests {
				t.Errorf("fenced requests counted = %v, want at least 1", got)
			}
		})
	}
}

// TestFenceValidLeaseActs: a valid lease whose proof holds lets every
// mutating call through, proving the lease once per mutating request.
func TestFenceValidLeaseActs(t *testing.T) {
	s := newFenceScene(t, true)
	var proofs int
	var mu sync.Mutex
	l := NewLease(context.Background(), 3, func(context.Context) error { mu.Lock(); proofs++; mu.Unlock(); return nil })
	ctx := WithLease(context.Background(), l)
	n := s.rec.len()
	if err := s.mutations()["reboot"](ctx); err != nil {
		t.Fatalf("reboot under a valid lease: %v", err)
	}
	m := mutatingOnly(s.rec.since(n))
	if len(m) != 1 {
		t.Fatalf("mutating requests = %v, want the one reboot", m)
	}
	if proofs != len(m) {
		t.Errorf("proofs = %d, want %d (one per mutating request)", proofs, len(m))
	}
	if err := l.Valid(); err != nil {
		t.Errorf("lease = %v, want valid", err)
	}
}

// TestResumeFindsInFlightCreate: the leader's create-like request landed
// but its answer was lost (the leader was cut off or crashed while
// DigitalOcean held the request). The next leader's resumed Execute finds
// the droplet by its deterministic name and workspace tag and sends no
// second POST: exactly one droplet, the resume's first step is "found".
func TestResumeFindsInFlightCreate(t *testing.T) {
	cases := []struct {
		name   string
		action func(s *fenceScene) plan.Action
		want   string // the droplet the action makes
	}{
		{name: "create", want: "genesis-other-1", action: func(s *fenceScene) plan.Action {
			return createAction("other", "a")
		}},
		{name: "wake", want: "genesis-other-3", action: func(s *fenceScene) plan.Action {
			return plan.Action{Kind: plan.Wake, Workspace: "other", Account: "a", Region: "nyc3", Size: "s-1vcpu-1gb", Tier: "starter",
				Snapshot: s.snap, Droplet: plan.DropletName("other", 3), Gen: 3}
		}},
		{name: "rebuild from snapshot", want: "genesis-acme-3", action: func(s *fenceScene) plan.Action {
			return plan.Action{Kind: plan.Rebuild, Workspace: "acme", Account: "a", Region: "nyc3", Size: "s-1vcpu-1gb", Tier: "starter",
				Snapshot: s.snap, Droplet: plan.DropletName("acme", 3), Gen: 3}
		}},
		{name: "rebuild from image", want: "genesis-acme-3", action: func(s *fenceScene) plan.Action {
			return plan.Action{Kind: plan.Rebuild, Workspace: "acme", Account: "a", Region: "nyc3", Size: "s-1vcpu-1gb", Tier: "starter",
				Image: "ubuntu-24-04-x64", Droplet: plan.DropletName("acme", 3), Gen: 3}
		}},
		{name: "resize", want: "genesis-acme-3", action: func(s *fenceScene) plan.Action {
			return plan.Action{Kind: plan.Resize, Workspace: "acme", Account: "a", Region: "nyc3", Size: "s-2vcpu-4gb", Tier: "starter",
				Droplet: plan.DropletName("acme", 2), DropletID: s.droplet, Gen: 3}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newFenceScene(t, false)
			a := tc.action(s)
			ctx, cancel := context.WithCancelCause(context.Background())
			cut := errors.New("leader cut off mid-create")
			s.rec.mu.Lock()
			s.rec.hold = func(r *http.Request) bool {
				if r.Method != http.MethodPost || r.URL.Path != "/v2/droplets" {
					return false
				}
				cancel(cut) // the answer never reaches the old leader
				return true
			}
			s.rec.mu.Unlock()
			if _, err := s.e.pool.Execute(ctx, a, ExecOptions{}); !errors.Is(err, cut) && !errors.Is(err, context.Canceled) {
				t.Fatalf("first Execute: %v, want the cut", err)
			}
			s.rec.mu.Lock()
			s.rec.hold = nil
			s.rec.mu.Unlock()
			if n := len(s.e.droplets()[tc.want]); n != 1 {
				t.Fatalf("after the cut: %d droplets named %s, want 1 (the request landed)", n, tc.want)
			}
			n := s.rec.len()
			var st steps
			r, err := s.e.pool.Execute(context.Background(), a, ExecOptions{Resume: true, Progress: st.add})
			if err != nil {
				t.Fatalf("resumed Execute: %v", err)
			}
			if got := st.list(); !slices.Contains(got, StepFound) || slices.Contains(got, StepCreated) {
				t.Errorf("resumed steps = %v, want found and not created", got)
			}
			if posts := slices.Collect(func(yield func(string) bool) {
				for _, q := range s.rec.since(n) {
					if q == "POST /v2/droplets" && !yield(q) {
						return
					}
				}
			}); len(posts) != 0 {
				t.Errorf("the resume sent %d droplet creates, want 0", len(posts))
			}
			ds := s.e.droplets()[tc.want]
			if len(ds) != 1 || strconv.Itoa(num(ds[0]["id"])) != strconv.Itoa(r.DropletID) {
				t.Errorf("droplets named %s = %v, want exactly droplet %d", tc.want, ds, r.DropletID)
			}
		})
	}
}
