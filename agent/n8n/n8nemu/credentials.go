package n8nemu

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
)

// credentialType is a small stand-in for n8n's JSON schema of a credential
// type's data: typed properties, some required, nothing else allowed.
type credentialType struct {
	properties map[string]string // name → JSON type
	required   []string
}

// credentialTypes are the types the example state uses.
func credentialTypes(name string) (credentialType, bool) {
	switch name {
	case "gmailOAuth2":
		return credentialType{
			properties: map[string]string{"clientId": "string", "clientSecret": "string", "oauthTokenData": "object", "scope": "string"},
			required:   []string{"clientId", "clientSecret"},
		}, true
	case "openAiApi":
		return credentialType{
			properties: map[string]string{"apiKey": "string", "organizationId": "string", "url": "string"},
			required:   []string{"apiKey"},
		}, true
	case "httpHeaderAuth":
		return credentialType{
			properties: map[string]string{"name": "string", "value": "string"},
			required:   []string{"name", "value"},
		}, true
	case "slackApi":
		return credentialType{
			properties: map[string]string{"accessToken": "string", "signatureSecret": "string"},
			required:   []string{"accessToken"},
		}, true
	}
	return credentialType{}, false
}

func (ct credentialType) schema() map[string]any {
	props := map[string]any{}
	for k, t := range ct.properties {
		props[k] = map[string]string{"type": t}
	}
	return map[string]any{"additionalProperties": false, "type": "object", "properties": props, "required": ct.required}
}

// check validates data with the messages n8n's jsonschema validator gives.
func (ct credentialType) check(data map[string]json.RawMessage) []string {
	var errs []string
	for _, k := range ct.required {
		if _, ok := data[k]; !ok {
			errs = append(errs, `request.body.data requires property "`+k+`"`)
		}
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		typ, ok := ct.properties[k]
		switch {
		case !ok:
			errs = append(errs, `request.body.data is not allowed to have the additional property "`+k+`"`)
		case jsonType(data[k]) != typ:
			errs = append(errs, "request.body.data."+k+" is not of a type(s) "+typ)
		}
	}
	return errs
}

type credential struct {
	id, name, typ, createdAt, updatedAt string
	data                                json.RawMessage
}

func (c *credential) json() map[string]any {
	return map[string]any{"id": c.id, "name": c.name, "type": c.typ, "createdAt": c.createdAt, "updatedAt": c.updatedAt}
}

func (s *Server) credentialSchema(w http.ResponseWriter, r *http.Request) {
	ct, ok := credentialTypes(r.PathValue("type"))
	if !ok {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	writeJSON(w, http.StatusOK, ct.schema())
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
	ct, ok := credentialTypes(typ)
	if !ok {
		writeJSON(w, http.StatusBadRequest, message("req.body.type is not a known type"))
		return
	}
	if errs := ct.check(data); len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, message(strings.Join(errs, ", ")))
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
