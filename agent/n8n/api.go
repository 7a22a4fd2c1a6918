package n8n

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const api = "/api/v1"

// NewCredential is a credential to create. Data is its plaintext JSON object:
// it is sent to n8n and never printed or logged.
type NewCredential struct {
	Name string
	Type string // an n8n credential type, e.g. "gmailOAuth2"
	Data json.RawMessage
}

// String hides Data.
func (n NewCredential) String() string {
	return fmt.Sprintf("credential %q (%s, data redacted)", n.Name, n.Type)
}

// GoString hides Data from %#v.
func (n NewCredential) GoString() string { return n.String() }

// LogValue hides Data from slog.
func (n NewCredential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", n.Name), slog.String("type", n.Type))
}

// Credential is a credential n8n holds (n8n never returns its data).
type Credential struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// CredentialSchema returns the JSON schema n8n checks a credential type's
// data against; a 404 *Error for a type n8n doesn't know.
func (c *Client) CredentialSchema(ctx context.Context, credentialType string) (json.RawMessage, error) {
	var out json.RawMessage
	_, err := c.call(ctx, request{method: http.MethodGet, path: api + "/credentials/schema/" + url.PathEscape(credentialType), public: true}, &out)
	return out, err
}

// CreateCredential creates a credential; n8n chooses its id. Names need not
// be unique.
func (c *Client) CreateCredential(ctx context.Context, cred NewCredential) (Credential, error) {
	body := map[string]any{"name": cred.Name, "type": cred.Type, "data": cred.Data}
	var out Credential
	_, err := c.call(ctx, request{method: http.MethodPost, path: api + "/credentials", body: body, public: true}, &out)
	if err == nil && out.ID == "" {
		err = fmt.Errorf("n8n: POST %s/credentials: no id in the answer", api)
	}
	return out, err
}

// DeleteCredential deletes a credential. Workflows still using it break at
// run time, so repoint them first.
func (c *Client) DeleteCredential(ctx context.Context, id string) error {
	_, err := c.call(ctx, request{method: http.MethodDelete, path: api + "/credentials/" + url.PathEscape(id), public: true}, nil)
	return err
}

// WorkflowSpec is the writable part of a workflow: what create and update
// send. Nodes, Connections, Settings and StaticData are raw JSON; empty ones
// are sent as [], {}, {} and left out.
type WorkflowSpec struct {
	Name        string          `json:"name"`
	Nodes       json.RawMessage `json:"nodes"`
	Connections json.RawMessage `json:"connections"`
	Settings    json.RawMessage `json:"settings"`
	StaticData  json.RawMessage `json:"staticData,omitempty"`
}

func (s WorkflowSpec) body() WorkflowSpec {
	if len(s.Nodes) == 0 {
		s.Nodes = json.RawMessage("[]")
	}
	if len(s.Connections) == 0 {
		s.Connections = json.RawMessage("{}")
	}
	if len(s.Settings) == 0 {
		s.Settings = json.RawMessage("{}")
	}
	return s
}

// SpecFromExport keeps the writable fields of a workflow as the n8n UI
// exports it (which carries id, active, tags, meta, pinData, versionId, ...
// that the public API refuses).
func SpecFromExport(data []byte) (WorkflowSpec, error) {
	var s WorkflowSpec
	if err := json.Unmarshal(data, &s); err != nil {
		return WorkflowSpec{}, fmt.Errorf("workflow export: %w", err)
	}
	if s.Name == "" {
		return WorkflowSpec{}, fmt.Errorf("workflow export: no name")
	}
	if string(s.StaticData) == "null" {
		s.StaticData = nil
	}
	return s, nil
}

// Tag is an n8n tag.
type Tag struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Workflow is a workflow as n8n returns it.
type Workflow struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Active      bool            `json:"active"`
	VersionID   string          `json:"versionId"`
	Nodes       json.RawMessage `json:"nodes"`
	Connections json.RawMessage `json:"connections"`
	Settings    json.RawMessage `json:"settings"`
	StaticData  json.RawMessage `json:"staticData"`
	Tags        []Tag           `json:"tags"`
	CreatedAt   time.Time       `json:"createdAt"`
	UpdatedAt   time.Time       `json:"updatedAt"`
}

func (c *Client) workflowCall(ctx context.Context, method, path string, body any) (Workflow, error) {
	var out Workflow
	_, err := c.call(ctx, request{method: method, path: path, body: body, public: true}, &out)
	if err == nil && out.ID == "" {
		err = fmt.Errorf("n8n: %s %s: no id in the answer", method, path)
	}
	return out, err
}

func workflowPath(id string) string { return api + "/workflows/" + url.PathEscape(id) }

// CreateWorkflow creates an inactive workflow.
func (c *Client) CreateWorkflow(ctx context.Context, spec WorkflowSpec) (Workflow, error) {
	return c.workflowCall(ctx, http.MethodPost, api+"/workflows", spec.body())
}

// GetWorkflow returns a workflow; a 404 *Error when it doesn't exist.
func (c *Client) GetWorkflow(ctx context.Context, id string) (Workflow, error) {
	return c.workflowCall(ctx, http.MethodGet, workflowPath(id), nil)
}

// UpdateWorkflow replaces a workflow with spec. An active workflow stays
// active with the new version.
func (c *Client) UpdateWorkflow(ctx context.Context, id string, spec WorkflowSpec) (Workflow, error) {
	return c.workflowCall(ctx, http.MethodPut, workflowPath(id), spec.body())
}

