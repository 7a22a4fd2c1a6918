package n8nemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// workflowBody is a validated POST/PUT /api/v1/workflows body.
type workflowBody struct {
	Name        string
	Nodes       json.RawMessage // a JSON array of node objects
	Connections json.RawMessage // a JSON object
	Settings    json.RawMessage // a JSON object
	StaticData  json.RawMessage // an object, a string or null; nil when absent
	nodes       []node
}

type node struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Disabled   bool           `json:"disabled"`
	WebhookID  string         `json:"webhookId"`
	Parameters map[string]any `json:"parameters"`
}

// The public API's workflow schema in 1.123: writable fields, read-only
// fields, and the fields of a node and of settings. Read-only tables.
var (
	workflowWritable = []string{"name", "nodes", "connections", "settings", "staticData"}
	workflowReadOnly = []string{"id", "active", "createdAt", "updatedAt", "tags", "meta", "versionId", "isArchived", "triggerCount", "shared"}
	workflowRequired = []string{"name", "nodes", "connections", "settings"}
	nodeFields       = map[string]string{
		"id": "string", "name": "string", "webhookId": "string", "disabled": "boolean",
		"notesInFlow": "boolean", "notes": "string", "type": "string", "typeVersion": "number",
		"executeOnce": "boolean", "alwaysOutputData": "boolean", "retryOnFail": "boolean",
		"maxTries": "number", "waitBetweenTries": "number", "continueOnFail": "boolean",
		"onError": "string", "position": "array", "parameters": "object", "credentials": "object",
	}
	nodeReadOnly   = []string{"createdAt", "updatedAt"}
	settingsFields = map[string]string{
		"saveExecutionProgress": "boolean", "saveManualExecutions": "boolean",
		"saveDataErrorExecution": "string", "saveDataSuccessExecution": "string",
		"executionTimeout": "number", "errorWorkflow": "string", "timezone": "string",
		"executionOrder": "string", "callerPolicy": "string", "callerIds": "string",
		"timeSavedPerExecution": "number", "availableInMCP": "boolean",
	}
	settingsEnums = map[string][]string{
		"saveDataErrorExecution":   {"all", "none"},
		"saveDataSuccessExecution": {"all", "none"},
		"callerPolicy":             {"any", "none", "workflowsFromAList", "workflowsFromSameOwner"},
	}
)

// jsonType names the JSON type of a raw value the way JSON Schema does.
func jsonType(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return ""
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// decodeWorkflow validates a workflow body the way n8n's OpenAPI validator
// does and returns its message (errors joined with ", ") when it fails.
func decodeWorkflow(data []byte) (workflowBody, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return workflowBody{}, fmt.Errorf("request/body must be object")
	}
	var errs []string
	extra := false
	for k := range fields {
		switch {
		case slices.Contains(workflowWritable, k):
		case slices.Contains(workflowReadOnly, k):
			errs = append(errs, "request/body/"+k+" is read-only")
		default:
			extra = true
		}
	}
	if extra {
		errs = append(errs, "request/body must NOT have additional properties")
	}
	for _, k := range workflowRequired {
		if _, ok := fields[k]; !ok {
			errs = append(errs, "request/body must have required property '"+k+"'")
		}
	}
	want := map[string]string{"name": "string", "nodes": "array", "connections": "object", "settings": "object"}
	for k, typ := range want {
		if v, ok := fields[k]; ok && jsonType(v) != typ {
			errs = append(errs, "request/body/"+k+" must be "+typ)
		}
	}
	if v, ok := fields["staticData"]; ok {
		if t := jsonType(v); t != "object" && t != "string" && t != "null" {
			// One entry: n8n lists the anyOf's branches in this order.
			errs = append(errs, "request/body/staticData must be string, request/body/staticData must be object, "+
				"request/body/staticData must match a schema in anyOf")
		}
	}
	var wb workflowBody
	if v, ok := fields["nodes"]; ok && jsonType(v) == "array" {
		var nodes []json.RawMessage
		if err := json.Unmarshal(v, &nodes); err != nil {
			errs = append(errs, "request/body/nodes must be array")
		}
		for i, n := range nodes {
			errs = append(errs, checkObject(fmt.Sprintf("request/body/nodes/%d", i), n, nodeFields, nodeReadOnly, nil)...)
			var nd node
			if jsonType(n) == "object" {
				_ = json.Unmarshal(n, &nd) // type errors are reported by checkObject
			}
			wb.nodes = append(wb.nodes, nd)
		}
	}
	if v, ok := fields["settings"]; ok && jsonType(v) == "object" {
		errs = append(errs, checkObject("request/body/settings", v, settingsFields, nil, settingsEnums)...)
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		errs = slices.Compact(errs)
		return workflowBody{}, fmt.Errorf("%s", strings.Join(errs, ", "))
	}
	_ = json.Unmarshal(fields["name"], &wb.Name)
	wb.Nodes = compact(fields["nodes"])
	wb.Connections = compact(fields["connections"])
	wb.Settings = withSettingsDefaults(compact(fields["settings"]))
	if v, ok := fields["staticData"]; ok {
		wb.StaticData = compact(v)
	}
	return wb, nil
}

