package dosim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Error ids and messages DigitalOcean answers with.
var defaultMessages = map[int][2]string{
	http.StatusBadRequest:            {"bad_request", "The request could not be understood."},
	http.StatusUnauthorized:          {"Unauthorized", "Unable to authenticate you"},
	http.StatusForbidden:             {"forbidden", "You do not have access for the attempted action."},
	http.StatusNotFound:              {"not_found", "The resource you requested could not be found."},
	http.StatusRequestEntityTooLarge: {"request_entity_too_large", "The request body exceeds 1048576 bytes."},
	http.StatusUnprocessableEntity:   {"unprocessable_entity", "The request could not be processed."},
	http.StatusTooManyRequests:       {"too_many_requests", "API Rate limit exceeded."},
	http.StatusInternalServerError:   {"server_error", "Unexpected server-side error"},
	http.StatusBadGateway:            {"bad_gateway", "Bad gateway."},
	http.StatusServiceUnavailable:    {"service_unavailable", "The service is temporarily unavailable."},
	http.StatusGatewayTimeout:        {"gateway_timeout", "The request timed out."},
}

func errorFor(status int, message string) *apiError {
	def, ok := defaultMessages[status]
	if !ok {
		def = [2]string{strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_"), http.StatusText(status)}
		if def[0] == "" {
			def = [2]string{"error", "error"}
		}
	}
	if message == "" {
		message = def[1]
	}
	return &apiError{status: status, id: def[0], message: message}
}

// request is the per-request context an endpoint handler works with.
type request struct {
	id       string
	account  string
	body     []byte
	truncate bool // a partial_list fault cuts this page
	base     string
}

type ctxKey struct{}

// Handler returns the HTTP handler serving /v2/ (the API) and /_sim/ (the
// control API) at the root.
func (s *Sim) Handler() http.Handler {
	api := http.NewServeMux()
	s.route(api, "GET /v2/account", false, s.getAccount)
	s.route(api, "GET /v2/droplets", true, s.listDroplets)
	s.route(api, "POST /v2/droplets", false, s.createDroplets)
	s.route(api, "DELETE /v2/droplets", false, s.deleteDropletsByTag)
	s.route(api, "GET /v2/droplets/{droplet_id}", false, s.getDroplet)
	s.route(api, "DELETE /v2/droplets/{droplet_id}", false, s.deleteDroplet)
	s.route(api, "GET /v2/droplets/{droplet_id}/actions", true, s.listDropletActions)
	s.route(api, "POST /v2/droplets/{droplet_id}/actions", false, s.postDropletAction)
	s.route(api, "GET /v2/droplets/{droplet_id}/actions/{action_id}", false, s.getDropletAction)
	s.route(api, "GET /v2/actions", true, s.listActions)
	s.route(api, "GET /v2/actions/{action_id}", false, s.getAction)
	s.route(api, "GET /v2/snapshots", true, s.listSnapshots)
	s.route(api, "GET /v2/snapshots/{snapshot_id}", false, s.getSnapshot)
	s.route(api, "DELETE /v2/snapshots/{snapshot_id}", false, s.deleteSnapshot)
	s.route(api, "POST /v2/tags", false, s.createTag)
	s.route(api, "GET /v2/domains", true, s.listDomains)
	s.route(api, "POST /v2/domains", false, s.createDomain)
	s.route(api, "GET /v2/domains/{domain_name}", false, s.getDomain)
	s.route(api, "DELETE /v2/domains/{domain_name}", false, s.deleteDomain)
	s.route(api, "GET /v2/domains/{domain_name}/records", true, s.listRecords)
	s.route(api, "POST /v2/domains/{domain_name}/records", false, s.createRecord)
	s.route(api, "GET /v2/domains/{domain_name}/records/{domain_record_id}", false, s.getRecord)
	s.route(api, "PUT /v2/domains/{domain_name}/records/{domain_record_id}", false, s.updateRecord)
	s.route(api, "PATCH /v2/domains/{domain_name}/records/{domain_record_id}", false, s.updateRecord)
	s.route(api, "DELETE /v2/domains/{domain_name}/records/{domain_record_id}", false, s.deleteRecord)
	s.route(api, "GET /v2/reserved_ips", true, s.listReservedIPs)
	s.route(api, "POST /v2/reserved_ips", false, s.createReservedIP)
	s.route(api, "GET /v2/reserved_ips/{reserved_ip}", false, s.getReservedIP)
	s.route(api, "DELETE /v2/reserved_ips/{reserved_ip}", false, s.deleteReservedIP)
	s.route(api, "POST /v2/reserved_ips/{reserved_ip}/actions", false, s.postReservedIPAction)
	s.route(api, "GET /v2/reserved_ips/{reserved_ip}/actions/{action_id}", false, s.getReservedIPAction)
	s.route(api, "POST /v2/tags/{tag_id}/resources", false, s.tagResources)
	s.route(api, "DELETE /v2/tags/{tag_id}/resources", false, s.untagResources)
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rq := r.Context().Value(ctxKey{}).(*request)
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
	})

	root := http.NewServeMux()
	root.Handle("/_sim/", s.controlHandler())
	root.Handle("/", s.front(api))
	return root
}

