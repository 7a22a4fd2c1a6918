package rollout

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"genesis.dev/fleet/schema"
)

// Inputs are the fleet-wide parts of every manifest: what a rollout
// moves the droplets between. A tenant's own file (its pins, workflows,
// domains, credentials) is not here: its changes apply at once.
type Inputs struct {
	// N8NVersion is spec.defaults.n8nVersion (a tenant's own pin wins).
	N8NVersion string `json:"n8nVersion"`
	// Agent is spec.defaults.agent (nil: keep the running agent).
	Agent *schema.AgentRelease `json:"agent,omitempty"`
	// Templates are the golden templates' files by name.
	Templates map[string]json.RawMessage `json:"templates"`

	parsed map[string]*schema.Template
}

// FromDesired takes the fleet-wide inputs of a desired state (its
// genesis.yaml and templates) in their canonical form (the form a stored
// rollout renders from, so a manifest rendered from either is the same),
// with its body and digest.
func FromDesired(fleet *schema.Fleet, templates map[string]*schema.Template) (*Inputs, []byte, string, error) {
	in := &Inputs{Templates: make(map[string]json.RawMessage, len(templates))}
	if fleet != nil {
		in.N8NVersion = fleet.Spec.Defaults.N8NVersion
		in.Agent = fleet.Spec.Defaults.Agent
	}
	for name, t := range templates {
		in.Templates[name] = t.Source()
	}
	body, err := in.Body()
	if err != nil {
		return nil, nil, "", err
	}
	canon, err := ParseInputs(body)
	if err != nil {
		return nil, nil, "", err
	}
	sum := sha256.Sum256(body)
	return canon, body, hex.EncodeToString(sum[:]), nil
}

// Body is in's canonical JSON (map keys sorted, templates compacted, so
// a change of white space only is no change):
// what Digest hashes and the store keeps.
func (in *Inputs) Body() ([]byte, error) {
	c := Inputs{N8NVersion: in.N8NVersion, Agent: in.Agent, Templates: make(map[string]json.RawMessage, len(in.Templates))}
	for name, raw := range in.Templates {
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		c.Templates[name] = b.Bytes()
	}
	return json.Marshal(c)
}

// Digest is the hex SHA-256 of in's Body.
func (in *Inputs) Digest() (string, error) {
	b, err := in.Body()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ParseInputs reads a stored Body back and parses its templates. A stored
// body the reconciler wrote itself; a template that no longer parses is
// an error naming it (never a silently empty workflow).
func ParseInputs(body []byte) (*Inputs, error) {
	var in Inputs
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("rollout inputs: %w", err)
	}
	in.parsed = make(map[string]*schema.Template, len(in.Templates))
	names := make([]string, 0, len(in.Templates))
	for name := range in.Templates {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t, errs := schema.ParseTemplate("templates/workflows/"+name+".json", name, in.Templates[name])
		if errs != nil {
			return nil, fmt.Errorf("rollout inputs: template %s: %v", name, errs)
		}
		in.parsed[name] = t
	}
	return &in, nil
}

// Template is the parsed template name (nil: none).
func (in *Inputs) Template(name string) *schema.Template { return in.parsed[name] }

// N8NFor is the n8n version tenant t runs under in: its own pin, else
// the default.
func (in *Inputs) N8NFor(t *schema.Tenant) string {
	if t != nil && t.Spec.N8N.Version != "" {
		return t.Spec.N8N.Version
	}
	return in.N8NVersion
}

// Affects reports whether moving tenant t from inputs a to b changes its
// manifest: its n8n version (unless it pins its own), the agent build, or
// a template one of its workflows uses. A tenant the change does not
// affect is no canary: it proves nothing about the change.
func Affects(a, b *Inputs, t *schema.Tenant) bool {
	if a.N8NFor(t) != b.N8NFor(t) {
		return true
	}
	switch {
	case (a.Agent == nil) != (b.Agent == nil):
		return true
	case a.Agent != nil && *a.Agent != *b.Agent:
		return true
	}
	if t == nil {
		return false
	}
	for _, w := range t.Spec.Workflows {
		x, inA := a.Templates[w.Template]
		y, inB := b.Templates[w.Template]
		if inA != inB || !bytes.Equal(x, y) {
			return true
		}
	}
	return false
}
