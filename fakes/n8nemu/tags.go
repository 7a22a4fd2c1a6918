package n8nemu

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
)

type tag struct {
	id, name, createdAt, updatedAt string
}

func (t *tag) json() map[string]any {
	return map[string]any{"id": t.id, "name": t.name, "createdAt": t.createdAt, "updatedAt": t.updatedAt}
}

// tagsJSON renders tags by id, skipping deleted ones. Callers hold s.mu.
func (s *Server) tagsJSON(ids []string) []any {
	out := []any{}
	for _, id := range ids {
		if t := s.tags[id]; t != nil {
			out = append(out, t.json())
		}
	}
	return out
}

func (s *Server) createTag(w http.ResponseWriter, r *http.Request) {
	data, ok := readBody(w, r)
	if !ok {
		return
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		writeJSON(w, http.StatusBadRequest, message("request/body must be object"))
		return
	}
	for k := range fields {
		switch k {
		case "name":
		case "id", "createdAt", "updatedAt":
			writeJSON(w, http.StatusBadRequest, message("request/body/"+k+" is read-only"))
			return
		default:
			writeJSON(w, http.StatusBadRequest, message("request/body must NOT have additional properties"))
			return
		}
	}
	var name string
	if raw, ok := fields["name"]; !ok || json.Unmarshal(raw, &name) != nil {
		writeJSON(w, http.StatusBadRequest, message("request/body must have required property 'name'"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tags {
		if t.name == name {
			writeJSON(w, http.StatusConflict, message("Tag already exists"))
			return
		}
	}
	now := s.stamp()
	t := &tag{id: s.newID(), name: name, createdAt: now, updatedAt: now}
	s.tags[t.id] = t
	s.tagOrder = append(s.tagOrder, t.id)
	writeJSON(w, http.StatusCreated, t.json())
}

func (s *Server) listTags(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var items []any
	for _, id := range s.tagOrder {
		items = append(items, s.tags[id].json())
	}
	page(w, r, items)
}

func (s *Server) getTag(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tags[r.PathValue("id")]
	if t == nil {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	writeJSON(w, http.StatusOK, t.json())
}

func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tags[r.PathValue("id")]
	if t == nil {
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	delete(s.tags, t.id)
	s.tagOrder = slices.DeleteFunc(s.tagOrder, func(id string) bool { return id == t.id })
	for _, wf := range s.workflows {
		wf.tagIDs = slices.DeleteFunc(wf.tagIDs, func(id string) bool { return id == t.id })
	}
	writeJSON(w, http.StatusOK, t.json())
}

// cursor is what the opaque nextCursor encodes.
type cursor struct {
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// page answers one page of items as {data, nextCursor}, with n8n's limit
// (default 100, at most 250) and cursor rules.
func page(w http.ResponseWriter, r *http.Request, items []any) {
	q := r.URL.Query()
	c := cursor{Limit: 100}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			writeJSON(w, http.StatusBadRequest, message("request/query/limit must be number"))
			return
		case n < 1:
			writeJSON(w, http.StatusBadRequest, message("request/query/limit must be >= 1"))
			return
		case n > 250:
			writeJSON(w, http.StatusBadRequest, message("request/query/limit must be <= 250"))
			return
		}
		c.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || json.Unmarshal(raw, &c) != nil || c.Offset < 0 || c.Limit < 1 || c.Limit > 250 {
			writeJSON(w, http.StatusBadRequest, message("An invalid cursor was provided"))
			return
		}
	}
	start := min(c.Offset, len(items))
	end := min(start+c.Limit, len(items))
	var next any
	if end < len(items) {
		raw, _ := json.Marshal(cursor{Offset: end, Limit: c.Limit})
		next = base64.RawURLEncoding.EncodeToString(raw)
	}
	data := items[start:end]
	if data == nil {
		data = []any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data, "nextCursor": next})
}
