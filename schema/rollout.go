package schema

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Rollout defaults (spec.rollout). A wave's failure budget of 0 pauses the
// rollout on its first failed droplet.
const (
	DefaultMaxUnavailable = "1"
	DefaultFailureBudget  = "0"
	// DefaultTimezone is the zone of a tenant's maintenance windows when
	// its metadata.timezone is empty.
	DefaultTimezone = "UTC"
	// MaxRolloutWaves bounds spec.rollout.waves.
	MaxRolloutWaves = 20
	// MaxLabels bounds a tenant's metadata.labels (and a wave's filter).
	MaxLabels = 32
)

// Rollout is spec.rollout: how a fleet-wide change (a new default n8n
// version or image, a template, the agent) reaches the droplets, one wave
// at a time. Absent, every droplet changes at once, as before.
type Rollout struct {
	// Waves are ordered; a tenant belongs to the first wave that selects
	// it, and the last wave (rest: true) takes every tenant left.
	Waves []RolloutWave `yaml:"waves" json:"waves"`
	// TenantChanges is what a change to one tenant's own file does:
	// applied at once (immediate, the default) or through the waves.
	TenantChanges TenantChanges `yaml:"tenantChanges" json:"tenantChanges,omitempty"`
	// MaintenanceWindows, when any, are the only times a wave may change a
	// droplet, read in each tenant's metadata.timezone.
	MaintenanceWindows []MaintenanceWindow `yaml:"maintenanceWindows" json:"maintenanceWindows,omitempty"`
	// OnFailure is what a wave past its failure budget does: pause (the
	// default: the droplets that changed keep the change, nothing else
	// changes until a person resumes or aborts) or rollback (pause, and
	// every droplet of the finished and current waves goes back to the
	// previous values).
	OnFailure OnFailure `yaml:"onFailure" json:"onFailure,omitempty"`
	// ProgressDeadline is how long a droplet may take to apply the change
	// and report healthy before it counts as failed. Default 30m.
	ProgressDeadline Duration `yaml:"progressDeadline" json:"progressDeadline,omitempty"`
}

// OnFailure is what a rollout does past a wave's failure budget.
type OnFailure string

// The failure policies.
const (
	OnFailurePause    OnFailure = "pause"
	OnFailureRollback OnFailure = "rollback"
)

// DefaultProgressDeadline is spec.rollout.progressDeadline's default.
const DefaultProgressDeadline = 30 * time.Minute

// RolloutWave is one step of a rollout.
type RolloutWave struct {
	Name string `yaml:"name" json:"name"`
	// Percent of the tenants that earlier waves left and the filters
	// select, rounded up (at least one when any is eligible), chosen by a
	// stable hash of the rollout id and the workspace. Default 100.
	Percent float64 `yaml:"percent" json:"percent,omitempty"`
	// Tiers and Labels filter the eligible tenants: one of these tiers;
	// every one of these labels in metadata.labels.
	Tiers  []Tier            `yaml:"tiers" json:"tiers,omitempty"`
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	// Rest marks the last wave, which takes every tenant left; it has no
	// percent or filters.
	Rest bool `yaml:"rest" json:"rest,omitempty"`
	// Bake is how long the wave, once applied, must stay healthy before
	// the next wave starts. Default 0.
	Bake Duration `yaml:"bake" json:"bake,omitempty"`
	// MaxUnavailable is how many of the wave's droplets change at once.
	// Default 1.
	MaxUnavailable Quantity `yaml:"maxUnavailable" json:"maxUnavailable,omitempty"`
	// FailureBudget is how many of the wave's droplets may fail before the
	// rollout pauses. Default 0: the first failure pauses it.
	FailureBudget Quantity `yaml:"failureBudget" json:"failureBudget,omitempty"`
}

// TenantChanges says how a change of one tenant's file is applied.
type TenantChanges string

// The ways a tenant's own change is applied.
const (
	TenantChangesImmediate TenantChanges = "immediate"
	TenantChangesRollout   TenantChanges = "rollout"
)

// MaintenanceWindow is a time of day on some weekdays. End before Start
// wraps past midnight: {days: [sat], start: "22:00", end: "02:00"} runs
// from Saturday 22:00 to Sunday 02:00 (a window belongs to the day it
// starts on). End equal to Start is refused.
type MaintenanceWindow struct {
	Days  []string `yaml:"days" json:"days"`
	Start string   `yaml:"start" json:"start"`
	End   string   `yaml:"end" json:"end"`
}

// Quantity is a count of droplets, written as an integer (3) or a
// percentage of a wave ("10%").
type Quantity string

