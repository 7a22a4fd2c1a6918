package dosim

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// State is a snapshot of everything the simulator holds, as the control API
// lists it. Resource objects are the same JSON DigitalOcean answers, with an
// extra "account" field.
type State struct {
	Now       time.Time        `json:"now"`
	Frozen    bool             `json:"frozen"`
	Limits    Limits           `json:"limits"`
	Accounts  []AccountState   `json:"accounts"`
	Droplets  []map[string]any `json:"droplets"`
	Actions   []map[string]any `json:"actions"`
	Snapshots []map[string]any `json:"snapshots"`
	// Domains are the hosted zones of every account, each with its
	// "records" (the same JSON /v2/domains/{name}/records answers).
	Domains     []map[string]any `json:"domains"`
	ReservedIPs []map[string]any `json:"reserved_ips"`
	Faults      []Fault          `json:"faults"`
}

// AccountState is an account as listed by the control API (no token).
type AccountState struct {
	Name         string `json:"name"`
	DropletLimit int    `json:"droplet_limit"`
	Droplets     int    `json:"droplets"`
	// RateRemaining is the hourly window's remaining requests.
	RateRemaining int `json:"rate_remaining"`
}

// ClockState is the simulated clock.
type ClockState struct {
	Now    time.Time `json:"now"`
	Frozen bool      `json:"frozen"`
}

// AddAccount adds an account or, when one with that name exists, replaces
// its token and droplet limit.
func (s *Sim) AddAccount(a Account) error {
	return s.update(func(time.Time) error {
		if err := s.st.upsertAccount(a); err != nil {
			return err
		}
		s.dirty = true
		return nil
	})
}

// Seed is a droplet SeedDroplets records as running.
type Seed struct {
	// ID must be positive and no droplet's yet.
	ID int
	// Name, Region, Size and Image (a base image's slug) as a create
	// would give them; Region, Size and Image must be in the catalog.
	Name, Region, Size, Image string
	Tags                      []string
	// IP is the droplet's address ("": the next loopback one).
	IP string
}

// SeedDroplets records droplets of account as active, as if each had been
// created and had booted long ago: no action, no disk, no boot command. It
// is how a load run starts from a fleet that already exists (genesis-load
// scale: 100,000 creates through the API would take its time bound). It
// records all of them or, on the first bad seed, none.
func (s *Sim) SeedDroplets(account string, seeds []Seed) error {
	return s.update(func(now time.Time) error {
		acc, ok := s.st.Accounts[account]
		if !ok {
			return unprocessable("account %q does not exist", account)
		}
		if n := s.st.countDroplets(account) + len(seeds); n > acc.DropletLimit {
			return unprocessable("seeding %d droplets would exceed account %q's droplet limit of %d", len(seeds), account, acc.DropletLimit)
		}
		ds := make([]*droplet, 0, len(seeds))
		seen := make(map[int]bool, len(seeds))
		for i, sd := range seeds {
			_, region := findRegion(sd.Region)
			_, size := findSize(sd.Size)
			img, image := findImageBySlug(sd.Image)
			switch {
			case sd.ID <= 0 || seen[sd.ID] || s.st.Droplets[sd.ID] != nil:
				return unprocessable("seed %d: droplet id %d is not positive or is taken", i, sd.ID)
			case sd.Name == "" || !region || !size || !image:
				return unprocessable("seed %d: want a name and a known region, size and image slug, got %q %q %q %q", i, sd.Name, sd.Region, sd.Size, sd.Image)
			}
			seen[sd.ID] = true
			ds = append(ds, &droplet{ID: sd.ID, Account: account, Name: sd.Name, Region: sd.Region, Size: sd.Size, Image: baseRef(img),
				Tags: append([]string{}, sd.Tags...), Status: statusActive, CreatedAt: now, IP: sd.IP, SnapshotIDs: []int{},
				Features: []string{"private_networking"}})
		}
		for _, d := range ds {
			if d.IP == "" {
				d.IP = s.st.allocIP()
			}
			s.st.Droplets[d.ID] = d
			s.st.NextID = max(s.st.NextID, d.ID+1)
		}
		s.log.Info("droplets seeded", "account", account, "droplets", len(ds))
		s.dirty = true
		return nil
	})
}

