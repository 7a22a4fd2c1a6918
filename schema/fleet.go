package schema

import (
	"fmt"
	"regexp"
	"sort"
	"time"

	"filippo.io/age"
)

// APIVersion is the only apiVersion this release reads.
const APIVersion = "genesis.dev/v1"

// DefaultSnapshotRetention is how long superseded snapshots are kept when
// genesis.yaml does not say.
const DefaultSnapshotRetention = 720 * time.Hour

// Watchdog and pricing defaults (seed 2.3, 3.4 and 4.9; DigitalOcean's
// snapshot price).
const (
	DefaultDegradedAfter     = 5 * time.Minute
	DefaultCriticalAfter     = 15 * time.Minute
	DefaultRemediateCooldown = 10 * time.Minute
	DefaultOutagePercent     = 30.0
	// DefaultBootDeadline bounds each pre-ACTIVE lifecycle state.
	DefaultBootDeadline       = 20 * time.Minute
	DefaultHibernationWarning = 24 * time.Hour
	DefaultSnapshotGBMonthUSD = 0.06
)

// Fleet is genesis.yaml: the account pool, defaults, recipients and limits
// that every tenant is validated and reconciled against.
type Fleet struct {
	APIVersion string    `yaml:"apiVersion" json:"apiVersion"`
	Kind       string    `yaml:"kind" json:"kind"`
	Metadata   FleetMeta `yaml:"metadata" json:"metadata"`
	Spec       FleetSpec `yaml:"spec" json:"spec"`

	pos positions
}

// FleetMeta names the fleet (optional).
type FleetMeta struct {
	Name string `yaml:"name" json:"name,omitempty"`
}

// FleetSpec is the body of genesis.yaml.
type FleetSpec struct {
	Accounts          []Account       `yaml:"accounts" json:"accounts"`
	Defaults          Defaults        `yaml:"defaults" json:"defaults"`
	Recipients        []string        `yaml:"recipients" json:"recipients"`
	Safety            Safety          `yaml:"safety" json:"safety"`
	SnapshotRetention Duration        `yaml:"snapshotRetention" json:"snapshotRetention"`
	Sizes             map[string]Size `yaml:"sizes" json:"sizes"`
	// Watchdog sets when a silent droplet is degraded or critical and how
	// remediation paces itself (defaults: seed 4.9).
	Watchdog Watchdog `yaml:"watchdog" json:"watchdog"`
	// Hibernation holds fleet-wide idle-hibernation settings.
	Hibernation FleetHibernation `yaml:"hibernation" json:"hibernation"`
	// Pricing is what storage costs, for plans and GET /v1/fleet.
	Pricing Pricing `yaml:"pricing" json:"pricing"`
	// Spares are pre-provisioned, enrolled droplets with no tenant, per
	// region (seed "VIP pre-warm").
	Spares []Spare `yaml:"spares" json:"spares,omitempty"`
	// Backup declares agent-run backups to object storage (backup.go);
	// nil: none.
	Backup *Backup `yaml:"backup" json:"backup,omitempty"`
	// Rollout paces fleet-wide changes in waves (rollout.go); nil: every
	// droplet changes at once.
	Rollout *Rollout `yaml:"rollout" json:"rollout,omitempty"`
	// DNS names the zone of tenants' stable names (dns.go); nil: none.
	DNS *DNS `yaml:"dns" json:"dns,omitempty"`
	// Tiers holds per-tier policies (dns.go: reserved IPs), by tier.
	Tiers map[Tier]TierPolicy `yaml:"tiers" json:"tiers,omitempty"`
}

// Watchdog is the health policy. A droplet with no heartbeat for
// DegradedAfter is ACTIVE_DEGRADED, for CriticalAfter ACTIVE_CRITICAL; a
// critical droplet is remediated one step at a time (reboot, power cycle,
// rebuild, FAILED), each step waiting Cooldown for the droplet to come back.
// When more than OutagePercent of the active fleet is silent at once, the
// silence is the network's or DigitalOcean's, and nothing is remediated.
type Watchdog struct {
	DegradedAfter Duration `yaml:"degradedAfter" json:"degradedAfter"`
	CriticalAfter Duration `yaml:"criticalAfter" json:"criticalAfter"`
	Cooldown      Duration `yaml:"cooldown" json:"cooldown"`
	OutagePercent float64  `yaml:"outagePercent" json:"outagePercent"`
	// BootDeadline is how long a droplet may stay in one pre-ACTIVE state
	// (BOOTING through DEPLOYING) before it is rebuilt with a new token.
	BootDeadline Duration `yaml:"bootDeadline" json:"bootDeadline"`
}

