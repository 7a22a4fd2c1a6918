// Package yamledit changes YAML documents the way a person would: it edits
// the document's node tree instead of re-serializing a Go value, so every
// key it does not touch keeps its place, its style and its comments.
//
// Changes come as JSON, the API's language. MergePatch applies an RFC 7386
// JSON merge patch (an object's keys set or replace, a null removes a key,
// arrays and scalars replace); Replace makes the document equal to a whole
// new value while keeping the comments of every key that survives; New
// writes a fresh document from a JSON object in its key order. Keys added to
// a mapping go after the existing ones. ParseJSON decodes a body once, as a
// stream of tokens, into a Value that both names the fields it holds and is
// applied, so a caller (the tenant API) lists a patch's fields for its
// commit message from the same decode that makes the change. Every function
// refuses input it cannot represent (a patch that is not an object,
// duplicate JSON keys, nesting deeper than MaxDepth, more than MaxValues
// values, a key the caller's rule refuses) with an error naming the field's
// path, stops reading at the first such token, and never panics; the result
// is YAML that the caller validates like any file.
package yamledit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxDepth bounds the nesting of a patch or document.
const MaxDepth = 32

// MaxValues bounds how many values (object members and array items) one
// JSON input may hold; a tenant file holds 10 to 70 today.
const MaxValues = 2000

// Value is one JSON value decoded once into a YAML node tree (object keys
// in their order). The same Value both names what it holds (Fields,
// String) and is applied (MergeInto, ReplaceIn), so a caller never decodes
// a body twice; applying it does not change it, so it may be applied again
// (a writer retrying over a new base).
type Value struct{ root *yaml.Node }

// ParseJSON decodes one JSON value as a stream of tokens and stops at the
// first one past a limit: nesting deeper than MaxDepth, more than
// MaxValues values, a duplicate key, or a key that key (when not nil)
// refuses. A byte scan first refuses input past the depth and value limits
// at the cost of reading its bytes up to the first one past a limit, so a
// hostile body is never tokenized. Errors name the field by its path (keys joined by dots, array
// items as [i]) quoted with %q, so no byte of a key reaches the message
// raw.
func ParseJSON(data []byte, key func(name string) error) (*Value, error) {
	if err := prescan(data); err != nil {
		return nil, err
	}
	return decode(data, key)
}

// decode is ParseJSON without the prescan.
func decode(data []byte, key func(name string) error) (*Value, error) {
	d := &decoder{dec: json.NewDecoder(bytes.NewReader(data)), key: key}
	d.dec.UseNumber()
	n, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return &Value{root: n}, nil
}

// Object reports whether v is a JSON object.
func (v *Value) Object() bool { return v.root.Kind == yaml.MappingNode }

// String returns the string at path (object keys from the root).
func (v *Value) String(path ...string) (string, bool) {
	n := v.root
	for _, k := range path {
		if n.Kind != yaml.MappingNode {
			return "", false
		}
		at := find(n, k)
		if at < 0 {
			return "", false
		}
		n = n.Content[at+1]
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", false
	}
	return n.Value, true
}

// Fields names, sorted, the members a merge patch sets or removes: the path
// of every key whose value is not a non-empty object (arrays replace
// whole, so keys inside them are not listed).
func (v *Value) Fields() []string {
	var out []string
	var walk func(prefix string, m *yaml.Node)
	walk = func(prefix string, m *yaml.Node) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, val := m.Content[i].Value, m.Content[i+1]
			if val.Kind == yaml.MappingNode && len(val.Content) > 0 {
				walk(prefix+k+".", val)
				continue
			}
			out = append(out, prefix+k)
		}
	}
	if v.Object() {
		walk("", v.root)
	}
	sort.Strings(out)
	return out
}

// MergeInto applies v as a JSON merge patch (RFC 7386) to doc and returns
// the new YAML. doc must hold one YAML mapping (or be empty).
func (v *Value) MergeInto(doc []byte) ([]byte, error) {
	if !v.Object() {
		return nil, errors.New("patch: must be a JSON object")
	}
	root, err := parse(doc)
	if err != nil {
		return nil, err
	}
	root.Content[0] = merge(root.Content[0], clone(v.root), false)
	return encode(root)
}

