package console

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// Filter is the overview's query string: every filter the form offers, the
// search, and the page's keyset position. ParseFilter reads it; Query
// writes it back.
type Filter struct {
	State, Health, Tier, Region, Account, Version string
	// Wave is a wave index of the newest rollout (-1: any).
	Wave int
	// Q searches workspace ids and declared domains (substring, case
	// insensitive).
	Q string
	// After and Before are the keyset: the page after (before) this id.
	After, Before string
}

// maxQuery bounds the search text (characters).
const maxQuery = 100

var (
	regionRe    = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
	accountRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
	versionRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
	workspaceRe = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)
)

// healths are fleet_status.health's values.
var healths = []string{"unknown", "healthy", "degraded", "critical"}

// ParseFilter reads the overview's query string. Parameters it does not
// know are ignored; a known one given twice or with a bad value is an
// error naming it. Empty values mean "any".
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{Wave: -1}
	get := func(name string) (string, error) {
		vs := q[name]
		switch len(vs) {
		case 0:
			return "", nil
		case 1:
			return strings.TrimSpace(vs[0]), nil
		}
		return "", fmt.Errorf("%s: given %d times, at most once", name, len(vs))
	}
	type field struct {
		name  string
		dst   *string
		check func(string) error
	}
	oneOf := func(set []string) func(string) error {
		return func(v string) error {
			for _, s := range set {
				if v == s {
					return nil
				}
			}
			return fmt.Errorf("%q is not one of %s", v, strings.Join(set, ", "))
		}
	}
	match := func(re *regexp.Regexp, what string) func(string) error {
		return func(v string) error {
			if !re.MatchString(v) {
				return fmt.Errorf("%q is not %s", v, what)
			}
			return nil
		}
	}
	tiers := make([]string, 0, 3)
	for _, t := range schema.Tiers() {
		tiers = append(tiers, string(t))
	}
	fields := []field{
		{"state", &f.State, oneOf(lifecycle.Strings(lifecycle.All()))},
		{"health", &f.Health, oneOf(healths)},
		{"tier", &f.Tier, oneOf(tiers)},
		{"region", &f.Region, match(regionRe, "a region slug")},
		{"account", &f.Account, match(accountRe, "an account name")},
		{"version", &f.Version, match(versionRe, "an n8n version")},
		{"after", &f.After, match(workspaceRe, "a workspace id")},
		{"before", &f.Before, match(workspaceRe, "a workspace id")},
	}
	for _, fd := range fields {
		v, err := get(fd.name)
		if err != nil {
			return Filter{}, err
		}
		if v == "" {
			continue
		}
		if err := fd.check(v); err != nil {
			return Filter{}, fmt.Errorf("%s: %w", fd.name, err)
		}
		*fd.dst = v
	}
	if f.After != "" && f.Before != "" {
		return Filter{}, fmt.Errorf("after, before: give one of them")
	}
	w, err := get("wave")
	if err != nil {
		return Filter{}, err
	}
	if w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 0 || n > 999 {
			return Filter{}, fmt.Errorf("wave: %q is not a wave number (0-999)", w)
		}
		f.Wave = n
	}
	s, err := get("q")
	if err != nil {
		return Filter{}, err
	}
	if !utf8.ValidString(s) {
		return Filter{}, fmt.Errorf("q: not UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > maxQuery {
		return Filter{}, fmt.Errorf("q: %d characters, at most %d", n, maxQuery)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return Filter{}, fmt.Errorf("q: contains a control character")
		}
	}
	f.Q = strings.ToLower(s)
	return f, nil
}

// store is f as the store's filter of one overview page.
func (f Filter) store() store.ConsoleFilter {
	return store.ConsoleFilter{State: f.State, Health: f.Health, Tier: f.Tier, Region: f.Region, Account: f.Account,
		Version: f.Version, Wave: f.Wave, Query: f.Q, After: f.After, Before: f.Before, Limit: PageSize}
}

// Query is f as a query string (without the keyset unless keep).
func (f Filter) Query(keep bool) url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("state", f.State)
	set("health", f.Health)
	set("tier", f.Tier)
	set("region", f.Region)
	set("account", f.Account)
	set("version", f.Version)
	if f.Wave >= 0 {
		v.Set("wave", strconv.Itoa(f.Wave))
	}
	set("q", f.Q)
	if keep {
		set("after", f.After)
		set("before", f.Before)
	}
	return v
}