// DeleteWorkflow deletes a workflow (deactivating it first if active).
func (c *Client) DeleteWorkflow(ctx context.Context, id string) error {
	_, err := c.workflowCall(ctx, http.MethodDelete, workflowPath(id), nil)
	return err
}

// ActivateWorkflow activates a workflow; activating an active one is a no-op
// on n8n's side (but still a write request).
func (c *Client) ActivateWorkflow(ctx context.Context, id string) (Workflow, error) {
	return c.workflowCall(ctx, http.MethodPost, workflowPath(id)+"/activate", nil)
}

// DeactivateWorkflow deactivates a workflow; idempotent.
func (c *Client) DeactivateWorkflow(ctx context.Context, id string) (Workflow, error) {
	return c.workflowCall(ctx, http.MethodPost, workflowPath(id)+"/deactivate", nil)
}

// WorkflowFilter narrows ListWorkflows. The zero value lists everything.
type WorkflowFilter struct {
	Tags     []string // workflows with any of these tag names
	Name     string
	Active   *bool
	PageSize int // per request, 1–250; default 250
}

// maxPages stops a listing whose cursor never ends.
const maxPages = 10_000

// ListWorkflows returns every workflow matching f, following n8n's cursor.
func (c *Client) ListWorkflows(ctx context.Context, f WorkflowFilter) ([]Workflow, error) {
	q := url.Values{}
	if len(f.Tags) > 0 {
		q.Set("tags", strings.Join(f.Tags, ","))
	}
	if f.Name != "" {
		q.Set("name", f.Name)
	}
	if f.Active != nil {
		q.Set("active", strconv.FormatBool(*f.Active))
	}
	return list[Workflow](ctx, c, api+"/workflows", q, f.PageSize)
}

// list follows a public API listing's cursor to its end.
func list[T any](ctx context.Context, c *Client, path string, q url.Values, pageSize int) ([]T, error) {
	if pageSize <= 0 || pageSize > 250 {
		pageSize = 250
	}
	q.Set("limit", strconv.Itoa(pageSize))
	var all []T
	seen := map[string]bool{}
	for range maxPages {
		var page struct {
			Data       []T     `json:"data"`
			NextCursor *string `json:"nextCursor"`
		}
		if _, err := c.call(ctx, request{method: http.MethodGet, path: path, query: q, public: true}, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Data...)
		if page.NextCursor == nil || *page.NextCursor == "" {
			return all, nil
		}
		if seen[*page.NextCursor] {
			return nil, fmt.Errorf("n8n: GET %s: cursor repeats", path)
		}
		seen[*page.NextCursor] = true
		q.Set("cursor", *page.NextCursor)
	}
	return nil, fmt.Errorf("n8n: GET %s: more than %d pages", path, maxPages)
}

// CreateTag creates a tag; a 409 *Error when the name exists.
func (c *Client) CreateTag(ctx context.Context, name string) (Tag, error) {
	var out Tag
	_, err := c.call(ctx, request{method: http.MethodPost, path: api + "/tags", body: map[string]string{"name": name}, public: true}, &out)
	return out, err
}

// ListTags returns every tag.
func (c *Client) ListTags(ctx context.Context) ([]Tag, error) {
	return list[Tag](ctx, c, api+"/tags", url.Values{}, 0)
}

// EnsureTag returns the tag named name, creating it when missing. It writes
// only when the tag doesn't exist.
func (c *Client) EnsureTag(ctx context.Context, name string) (Tag, error) {
	find := func() (Tag, bool, error) {
		tags, err := c.ListTags(ctx)
		if err != nil {
			return Tag{}, false, err
		}
		for _, t := range tags {
			if t.Name == name {
				return t, true, nil
			}
		}
		return Tag{}, false, nil
	}
	if t, ok, err := find(); err != nil || ok {
		return t, err
	}
	t, err := c.CreateTag(ctx, name)
	if StatusOf(err) == http.StatusConflict {
		// Someone created it between the listing and the create.
		if t, ok, ferr := find(); ferr == nil && ok {
			return t, nil
		}
	}
	return t, err
}

// SetWorkflowTags replaces a workflow's tags with the tags whose ids are
// given and returns them.
func (c *Client) SetWorkflowTags(ctx context.Context, workflowID string, tagIDs []string) ([]Tag, error) {
	body := make([]map[string]string, 0, len(tagIDs))
	for _, id := range tagIDs {
		body = append(body, map[string]string{"id": id})
	}
	var out []Tag
	_, err := c.call(ctx, request{method: http.MethodPut, path: workflowPath(workflowID) + "/tags", body: body, public: true}, &out)
	return out, err
}

// LastExecution returns when n8n's newest execution started, from GET
// /api/v1/executions?limit=1 (newest first); the zero time when there is
// none.
func (c *Client) LastExecution(ctx context.Context) (time.Time, error) {
	var out struct {
		Data []struct {
			StartedAt time.Time `json:"startedAt"`
		} `json:"data"`
	}
	q := url.Values{"limit": {"1"}}
	if _, err := c.call(ctx, request{method: http.MethodGet, path: api + "/executions", query: q, public: true}, &out); err != nil {
		return time.Time{}, err
	}
	if len(out.Data) == 0 {
		return time.Time{}, nil
	}
	return out.Data[0].StartedAt, nil
}

// CallWebhook sends body (JSON) to n8n's production webhook method path
// (/webhook/<path>), starting the workflow whose webhook node serves it,
// and returns an error unless n8n answers 2xx.
func (c *Client) CallWebhook(ctx context.Context, method, path string, body any) error {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	_, err := c.do(ctx, request{method: strings.ToUpper(method), path: "/webhook/" + strings.Join(segs, "/"), body: body})
	return err
}