// FleetHibernation holds fleet-wide hibernation settings.
type FleetHibernation struct {
	// Warning is how long before an idle hibernation the tenant is warned
	// (seed 3.4: 24 h grace).
	Warning Duration `yaml:"warning" json:"warning"`
}

// Pricing is what DigitalOcean charges beyond droplet sizes.
type Pricing struct {
	// SnapshotGBMonthUSD is the price of one GB of snapshot storage per
	// month.
	SnapshotGBMonthUSD float64 `yaml:"snapshotGBMonthUSD" json:"snapshotGBMonthUSD"`
	// ReservedIPMonthUSD is what a reserved IPv4 costs per month while no
	// droplet holds it (a hibernated tenant's, spec.tiers.<t>.reservedIP).
	ReservedIPMonthUSD float64 `yaml:"reservedIPMonthUSD" json:"reservedIPMonthUSD"`
}

// Spare asks for Count pre-provisioned droplets in Region, of Size (the
// fleet's default size when empty), that tenants of Tiers may take when
// they onboard or wake.
type Spare struct {
	Region string `yaml:"region" json:"region"`
	Count  int    `yaml:"count" json:"count"`
	Size   string `yaml:"size" json:"size,omitempty"`
	Tiers  []Tier `yaml:"tiers" json:"tiers"`
}

// Account is one DigitalOcean account of the pool (seed 3.1).
type Account struct {
	Name        string   `yaml:"name" json:"name"`
	Regions     []string `yaml:"regions" json:"regions"`
	MaxDroplets int      `yaml:"maxDroplets" json:"maxDroplets"`
	// TokenEnv names the environment variable that holds the account's API
	// token; the token itself never appears in the state repository.
	TokenEnv string `yaml:"tokenEnv" json:"tokenEnv"`
	// Status is how the pool uses the account (AccountActive when empty):
	// draining takes no new droplets and keeps the existing ones (a
	// hibernated tenant whose snapshot is in it still wakes there:
	// snapshots do not cross accounts); disabled takes none either, and is
	// not observed when the reconciler runs with --skip-disabled-accounts
	// (then read as an incomplete listing, never as droplets gone).
	Status AccountStatus `yaml:"status" json:"status,omitempty"`
}

// AccountStatus is spec.accounts[].status.
type AccountStatus string

// The account statuses.
const (
	AccountActive   AccountStatus = "active"
	AccountDraining AccountStatus = "draining"
	AccountDisabled AccountStatus = "disabled"
)

// TakesNew reports whether the account may get new droplets.
func (a Account) TakesNew() bool { return a.Status == "" || a.Status == AccountActive }

// Defaults fill tenant fields that a tenant leaves out.
type Defaults struct {
	Size       string `yaml:"size" json:"size"`
	Image      string `yaml:"image" json:"image"`
	N8NVersion string `yaml:"n8nVersion" json:"n8nVersion"`
	// Agent, when set, is the agent build every droplet should run; a
	// change reaches the droplets through spec.rollout like any fleet
	// default. Nil: droplets keep the agent they were created with.
	Agent *AgentRelease `yaml:"agent" json:"agent,omitempty"`
}

// AgentRelease is an agent build to run: the version the binary reports,
// its hex SHA-256 and an http(s) URL to download it from.
type AgentRelease struct {
	Version string `yaml:"version" json:"version"`
	SHA256  string `yaml:"sha256" json:"sha256"`
	URL     string `yaml:"url" json:"url"`
}

