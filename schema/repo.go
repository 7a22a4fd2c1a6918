package schema

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// The layout of a state repository.
const (
	FleetFile    = "genesis.yaml"
	TenantsDir   = "tenants"
	TemplatesDir = "templates/workflows"
)

// Context is what a tenant is checked against: the fleet and the templates
// that parsed. A template that failed to parse is listed in BadTemplates so a
// tenant using it gets a pointed error instead of "no such template".
type Context struct {
	Fleet        *Fleet
	Templates    map[string]*Template
	BadTemplates map[string]bool
}

// Size is the tenant's droplet size, or the fleet default.
func (t *Tenant) Size(f *Fleet) string {
	if t.Spec.Droplet.Size != "" || f == nil {
		return t.Spec.Droplet.Size
	}
	return f.Spec.Defaults.Size
}

// N8NVersion is the tenant's n8n version, or the fleet default.
func (t *Tenant) N8NVersion(f *Fleet) string {
	if t.Spec.N8N.Version != "" || f == nil {
		return t.Spec.N8N.Version
	}
	return f.Spec.Defaults.N8NVersion
}

// Check applies the rules that need the fleet and the templates: the region
// is served by some account, the size is priced, every workflow's template
// exists, every placeholder in it maps to a declared credential of the type
// the template uses it as, params match the template's markers exactly, and
// no domain lies in the fleet's DNS zone (spec.dns).
func (t *Tenant) Check(file string, ctx Context) Errors {
	c := &errorf{file: file}
	at := func(path, format string, args ...any) { c.at(t.pos.at(path), format, args...) }
	if f := ctx.Fleet; f != nil {
		if r := t.Spec.Droplet.Region; !f.ServesRegion(r) {
			at("spec.droplet.region", "spec.droplet.region: no account in genesis.yaml serves region %q (served: %s)", r, strings.Join(f.Regions(), ", "))
		}
		if s := t.Size(f); !hasKey(f.Spec.Sizes, s) {
			at("spec.droplet.size", "spec.droplet.size: %q is not in genesis.yaml spec.sizes (%s)", s, strings.Join(sortedKeys(f.Spec.Sizes), ", "))
		}
		if f.Spec.DNS != nil && f.Spec.DNS.Zone != "" {
			// The fleet zone holds the tenants' stable names: a custom
			// domain in it could take another tenant's name.
			zone := f.Spec.DNS.Zone
			for i, d := range t.Spec.Domains {
				if d == zone || strings.HasSuffix(d, "."+zone) {
					p := fmt.Sprintf("spec.domains[%d]", i)
					at(p, "%s: %q is in the fleet's zone %s (genesis.yaml spec.dns), where tenants' stable names live; point a CNAME at %s instead",
						p, d, zone, f.StableName(t.Metadata.ID))
				}
			}
		}
	}
	creds := map[string]Credential{}
	for _, cr := range t.Spec.Credentials {
		creds[cr.Name] = cr
	}
	for i, w := range t.Spec.Workflows {
		p := fmt.Sprintf("spec.workflows[%d]", i)
		tpl, ok := ctx.Templates[w.Template]
		if !ok {
			if ctx.BadTemplates[w.Template] {
				at(p+".template", "%s.template: template %q is invalid (see %s/%s.json)", p, w.Template, TemplatesDir, w.Template)
			} else {
				at(p+".template", "%s.template: no template %s/%s.json", p, TemplatesDir, w.Template)
			}
			continue
		}
		for _, ph := range sortedKeys(tpl.Placeholders) {
			name, ok := w.Credentials[ph]
			if !ok {
				at(p, "%s.credentials: template %q needs %s mapped to a credential", p, w.Template, ph)
				continue
			}
			want := tpl.Placeholders[ph]
			if cr, ok := creds[name]; ok && want != "" && cr.Type != want {
				at(p+".credentials."+ph, "%s.credentials.%s: template %q uses it as a credential of type %s, but %q is of type %s", p, ph, w.Template, want, name, cr.Type)
			}
		}
		for _, ph := range sortedKeys(w.Credentials) {
			if _, ok := tpl.Placeholders[ph]; !ok {
				at(p+".credentials."+ph+"#key", "%s.credentials: template %q has no placeholder %s", p, w.Template, ph)
			}
		}
		for _, name := range tpl.Params {
			if _, ok := w.Params[name]; !ok {
				at(p, "%s.params: template %q needs a value for {{param.%s}}", p, w.Template, name)
			}
		}
		for _, name := range sortedKeys(w.Params) {
			if !containsString(tpl.Params, name) {
				at(p+".params."+name+"#key", "%s.params: %q is not used by template %q", p, name, w.Template)
			}
		}
	}
	return c.errs
}

func containsString(list []string, s string) bool {
	i := sort.SearchStrings(list, s)
	return i < len(list) && list[i] == s
}

