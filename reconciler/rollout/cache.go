package rollout

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"genesis.dev/fleet/schema"
)

// maxStored bounds how many stored inputs a Cache keeps parsed: a
// rollout renders from at most a baseline, a target and the carried
// targets of the rollouts it superseded.
const maxStored = 16

// Cache keeps fleet inputs parsed: the desired state's (recomputed when
// its genesis.yaml or a template changes) and stored ones by digest (their
// content never changes). Safe for concurrent use.
type Cache struct {
	mu     sync.Mutex
	key    desiredKey
	in     *Inputs
	body   []byte
	digest string
	stored map[string]*Inputs
}

type desiredKey struct {
	fleet     *schema.Fleet
	templates string
}

// Desired returns the canonical inputs of fleet and templates, their body
// and digest (FromDesired), computed once per genesis.yaml and template
// set (the index keeps a value's pointer while its file is unchanged).
func (c *Cache) Desired(fleet *schema.Fleet, templates map[string]*schema.Template) (*Inputs, []byte, string, error) {
	key := desiredKey{fleet: fleet, templates: templatesKey(templates)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.in != nil && c.key == key {
		return c.in, c.body, c.digest, nil
	}
	in, body, digest, err := FromDesired(fleet, templates)
	if err != nil {
		return nil, nil, "", err
	}
	c.key, c.in, c.body, c.digest = key, in, body, digest
	return in, body, digest, nil
}

// Stored returns the inputs of digest, loading and parsing them with load
// the first time.
func (c *Cache) Stored(digest string, load func(digest string) ([]byte, error)) (*Inputs, error) {
	c.mu.Lock()
	in := c.stored[digest]
	c.mu.Unlock()
	if in != nil {
		return in, nil
	}
	body, err := load(digest)
	if err != nil {
		return nil, err
	}
	if in, err = ParseInputs(body); err != nil {
		return nil, fmt.Errorf("inputs %s: %w", digest, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stored == nil || len(c.stored) >= maxStored {
		c.stored = map[string]*Inputs{}
	}
	c.stored[digest] = in
	return in, nil
}

// templatesKey identifies a template set by its names and values'
// addresses.
func templatesKey(ts map[string]*schema.Template) string {
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%p;", n, ts[n])
	}
	return b.String()
}