// Safety bounds how much one plan may take away. Both limits are required
// (0 is a valid, strict choice: every destroy or hibernation needs a
// person); none has a default.
type Safety struct {
	MaxDestroyPerRun    int     `yaml:"maxDestroyPerRun" json:"maxDestroyPerRun"`
	MaxHibernatePercent float64 `yaml:"maxHibernatePercent" json:"maxHibernatePercent"`
}

// Size is what a droplet size costs; MonthlyUSD is required.
type Size struct {
	MonthlyUSD float64 `yaml:"monthlyUSD" json:"monthlyUSD"`
}

var (
	accountName = regexp.MustCompile(`^[a-z0-9-]{1,40}$`)
	regionSlug  = regexp.MustCompile(`^[a-z]{3}[0-9]$`)
	envName     = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	sizeSlug    = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	imageSlug   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	semver      = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
)

// DecodeFleet reads and validates genesis.yaml. file is the name used in
// errors. On any error the returned fleet is nil.
func DecodeFleet(file string, data []byte) (*Fleet, Errors) {
	var f Fleet
	pos, errs := decodeYAML(file, data, &f)
	if len(errs) > 0 {
		return nil, errs
	}
	f.pos = pos
	c := &errorf{file: file}
	f.validate(c)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	f.setDefaults()
	return &f, nil
}

// has reports whether path was written in the file (null or not).
func (f *Fleet) has(path string) bool {
	_, ok := f.pos.get(path)
	return ok
}

