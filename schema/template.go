package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
)

// Template is a golden n8n workflow (seed 3.5): workflow JSON whose credential
// references are placeholders such as TEMPLATE_GMAIL_UUID, replaced by the
// real n8n credential ids on each droplet (the Dynamic UUID Mapper), and whose
// strings may hold {{param.NAME}} markers filled from the tenant's params.
type Template struct {
	Name string
	// Placeholders maps each placeholder to the n8n credential type it is
	// used as ("" when it only appears outside a node's credentials).
	Placeholders map[string]string
	// Params lists the {{param.NAME}} markers, sorted.
	Params []string

	raw []byte
}

var (
	placeholderRef = regexp.MustCompile(`TEMPLATE_[A-Z0-9_]+_UUID`)
	paramRef       = regexp.MustCompile(`\{\{param\.([A-Za-z][A-Za-z0-9_]*)\}\}`)
)

// Source is the template file's content as parsed (shared: do not modify).
func (t *Template) Source() []byte { return t.raw }

// ParseTemplate reads templates/workflows/<name>.json. The workflow must be a
// JSON object with name, nodes and connections; a placeholder used as two
// different credential types is an error.
func ParseTemplate(file, name string, data []byte) (*Template, Errors) {
	c := &errorf{file: file}
	if len(data) > MaxFileSize {
		c.at(Pos{}, "file is %d bytes, larger than the %d-byte limit", len(data), MaxFileSize)
		return nil, c.errs
	}
	if !itemName.MatchString(name) {
		c.at(Pos{}, "template name %q %s", name, itemNameWant)
	}
	var wf struct {
		Name        *string           `json:"name"`
		Nodes       []json.RawMessage `json:"nodes"`
		Connections map[string]any    `json:"connections"`
	}
	if err := json.Unmarshal(data, &wf); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			c.at(offsetPos(data, se.Offset-1), "invalid JSON: %v", err)
		case errors.As(err, &te) && te.Field == "":
			c.at(offsetPos(data, te.Offset-1), "the workflow must be a JSON object, not %s", te.Value)
		case errors.As(err, &te):
			c.at(offsetPos(data, te.Offset-1), "%s: wrong type %s", te.Field, te.Value)
		default:
			c.at(Pos{}, "invalid JSON: %v", err)
		}
		return nil, c.errs
	}
	switch {
	case wf.Name == nil || *wf.Name == "":
		c.at(Pos{1, 1}, "workflow name is required")
	case wf.Nodes == nil:
		c.at(Pos{1, 1}, "workflow nodes are required")
	case wf.Connections == nil:
		c.at(Pos{1, 1}, "workflow connections are required")
	}
	t := &Template{Name: name, Placeholders: map[string]string{}, raw: data}
	for _, raw := range wf.Nodes {
		var node struct {
			Name        string `json:"name"`
			Credentials map[string]struct {
				ID any `json:"id"`
			} `json:"credentials"`
		}
		if err := json.Unmarshal(raw, &node); err != nil {
			c.at(Pos{1, 1}, "node: %v", err)
			continue
		}
		for _, typ := range sortedKeys(node.Credentials) {
			id, _ := node.Credentials[typ].ID.(string)
			if !placeholderName.MatchString(id) {
				continue
			}
			if prev, ok := t.Placeholders[id]; ok && prev != typ {
				c.at(offsetPos(data, int64(bytes.LastIndex(data, []byte(id)))),
					"placeholder %s is used as credential type %s and as %s", id, prev, typ)
			}
			t.Placeholders[id] = typ
		}
	}
	for _, ph := range placeholderRef.FindAll(data, -1) {
		if _, ok := t.Placeholders[string(ph)]; !ok {
			t.Placeholders[string(ph)] = ""
		}
	}
	params := map[string]bool{}
	for _, m := range paramRef.FindAllSubmatch(data, -1) {
		params[string(m[1])] = true
	}
	t.Params = sortedKeys(params)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return t, nil
}

// Render returns the workflow JSON with every placeholder replaced by the
// credential id in ids and every {{param.NAME}} marker by its value, escaped
// for a JSON string. A placeholder or parameter without a value is an error.
func (t *Template) Render(ids, params map[string]string) ([]byte, error) {
	var missing []string
	out := placeholderRef.ReplaceAllFunc(t.raw, func(ph []byte) []byte {
		id, ok := ids[string(ph)]
		if !ok {
			missing = append(missing, string(ph))
			return ph
		}
		return jsonStringBody(id)
	})
	out = paramRef.ReplaceAllFunc(out, func(m []byte) []byte {
		name := string(paramRef.FindSubmatch(m)[1])
		v, ok := params[name]
		if !ok {
			missing = append(missing, "param."+name)
			return m
		}
		return jsonStringBody(v)
	})
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("render template %s: no value for %v", t.Name, missing)
	}
	var compact, buf bytes.Buffer
	if err := json.Compact(&compact, out); err != nil {
		return nil, fmt.Errorf("render template %s: %w", t.Name, err)
	}
	// The canonical form is what encoding/json writes when the result is
	// embedded in a document (json.RawMessage is compacted with <, > and &
	// escaped), so a digest of it matches the bytes on the wire.
	json.HTMLEscape(&buf, compact.Bytes())
	return buf.Bytes(), nil
}

// jsonStringBody is s encoded as the inside of a JSON string (no quotes).
func jsonStringBody(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b := bytes.TrimSpace(buf.Bytes())
	return b[1 : len(b)-1]
}

// offsetPos turns a byte offset into a line and column.
func offsetPos(data []byte, off int64) Pos {
	if off < 0 || off > int64(len(data)) {
		return Pos{1, 1}
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return Pos{Line: line, Col: col}
}