// ReplaceIn makes doc equal to v (a JSON object), keeping the comments and
// order of every key that stays; a doc that does not parse is replaced
// whole.
func (v *Value) ReplaceIn(doc []byte) ([]byte, error) {
	if !v.Object() {
		return nil, errors.New("must be a JSON object")
	}
	root, err := parse(doc)
	if err != nil {
		root = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root.Content[0] = merge(root.Content[0], clone(v.root), true)
	return encode(root)
}

func clone(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, x := range n.Content {
		c.Content[i] = clone(x)
	}
	return &c
}

// MergePatch applies the JSON merge patch (RFC 7386) to doc and returns the
// new YAML. doc must hold one YAML mapping (or be empty).
func MergePatch(doc, patch []byte) ([]byte, error) {
	p, err := ParseJSON(patch, nil)
	if err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	return p.MergeInto(doc)
}

// Replace makes doc equal to value (a JSON object), keeping the comments and
// order of every key that stays.
func Replace(doc, value []byte) ([]byte, error) {
	v, err := ParseJSON(value, nil)
	if err != nil {
		return nil, err
	}
	return v.ReplaceIn(doc)
}

// New writes value (a JSON object) as a new YAML document, keys in the
// order they have in value.
func New(value []byte) ([]byte, error) { return Replace(nil, value) }

// parse reads one YAML document whose root is a mapping; an empty doc is an
// empty mapping.
func parse(doc []byte) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil { // yaml.v3 panics on some hostile input
			root, err = nil, fmt.Errorf("current file does not parse as YAML")
		}
	}()
	empty := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	if len(bytes.TrimSpace(doc)) == 0 {
		return empty, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, io.EOF) {
			return empty, nil
		}
		return nil, fmt.Errorf("current file does not parse as YAML: %v", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("current file holds more than one YAML document")
	}
	if len(n.Content) != 1 || n.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("current file is not a YAML mapping")
	}
	if depth(&n) > MaxDepth+2 {
		return nil, fmt.Errorf("current file nests deeper than %d levels", MaxDepth)
	}
	return &n, nil
}

func depth(n *yaml.Node) int {
	d := 0
	for _, c := range n.Content {
		d = max(d, depth(c))
	}
	return d + 1
}

func encode(root *yaml.Node) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("cannot write the result as YAML: %v", r)
		}
	}()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("cannot write the result as YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// merge returns target changed by patch. With replace, keys of target that
// patch lacks are removed and nulls are values; otherwise (merge patch) a
// null removes its key.
func merge(target, patch *yaml.Node, replace bool) *yaml.Node {
	if patch.Kind != yaml.MappingNode {
		return keepComments(target, patch)
	}
	if target == nil || target.Kind != yaml.MappingNode {
		target = keepComments(target, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"})
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(patch.Content); i += 2 {
		k, v := patch.Content[i], patch.Content[i+1]
		seen[k.Value] = true
		at := find(target, k.Value)
		switch {
		case isNull(v) && !replace:
			if at >= 0 {
				target.Content = append(target.Content[:at], target.Content[at+2:]...)
			}
		case at >= 0:
			target.Content[at+1] = merge(target.Content[at+1], v, replace)
		default:
			target.Content = append(target.Content, k, merge(nil, v, replace))
		}
	}
	if replace {
		kept := target.Content[:0]
		for i := 0; i+1 < len(target.Content); i += 2 {
			if seen[target.Content[i].Value] {
				kept = append(kept, target.Content[i], target.Content[i+1])
			}
		}
		target.Content = kept
	}
	if target.Style == yaml.FlowStyle && hasBlockScalar(target) {
		target.Style = 0
	}
	return target
}

// hasBlockScalar reports a multi-line string under n, which a flow mapping
// cannot hold readably.
func hasBlockScalar(n *yaml.Node) bool {
	if n.Kind == yaml.ScalarNode && n.Style == yaml.LiteralStyle {
		return true
	}
	for _, c := range n.Content {
		if hasBlockScalar(c) {
			return true
		}
	}
	return false
}

// keepComments gives next the comments old carried.
func keepComments(old, next *yaml.Node) *yaml.Node {
	if old != nil {
		if next.HeadComment == "" {
			next.HeadComment = old.HeadComment
		}
		if next.LineComment == "" && next.Kind == yaml.ScalarNode {
			next.LineComment = old.LineComment
		}
		if next.FootComment == "" {
			next.FootComment = old.FootComment
		}
		if old.Kind == next.Kind && old.Kind != yaml.ScalarNode && next.Style == 0 {
			next.Style = old.Style &^ (yaml.LiteralStyle | yaml.FoldedStyle)
		}
		if old.Kind == yaml.SequenceNode && next.Kind == yaml.SequenceNode {
			// An item that stays where it was keeps its comments.
			for i, item := range next.Content {
				if i < len(old.Content) && item.Kind == yaml.ScalarNode && old.Content[i].Kind == yaml.ScalarNode && item.Value == old.Content[i].Value {
					keepComments(old.Content[i], item)
				}
			}
		}
	}
	return next
}

func find(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// prescan refuses JSON that nests deeper than MaxDepth or holds more than
// MaxValues values, reading bytes only up to the first one past a limit. It
// refuses nothing the decoder would accept: it counts containers and
// values of well-formed JSON (at most what the decoder counts) and leaves
// malformed input to the decoder.
func prescan(data []byte) error {
	var arrays [MaxDepth + 2]bool // per open container: is it an array
	depth, values := 0, 1
	inString, escaped, item := false, false, false
	for _, c := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			continue
		}
		if item && c != ']' {
			values++ // the first byte of an array item
		}
		item = false
		switch c {
		case '"':
			inString = true
		case ':':
			values++
		case '{', '[':
			if depth++; depth > MaxDepth+1 {
				return fmt.Errorf("JSON nests deeper than %d levels", MaxDepth)
			}
			arrays[depth], item = c == '[', c == '['
		case '}', ']':
			if depth == 0 {
				return nil // malformed: the decoder says where
			}
			depth--
		case ',':
			item = arrays[depth]
		}
		if values > MaxValues {
			return fmt.Errorf("JSON holds more than %d values (object members and array items)", MaxValues)
		}
	}
	return nil
}

// decoder reads one JSON value token by token, keeping the path to the
// value it is in for errors and counting values against MaxValues.
type decoder struct {
	dec    *json.Decoder
	key    func(string) error
	path   []step
	values int
}

// step is one element of a path: an object key, or an array index when
// key is nil.
type step struct {
	key   *string
	index int
}

// at is the current path as text: keys joined by dots, items as [i].
func (d *decoder) at() string {
	var b strings.Builder
	for _, s := range d.path {
		switch {
		case s.key == nil:
			fmt.Fprintf(&b, "[%d]", s.index)
		case b.Len() > 0:
			b.WriteString("." + *s.key)
		default:
			b.WriteString(*s.key)
		}
	}
	return b.String()
}

func (d *decoder) value(depth int) (*yaml.Node, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("JSON nests deeper than %d levels", MaxDepth)
	}
	if d.values++; d.values > MaxValues {
		return nil, fmt.Errorf("JSON holds more than %d values (object members and array items)", MaxValues)
	}
	tok, err := d.dec.Token()
	if err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			seen := map[string]bool{}
			for d.dec.More() {
				kt, err := d.dec.Token()
				if err != nil {
					return nil, fmt.Errorf("malformed JSON: %v", err)
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("malformed JSON: object key is not a string")
				}
				d.path = append(d.path, step{key: &k})
				if seen[k] {
					return nil, fmt.Errorf("duplicate JSON key %q", d.at())
				}
				seen[k] = true
				if d.key != nil {
					if err := d.key(k); err != nil {
						return nil, fmt.Errorf("field %q: %w", d.at(), err)
					}
				}
				v, err := d.value(depth + 1)
				if err != nil {
					return nil, err
				}
				d.path = d.path[:len(d.path)-1]
				m.Content = append(m.Content, str(k), v)
			}
			if _, err := d.dec.Token(); err != nil {
				return nil, fmt.Errorf("malformed JSON: %v", err)
			}
			return m, nil
		case '[':
			s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for i := 0; d.dec.More(); i++ {
				d.path = append(d.path, step{index: i})
				v, err := d.value(depth + 1)
				if err != nil {
					return nil, err
				}
				d.path = d.path[:len(d.path)-1]
				s.Content = append(s.Content, v)
			}
			if _, err := d.dec.Token(); err != nil {
				return nil, fmt.Errorf("malformed JSON: %v", err)
			}
			return s, nil
		}
		return nil, fmt.Errorf("malformed JSON: unexpected %v", t)
	case string:
		return str(t), nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(t.String(), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: t.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("malformed JSON: unexpected %v", tok)
}

func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.Contains(strings.TrimSuffix(s, "\n"), "\n") {
		n.Style = yaml.LiteralStyle
	}
	return n
}

