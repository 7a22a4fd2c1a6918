package n8nemu

import (
	"cmp"
	"encoding/json"
	"slices"
)

// Credential is a stored credential as tests see it, data included.
type Credential struct {
	ID, Name, Type string
	Data           json.RawMessage
}

// Workflow is a stored workflow as tests see it.
type Workflow struct {
	ID, Name    string
	Active      bool
	Nodes       json.RawMessage
	Connections json.RawMessage
	Settings    json.RawMessage
	Tags        []string // tag names
}

// Credentials returns every stored credential.
func (s *Server) Credentials() []Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Credential, 0, len(s.creds))
	for _, c := range s.creds {
		out = append(out, Credential{ID: c.id, Name: c.name, Type: c.typ, Data: slices.Clone(c.data)})
	}
	slices.SortFunc(out, func(a, b Credential) int {
		if a.Name != b.Name {
			return cmp.Compare(a.Name, b.Name)
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// Workflows returns every stored workflow in creation order.
func (s *Server) Workflows() []Workflow {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Workflow, 0, len(s.wfOrder))
	for _, id := range s.wfOrder {
		wf := s.workflows[id]
		w := Workflow{ID: wf.id, Name: wf.body.Name, Active: wf.active, Nodes: slices.Clone(wf.body.Nodes),
			Connections: slices.Clone(wf.body.Connections), Settings: slices.Clone(wf.body.Settings)}
		for _, tid := range wf.tagIDs {
			if t := s.tags[tid]; t != nil {
				w.Tags = append(w.Tags, t.name)
			}
		}
		out = append(out, w)
	}
	return out
}

// OwnerSetUp reports whether the instance owner exists.
func (s *Server) OwnerSetUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner != nil
}