// settingsDefaults are the settings n8n 1.123 stores when a body leaves
// them out (and returns on every read).
var settingsDefaults = map[string]any{"callerPolicy": "workflowsFromSameOwner", "availableInMCP": false}

func withSettingsDefaults(v json.RawMessage) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(v, &m) != nil || m == nil {
		return v
	}
	for k, d := range settingsDefaults {
		if _, ok := m[k]; !ok {
			m[k] = d
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return v
	}
	return out
}

func compact(v json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return slices.Clone(v)
	}
	return b.Bytes()
}

// checkObject validates an object against a closed list of typed fields.
func checkObject(at string, v json.RawMessage, fields map[string]string, readOnly []string, enums map[string][]string) []string {
	if jsonType(v) != "object" {
		return []string{at + " must be object"}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return []string{at + " must be object"}
	}
	var errs []string
	for k, fv := range m {
		typ, known := fields[k]
		switch {
		case slices.Contains(readOnly, k):
			errs = append(errs, at+"/"+k+" is read-only")
		case !known:
			errs = append(errs, at+" must NOT have additional properties")
		case jsonType(fv) != typ:
			errs = append(errs, at+"/"+k+" must be "+typ)
		case enums[k] != nil:
			var s string
			_ = json.Unmarshal(fv, &s)
			if !slices.Contains(enums[k], s) {
				errs = append(errs, at+"/"+k+" must be equal to one of the allowed values: "+strings.Join(enums[k], ", "))
			}
		case k == "position":
			var p []json.RawMessage
			_ = json.Unmarshal(fv, &p)
			for i, e := range p {
				if jsonType(e) != "number" {
					errs = append(errs, fmt.Sprintf("%s/position/%d must be number", at, i))
				}
			}
		}
	}
	return errs
}

// workflow is a stored workflow.
type workflow struct {
	id        string
	body      workflowBody
	active    bool
	createdAt string
	updatedAt string
	versionID string
	tagIDs    []string
}

// hasTrigger reports whether an enabled node can start the workflow.
func (b workflowBody) hasTrigger() bool {
	for _, n := range b.nodes {
		if n.Disabled {
			continue
		}
		t := strings.ToLower(n.Type)
		if strings.HasSuffix(t, "trigger") || strings.HasSuffix(t, ".webhook") || strings.HasSuffix(t, ".formtrigger") {
			return true
		}
	}
	return false
}

// webhooks returns "METHOD path" for each enabled webhook node. A path with a
// :parameter is registered under the node's webhookId, as n8n does.
func (b workflowBody) webhooks() []string {
	keys, _ := b.webhookNodes()
	return keys
}

// webhookNodes is webhooks with the name of each key's node.
func (b workflowBody) webhookNodes() (keys, names []string) {
	for _, n := range b.nodes {
		if n.Disabled || !strings.HasSuffix(strings.ToLower(n.Type), ".webhook") {
			continue
		}
		path, _ := n.Parameters["path"].(string)
		method, _ := n.Parameters["httpMethod"].(string)
		if method == "" {
			method = "GET"
		}
		path = strings.Trim(path, "/")
		if strings.Contains(path, ":") {
			path = n.WebhookID + "/" + path
		}
		keys = append(keys, strings.ToUpper(method)+" "+path)
		names = append(names, n.Name)
	}
	return keys, names
}

// json renders a workflow the way the public API does. Callers hold s.mu.
func (s *Server) workflowJSON(wf *workflow) map[string]any {
	static := wf.body.StaticData
	if static == nil {
		static = json.RawMessage("null")
	}
	return map[string]any{
		"id": wf.id, "name": wf.body.Name, "active": wf.active, "isArchived": false,
		"createdAt": wf.createdAt, "updatedAt": wf.updatedAt, "versionId": wf.versionID,
		"nodes": wf.body.Nodes, "connections": wf.body.Connections, "settings": wf.body.Settings,
		"staticData": static, "meta": nil, "pinData": map[string]any{}, "triggerCount": s.triggerCount(wf),
		"tags": s.tagsJSON(wf.tagIDs),
	}
}

func (s *Server) triggerCount(wf *workflow) int {
	if !wf.active {
		return 0
	}
	return 1
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, message("request entity too large"))
		return nil, false
	}
	return data, true
}

func (s *Server) createWorkflow(w http.ResponseWriter, r *http.Request) {
	data, ok := readBody(w, r)
	if !ok {
		return
	}
	body, err := decodeWorkflow(data)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, message(err.Error()))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.stamp()
	wf := &workflow{id: s.newID(), body: body, createdAt: now, updatedAt: now, versionID: s.newUUID()}
	s.workflows[wf.id] = wf
	s.wfOrder = append(s.wfOrder, wf.id)
	writeJSON(w, http.StatusOK, s.workflowJSON(wf))
}

// lookup finds a workflow by the {id} path value or answers 404. Callers hold s.mu.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) *workflow {
	wf := s.workflows[r.PathValue("id")]
	if wf == nil {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
	}
	return wf
}