var (
	quantityText = regexp.MustCompile(`^([0-9]{1,6})(%?)$`)
	clockTime    = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
	labelText    = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	// timezoneName is the shape of an IANA zone name (UTC, Europe/Paris,
	// America/Argentina/Buenos_Aires, Etc/GMT+5); the name is then looked
	// up with time.LoadLocation.
	timezoneName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]{0,29}(/[A-Za-z0-9_+-]{1,30}){0,2}$`)
	weekdays     = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

// parse returns q's number and whether it is a percentage.
func (q Quantity) parse() (n int, percent, ok bool) {
	m := quantityText.FindStringSubmatch(string(q))
	if m == nil {
		return 0, false, false
	}
	n, _ = strconv.Atoi(m[1])
	return n, m[2] == "%", true
}

// Of resolves q against a wave of size droplets: an integer as written,
// a percentage rounded down. A Quantity that does not parse (DecodeFleet
// refuses those) is 0.
func (q Quantity) Of(size int) int {
	n, percent, ok := q.parse()
	if !ok {
		return 0
	}
	if percent {
		return n * size / 100
	}
	return n
}

// MarshalYAML writes an integer as an integer, a percentage as a string.
func (q Quantity) MarshalYAML() (any, error) {
	if n, percent, ok := q.parse(); ok && !percent {
		return n, nil
	}
	return string(q), nil
}

// Weekday returns the time.Weekday number (0 = Sunday) of a day name
// (mon..sun), or -1.
func Weekday(day string) int {
	for i, d := range weekdays {
		if d == day {
			return i
		}
	}
	return -1
}

// Minutes returns the minutes after midnight of an "HH:MM" time that
// DecodeFleet accepted, or -1.
func Minutes(hhmm string) int {
	if !clockTime.MatchString(hhmm) {
		return -1
	}
	h, _ := strconv.Atoi(hhmm[:2])
	m, _ := strconv.Atoi(hhmm[3:])
	return h*60 + m
}

func (f *Fleet) validateRollout(c *errorf) {
	r := f.Spec.Rollout
	if r == nil {
		return
	}
	at := func(path, format string, args ...any) { c.at(f.pos.at(path), format, args...) }
	switch {
	case len(r.Waves) == 0:
		at("spec.rollout", "spec.rollout.waves: at least one wave is required (the last with rest: true)")
	case len(r.Waves) > MaxRolloutWaves:
		at("spec.rollout.waves", "spec.rollout.waves: at most %d waves", MaxRolloutWaves)
	}
	names := map[string]bool{}
	for i, w := range r.Waves {
		p := fmt.Sprintf("spec.rollout.waves[%d]", i)
		itemKey(at, p, "name", w.Name, itemName, itemNameWant, "wave", names)
		last := i == len(r.Waves)-1
		switch {
		case w.Rest && !last:
			at(p+".rest", "%s.rest: only the last wave may take the rest", p)
		case !w.Rest && last:
			at(p, "%s: the last wave must have rest: true (it takes every tenant the earlier waves left)", p)
		}
		if w.Rest {
			for _, k := range []string{"percent", "tiers", "labels"} {
				if f.has(p + "." + k) {
					at(p+"."+k, "%s.%s: the rest wave takes every tenant left; it has no %s", p, k, k)
				}
			}
		}
		if f.has(p+".percent") && (w.Percent <= 0 || w.Percent > 100 || math.IsNaN(w.Percent)) {
			at(p+".percent", "%s.percent: must be more than 0 and at most 100", p)
		}
		for j, t := range w.Tiers {
			if !t.valid() {
				at(fmt.Sprintf("%s.tiers[%d]", p, j), "%s.tiers[%d]: %q is not one of starter, pro, enterprise", p, j, t)
			}
		}
		checkLabels(at, p+".labels", w.Labels)
		if w.Bake < 0 {
			at(p+".bake", "%s.bake: must not be negative", p)
		}
		if q := w.MaxUnavailable; q != "" {
			n, percent, ok := q.parse()
			switch {
			case !ok:
				at(p+".maxUnavailable", "%s.maxUnavailable: %q is not a count (3) or a percentage (\"10%%\")", p, q)
			case percent && (n < 1 || n > 100):
				at(p+".maxUnavailable", "%s.maxUnavailable: a percentage must be between 1%% and 100%%", p)
			case !percent && n < 1:
				at(p+".maxUnavailable", "%s.maxUnavailable: must be at least 1", p)
			}
		}
		if q := w.FailureBudget; q != "" {
			n, percent, ok := q.parse()
			switch {
			case !ok:
				at(p+".failureBudget", "%s.failureBudget: %q is not a count (3) or a percentage (\"10%%\")", p, q)
			case percent && n > 100:
				at(p+".failureBudget", "%s.failureBudget: a percentage must be between 0%% and 100%%", p)
			}
		}
	}
	switch r.OnFailure {
	case "", OnFailurePause, OnFailureRollback:
	default:
		at("spec.rollout.onFailure", "spec.rollout.onFailure: %q is not one of pause, rollback", r.OnFailure)
	}
	if r.ProgressDeadline < 0 || (f.has("spec.rollout.progressDeadline") && r.ProgressDeadline < Duration(time.Minute)) {
		at("spec.rollout.progressDeadline", "spec.rollout.progressDeadline: must be at least 1m")
	}
	switch r.TenantChanges {
	case "", TenantChangesImmediate, TenantChangesRollout:
	default:
		at("spec.rollout.tenantChanges", "spec.rollout.tenantChanges: %q is not one of immediate, rollout", r.TenantChanges)
	}
	for i, mw := range r.MaintenanceWindows {
		p := fmt.Sprintf("spec.rollout.maintenanceWindows[%d]", i)
		if len(mw.Days) == 0 {
			at(p, "%s.days: at least one day (mon, tue, wed, thu, fri, sat, sun)", p)
		}
		days := map[string]bool{}
		for j, d := range mw.Days {
			dp := fmt.Sprintf("%s.days[%d]", p, j)
			switch {
			case Weekday(d) < 0:
				at(dp, "%s: %q is not one of mon, tue, wed, thu, fri, sat, sun", dp, d)
			case days[d]:
				at(dp, "%s: %q is listed twice", dp, d)
			}
			days[d] = true
		}
		for _, k := range []struct{ name, v string }{{"start", mw.Start}, {"end", mw.End}} {
			switch {
			case k.v == "":
				at(p, "%s.%s is required (HH:MM, 24-hour)", p, k.name)
			case !clockTime.MatchString(k.v):
				at(p+"."+k.name, "%s.%s: %q is not a time of day HH:MM (00:00 to 23:59)", p, k.name, k.v)
			}
		}
		if mw.Start != "" && mw.Start == mw.End && clockTime.MatchString(mw.Start) {
			at(p+".end", "%s.end: equals start; a window needs a length (end before start wraps past midnight)", p)
		}
	}
}

// checkLabels judges a label map at path: at most MaxLabels, keys and
// values 1-63 characters of a-z, 0-9 and -.
func checkLabels(at func(path, format string, args ...any), path string, labels map[string]string) {
	if len(labels) > MaxLabels {
		at(path, "%s: at most %d labels", path, MaxLabels)
	}
	for _, k := range sortedKeys(labels) {
		if !labelText.MatchString(k) {
			at(path+"."+k+"#key", "%s: key %q must be 1-63 characters of a-z, 0-9 and -", path, k)
		}
		if v := labels[k]; !labelText.MatchString(v) {
			at(path+"."+k, "%s.%s: %q must be 1-63 characters of a-z, 0-9 and -", path, k, v)
		}
	}
}

// setRolloutDefaults fills what a valid spec.rollout left out.
func (r *Rollout) setDefaults() {
	if r == nil {
		return
	}
	if r.TenantChanges == "" {
		r.TenantChanges = TenantChangesImmediate
	}
	if r.OnFailure == "" {
		r.OnFailure = OnFailurePause
	}
	if r.ProgressDeadline == 0 {
		r.ProgressDeadline = Duration(DefaultProgressDeadline)
	}
	for i := range r.Waves {
		w := &r.Waves[i]
		if !w.Rest && w.Percent == 0 {
			w.Percent = 100
		}
		if w.MaxUnavailable == "" {
			w.MaxUnavailable = DefaultMaxUnavailable
		}
		if w.FailureBudget == "" {
			w.FailureBudget = DefaultFailureBudget
		}
	}
}

// checkTimezone returns why name is not an IANA time zone, or "".
func checkTimezone(name string) string {
	if !timezoneName.MatchString(name) || name == "Local" || strings.Contains(name, "..") {
		return "is not an IANA time zone name such as Europe/Paris or UTC"
	}
	return ""
}

var (
	sha256Hex    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	agentVersion = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$`)
	// agentURL is an http(s) URL whose authority is a host name, an IPv4
	// or a bracketed IPv6 address and an optional port (no user info),
	// and whose path is printable ASCII without spaces.
	agentURL = regexp.MustCompile(`^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?(/[!-~]*)?$`)
)

// validateAgent judges spec.defaults.agent.
func (f *Fleet) validateAgent(c *errorf) {
	a := f.Spec.Defaults.Agent
	if a == nil {
		return
	}
	at := func(path, format string, args ...any) { c.at(f.pos.at(path), format, args...) }
	const p = "spec.defaults.agent"
	if !agentVersion.MatchString(a.Version) {
		at(p+".version", "%s.version: %q must be 1-64 characters of letters, digits and . _ + -", p, a.Version)
	}
	if !sha256Hex.MatchString(a.SHA256) {
		at(p+".sha256", "%s.sha256: want the binary's SHA-256 as 64 lower-case hex digits", p)
	}
	if !agentURL.MatchString(a.URL) || len(a.URL) > 2048 {
		at(p+".url", "%s.url: want an http(s) URL without credentials (the SHA-256 is what is trusted)", p)
	}
}