// TenantFile is a tenant with the file it came from.
type TenantFile struct {
	File   string
	Tenant *Tenant
}

// CheckUnique applies the rules across tenants: no two share an id and no two
// claim a domain. tenants must be sorted by file; the first file keeps an id
// or a domain and each later claimant gets the error, so one conflict never
// invalidates the tenant that already had it. It returns the errors by file.
func CheckUnique(tenants []TenantFile) map[string]Errors {
	out := map[string]Errors{}
	ids := map[string]string{}
	domains := map[string]string{}
	for _, tf := range tenants {
		t := tf.Tenant
		c := &errorf{file: tf.File}
		if other, ok := ids[t.Metadata.ID]; ok {
			c.at(t.pos.at("metadata.id"), "metadata.id: tenant %q is already declared in %s", t.Metadata.ID, other)
		} else {
			ids[t.Metadata.ID] = tf.File
		}
		for i, d := range t.Spec.Domains {
			if other, ok := domains[d]; ok {
				c.at(t.pos.at(fmt.Sprintf("spec.domains[%d]", i)), "spec.domains[%d]: domain %q is already claimed by %s", i, d, other)
			}
		}
		if len(c.errs) == 0 {
			for _, d := range t.Spec.Domains {
				domains[d] = tf.File
			}
			continue
		}
		out[tf.File] = c.errs
	}
	return out
}

// Repo is a whole state repository, validated.
type Repo struct {
	// Fleet is nil when genesis.yaml is missing or invalid.
	Fleet     *Fleet
	Templates map[string]*Template
	// Tenants holds every valid tenant by id.
	Tenants map[string]*Tenant
	// Files maps each valid tenant id to its file.
	Files map[string]string
	// Invalid maps each tenant file that failed to its errors.
	Invalid map[string]Errors
	// Errors is every error of every file, sorted.
	Errors Errors
}

// LoadDir reads and validates a state repository. It never stops at the
// first bad file: each file is judged on its own, and one bad tenant never
// hides the errors or the validity of the others.
func LoadDir(fsys fs.FS) *Repo {
	r := &Repo{Templates: map[string]*Template{}, Tenants: map[string]*Tenant{}, Files: map[string]string{}, Invalid: map[string]Errors{}}
	if data, err := readLimited(fsys, FleetFile); err != nil {
		r.Errors = append(r.Errors, Error{File: FleetFile, Message: err.Error()})
	} else {
		f, errs := DecodeFleet(FleetFile, data)
		r.Fleet = f
		r.Errors = append(r.Errors, errs...)
	}
	ctx := Context{Fleet: r.Fleet, Templates: r.Templates, BadTemplates: map[string]bool{}}
	tplFiles, _ := fs.Glob(fsys, TemplatesDir+"/*.json")
	for _, file := range tplFiles {
		name := strings.TrimSuffix(path.Base(file), ".json")
		data, err := readLimited(fsys, file)
		if err != nil {
			r.Errors = append(r.Errors, Error{File: file, Message: err.Error()})
			ctx.BadTemplates[name] = true
			continue
		}
		t, errs := ParseTemplate(file, name, data)
		if len(errs) > 0 {
			r.Errors = append(r.Errors, errs...)
			ctx.BadTemplates[name] = true
			continue
		}
		r.Templates[name] = t
	}
	entries, err := fs.ReadDir(fsys, TenantsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.Errors = append(r.Errors, Error{File: TenantsDir, Message: err.Error()})
	}
	var good []TenantFile
	for _, e := range entries {
		file := TenantsDir + "/" + e.Name()
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		data, err := readLimited(fsys, file)
		if err != nil {
			r.fail(file, Errors{{File: file, Message: err.Error()}})
			continue
		}
		t, errs := DecodeTenant(file, data)
		if len(errs) == 0 {
			errs = t.Check(file, ctx)
		}
		if len(errs) > 0 {
			r.fail(file, errs)
			continue
		}
		good = append(good, TenantFile{File: file, Tenant: t})
	}
	conflicts := CheckUnique(good)
	for _, tf := range good {
		if errs, bad := conflicts[tf.File]; bad {
			r.fail(tf.File, errs)
			continue
		}
		r.Tenants[tf.Tenant.Metadata.ID] = tf.Tenant
		r.Files[tf.Tenant.Metadata.ID] = tf.File
	}
	r.Errors.Sort()
	return r
}

func (r *Repo) fail(file string, errs Errors) {
	r.Invalid[file] = errs
	r.Errors = append(r.Errors, errs...)
}

// IDs lists the valid tenant ids, sorted.
func (r *Repo) IDs() []string { return sortedKeys(r.Tenants) }

// readLimited reads a file of at most MaxFileSize bytes.
func readLimited(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("file is missing")
		}
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is larger than the %d-byte limit", MaxFileSize)
	}
	return data, nil
}
