package schema

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"

	"filippo.io/age/armor"
)

// Tenant is tenants/<id>.yaml: one customer workspace and everything its
// droplet should run.
type Tenant struct {
	APIVersion string     `yaml:"apiVersion" json:"apiVersion"`
	Kind       string     `yaml:"kind" json:"kind"`
	Metadata   TenantMeta `yaml:"metadata" json:"metadata"`
	Spec       TenantSpec `yaml:"spec" json:"spec"`

	pos positions
}

// TenantMeta identifies the tenant.
type TenantMeta struct {
	ID   string `yaml:"id" json:"id"`
	Name string `yaml:"name" json:"name"`
	Tier Tier   `yaml:"tier" json:"tier"`
	// Labels are free key/value tags (at most 32; keys and values 1-63
	// characters of a-z, 0-9 and -) that rollout waves select by.
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	// Timezone is the IANA zone (Europe/Paris) the fleet's maintenance
	// windows are read in for this tenant; empty is UTC.
	Timezone string `yaml:"timezone" json:"timezone,omitempty"`
}

// Location is the tenant's time zone for maintenance windows: its
// metadata.timezone (validated by DecodeTenant), or UTC.
func (m TenantMeta) Location() (*time.Location, error) {
	if m.Timezone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(m.Timezone)
}

// Tier is the tenant's plan.
type Tier string

// The tiers.
const (
	TierStarter    Tier = "starter"
	TierPro        Tier = "pro"
	TierEnterprise Tier = "enterprise"
)

func (t Tier) valid() bool { return t == TierStarter || t == TierPro || t == TierEnterprise }

// State is what the tenant's droplet should be.
type State string

// The declared states. Only StateAbsent ever destroys a droplet.
const (
	StateRunning    State = "running"
	StateHibernated State = "hibernated"
	StateAbsent     State = "absent"
)

// TenantSpec is the desired state of one workspace.
type TenantSpec struct {
	State       State        `yaml:"state" json:"state"`
	Droplet     DropletSpec  `yaml:"droplet" json:"droplet"`
	N8N         N8NSpec      `yaml:"n8n" json:"n8n"`
	Hibernation *Hibernation `yaml:"hibernation" json:"hibernation,omitempty"`
	Domains     []string     `yaml:"domains" json:"domains,omitempty"`
	Credentials []Credential `yaml:"credentials" json:"credentials,omitempty"`
	Workflows   []Workflow   `yaml:"workflows" json:"workflows,omitempty"`
}

// DropletSpec places the droplet. An empty Size means the fleet default.
type DropletSpec struct {
	Region string `yaml:"region" json:"region"`
	Size   string `yaml:"size" json:"size,omitempty"`
}

// N8NSpec pins n8n. An empty Version means the fleet default.
type N8NSpec struct {
	Version string `yaml:"version" json:"version,omitempty"`
}

// Hibernation is the idle policy: hibernate after AfterIdle without n8n
// activity.
type Hibernation struct {
	AfterIdle Duration `yaml:"afterIdle" json:"afterIdle"`
}

// Credential is one n8n credential, sealed with age to the fleet recipients.
// Its plaintext is the JSON object of n8n credential data for Type.
type Credential struct {
	Name   string `yaml:"name" json:"name"`
	Type   string `yaml:"type" json:"type"`
	Sealed string `yaml:"sealed" json:"sealed"`
}

// Workflow deploys one golden template, filling its credential placeholders
// and parameters.
type Workflow struct {
	Template    string            `yaml:"template" json:"template"`
	Credentials map[string]string `yaml:"credentials" json:"credentials,omitempty"`
	Params      map[string]string `yaml:"params" json:"params,omitempty"`
}