func (f *Fleet) validate(c *errorf) {
	at := func(path, format string, args ...any) { c.at(f.pos.at(path), format, args...) }
	if f.APIVersion != APIVersion {
		at("apiVersion", "apiVersion: want %q, got %q", APIVersion, f.APIVersion)
	}
	if f.Kind != "Fleet" {
		at("kind", "kind: want \"Fleet\", got %q", f.Kind)
	}
	s := &f.Spec
	if len(s.Accounts) == 0 {
		at("spec.accounts", "spec.accounts: at least one account is required")
	}
	names := map[string]bool{}
	for i, a := range s.Accounts {
		p := fmt.Sprintf("spec.accounts[%d]", i)
		itemKey(at, p, "name", a.Name, accountName, "must be 1-40 characters of a-z, 0-9 and -", "account", names)
		if len(a.Regions) == 0 {
			at(p, "%s.regions: at least one region is required", p)
		}
		for j, r := range a.Regions {
			if !regionSlug.MatchString(r) {
				at(fmt.Sprintf("%s.regions[%d]", p, j), "%s.regions[%d]: %q is not a region slug such as nyc3", p, j, r)
			}
		}
		if a.MaxDroplets < 1 {
			at(p+".maxDroplets", "%s.maxDroplets: must be at least 1", p)
		}
		switch a.Status {
		case "", AccountActive, AccountDraining, AccountDisabled:
		default:
			at(p+".status", "%s.status: %q is not one of active, draining, disabled", p, a.Status)
		}
		switch {
		case a.TokenEnv == "":
			at(p, "%s.tokenEnv is required (the name of the environment variable holding the token)", p)
		case !envName.MatchString(a.TokenEnv):
			at(p+".tokenEnv", "%s.tokenEnv: %q is not an environment variable name (A-Z, 0-9, _); put the token in the environment, never in this file", p, a.TokenEnv)
		}
	}
	if len(s.Sizes) == 0 {
		at("spec.sizes", "spec.sizes: at least one size is required")
	}
	for _, slug := range sortedKeys(s.Sizes) {
		p := "spec.sizes." + slug
		if !sizeSlug.MatchString(slug) {
			at(p+"#key", "spec.sizes: %q is not a size slug", slug)
		}
		switch {
		case !f.has(p + ".monthlyUSD"):
			at(p, "%s.monthlyUSD is required (the size's price per month, for plans and cost reports)", p)
		case s.Sizes[slug].MonthlyUSD < 0:
			at(p+".monthlyUSD", "%s.monthlyUSD: must not be negative", p)
		}
	}
	d := s.Defaults
	switch {
	case d.Size == "":
		at("spec.defaults", "spec.defaults.size is required")
	case !hasKey(s.Sizes, d.Size):
		at("spec.defaults.size", "spec.defaults.size: %q is not in spec.sizes", d.Size)
	}
	switch {
	case d.Image == "":
		at("spec.defaults", "spec.defaults.image is required")
	case !imageSlug.MatchString(d.Image):
		at("spec.defaults.image", "spec.defaults.image: %q is not an image slug", d.Image)
	}
	switch {
	case d.N8NVersion == "":
		at("spec.defaults", "spec.defaults.n8nVersion is required")
	case !semver.MatchString(d.N8NVersion):
		at("spec.defaults.n8nVersion", "spec.defaults.n8nVersion: %q is not a semantic version such as 1.123.81", d.N8NVersion)
	}
	if len(s.Recipients) == 0 {
		at("spec.recipients", "spec.recipients: at least one age recipient is required")
	}
	checkRecipients(at, "spec.recipients", s.Recipients)
	// Safety limits have no default: a missing one used to read as 0 (no
	// destroy, no hibernation without a person); each is stated.
	if !f.has("spec.safety") {
		at("spec", "spec.safety is required (maxDestroyPerRun and maxHibernatePercent)")
	} else {
		for _, k := range []string{"maxDestroyPerRun", "maxHibernatePercent"} {
			if !f.has("spec.safety." + k) {
				at("spec.safety", "spec.safety.%s is required", k)
			}
		}
	}
	if s.Safety.MaxDestroyPerRun < 0 {
		at("spec.safety.maxDestroyPerRun", "spec.safety.maxDestroyPerRun: must not be negative")
	}
	if s.Safety.MaxHibernatePercent < 0 || s.Safety.MaxHibernatePercent > 100 {
		at("spec.safety.maxHibernatePercent", "spec.safety.maxHibernatePercent: must be between 0 and 100")
	}
	if s.SnapshotRetention < 0 {
		at("spec.snapshotRetention", "spec.snapshotRetention: must not be negative")
	}
	w := s.Watchdog
	for _, d := range []struct {
		name string
		v    Duration
	}{{"degradedAfter", w.DegradedAfter}, {"criticalAfter", w.CriticalAfter}, {"cooldown", w.Cooldown}, {"bootDeadline", w.BootDeadline}} {
		if d.v < 0 {
			at("spec.watchdog."+d.name, "spec.watchdog.%s: must not be negative", d.name)
		}
	}
	degraded, critical := w.DegradedAfter, w.CriticalAfter
	if degraded == 0 {
		degraded = Duration(DefaultDegradedAfter)
	}
	if critical == 0 {
		critical = Duration(DefaultCriticalAfter)
	}
	if degraded > 0 && critical > 0 && critical <= degraded {
		at("spec.watchdog", "spec.watchdog: criticalAfter (%s) must be longer than degradedAfter (%s)", critical, degraded)
	}
	if w.OutagePercent < 0 || w.OutagePercent > 100 {
		at("spec.watchdog.outagePercent", "spec.watchdog.outagePercent: must be between 0 and 100")
	}
	if s.Hibernation.Warning < 0 {
		at("spec.hibernation.warning", "spec.hibernation.warning: must not be negative")
	}
	if s.Pricing.SnapshotGBMonthUSD < 0 {
		at("spec.pricing.snapshotGBMonthUSD", "spec.pricing.snapshotGBMonthUSD: must not be negative")
	}
	if s.Pricing.ReservedIPMonthUSD < 0 {
		at("spec.pricing.reservedIPMonthUSD", "spec.pricing.reservedIPMonthUSD: must not be negative")
	}
	f.validateTiers(c)
	f.validateBackup(c)
	f.validateRollout(c)
	f.validateAgent(c)
	f.validateDNS(c)
	regions := map[string]bool{}
	for i, sp := range s.Spares {
		p := fmt.Sprintf("spec.spares[%d]", i)
		switch {
		case sp.Region == "":
			at(p, "%s.region is required", p)
		case !f.ServesRegion(sp.Region):
			at(p+".region", "%s.region: no account serves %q", p, sp.Region)
		case regions[sp.Region]:
			at(p+".region", "%s.region: %q has spares declared twice", p, sp.Region)
		}
		regions[sp.Region] = true
		if sp.Count < 0 || sp.Count > 100 {
			at(p+".count", "%s.count: must be between 0 and 100", p)
		}
		if sp.Size != "" && !hasKey(s.Sizes, sp.Size) {
			at(p+".size", "%s.size: %q is not in spec.sizes", p, sp.Size)
		}
		if len(sp.Tiers) == 0 {
			at(p, "%s.tiers: at least one tier (starter, pro, enterprise) may take a spare", p)
		}
		for j, t := range sp.Tiers {
			if !t.valid() {
				at(fmt.Sprintf("%s.tiers[%d]", p, j), "%s.tiers[%d]: %q is not one of starter, pro, enterprise", p, j, t)
			}
		}
	}
}