// front runs everything that comes before an endpoint: request id, latency,
// authentication and the rate limit.
func (s *Sim) front(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		rq := &request{id: s.requestIDLocked(), base: s.baseURL(r)}
		lim := s.limitsLocked()
		s.mu.Unlock()
		w.Header().Set("X-Request-Id", rq.id)

		if lim.Latency > 0 {
			t := time.NewTimer(lim.Latency.Std())
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if r.URL.Path != "/v2" && !strings.HasPrefix(r.URL.Path, "/v2/") {
			s.setRateHeaders(w, (*window)(nil).peek(s.clock.Now(), lim.RatePerHour))
			s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
			return
		}
		token := bearerToken(r.Header.Get("Authorization"))
		s.mu.Lock()
		now := s.clock.Now()
		name, ok := s.st.tokens[token]
		if token == "" || !ok {
			s.mu.Unlock()
			s.setRateHeaders(w, (*window)(nil).peek(now, lim.RatePerHour))
			s.writeError(w, rq, errorFor(http.StatusUnauthorized, ""))
			return
		}
		rq.account = name
		win := s.windows[token]
		if win == nil {
			win = &window{}
			s.windows[token] = win
		}
		res := win.take(now, lim.RatePerMinute, lim.RatePerHour)
		s.mu.Unlock()
		s.setRateHeaders(w, res)
		if !res.allowed {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(res.retryAfter.Seconds()))))
			s.writeError(w, rq, errorFor(http.StatusTooManyRequests, ""))
			s.log.Info("rate limited", "account", name, "retry_after", res.retryAfter)
			return
		}
		api.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rq)))
	})
}