var (
	tenantID        = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)
	itemName        = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	credentialType  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,99}$`)
	dnsLabel        = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	numericLabel    = regexp.MustCompile(`^[0-9]+$`)
	placeholderName = regexp.MustCompile(`^TEMPLATE_[A-Z0-9_]+_UUID$`)
	paramName       = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
)

// itemNameWant is what itemName asks of a name.
const itemNameWant = "must be 1-63 characters of a-z, 0-9 and -"

// IDFromPath is the tenant id a file at p must declare: its base name
// without the .yaml or .yml extension.
func IDFromPath(p string) string {
	base := path.Base(p)
	for _, ext := range []string{".yaml", ".yml"} {
		if strings.HasSuffix(base, ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

// DecodeTenant reads a tenant file and checks every rule that needs only the
// file itself (fields, formats, names, id = file name). file is the path
// relative to the state repository, used in errors and for the id check.
// Rules that need the fleet or the templates are in Check.
func DecodeTenant(file string, data []byte) (*Tenant, Errors) {
	var t Tenant
	pos, errs := decodeYAML(file, data, &t)
	if len(errs) > 0 {
		return nil, errs
	}
	t.pos = pos
	c := &errorf{file: file}
	wantID := IDFromPath(file)
	t.validate(c, wantID)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	// The id equals the file's name (validate checked it): keep the name,
	// a part of file, which the caller keeps beside the tenant, rather
	// than a copy of it.
	t.Metadata.ID = wantID
	return &t, nil
}

// Pos is where the field at path (as in "spec.domains[0]") stands in the
// tenant's file, or its nearest enclosing field.
func (t *Tenant) Pos(path string) Pos { return t.pos.at(path) }

func (t *Tenant) validate(c *errorf, wantID string) {
	at := func(path, format string, args ...any) { c.at(t.pos.at(path), format, args...) }
	if t.APIVersion != APIVersion {
		at("apiVersion", "apiVersion: want %q, got %q", APIVersion, t.APIVersion)
	}
	if t.Kind != "Tenant" {
		at("kind", "kind: want \"Tenant\", got %q", t.Kind)
	}
	m := t.Metadata
	switch {
	case m.ID == "":
		at("metadata", "metadata.id is required")
	case !tenantID.MatchString(m.ID):
		at("metadata.id", "metadata.id: %q must be 3-40 characters of a-z, 0-9 and -", m.ID)
	case IsSpareWorkspace(m.ID):
		at("metadata.id", "metadata.id: %q: the prefix %q is reserved for hot spares", m.ID, SparePrefix)
	case m.ID != wantID:
		at("metadata.id", "metadata.id: %q must equal the file name %q", m.ID, wantID)
	}
	if strings.TrimSpace(m.Name) == "" {
		at("metadata", "metadata.name is required")
	}
	switch m.Tier {
	case TierStarter, TierPro, TierEnterprise:
	case "":
		at("metadata", "metadata.tier is required (starter, pro or enterprise)")
	default:
		at("metadata.tier", "metadata.tier: %q is not one of starter, pro, enterprise", m.Tier)
	}
	checkLabels(at, "metadata.labels", m.Labels)
	if m.Timezone != "" {
		if msg := checkTimezone(m.Timezone); msg != "" {
			at("metadata.timezone", "metadata.timezone: %q %s", m.Timezone, msg)
		} else if _, err := time.LoadLocation(m.Timezone); err != nil {
			at("metadata.timezone", "metadata.timezone: %q is not a time zone this host knows (IANA names such as Europe/Paris)", m.Timezone)
		}
	}
	s := &t.Spec
	switch s.State {
	case StateRunning, StateHibernated, StateAbsent:
	case "":
		at("spec", "spec.state is required (running, hibernated or absent)")
	default:
		at("spec.state", "spec.state: %q is not one of running, hibernated, absent", s.State)
	}
	switch {
	case s.Droplet.Region == "":
		at("spec.droplet", "spec.droplet.region is required")
	case !regionSlug.MatchString(s.Droplet.Region):
		at("spec.droplet.region", "spec.droplet.region: %q is not a region slug such as nyc3", s.Droplet.Region)
	}
	if s.Droplet.Size != "" && !sizeSlug.MatchString(s.Droplet.Size) {
		at("spec.droplet.size", "spec.droplet.size: %q is not a size slug", s.Droplet.Size)
	}
	if v := s.N8N.Version; v != "" && !semver.MatchString(v) {
		at("spec.n8n.version", "spec.n8n.version: %q is not a semantic version such as 1.123.81", v)
	}
	if h := s.Hibernation; h != nil && h.AfterIdle <= 0 {
		at("spec.hibernation.afterIdle", "spec.hibernation.afterIdle: must be a positive duration such as 72h")
	}
	domains := map[string]bool{}
	for i, d := range s.Domains {
		p := fmt.Sprintf("spec.domains[%d]", i)
		if msg := checkDomain(d); msg != "" {
			at(p, "%s: %q %s", p, d, msg)
		} else if domains[d] {
			at(p, "%s: domain %q is listed twice", p, d)
		}
		domains[d] = true
	}
	creds := map[string]bool{}
	for i, cr := range s.Credentials {
		p := fmt.Sprintf("spec.credentials[%d]", i)
		itemKey(at, p, "name", cr.Name, itemName, itemNameWant, "credential", creds)
		switch {
		case cr.Type == "":
			at(p, "%s.type is required (an n8n credential type such as gmailOAuth2)", p)
		case !credentialType.MatchString(cr.Type):
			at(p+".type", "%s.type: %q is not an n8n credential type name", p, cr.Type)
		}
		if cr.Sealed == "" {
			at(p, "%s.sealed is required (the output of genesis seal)", p)
		} else if err := checkSealed(cr.Sealed); err != nil {
			at(p+".sealed", "%s.sealed: not an armored age file: %v", p, err)
		}
	}
	wfs := map[string]bool{}
	for i, w := range s.Workflows {
		p := fmt.Sprintf("spec.workflows[%d]", i)
		itemKey(at, p, "template", w.Template, itemName, itemNameWant, "workflow", wfs)
		for _, ph := range sortedKeys(w.Credentials) {
			kp := p + ".credentials." + ph
			if !placeholderName.MatchString(ph) {
				at(kp+"#key", "%s.credentials: %q is not a placeholder name like TEMPLATE_GMAIL_UUID", p, ph)
			}
			if name := w.Credentials[ph]; !creds[name] {
				at(kp, "%s.credentials.%s: no credential named %q in spec.credentials", p, ph, name)
			}
		}
		for _, k := range sortedKeys(w.Params) {
			if !paramName.MatchString(k) {
				at(p+".params."+k+"#key", "%s.params: %q is not a parameter name (a letter, then letters, digits, _)", p, k)
			}
		}
	}
}

// checkDomain returns why d is not a valid lowercase DNS name, or "".
func checkDomain(d string) string {
	if d == "" {
		return "is empty"
	}
	if len(d) > 253 {
		return "is longer than 253 characters"
	}
	if strings.ToLower(d) != d {
		return "must be lowercase"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "must have at least two labels (track.example.com)"
	}
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return "is not a valid DNS name (labels of a-z, 0-9 and inner -, 1-63 characters)"
		}
	}
	if numericLabel.MatchString(labels[len(labels)-1]) {
		return "is not a DNS name (its last label is numeric)"
	}
	return ""
}

// ageHeader is the first line of every age file's header.
const ageHeader = "age-encryption.org/v1\n"

// checkSealed parses s as an armored age file without decrypting it: the
// armor, the version line, at least one recipient stanza and the header MAC.
func checkSealed(s string) error {
	s = strings.TrimSpace(s) + "\n"
	if !strings.HasPrefix(s, armor.Header) {
		return fmt.Errorf("missing %q", armor.Header)
	}
	data, err := io.ReadAll(io.LimitReader(armor.NewReader(strings.NewReader(s)), MaxFileSize))
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(data, []byte(ageHeader)) {
		return fmt.Errorf("the payload is not an age v1 file")
	}
	hdr := data[len(ageHeader):]
	stanzas := 0
	for {
		line, rest, ok := bytes.Cut(hdr, []byte("\n"))
		if !ok {
			return fmt.Errorf("the header has no MAC line")
		}
		if bytes.HasPrefix(line, []byte("--- ")) {
			break
		}
		if bytes.HasPrefix(line, []byte("-> ")) {
			stanzas++
		}
		hdr = rest
	}
	if stanzas == 0 {
		return fmt.Errorf("the header has no recipient stanza")
	}
	return nil
}
