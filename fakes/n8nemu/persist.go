package n8nemu

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"
)

// The emulator keeps everything in memory; a process that plays n8n's
// container (fakes/dockersim) saves Export after every write and Imports
// it at start, as n8n keeps its state in its database. Sessions are not
// kept: like n8n's cookies they end with the process.

type persisted struct {
	Owner      *persistedUser        `json:"owner,omitempty"`
	APIKeys    []persistedKey        `json:"api_keys,omitempty"`
	Creds      []persistedCredential `json:"credentials,omitempty"`
	Workflows  []persistedWorkflow   `json:"workflows,omitempty"`
	Tags       []persistedTag        `json:"tags,omitempty"`
	Executions []persistedExecution  `json:"executions,omitempty"`
}

type persistedUser struct {
	ID, Email, FirstName, LastName, Password string
}

type persistedKey struct {
	Key, ID, Label string
	Scopes         []string
}

type persistedCredential struct {
	ID, Name, Type, CreatedAt, UpdatedAt string
	Data                                 json.RawMessage
}

type persistedWorkflow struct {
	ID, Name, CreatedAt, UpdatedAt, VersionID string
	Nodes, Connections, Settings              json.RawMessage
	StaticData                                json.RawMessage `json:",omitempty"`
	Active                                    bool
	TagIDs                                    []string
}

type persistedTag struct {
	ID, Name, CreatedAt, UpdatedAt string
}

type persistedExecution struct {
	ID                   int
	WorkflowID           string
	StartedAt, StoppedAt string
}

// Export returns the emulator's state (owner, API keys, credentials,
// workflows, tags, executions) as JSON, for Import.
func (s *Server) Export() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p persisted
	if s.owner != nil {
		o := s.owner
		p.Owner = &persistedUser{ID: o.id, Email: o.email, FirstName: o.firstName, LastName: o.lastName, Password: o.password}
	}
	for _, raw := range slices.Sorted(maps.Keys(s.apiKeys)) {
		k := s.apiKeys[raw]
		var scopes []string
		for sc := range k.scopes {
			scopes = append(scopes, sc)
		}
		slices.Sort(scopes)
		p.APIKeys = append(p.APIKeys, persistedKey{Key: raw, ID: k.id, Label: k.label, Scopes: scopes})
	}
	for _, id := range slices.Sorted(maps.Keys(s.creds)) {
		c := s.creds[id]
		p.Creds = append(p.Creds, persistedCredential{ID: c.id, Name: c.name, Type: c.typ, CreatedAt: c.createdAt, UpdatedAt: c.updatedAt, Data: c.data})
	}
	for _, id := range s.wfOrder {
		wf, ok := s.workflows[id]
		if !ok {
			continue
		}
		p.Workflows = append(p.Workflows, persistedWorkflow{ID: wf.id, Name: wf.body.Name, CreatedAt: wf.createdAt, UpdatedAt: wf.updatedAt,
			VersionID: wf.versionID, Nodes: wf.body.Nodes, Connections: wf.body.Connections, Settings: wf.body.Settings,
			StaticData: wf.body.StaticData, Active: wf.active, TagIDs: wf.tagIDs})
	}
	for _, id := range s.tagOrder {
		if t, ok := s.tags[id]; ok {
			p.Tags = append(p.Tags, persistedTag{ID: t.id, Name: t.name, CreatedAt: t.createdAt, UpdatedAt: t.updatedAt})
		}
	}
	for _, e := range s.executions {
		p.Executions = append(p.Executions, persistedExecution{ID: e.id, WorkflowID: e.workflowID, StartedAt: e.startedAt, StoppedAt: e.stoppedAt})
	}
	data, _ := json.Marshal(p) // plain data: cannot fail
	return data
}

// Import replaces the emulator's state with one Export returned. Ids chosen
// afterwards come from a fresh random source, so they do not repeat the
// ones before the export.
func (s *Server) Import(data []byte) error {
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("n8nemu: import: %w", err)
	}
	wfs := map[string]*workflow{}
	var order []string
	for _, w := range p.Workflows {
		wf := &workflow{id: w.ID, active: w.Active, createdAt: w.CreatedAt, updatedAt: w.UpdatedAt, versionID: w.VersionID, tagIDs: w.TagIDs,
			body: workflowBody{Name: w.Name, Nodes: w.Nodes, Connections: w.Connections, Settings: w.Settings, StaticData: w.StaticData}}
		if err := json.Unmarshal(w.Nodes, &wf.body.nodes); err != nil {
			return fmt.Errorf("n8nemu: import workflow %s: %w", w.ID, err)
		}
		wfs[w.ID] = wf
		order = append(order, w.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.owner = nil
	if o := p.Owner; o != nil {
		s.owner = &user{id: o.ID, email: o.Email, firstName: o.FirstName, lastName: o.LastName, password: o.Password}
	}
	s.apiKeys = map[string]apiKey{}
	for _, k := range p.APIKeys {
		sc := map[string]bool{}
		for _, x := range k.Scopes {
			sc[x] = true
		}
		s.apiKeys[k.Key] = apiKey{id: k.ID, label: k.Label, scopes: sc}
	}
	s.creds = map[string]*credential{}
	for _, c := range p.Creds {
		s.creds[c.ID] = &credential{id: c.ID, name: c.Name, typ: c.Type, createdAt: c.CreatedAt, updatedAt: c.UpdatedAt, data: c.Data}
	}
	s.workflows, s.wfOrder = wfs, order
	s.tags, s.tagOrder = map[string]*tag{}, nil
	for _, t := range p.Tags {
		s.tags[t.ID] = &tag{id: t.ID, name: t.Name, createdAt: t.CreatedAt, updatedAt: t.UpdatedAt}
		s.tagOrder = append(s.tagOrder, t.ID)
	}
	s.executions = nil
	for _, e := range p.Executions {
		s.executions = append(s.executions, &execution{id: e.ID, workflowID: e.WorkflowID, startedAt: e.StartedAt, stoppedAt: e.StoppedAt})
	}
	seed := uint64(time.Now().UnixNano())
	s.rnd = rand.New(rand.NewPCG(seed, seed^0x6e386e))
	return nil
}