// checkRecipients judges a list of age recipients at path: each an X25519
// recipient, none twice.
func checkRecipients(at func(path, format string, args ...any), path string, rs []string) {
	seen := map[string]bool{}
	for i, r := range rs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if _, err := age.ParseX25519Recipient(r); err != nil {
			at(p, "%s: not an age X25519 recipient (age1...)", p)
		} else if seen[r] {
			at(p, "%s: recipient listed twice", p)
		}
		seen[r] = true
	}
}

// setDefaults fills what a valid genesis.yaml left out.
func (f *Fleet) setDefaults() {
	s := &f.Spec
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&s.SnapshotRetention, DefaultSnapshotRetention)
	def(&s.Watchdog.DegradedAfter, DefaultDegradedAfter)
	def(&s.Watchdog.CriticalAfter, DefaultCriticalAfter)
	def(&s.Watchdog.Cooldown, DefaultRemediateCooldown)
	def(&s.Watchdog.BootDeadline, DefaultBootDeadline)
	def(&s.Hibernation.Warning, DefaultHibernationWarning)
	if s.Watchdog.OutagePercent == 0 {
		s.Watchdog.OutagePercent = DefaultOutagePercent
	}
	if s.Pricing.SnapshotGBMonthUSD == 0 {
		s.Pricing.SnapshotGBMonthUSD = DefaultSnapshotGBMonthUSD
	}
	if s.Pricing.ReservedIPMonthUSD == 0 {
		s.Pricing.ReservedIPMonthUSD = DefaultReservedIPMonthUSD
	}
	s.Rollout.setDefaults()
	s.DNS.setDefaults(s.Accounts)
	for i := range s.Spares {
		if s.Spares[i].Size == "" {
			s.Spares[i].Size = s.Defaults.Size
		}
	}
}

// SpareFor returns the spares of region that a tenant of tier may take.
func (f *Fleet) SpareFor(region string, tier Tier) (Spare, bool) {
	for _, sp := range f.Spec.Spares {
		if sp.Region != region || sp.Count == 0 {
			continue
		}
		for _, t := range sp.Tiers {
			if t == tier {
				return sp, true
			}
		}
	}
	return Spare{}, false
}

// SnapshotMonthlyUSD is the monthly price of storing gb of snapshots.
func (f *Fleet) SnapshotMonthlyUSD(gb float64) float64 {
	return gb * f.Spec.Pricing.SnapshotGBMonthUSD
}

// Account returns the account named name.
func (f *Fleet) Account(name string) (Account, bool) {
	for _, a := range f.Spec.Accounts {
		if a.Name == name {
			return a, true
		}
	}
	return Account{}, false
}

// ServesRegion reports whether some account of the pool serves region.
func (f *Fleet) ServesRegion(region string) bool {
	for _, a := range f.Spec.Accounts {
		for _, r := range a.Regions {
			if r == region {
				return true
			}
		}
	}
	return false
}

// Regions lists every region some account serves, sorted.
func (f *Fleet) Regions() []string {
	set := map[string]bool{}
	for _, a := range f.Spec.Accounts {
		for _, r := range a.Regions {
			set[r] = true
		}
	}
	return sortedKeys(set)
}

// MonthlyUSD is the monthly price of a size, 0 when unknown.
func (f *Fleet) MonthlyUSD(size string) float64 { return f.Spec.Sizes[size].MonthlyUSD }

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}
