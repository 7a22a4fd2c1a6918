package n8nemu

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// credentialSchemas are the JSON schemas n8n 1.123.81 serves at GET
// /api/v1/credentials/schema/{type} for the types the example state uses,
// byte for byte. They are n8n's own, quirks included: an "if" on a property
// that is absent holds, so openAiApi wants headerName and headerValue
// unless "header": false, slackApi wants "notice" unless signatureSecret is
// set, and gmailOAuth2 wants serverUrl, clientId, clientSecret,
// sendAdditionalBodyProperties and additionalBodyProperties.
//
//go:embed credtypes/*.json
var credentialSchemas embed.FS

// credentialSchema returns a type's schema as n8n serves it.
func credentialSchemaOf(typ string) ([]byte, bool) {
	if !validType.MatchString(typ) {
		return nil, false
	}
	data, err := credentialSchemas.ReadFile("credtypes/" + typ + ".json")
	return bytes.TrimSpace(data), err == nil
}

var validType = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// schemaNode is the subset of JSON Schema n8n's credential schemas use.
type schemaNode struct {
	Type                 string                 `json:"type"`
	AdditionalProperties *bool                  `json:"additionalProperties"`
	Properties           map[string]*schemaNode `json:"properties"`
	Required             []string               `json:"required"`
	AllOf                []*schemaNode          `json:"allOf"`
	If                   *schemaNode            `json:"if"`
	Then                 *schemaNode            `json:"then"`
	Else                 *schemaNode            `json:"else"`
	Not                  *schemaNode            `json:"not"`
	Enum                 []json.RawMessage      `json:"enum"`
}

// checkCredentialData validates data the way n8n's validator (the npm
// jsonschema package) does and returns its messages in its order, each
// prefixed "request.body.data " as n8n reports them.
func checkCredentialData(schemaJSON []byte, data map[string]json.RawMessage) []string {
	var sc schemaNode
	if err := json.Unmarshal(schemaJSON, &sc); err != nil {
		return []string{"bad schema: " + err.Error()}
	}
	raw, _ := json.Marshal(data)
	errs := sc.validate(raw)
	for i, e := range errs {
		errs[i] = "request.body.data " + e
	}
	return errs
}

// validate returns the npm jsonschema messages for v (without the
// instance prefix): keywords in the order n8n's schemas list them.
func (sc *schemaNode) validate(v json.RawMessage) []string {
	var errs []string
	var obj map[string]json.RawMessage
	isObj := jsonType(v) == "object" && json.Unmarshal(v, &obj) == nil
	if isObj && sc.AdditionalProperties != nil && !*sc.AdditionalProperties {
		keys := slices.Sorted(maps.Keys(obj))
		for _, k := range keys {
			if _, ok := sc.Properties[k]; !ok {
				errs = append(errs, `is not allowed to have the additional property "`+k+`"`)
			}
		}
	}
	switch sc.Type {
	case "string", "boolean", "object", "number", "array":
		if jsonType(v) != sc.Type {
			errs = append(errs, "is not of a type(s) "+sc.Type)
		}
	} // n8n's own types ("json", "notice") accept anything
	if isObj {
		for _, k := range slices.Sorted(maps.Keys(sc.Properties)) {
			if pv, ok := obj[k]; ok {
				errs = append(errs, sc.Properties[k].validate(pv)...)
			}
		}
	}
	if sc.Enum != nil {
		ok := false
		for _, e := range sc.Enum {
			ok = ok || bytes.Equal(compact(e), compact(v))
		}
		if !ok {
			errs = append(errs, "is not one of enum values")
		}
	}
	for i, sub := range sc.AllOf {
		if sub := sub.validate(v); len(sub) > 0 {
			errs = append(errs, fmt.Sprintf("does not match allOf schema [subschema %d] with %d error[s]:", i, len(sub)))
			errs = append(errs, sub...)
		}
	}
	if sc.If != nil {
		if len(sc.If.validate(v)) == 0 {
			if sc.Then != nil {
				errs = append(errs, sc.Then.validate(v)...)
			}
		} else if sc.Else != nil {
			errs = append(errs, sc.Else.validate(v)...)
		}
	}
	if sc.Not != nil && len(sc.Not.validate(v)) == 0 {
		errs = append(errs, "is of prohibited type [object Object]")
	}
	if isObj {
		for _, k := range sc.Required {
			if _, ok := obj[k]; !ok {
				errs = append(errs, `requires property "`+k+`"`)
			}
		}
	}
	return errs
}

type credential struct {
	id, name, typ, createdAt, updatedAt string
	data                                json.RawMessage
}

func (c *credential) json() map[string]any {
	return map[string]any{"id": c.id, "name": c.name, "type": c.typ, "createdAt": c.createdAt, "updatedAt": c.updatedAt,
		"isManaged": false, "isGlobal": false}
}

func (s *Server) credentialSchema(w http.ResponseWriter, r *http.Request) {
	sc, ok := credentialSchemaOf(r.PathValue("type"))
	if !ok {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.Write(sc)
}

func (s *Server) createCredential(w http.ResponseWriter, r *http.Request) {
	raw, ok := readBody(w, r)
	if !ok {
		return
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		writeJSON(w, http.StatusBadRequest, message("request/body must be object"))
		return
	}
	var errs []string
	for k := range fields {
		if !slices.Contains([]string{"name", "type", "data"}, k) {
			if k == "id" || k == "createdAt" || k == "updatedAt" {
				errs = append(errs, "request/body/"+k+" is read-only")
			} else {
				errs = append(errs, "request/body must NOT have additional properties")
			}
		}
	}
	for k, typ := range map[string]string{"name": "string", "type": "string", "data": "object"} {
		v, ok := fields[k]
		switch {
		case !ok:
			errs = append(errs, "request/body must have required property '"+k+"'")
		case jsonType(v) != typ:
			errs = append(errs, "request/body/"+k+" must be "+typ)
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		writeJSON(w, http.StatusBadRequest, message(strings.Join(slices.Compact(errs), ", ")))
		return
	}
	var name, typ string
	var data map[string]json.RawMessage
	_ = json.Unmarshal(fields["name"], &name)
	_ = json.Unmarshal(fields["type"], &typ)
	_ = json.Unmarshal(fields["data"], &data)
	sc, ok := credentialSchemaOf(typ)
	if !ok {
		writeJSON(w, http.StatusBadRequest, message("req.body.type is not a known type"))
		return
	}
	if errs := checkCredentialData(sc, data); len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, message(strings.Join(errs, ",")))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.stamp()
	c := &credential{id: s.newID(), name: name, typ: typ, createdAt: now, updatedAt: now, data: compact(fields["data"])}
	s.creds[c.id] = c
	writeJSON(w, http.StatusOK, c.json())
}

func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.creds[r.PathValue("id")]
	if c == nil {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	// Workflows that use it keep their reference and break at run time.
	delete(s.creds, c.id)
	writeJSON(w, http.StatusOK, c.json())
}

// restCredentials is the UI's listing, GET /rest/credentials: every
// credential without its data, for the owner's session.
func (s *Server) restCredentials(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	for _, c := range s.creds {
		out = append(out, c.json())
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": out})
}
