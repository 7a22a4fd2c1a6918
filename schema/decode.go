package schema

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unique"

	"gopkg.in/yaml.v3"
)

// MaxFileSize is the largest state file (tenant, fleet or template) that is
// read. Larger files are rejected before parsing so a hostile file cannot make
// the decoder use unbounded memory.
const MaxFileSize = 1 << 20

// Duration is a time.Duration written in YAML as a Go duration string
// ("72h", "30m").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d the way it is read.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

var (
	durationType = reflect.TypeOf(Duration(0))
	quantityType = reflect.TypeOf(Quantity(""))
)

// positions records where each field path ("spec.droplet.region",
// "spec.credentials[1].name") stands in its file: the value for scalars, the
// key for mappings and sequences (so "missing field" errors point at the
// parent's key). It is kept with every decoded tenant, so it is one pointer
// to a table interned with the unique package: the files of one shape (the
// same fields, keys and lists, at the same lines and columns, as files
// written by one tool or from one example are) share a table. A table of
// their own cost ~1 KiB per tenant, ~100 MiB per replica at 100,000
// tenants (tenants' BenchmarkSnapshotHeap; a map, before that, ~1.6 KiB).
// The zero value records nothing.
type positions struct{ h unique.Handle[posTable] }

// posTable is a positions table: paths holds every path, sorted and
// concatenated; ents holds, for each path in that order, posEntSize bytes:
// where the path starts in paths (it ends where the next one starts), its
// line and its column, each a little-endian uint32. Both are strings so
// that the table is comparable, which unique needs, and paths is interned
// on its own: files of one shape whose lines differ (a sealed credential
// one line longer) still share their paths.
//
// uint32 is enough: a file is at most MaxFileSize (1 MiB) bytes, so no
// line or column exceeds 2^21, and a path is a bounded number of segments
// (struct fields nest a few levels deep; only map keys, themselves bytes of
// the file, are long), so all of them together are far below 4 GiB.
type posTable struct {
	paths unique.Handle[string]
	ents  string
}

// posEntSize is the size of one entry of posTable.ents.
const posEntSize = 12

// compactPositions makes the table of m.
func compactPositions(m map[string]Pos) positions {
	keys := slices.Sorted(maps.Keys(m))
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	paths := make([]byte, 0, size)
	ents := make([]byte, 0, len(keys)*posEntSize)
	for _, k := range keys {
		ents = binary.LittleEndian.AppendUint32(ents, uint32(len(paths)))
		ents = binary.LittleEndian.AppendUint32(ents, uint32(max(m[k].Line, 0)))
		ents = binary.LittleEndian.AppendUint32(ents, uint32(max(m[k].Col, 0)))
		paths = append(paths, k...)
	}
	return positions{unique.Make(posTable{paths: unique.Make(string(paths)), ents: string(ents)})}
}

// u32 is the little-endian uint32 at s[i:].
func u32(s string, i int) uint32 {
	return uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24
}

// path is the i-th path of the table.
func (t posTable) path(i int) string {
	paths := t.paths.Value()
	end := len(paths)
	if next := (i + 1) * posEntSize; next < len(t.ents) {
		end = int(u32(t.ents, next))
	}
	return paths[u32(t.ents, i*posEntSize):end]
}

// get returns the position recorded for exactly path.
func (p positions) get(path string) (Pos, bool) {
	if p.h == (unique.Handle[posTable]{}) {
		return Pos{}, false
	}
	t := p.h.Value()
	i, ok := sort.Find(len(t.ents)/posEntSize, func(i int) int { return strings.Compare(path, t.path(i)) })
	if !ok {
		return Pos{}, false
	}
	e := i * posEntSize
	return Pos{Line: int(u32(t.ents, e+4)), Col: int(u32(t.ents, e+8))}, true
}

// at returns the position of path, or of its nearest recorded ancestor.
func (p positions) at(path string) Pos {
	for {
		if pos, ok := p.get(path); ok {
			return pos
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return Pos{Line: 1, Col: 1}
		}
		path = path[:i]
	}
}

// maxInterned is the length of the longest decoded string that is
// interned (see intern).
const maxInterned = 64

// intern returns s, or an equal string that other decoded files share. A
// replica keeps every tenant decoded, and most of their short strings
// repeat from file to file (regions, tiers, states, credential names and
// types, template names, map keys): each was a copy of its own. The unique
// package keeps a canonical copy only while a Handle to it lives, and the
// decoded structs hold plain strings, so the sharing holds among the files
// decoded between two collections; a string in one file only (an id, a
// domain) costs what it did. Long strings (sealed credentials) are not
// shared, and hashing them would be wasted.
func intern(s string) string {
	if s == "" || len(s) > maxInterned {
		return s
	}
	return unique.Make(s).Value()
}