func bearerToken(h string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

func (s *Sim) setRateHeaders(w http.ResponseWriter, res rateResult) {
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(res.limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(res.remaining))
	h.Set("RateLimit-Reset", strconv.FormatInt(res.reset.Unix(), 10))
}

type endpoint func(rq *request, w http.ResponseWriter, r *http.Request)

// route registers an endpoint behind the fault layer and the body reader.
func (s *Sim) route(mux *http.ServeMux, pattern string, isList bool, h endpoint) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rq := r.Context().Value(ctxKey{}).(*request)
		s.mu.Lock()
		dec := s.pickFaultLocked(r.Method, r.URL.Path, rq.account, isList)
		if dec.kind == "" && s.limits.FaultRate > 0 && s.rng.Float64() < s.limits.FaultRate {
			dec = faultDecision{kind: FaultError, status: http.StatusInternalServerError}
		}
		s.mu.Unlock()
		switch dec.kind {
		case FaultError:
			if ra := dec.retryAfter; ra != nil {
				w.Header().Set("Retry-After", strconv.Itoa(*ra))
			} else if dec.status == http.StatusTooManyRequests || dec.status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "0")
			}
			s.log.Info("injected fault", "route", r.Method+" "+r.URL.Path, "status", dec.status)
			s.writeError(w, rq, errorFor(dec.status, dec.message))
			return
		case FaultTimeout:
			s.log.Info("injected timeout", "route", r.Method+" "+r.URL.Path)
			var hold <-chan time.Time
			if dec.hold > 0 {
				t := time.NewTimer(dec.hold.Std())
				defer t.Stop()
				hold = t.C
			}
			select {
			case <-r.Context().Done():
				return
			case <-s.closeCh:
			case <-hold:
			}
			s.writeError(w, rq, errorFor(http.StatusGatewayTimeout, ""))
			return
		case "truncate":
			rq.truncate = true
		}
		if r.Body != nil && r.Method != http.MethodGet {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					s.writeError(w, rq, errorFor(http.StatusRequestEntityTooLarge, ""))
					return
				}
				s.writeError(w, rq, badRequest("could not read the request body"))
				return
			}
			rq.body = body
		}
		h(rq, w, r)
	})
}

func (s *Sim) requestIDLocked() string {
	b := make([]byte, 16)
	for i := 0; i < 16; i += 8 {
		v := s.rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *Sim) baseURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func (s *Sim) writeError(w http.ResponseWriter, rq *request, e *apiError) {
	writeJSON(w, e.status, map[string]string{"id": e.id, "message": e.message, "request_id": rq.id})
}

// --- pagination ---

type pageSpec struct {
	page, perPage int
}

func parsePage(q url.Values) (pageSpec, *apiError) {
	p := pageSpec{page: 1, perPage: 20}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, badRequest("page: must be a positive integer, got %q", truncate(v, 32))
		}
		p.page = n
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, badRequest("per_page: must be a positive integer, got %q", truncate(v, 32))
		}
		p.perPage = min(n, 200)
	}
	return p, nil
}

// window returns the [lo, hi) slice bounds of the page in a total.
func (p pageSpec) bounds(total int) (int, int) {
	lo := (p.page - 1) * p.perPage
	if lo > total || p.page > (math.MaxInt32/p.perPage) {
		return total, total
	}
	return lo, min(lo+p.perPage, total)
}

// cut returns the views of the page of match that p asks for (half of it
// when a partial_list fault truncates it), and the total.
func cut[T any](p pageSpec, rq *request, match []T, view func(T) any) ([]any, int) {
	lo, hi := p.bounds(len(match))
	page := match[lo:hi]
	if rq.truncate {
		page = page[:len(page)/2]
	}
	views := make([]any, 0, len(page))
	for _, x := range page {
		views = append(views, view(x))
	}
	return views, len(match)
}

// links builds links.pages with absolute URLs, only the ones that exist.
func (p pageSpec) links(rq *request, r *http.Request, total int) map[string]any {
	last := max((total+p.perPage-1)/p.perPage, 1)
	pages := map[string]string{}
	u := func(page int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(page))
		q.Set("per_page", strconv.Itoa(p.perPage))
		return rq.base + strings.TrimPrefix(r.URL.Path, "/") + "?" + q.Encode()
	}
	if p.page > 1 {
		pages["first"] = u(1)
		pages["prev"] = u(min(p.page-1, last))
	}
	if p.page < last {
		pages["next"] = u(p.page + 1)
		pages["last"] = u(last)
	}
	return map[string]any{"pages": pages}
}