func (s *Server) getWorkflow(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if wf := s.lookup(w, r); wf != nil {
		writeJSON(w, http.StatusOK, s.workflowJSON(wf))
	}
}

func (s *Server) putWorkflow(w http.ResponseWriter, r *http.Request) {
	data, ok := readBody(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wf := s.lookup(w, r)
	if wf == nil {
		return
	}
	body, err := decodeWorkflow(data)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, message(err.Error()))
		return
	}
	if wf.active {
		// An active workflow is re-activated with its new version.
		if msg := s.activationProblem(wf.id, body); msg != "" {
			writeJSON(w, http.StatusBadRequest, message(msg))
			return
		}
	}
	wf.body = body
	wf.updatedAt = s.stamp()
	wf.versionID = s.newUUID()
	writeJSON(w, http.StatusOK, s.workflowJSON(wf))
}

func (s *Server) deleteWorkflow(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wf := s.lookup(w, r)
	if wf == nil {
		return
	}
	delete(s.workflows, wf.id)
	s.wfOrder = slices.DeleteFunc(s.wfOrder, func(id string) bool { return id == wf.id })
	writeJSON(w, http.StatusOK, s.workflowJSON(wf))
}

// activationProblem says why body can't be active as workflow id, or "".
// Callers hold s.mu.
func (s *Server) activationProblem(id string, body workflowBody) string {
	if !body.hasTrigger() {
		return fmt.Sprintf("Workflow %q (ID: %s) has no node to start the workflow - at least one trigger, poller or webhook node is required", body.Name, id)
	}
	mine, names := body.webhookNodes()
	for _, other := range s.workflows {
		if other.id == id || !other.active {
			continue
		}
		for _, hook := range other.body.webhooks() {
			if i := slices.Index(mine, hook); i >= 0 {
				return fmt.Sprintf("The URL path that the %q node uses is already taken. Please change it to something else.", names[i])
			}
		}
	}
	return ""
}

func (s *Server) activateWorkflow(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wf := s.lookup(w, r)
	if wf == nil {
		return
	}
	if !wf.active {
		if msg := s.activationProblem(wf.id, wf.body); msg != "" {
			writeJSON(w, http.StatusBadRequest, message(msg))
			return
		}
		wf.active = true
	}
	writeJSON(w, http.StatusOK, s.workflowJSON(wf))
}

func (s *Server) deactivateWorkflow(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wf := s.lookup(w, r)
	if wf == nil {
		return
	}
	wf.active = false
	writeJSON(w, http.StatusOK, s.workflowJSON(wf))
}

func (s *Server) listWorkflows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	var tagNames []string
	if v := q.Get("tags"); v != "" {
		for _, n := range strings.Split(v, ",") {
			tagNames = append(tagNames, strings.TrimSpace(n))
		}
	}
	var match []any
	for _, id := range s.wfOrder {
		wf := s.workflows[id]
		if v := q.Get("name"); v != "" && wf.body.Name != v {
			continue
		}
		if v := q.Get("active"); v != "" && (v == "true") != wf.active {
			continue
		}
		if len(tagNames) > 0 && !s.hasAnyTag(wf, tagNames) {
			continue
		}
		match = append(match, s.workflowJSON(wf))
	}
	page(w, r, match)
}

func (s *Server) hasAnyTag(wf *workflow, names []string) bool {
	for _, id := range wf.tagIDs {
		if t := s.tags[id]; t != nil && slices.Contains(names, t.name) {
			return true
		}
	}
	return false
}

func (s *Server) getWorkflowTags(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if wf := s.lookup(w, r); wf != nil {
		writeJSON(w, http.StatusOK, s.tagsJSON(wf.tagIDs))
	}
}

func (s *Server) putWorkflowTags(w http.ResponseWriter, r *http.Request) {
	data, ok := readBody(w, r)
	if !ok {
		return
	}
	var body []map[string]json.RawMessage
	if err := json.Unmarshal(data, &body); err != nil || body == nil {
		writeJSON(w, http.StatusBadRequest, message("request/body must be array"))
		return
	}
	var ids []string
	for i, item := range body {
		raw, ok := item["id"]
		var id string
		if !ok || json.Unmarshal(raw, &id) != nil {
			writeJSON(w, http.StatusBadRequest, message(fmt.Sprintf("request/body/%d must have required property 'id'", i)))
			return
		}
		if len(item) != 1 {
			writeJSON(w, http.StatusBadRequest, message(fmt.Sprintf("request/body/%d must NOT have additional properties", i)))
			return
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wf := s.lookup(w, r)
	if wf == nil {
		return
	}
	for _, id := range ids {
		if s.tags[id] == nil {
			writeJSON(w, http.StatusNotFound, message("Some tags not found"))
			return
		}
	}
	wf.tagIDs = ids
	wf.updatedAt = s.stamp()
	writeJSON(w, http.StatusOK, s.tagsJSON(ids))
}

// newUUID returns a random version-4 style UUID. Callers hold s.mu.
func (s *Server) newUUID() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(s.rnd.UintN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
