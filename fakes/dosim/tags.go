package dosim

import (
	"net/http"
	"strconv"
	"time"
)

// Tags: POST /v2/tags makes a tag; POST and DELETE
// /v2/tags/{tag}/resources tag and untag droplets. As on DigitalOcean, a tag
// must exist (made, or on a resource) before resources are tagged with it,
// tagging twice or untagging a droplet without the tag is a no-op (204),
// and only droplets are supported here (other resource types are refused
// with a 422 naming the field).

// tagResource is one entry of a tag request's resources.
type tagResource struct {
	ID   string `json:"resource_id"`
	Type string `json:"resource_type"`
}

func (s *Sim) createTag(rq *request, w http.ResponseWriter, r *http.Request) {
	var raw struct {
		Name *string `json:"name"`
	}
	if err := decodeJSON(rq.body, &raw); err != nil {
		s.writeError(w, rq, err)
		return
	}
	if raw.Name == nil || *raw.Name == "" {
		s.writeError(w, rq, unprocessable("name is required"))
		return
	}
	name := *raw.Name
	if !validTag(name) {
		s.writeError(w, rq, unprocessable("name %q is invalid: tag names may only contain letters, numbers, colons, dashes and underscores, and be at most 255 characters", truncate(name, 64)))
		return
	}
	count := 0
	_ = s.update(func(time.Time) error {
		s.keepTagLocked(rq.account, name)
		count = s.tagCountLocked(rq.account, name)
		s.dirty = true
		return nil
	})
	writeJSON(w, http.StatusCreated, map[string]any{"tag": map[string]any{"name": name, "resources": map[string]any{
		"count": count, "droplets": map[string]any{"count": count}}}})
}

// keepTagLocked records that the account has tag (a tag outlives its last
// resource, as on DigitalOcean).
func (s *Sim) keepTagLocked(account, tag string) {
	if s.st.Tags == nil {
		s.st.Tags = map[string]map[string]bool{}
	}
	if s.st.Tags[account] == nil {
		s.st.Tags[account] = map[string]bool{}
	}
	s.st.Tags[account][tag] = true
}

// tagCountLocked counts the account's droplets carrying tag.
func (s *Sim) tagCountLocked(account, tag string) int {
	n := 0
	for _, d := range s.st.Droplets {
		if d.Account == account && hasTag(d.Tags, tag) {
			n++
		}
	}
	return n
}

// tagExistsLocked reports whether the account has tag: made with POST
// /v2/tags or on one of its droplets.
func (s *Sim) tagExistsLocked(account, tag string) bool {
	return s.st.Tags[account][tag] || s.tagCountLocked(account, tag) > 0
}

// decodeTagResources reads a tag request body (outside input: fuzzed).
func decodeTagResources(body []byte) ([]int, *apiError) {
	var raw struct {
		Resources *[]tagResource `json:"resources"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return nil, err
	}
	if raw.Resources == nil || len(*raw.Resources) == 0 {
		return nil, unprocessable("resources is required")
	}
	if len(*raw.Resources) > 50 {
		return nil, unprocessable("resources: at most 50 per request")
	}
	var ids []int
	for i, res := range *raw.Resources {
		if res.Type != "droplet" {
			return nil, unprocessable("resources[%d].resource_type %q is not supported by the simulator (supported: droplet)", i, truncate(res.Type, 32))
		}
		id, err := strconv.Atoi(res.ID)
		if err != nil || id <= 0 || strconv.Itoa(id) != res.ID {
			return nil, unprocessable("resources[%d].resource_id %q is not a droplet id", i, truncate(res.ID, 32))
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (s *Sim) tagResources(rq *request, w http.ResponseWriter, r *http.Request) {
	s.changeTag(rq, w, r, true)
}

func (s *Sim) untagResources(rq *request, w http.ResponseWriter, r *http.Request) {
	s.changeTag(rq, w, r, false)
}

func (s *Sim) changeTag(rq *request, w http.ResponseWriter, r *http.Request, add bool) {
	tag := r.PathValue("tag_id")
	if !validTag(tag) {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	ids, derr := decodeTagResources(rq.body)
	if derr != nil {
		s.writeError(w, rq, derr)
		return
	}
	err := s.update(func(time.Time) error {
		if !s.tagExistsLocked(rq.account, tag) {
			return errorFor(http.StatusNotFound, "")
		}
		s.keepTagLocked(rq.account, tag)
		for _, id := range ids {
			if d := s.st.Droplets[id]; d == nil || d.Account != rq.account {
				return errorFor(http.StatusNotFound, "")
			}
		}
		for _, id := range ids {
			d := s.st.Droplets[id]
			switch {
			case add && !hasTag(d.Tags, tag):
				d.Tags = append(d.Tags, tag)
			case !add:
				keep := d.Tags[:0:0]
				for _, t := range d.Tags {
					if t != tag {
						keep = append(keep, t)
					}
				}
				d.Tags = keep
			}
		}
		s.dirty = true
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNoContent)
}