func pathID(r *http.Request, name string) (int, bool) {
	n, err := strconv.Atoi(r.PathValue(name))
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// --- endpoints ---

func (s *Sim) getAccount(rq *request, w http.ResponseWriter, r *http.Request) {
	var acc Account
	s.update(func(time.Time) error {
		acc = *s.st.Accounts[rq.account]
		return nil
	})
	writeJSON(w, http.StatusOK, map[string]any{"account": accountView(acc)})
}

func (s *Sim) listDroplets(rq *request, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, perr := parsePage(q)
	if perr != nil {
		s.writeError(w, rq, perr)
		return
	}
	tag, name := q.Get("tag_name"), q.Get("name")
	if t := q.Get("type"); t != "" && t != "droplets" && t != "gpus" {
		s.writeError(w, rq, badRequest("type: must be droplets or gpus, got %q", truncate(t, 32)))
		return
	}
	gpus := q.Get("type") == "gpus"
	var views []any
	var total int
	s.update(func(now time.Time) error {
		var match []*droplet
		if !gpus {
			match = s.st.sortedDropletsWhere(func(d *droplet) bool {
				return d.Account == rq.account && (tag == "" || hasTag(d.Tags, tag)) && (name == "" || d.Name == name)
			})
		}
		views, total = cut(p, rq, match, func(x *droplet) any { return s.dropletView(x) })
		return nil
	})
	writeJSON(w, http.StatusOK, map[string]any{"droplets": views, "links": p.links(rq, r, total), "meta": map[string]int{"total": total}})
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}

func (s *Sim) createDroplets(rq *request, w http.ResponseWriter, r *http.Request) {
	req, derr := decodeCreateDroplet(rq.body)
	if derr != nil {
		s.writeError(w, rq, derr)
		return
	}
	var views []any
	var acts []*action
	err := s.update(func(now time.Time) error {
		region := req.Region
		if region == "" {
			region = "nyc3"
		}
		if _, ok := findRegion(region); !ok {
			return unprocessable("You specified an invalid region for Droplet creation.")
		}
		if _, ok := findSize(req.Size); !ok {
			return unprocessable("You specified an invalid size for Droplet creation.")
		}
		img, fromSnap, ok := s.resolveImageLocked(rq.account, req)
		if !ok {
			return unprocessable("You specified an invalid image for Droplet creation.")
		}
		acc := s.st.Accounts[rq.account]
		if s.st.countDroplets(rq.account)+len(req.Names) > acc.DropletLimit {
			return unprocessable("creating this/these droplet(s) will exceed your droplet limit")
		}
		lim := s.limitsLocked()
		for _, name := range req.Names {
			d := &droplet{
				ID:          s.st.NextID,
				Account:     rq.account,
				Name:        name,
				Region:      region,
				Size:        req.Size,
				Image:       img,
				Tags:        append([]string{}, req.Tags...),
				UserData:    req.UserData,
				Status:      statusNew,
				CreatedAt:   now,
				IP:          s.st.allocIP(),
				SnapshotIDs: []int{},
				Features:    features(req),
				VPCUUID:     req.VPCUUID,
			}
			s.st.NextID++
			a := s.newActionLocked(rq.account, d, "create", now, now.Add(lim.BootDelay.Std()))
			d.CreateActionID = a.ID
			s.st.Droplets[d.ID] = d
			if err := s.makeDisk(d.ID, fromSnap); err != nil {
				s.log.Error("make disk", "droplet", d.ID, "err", err)
			}
			if err := s.writeUserData(d); err != nil {
				s.log.Error("write user data", "droplet", d.ID, "err", err)
			}
			views = append(views, s.dropletView(d))
			acts = append(acts, a)
			s.log.Info("droplet created", "account", rq.account, "droplet", d.ID, "name", d.Name)
		}
		s.dirty = true
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	links := make([]map[string]any, len(acts))
	for i, a := range acts {
		links[i] = map[string]any{"id": a.ID, "rel": "create", "href": rq.base + "v2/actions/" + itoa(a.ID)}
	}
	if req.multi {
		writeJSON(w, http.StatusAccepted, map[string]any{"droplets": views, "links": map[string]any{"actions": links}})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"droplet": views[0], "links": map[string]any{"actions": links}})
}

func features(req createDropletRequest) []string {
	f := []string{}
	if req.Backups {
		f = append(f, "backups")
	}
	if req.IPv6 {
		f = append(f, "ipv6")
	}
	if req.Monitoring {
		f = append(f, "monitoring")
	}
	f = append(f, "private_networking")
	return f
}

func (s *Sim) resolveImageLocked(account string, req createDropletRequest) (imageRef, int, bool) {
	if req.ImageSlug != "" {
		b, ok := findImageBySlug(req.ImageSlug)
		return baseRef(b), 0, ok
	}
	if b, ok := findImageByID(req.ImageID); ok {
		return baseRef(b), 0, true
	}
	snap, ok := s.st.Snapshots[req.ImageID]
	if !ok || snap.Account != account {
		return imageRef{}, 0, false
	}
	return imageRef{
		ID:           snap.ID,
		Name:         snap.Name,
		Distribution: snap.Image.Distribution,
		Type:         "snapshot",
		MinDiskSize:  snap.MinDiskSize,
		SizeGB:       snap.SizeGB,
		CreatedAt:    snap.CreatedAt,
	}, snap.ID, true
}

var baseImageDate = time.Date(2024, 4, 25, 10, 0, 0, 0, time.UTC)

func baseRef(b baseImage) imageRef {
	return imageRef{ID: b.ID, Slug: b.Slug, Name: b.Name, Distribution: b.Distribution, Type: "base",
		MinDiskSize: b.MinDiskSize, SizeGB: b.SizeGB, CreatedAt: baseImageDate}
}

func (s *Sim) newActionLocked(account string, d *droplet, typ string, now, due time.Time) *action {
	a := &action{
		ID:        s.st.NextAct,
		Account:   account,
		DropletID: d.ID,
		Type:      typ,
		Status:    actionInProgress,
		StartedAt: now,
		DueAt:     due,
		Region:    d.Region,
		Fail:      s.takeActionFaultLocked(account),
	}
	s.st.NextAct++
	s.st.Actions[a.ID] = a
	s.st.pending[a.ID] = struct{}{}
	s.dirty = true
	return a
}

// writeAny answers an error returned from inside update.
func (s *Sim) writeAny(w http.ResponseWriter, rq *request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		s.writeError(w, rq, ae)
		return
	}
	s.log.Error("request failed", "err", err)
	s.writeError(w, rq, errorFor(http.StatusInternalServerError, ""))
}

func (s *Sim) getDroplet(rq *request, w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r, "droplet_id")
	if !ok {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	var view any
	err := s.update(func(time.Time) error {
		d := s.st.Droplets[id]
		if d == nil || d.Account != rq.account {
			return errorFor(http.StatusNotFound, "")
		}
		view = s.dropletView(d)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"droplet": view})
}

func (s *Sim) deleteDroplet(rq *request, w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r, "droplet_id")
	if !ok {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	err := s.update(func(now time.Time) error {
		d := s.st.Droplets[id]
		if d == nil || d.Account != rq.account {
			return errorFor(http.StatusNotFound, "")
		}
		s.destroyLocked(d, now)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) destroyLocked(d *droplet, now time.Time) {
	if a := s.st.pendingFor(d.ID); a != nil {
		delete(s.st.pending, a.ID)
		a.Status = actionErrored
		a.CompletedAt = &now
		if a.Type == "snapshot" {
			s.removeDisk("snapshots", a.SnapshotID)
		}
	}
	delete(s.st.Droplets, d.ID)
	s.unassignReservedIPsLocked(d.ID)
	s.events = append(s.events, hookEvent{droplet: d.ID, stop: true})
	s.removeDisk("droplets", d.ID)
	_ = removeIfExists(s.userDataPath(d.ID))
	s.dirty = true
	s.log.Info("droplet destroyed", "account", d.Account, "droplet", d.ID, "name", d.Name)
}

func (s *Sim) deleteDropletsByTag(rq *request, w http.ResponseWriter, r *http.Request) {
	tag := r.URL.Query().Get("tag_name")
	if tag == "" {
		s.writeError(w, rq, badRequest("tag_name is required"))
		return
	}
	s.update(func(now time.Time) error {
		for _, d := range s.st.sortedDroplets() {
			if d.Account == rq.account && hasTag(d.Tags, tag) {
				s.destroyLocked(d, now)
			}
		}
		return nil
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) postDropletAction(rq *request, w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r, "droplet_id")
	if !ok {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	var view any
	err := s.update(func(now time.Time) error {
		d := s.st.Droplets[id]
		if d == nil || d.Account != rq.account {
			return errorFor(http.StatusNotFound, "")
		}
		req, derr := decodeAction(rq.body)
		if derr != nil {
			return derr
		}
		if s.st.pendingFor(d.ID) != nil {
			return unprocessable("Droplet already has a pending event.")
		}
		lim := s.limitsLocked()
		a := s.newActionLocked(rq.account, d, req.Type, now, now.Add(lim.ActionDelay.Std()))
		if req.Type == "rename" {
			a.NewName = req.Name
		}
		if req.Type == "snapshot" {
			a.SnapshotID = s.st.NextSnap
			s.st.NextSnap++
			a.SnapshotName = req.Name
			if a.SnapshotName == "" {
				a.SnapshotName = fmt.Sprintf("%s-%d", d.Name, now.UnixMilli())
			}
			if !a.Fail {
				if err := s.copyDiskToSnapshot(d.ID, a.SnapshotID); err != nil {
					s.log.Error("snapshot disk", "droplet", d.ID, "err", err)
					a.Fail = true
				}
			}
		}
		s.log.Info("action started", "account", rq.account, "droplet", d.ID, "action", a.ID, "type", a.Type)
		view = s.actionView(a)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"action": view})
}

func (s *Sim) getDropletAction(rq *request, w http.ResponseWriter, r *http.Request) {
	did, ok1 := pathID(r, "droplet_id")
	aid, ok2 := pathID(r, "action_id")
	if !ok1 || !ok2 {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	s.writeAction(rq, w, func(a *action) bool { return a.ID == aid && a.DropletID == did }, aid)
}

func (s *Sim) getAction(rq *request, w http.ResponseWriter, r *http.Request) {
	aid, ok := pathID(r, "action_id")
	if !ok {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	s.writeAction(rq, w, func(a *action) bool { return a.ID == aid }, aid)
}

func (s *Sim) writeAction(rq *request, w http.ResponseWriter, match func(*action) bool, id int) {
	var view any
	err := s.update(func(time.Time) error {
		a := s.st.Actions[id]
		if a == nil || a.Account != rq.account || !match(a) {
			return errorFor(http.StatusNotFound, "")
		}
		view = s.actionView(a)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": view})
}

func (s *Sim) listActions(rq *request, w http.ResponseWriter, r *http.Request) {
	s.listActionsWhere(rq, w, r, func(*action) bool { return true }, 0)
}

func (s *Sim) listDropletActions(rq *request, w http.ResponseWriter, r *http.Request) {
	did, ok := pathID(r, "droplet_id")
	if !ok {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	s.listActionsWhere(rq, w, r, func(a *action) bool { return a.DropletID == did }, did)
}

func (s *Sim) listActionsWhere(rq *request, w http.ResponseWriter, r *http.Request, keep func(*action) bool, droplet int) {
	p, perr := parsePage(r.URL.Query())
	if perr != nil {
		s.writeError(w, rq, perr)
		return
	}
	var views []any
	var total int
	err := s.update(func(time.Time) error {
		if droplet != 0 {
			if d := s.st.Droplets[droplet]; d == nil || d.Account != rq.account {
				return errorFor(http.StatusNotFound, "")
			}
		}
		var match []*action
		all := s.st.sortedActions()
		for i := len(all) - 1; i >= 0; i-- { // newest first, as DigitalOcean lists them
			if a := all[i]; a.Account == rq.account && keep(a) {
				match = append(match, a)
			}
		}
		views, total = cut(p, rq, match, func(x *action) any { return s.actionView(x) })
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"actions": views, "links": p.links(rq, r, total), "meta": map[string]int{"total": total}})
}

func (s *Sim) listSnapshots(rq *request, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, perr := parsePage(q)
	if perr != nil {
		s.writeError(w, rq, perr)
		return
	}
	rt := q.Get("resource_type")
	if rt != "" && rt != "droplet" && rt != "volume" {
		s.writeError(w, rq, badRequest("resource_type: must be droplet or volume, got %q", truncate(rt, 32)))
		return
	}
	var views []any
	var total int
	s.update(func(time.Time) error {
		var match []*snapshot
		if rt != "volume" {
			for _, sn := range s.st.sortedSnapshots() {
				if sn.Account == rq.account {
					match = append(match, sn)
				}
			}
		}
		views, total = cut(p, rq, match, func(x *snapshot) any { return snapshotView(x) })
		return nil
	})
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": views, "links": p.links(rq, r, total), "meta": map[string]int{"total": total}})
}

func (s *Sim) getSnapshot(rq *request, w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("snapshot_id"))
	if err != nil {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	var view any
	uerr := s.update(func(time.Time) error {
		sn := s.st.Snapshots[id]
		if sn == nil || sn.Account != rq.account {
			return errorFor(http.StatusNotFound, "")
		}
		view = snapshotView(sn)
		return nil
	})
	if uerr != nil {
		s.writeAny(w, rq, uerr)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": view})
}

func (s *Sim) deleteSnapshot(rq *request, w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("snapshot_id"))
	if err != nil {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	uerr := s.update(func(time.Time) error {
		sn := s.st.Snapshots[id]
		if sn == nil || sn.Account != rq.account {
			return errorFor(http.StatusNotFound, "")
		}
		delete(s.st.Snapshots, id)
		s.removeDisk("snapshots", id)
		s.dirty = true
		s.log.Info("snapshot deleted", "account", rq.account, "snapshot", id)
		return nil
	})
	if uerr != nil {
		s.writeAny(w, rq, uerr)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// --- views: the JSON DigitalOcean answers ---

func accountView(a Account) map[string]any {
	uuid := fakeUUID(a.Name)
	return map[string]any{
		"droplet_limit":     a.DropletLimit,
		"floating_ip_limit": 3,
		"email":             a.Name + "@dosim.example.com",
		"name":              a.Name,
		"uuid":              uuid,
		"email_verified":    true,
		"status":            "active",
		"status_message":    "",
		"team":              map[string]string{"uuid": uuid, "name": a.Name},
	}
}

// fakeUUID derives a stable UUID-shaped string from a name (FNV-1a).
func fakeUUID(name string) string {
	var h1, h2 uint64 = 14695981039346656037, 1099511628211
	for i := 0; i < len(name); i++ {
		h1 ^= uint64(name[i])
		h1 *= 1099511628211
		h2 ^= uint64(name[i]) + 0x9e
		h2 *= 14695981039346656037 | 1
	}
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(h1>>32), uint16(h1>>16), uint16(h1)&0xfff, uint16(h2>>48)&0xfff, h2&0xffffffffffff)
}

func regionView(slug string) map[string]any {
	r, _ := findRegion(slug)
	return map[string]any{
		"name":      r.Name,
		"slug":      r.Slug,
		"features":  []string{"backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"},
		"available": true,
		"sizes":     sizeSlugs(),
	}
}

func sizeView(slug string) map[string]any {
	sz, _ := findSize(slug)
	return map[string]any{
		"slug":          sz.Slug,
		"memory":        sz.Memory,
		"vcpus":         sz.VCPUs,
		"disk":          sz.Disk,
		"transfer":      sz.Transfer,
		"price_monthly": sz.PriceMonthly,
		"price_hourly":  sz.PriceHourly,
		"regions":       regionSlugs(),
		"available":     true,
		"description":   sz.Description,
		"disk_info":     []any{map[string]any{"type": "local", "size": map[string]any{"amount": sz.Disk, "unit": "gib"}}},
	}
}

func imageView(img imageRef, region string) map[string]any {
	v := map[string]any{
		"id":             img.ID,
		"name":           img.Name,
		"distribution":   img.Distribution,
		"slug":           nil,
		"public":         img.Type == "base",
		"regions":        regionSlugs(),
		"created_at":     img.CreatedAt.UTC().Format(time.RFC3339),
		"type":           img.Type,
		"min_disk_size":  img.MinDiskSize,
		"size_gigabytes": img.SizeGB,
		"description":    "",
		"tags":           []string{},
		"status":         "available",
		"error_message":  "",
	}
	if img.Slug != "" {
		v["slug"] = img.Slug
	}
	if img.Type == "snapshot" {
		v["regions"] = []string{region}
	}
	return v
}

func (s *Sim) dropletView(d *droplet) map[string]any {
	sz, _ := findSize(d.Size)
	v4 := []any{}
	if d.Status != statusNew {
		v4 = append(v4, map[string]any{"ip_address": d.IP, "netmask": "255.0.0.0", "gateway": "127.0.0.1", "type": "public"})
	}
	locked := false
	if a := s.st.pendingFor(d.ID); a != nil && a.Type != "create" {
		locked = true
	}
	v := map[string]any{
		"id":                 d.ID,
		"name":               d.Name,
		"memory":             sz.Memory,
		"vcpus":              sz.VCPUs,
		"disk":               sz.Disk,
		"disk_info":          []any{map[string]any{"type": "local", "size": map[string]any{"amount": sz.Disk, "unit": "gib"}}},
		"locked":             locked,
		"status":             d.Status,
		"kernel":             nil,
		"created_at":         d.CreatedAt.UTC().Format(time.RFC3339),
		"features":           d.Features,
		"backup_ids":         []int{},
		"next_backup_window": nil,
		"snapshot_ids":       d.SnapshotIDs,
		"image":              imageView(d.Image, d.Region),
		"volume_ids":         []string{},
		"size":               sizeView(d.Size),
		"size_slug":          d.Size,
		"networks":           map[string]any{"v4": v4, "v6": []any{}},
		"region":             regionView(d.Region),
		"tags":               d.Tags,
	}
	if d.VPCUUID != "" {
		v["vpc_uuid"] = d.VPCUUID
	}
	return v
}

func (s *Sim) actionView(a *action) map[string]any {
	var completed any
	if a.CompletedAt != nil {
		completed = a.CompletedAt.UTC().Format(time.RFC3339)
	}
	resourceID, resourceType := a.DropletID, "droplet"
	if a.ReservedIP != "" {
		resourceID, resourceType = ipResourceID(a.ReservedIP), "reserved_ip"
	}
	return map[string]any{
		"id":            a.ID,
		"status":        a.Status,
		"type":          a.Type,
		"started_at":    a.StartedAt.UTC().Format(time.RFC3339),
		"completed_at":  completed,
		"resource_id":   resourceID,
		"resource_type": resourceType,
		"region":        regionView(a.Region),
		"region_slug":   a.Region,
	}
}

func snapshotView(sn *snapshot) map[string]any {
	return map[string]any{
		"id":             strconv.Itoa(sn.ID),
		"name":           sn.Name,
		"created_at":     sn.CreatedAt.UTC().Format(time.RFC3339),
		"regions":        []string{sn.Region},
		"resource_id":    strconv.Itoa(sn.DropletID),
		"resource_type":  "droplet",
		"min_disk_size":  sn.MinDiskSize,
		"size_gigabytes": sn.SizeGB,
		"tags":           sn.Tags,
	}
}

func sortedKeys[M ~map[K]V, K string, V any](m M) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