// SetDropletLimit changes one account's droplet limit.
func (s *Sim) SetDropletLimit(account string, limit int) error {
	return s.update(func(time.Time) error {
		a, ok := s.st.Accounts[account]
		if !ok {
			return unprocessable("account %q does not exist", account)
		}
		if limit < 0 {
			return unprocessable("droplet_limit must not be negative")
		}
		a.DropletLimit = limit
		s.dirty = true
		return nil
	})
}

// Limits returns the current limits (zero rate fields mean the defaults).
func (s *Sim) Limits() Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}

// SetLimits replaces the limits.
func (s *Sim) SetLimits(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = l
	return nil
}

// Now returns the simulated time.
func (s *Sim) Now() time.Time { return s.clock.Now() }

// Advance moves simulated time forward by d and settles the simulation
// (boot hooks of droplets that became active start before it returns).
func (s *Sim) Advance(d time.Duration) time.Time {
	s.clock.Advance(d)
	s.update(func(time.Time) error { return nil })
	return s.clock.Now()
}

// SetTime moves simulated time forward to t (never backwards) and settles.
func (s *Sim) SetTime(t time.Time) time.Time {
	s.clock.Set(t)
	s.update(func(time.Time) error { return nil })
	return s.clock.Now()
}

// Freeze stops simulated time (on) or lets it run again (off).
func (s *Sim) Freeze(on bool) time.Time {
	return s.clock.Freeze(on)
}

// Settle completes every action due at the current simulated time.
func (s *Sim) Settle() { s.update(func(time.Time) error { return nil }) }