// UpsertItem puts item (a JSON object) into the list at path (mapping keys
// from the root, created when missing): it replaces the item whose field key
// has the same value, keeping its place and comments, or appends it.
func UpsertItem(doc []byte, path []string, key string, item []byte) ([]byte, error) {
	iv, err := ParseJSON(item, nil)
	if err != nil {
		return nil, err
	}
	if !iv.Object() {
		return nil, errors.New("item must be a JSON object")
	}
	v := iv.root
	at := find(v, key)
	if at < 0 {
		return nil, fmt.Errorf("item has no %q", key)
	}
	want := v.Content[at+1].Value
	root, err := parse(doc)
	if err != nil {
		return nil, err
	}
	m := root.Content[0]
	for i, k := range path {
		j := find(m, k)
		last := i == len(path)-1
		switch {
		case j < 0 && last:
			m.Content = append(m.Content, str(k), &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"})
			j = len(m.Content) - 2
		case j < 0:
			m.Content = append(m.Content, str(k), &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"})
			j = len(m.Content) - 2
		}
		next := m.Content[j+1]
		if last && next.Kind != yaml.SequenceNode {
			if !isNull(next) {
				return nil, fmt.Errorf("%s is not a list", strings.Join(path, "."))
			}
			next = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			m.Content[j+1] = next
		}
		if !last && next.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s is not a mapping", strings.Join(path[:i+1], "."))
		}
		m = next
	}
	for i, it := range m.Content {
		if k := find(it, key); it.Kind == yaml.MappingNode && k >= 0 && it.Content[k+1].Value == want {
			m.Content[i] = merge(it, v, true)
			return encode(root)
		}
	}
	m.Content = append(m.Content, merge(nil, v, true))
	if m.Style == yaml.FlowStyle && hasBlockScalar(m) {
		m.Style = 0
	}
	return encode(root)
}