// decoder is a strict YAML-to-struct decoder: unknown and duplicate fields are
// errors, each error carries its line and column, and every field's position
// is recorded for later validation messages.
type decoder struct {
	errorf
	pos map[string]Pos // compacted as decodeYAML returns
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decodeYAML parses data as a single YAML document into out (a pointer to a
// struct) and returns the field positions. Parse errors are returned as
// Errors for file; nothing panics on hostile input.
func decodeYAML(file string, data []byte, out any) (positions, Errors) {
	d := &decoder{errorf: errorf{file: file}, pos: map[string]Pos{}}
	pos, errs := d.decode(data, out)
	return pos, errs
}

func (d *decoder) decode(data []byte, out any) (positions, Errors) {
	if len(data) > MaxFileSize {
		d.at(Pos{}, "file is %d bytes, larger than the %d-byte limit", len(data), MaxFileSize)
		return compactPositions(d.pos), d.errs
	}
	root, err := parseYAML(data)
	if err != nil {
		p := Pos{Line: 1, Col: 1}
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			msg = m[2]
		} else {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		d.at(p, "invalid YAML: %s", msg)
		return compactPositions(d.pos), d.errs
	}
	if root == nil {
		d.at(Pos{}, "file is empty")
		return compactPositions(d.pos), d.errs
	}
	d.pos[""] = Pos{Line: root.Line, Col: root.Column}
	d.value(root, reflect.ValueOf(out).Elem(), "")
	return compactPositions(d.pos), d.errs
}

// parseYAML returns the root node of the only document in data, nil for an
// empty file. The YAML library is third-party code fed hostile input, so a
// panic inside it becomes an error.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: a file holds one YAML document; found a second", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}
	return &doc, nil
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing"
		case "!!str":
			return strconv.Quote(n.Value)
		}
		return n.Value
	default:
		return "an alias"
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (d *decoder) record(n *yaml.Node, key *yaml.Node, path string) {
	p := Pos{Line: n.Line, Col: n.Column}
	if key != nil && n.Kind != yaml.ScalarNode {
		p = Pos{Line: key.Line, Col: key.Column}
	}
	d.pos[path] = p
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	p := Pos{Line: n.Line, Col: n.Column}
	name := path
	if name == "" {
		name = "document"
	}
	if n.Kind == yaml.AliasNode || n.Kind == yaml.DocumentNode {
		d.at(p, "%s: YAML aliases and nested documents are not allowed", name)
		return
	}
	if n.Tag != "" && strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		d.at(p, "%s: custom YAML tag %s is not allowed", name, n.Tag)
		return
	}
	if v.Kind() == reflect.Pointer {
		if isNull(n) {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
		return
	}
	if v.Type() == durationType {
		if n.Kind != yaml.ScalarNode {
			d.at(p, "%s: want a duration such as 72h, got %s", name, kindName(n))
			return
		}
		if isNull(n) {
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.at(p, "%s: %q is not a duration (use a number with a unit: 30m, 72h)", name, n.Value)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	if v.Type() == quantityType {
		// A count (3) or a percentage ("10%"), kept as written; validation
		// parses it.
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!str") {
			d.at(p, "%s: want a count such as 3 or a percentage such as \"10%%\", got %s", name, kindName(n))
			return
		}
		v.SetString(intern(n.Value))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path, name)
	case reflect.Map:
		d.mapping(n, v, path, name)
	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.at(p, "%s: want a list, got %s", name, kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			d.record(item, item, ip)
			d.value(item, s.Index(i), ip)
		}
		v.Set(s)
	case reflect.String:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.at(p, "%s: want a string, got %s", name, kindName(n))
			return
		}
		if n.Tag != "!!str" {
			d.at(p, "%s: want a string, got %s (quote it to make it a string)", name, kindName(n))
			return
		}
		v.SetString(intern(n.Value))
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.at(p, "%s: want an integer, got %s", name, kindName(n))
			return
		}
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil || n.Tag != "!!int" {
			d.at(p, "%s: want an integer, got %s", name, kindName(n))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || isNull(n) || (n.Tag != "!!int" && n.Tag != "!!float") {
			d.at(p, "%s: want a number, got %s", name, kindName(n))
			return
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			d.at(p, "%s: want a number, got %s", name, kindName(n))
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.at(p, "%s: want true or false, got %s", name, kindName(n))
			return
		}
		v.SetBool(n.Value == "true")
	default:
		d.at(p, "%s: cannot decode into %s", name, v.Type())
	}
}

// structure decodes a mapping into a struct whose fields carry yaml tags.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path, name string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.at(Pos{n.Line, n.Column}, "%s: want a mapping, got %s", name, kindName(n))
		return
	}
	fields := map[string]int{}
	var known []string
	t := v.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		known = append(known, tag)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := Pos{k.Line, k.Column}
		if k.Kind != yaml.ScalarNode {
			d.at(kp, "%s: field names must be plain strings", name)
			continue
		}
		fi, ok := fields[k.Value]
		if !ok {
			if path == "" {
				d.at(kp, "unknown field %q (known: %s)", k.Value, strings.Join(known, ", "))
			} else {
				d.at(kp, "unknown field %q in %s (known: %s)", k.Value, path, strings.Join(known, ", "))
			}
			continue
		}
		if seen[k.Value] {
			d.at(kp, "duplicate field %q in %s", k.Value, name)
			continue
		}
		seen[k.Value] = true
		fp := join(path, k.Value)
		d.record(val, k, fp)
		d.value(val, v.Field(fi), fp)
	}
}

// mapping decodes a YAML mapping into a Go map with string keys.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path, name string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.at(Pos{n.Line, n.Column}, "%s: want a mapping, got %s", name, kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.at(Pos{n.Line, n.Column}, "%s: cannot decode into %s", name, v.Type())
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := Pos{k.Line, k.Column}
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.at(kp, "%s: keys must be plain strings", name)
			continue
		}
		key := reflect.ValueOf(intern(k.Value)).Convert(v.Type().Key())
		if m.MapIndex(key).IsValid() {
			d.at(kp, "duplicate key %q in %s", k.Value, name)
			continue
		}
		ep := join(path, k.Value)
		d.record(val, k, ep)
		// Keys themselves are validated by callers; remember where they are.
		d.pos[ep+"#key"] = kp
		elem := reflect.New(v.Type().Elem()).Elem()
		if elem.Kind() == reflect.String && val.Kind == yaml.ScalarNode && !isNull(val) {
			// Map values are free-form text (template params): a number
			// or a boolean reads as its text.
			elem.SetString(intern(val.Value))
		} else {
			d.value(val, elem, ep)
		}
		m.SetMapIndex(key, elem)
	}
	v.Set(m)
}