// InjectFault adds a fault and returns it with its id.
func (s *Sim) InjectFault(f Fault) (Fault, error) {
	f.ID, f.served = 0, 0
	if err := f.normalize(); err != nil {
		return f, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultID++
	f.ID = s.faultID
	s.faults = append(s.faults, &f)
	return f, nil
}

// ClearFaults removes every injected fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Reset destroys every droplet (stopping boot hooks), action, snapshot,
// domain (with its records) and reserved IP, clears faults and rate
// windows, and keeps accounts and limits.
func (s *Sim) Reset() {
	s.update(func(now time.Time) error {
		for _, d := range s.st.sortedDroplets() {
			s.destroyLocked(d, now)
		}
		for id := range s.st.Snapshots {
			s.removeDisk("snapshots", id)
		}
		s.st.Actions = map[int]*action{}
		s.st.Snapshots = map[int]*snapshot{}
		s.st.Domains = map[string]*domain{}
		s.st.Records = map[int]*domainRecord{}
		s.st.ReservedIPs = map[string]*reservedIP{}
		s.st.pending = map[int]struct{}{}
		s.faults = nil
		s.windows = map[string]*window{}
		s.dirty = true
		return nil
	})
}

// HookPID returns the process id of a droplet's running boot command, or 0.
func (s *Sim) HookPID(droplet int) int {
	s.Settle()
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	return s.hooks.running(droplet)
}

// Snapshot lists everything the simulator holds.
func (s *Sim) Snapshot() State {
	var out State
	s.update(func(now time.Time) error {
		_, frozen, _ := s.clock.state()
		out = State{Now: now, Frozen: frozen, Limits: s.limits, Accounts: []AccountState{},
			Droplets: []map[string]any{}, Actions: []map[string]any{}, Snapshots: []map[string]any{},
			Domains: []map[string]any{}, ReservedIPs: []map[string]any{}, Faults: []Fault{}}
		lim := s.limitsLocked()
		for _, name := range sortedKeys(s.st.Accounts) {
			a := s.st.Accounts[name]
			out.Accounts = append(out.Accounts, AccountState{
				Name: name, DropletLimit: a.DropletLimit, Droplets: s.st.countDroplets(name),
				RateRemaining: s.windows[a.Token].peek(now, lim.RatePerHour).remaining,
			})
		}
		for _, d := range s.st.sortedDroplets() {
			v := s.dropletView(d)
			v["account"] = d.Account
			out.Droplets = append(out.Droplets, v)
		}
		for _, a := range s.st.sortedActions() {
			v := s.actionView(a)
			v["account"] = a.Account
			out.Actions = append(out.Actions, v)
		}
		for _, sn := range s.st.sortedSnapshots() {
			v := snapshotView(sn)
			v["account"] = sn.Account
			out.Snapshots = append(out.Snapshots, v)
		}
		for _, name := range sortedKeys(s.st.Domains) {
			d := s.st.Domains[name]
			v := s.domainViewLocked(d)
			v["account"] = d.Account
			recs := []any{}
			for _, rec := range s.zoneRecordsLocked(name) {
				recs = append(recs, recordView(rec))
			}
			v["records"] = recs
			out.Domains = append(out.Domains, v)
		}
		for _, rip := range s.st.sortedReservedIPs() {
			v := s.reservedIPViewLocked(rip)
			v["account"] = rip.Account
			out.ReservedIPs = append(out.ReservedIPs, v)
		}
		for _, f := range s.faults {
			out.Faults = append(out.Faults, *f)
		}
		return nil
	})
	return out
}

// controlHandler serves the unauthenticated /_sim/ control API.
func (s *Sim) controlHandler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }
	fail := func(w http.ResponseWriter, e *apiError) {
		writeJSON(w, e.status, map[string]string{"id": e.id, "message": e.message})
	}
	body := func(w http.ResponseWriter, r *http.Request, v any) bool {
		b, err := readBody(w, r)
		if err != nil {
			fail(w, err)
			return false
		}
		if err := decodeJSON(b, v); err != nil {
			fail(w, err)
			return false
		}
		return true
	}
	mux.HandleFunc("GET /_sim/healthz", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /_sim/state", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, s.Snapshot())
	})
	mux.HandleFunc("POST /_sim/accounts", func(w http.ResponseWriter, r *http.Request) {
		var a Account
		if !body(w, r, &a) {
			return
		}
		if err := s.AddAccount(a); err != nil {
			fail(w, unprocessable("%s", err.Error()))
			return
		}
		reply(w, http.StatusOK, map[string]any{"name": a.Name, "droplet_limit": a.DropletLimit})
	})
	mux.HandleFunc("PATCH /_sim/accounts/{name}", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			DropletLimit *int `json:"droplet_limit"`
		}
		if !body(w, r, &req) {
			return
		}
		if req.DropletLimit == nil {
			fail(w, unprocessable("droplet_limit is required"))
			return
		}
		if err := s.SetDropletLimit(r.PathValue("name"), *req.DropletLimit); err != nil {
			if ae, ok := err.(*apiError); ok {
				fail(w, ae)
				return
			}
			fail(w, unprocessable("%s", err.Error()))
			return
		}
		reply(w, http.StatusOK, map[string]any{"name": r.PathValue("name"), "droplet_limit": *req.DropletLimit})
	})
	mux.HandleFunc("GET /_sim/limits", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, s.Limits())
	})
	mux.HandleFunc("PATCH /_sim/limits", func(w http.ResponseWriter, r *http.Request) {
		// Fields absent from the body keep their value.
		l := s.Limits()
		if !body(w, r, &l) {
			return
		}
		if err := s.SetLimits(l); err != nil {
			fail(w, unprocessable("%s", err.Error()))
			return
		}
		reply(w, http.StatusOK, s.Limits())
	})
	mux.HandleFunc("GET /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"faults": s.Snapshot().Faults})
	})
	mux.HandleFunc("POST /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		b, err := readBody(w, r)
		if err != nil {
			fail(w, err)
			return
		}
		f, derr := decodeFault(b)
		if derr != nil {
			fail(w, derr)
			return
		}
		f, _ = s.InjectFault(f)
		reply(w, http.StatusCreated, f)
	})
	mux.HandleFunc("DELETE /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /_sim/clock", func(w http.ResponseWriter, r *http.Request) {
		_, frozen, _ := s.clock.state()
		reply(w, http.StatusOK, ClockState{Now: s.Now(), Frozen: frozen})
	})
	mux.HandleFunc("POST /_sim/clock", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Advance *Duration  `json:"advance"`
			Set     *time.Time `json:"set"`
			Freeze  *bool      `json:"freeze"`
		}
		if !body(w, r, &req) {
			return
		}
		if req.Advance != nil && *req.Advance < 0 {
			fail(w, unprocessable("advance: must not be negative"))
			return
		}
		if req.Freeze != nil {
			s.Freeze(*req.Freeze)
		}
		if req.Set != nil {
			s.SetTime(*req.Set)
		}
		if req.Advance != nil {
			s.Advance(req.Advance.Std())
		}
		s.Settle()
		_, frozen, _ := s.clock.state()
		reply(w, http.StatusOK, ClockState{Now: s.Now(), Frozen: frozen})
	})
	mux.HandleFunc("POST /_sim/reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, errorFor(http.StatusNotFound, ""))
	})
	return mux
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorFor(http.StatusRequestEntityTooLarge, "")
		}
		return nil, badRequest("could not read the request body")
	}
	return b, nil
}
