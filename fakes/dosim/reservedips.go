package dosim

import (
	"net/http"
	"net/netip"
	"sort"
	"time"
)

// Reserved IPs: /v2/reserved_ips reserves addresses to a region or creates
// them assigned to a droplet, and /v2/reserved_ips/{ip}/actions assigns and
// unassigns them. Addresses come from 127.2.0.0/16, apart from droplets'
// 127.1.x.y. A reserved IP is data only: the simulator records which droplet
// it points at (and shows it in the reserved IP), but nothing listens on
// the address and no traffic is routed to the droplet.
//
// As on DigitalOcean, assignment is an action: assign_ip and unassign_ip
// are in progress for ActionDelay (the reserved IP is "locked", a second
// action gets a 422) and take effect when they complete; a reserved IP
// created with droplet_id starts unassigned with an assign_ip action. A
// droplet holds at most one reserved IP, only from its own account and
// region. Destroying a droplet unassigns its reserved IP.

// createReservedIPRequest is a validated POST /v2/reserved_ips body: exactly
// one of Region and DropletID is set.
type createReservedIPRequest struct {
	Region    string
	DropletID int
}

// decodeCreateReservedIP parses a reserved IP create body (outside input:
// fuzzed).
func decodeCreateReservedIP(body []byte) (createReservedIPRequest, *apiError) {
	var raw struct {
		Region    *string `json:"region"`
		DropletID *int64  `json:"droplet_id"`
		ProjectID *string `json:"project_id"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return createReservedIPRequest{}, err
	}
	var req createReservedIPRequest
	hasRegion, hasDroplet := raw.Region != nil && *raw.Region != "", raw.DropletID != nil
	switch {
	case hasRegion && hasDroplet:
		return req, unprocessable("specify either region or droplet_id, not both")
	case hasDroplet:
		if *raw.DropletID < 1 || *raw.DropletID > 1<<31-1 {
			return req, unprocessable("droplet_id %d is invalid: want a positive droplet id", *raw.DropletID)
		}
		req.DropletID = int(*raw.DropletID)
	case hasRegion:
		req.Region = *raw.Region
	default:
		return req, unprocessable("region or droplet_id is required")
	}
	return req, nil
}

// reservedIPActionRequest is a validated reserved IP action body.
type reservedIPActionRequest struct {
	Type      string // assign or unassign
	DropletID int    // assign only
}

// decodeReservedIPAction parses a reserved IP action body (outside input:
// fuzzed).
func decodeReservedIPAction(body []byte) (reservedIPActionRequest, *apiError) {
	var raw struct {
		Type      *string `json:"type"`
		DropletID *int64  `json:"droplet_id"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return reservedIPActionRequest{}, err
	}
	if raw.Type == nil || *raw.Type == "" {
		return reservedIPActionRequest{}, unprocessable("type is required")
	}
	req := reservedIPActionRequest{Type: *raw.Type}
	switch req.Type {
	case "assign":
		if raw.DropletID == nil {
			return req, unprocessable("droplet_id is required for an assign action")
		}
		if *raw.DropletID < 1 || *raw.DropletID > 1<<31-1 {
			return req, unprocessable("droplet_id %d is invalid: want a positive droplet id", *raw.DropletID)
		}
		req.DropletID = int(*raw.DropletID)
	case "unassign":
		if raw.DropletID != nil {
			return req, unprocessable("droplet_id is only valid for an assign action")
		}
	default:
		return req, unprocessable("type %q is not a valid reserved IP action: want assign or unassign", truncate(req.Type, 64))
	}
	return req, nil
}

// ipResourceID is the integer DigitalOcean uses as a reserved IP action's
// resource_id: the IPv4 address as a 32-bit number.
func ipResourceID(ip string) int {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return 0
	}
	b := a.As4()
	return int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
}

// reservedIPLocked finds the account's reserved IP named in the path, or a
// 404.
func (s *Sim) reservedIPLocked(account string, r *http.Request) (*reservedIP, *apiError) {
	rip := s.st.ReservedIPs[r.PathValue("reserved_ip")]
	if rip == nil || rip.Account != account {
		return nil, errorFor(http.StatusNotFound, "")
	}
	return rip, nil
}

// pendingReservedIPActionLocked returns the reserved IP's in-progress
// action, if any.
func (s *Sim) pendingReservedIPActionLocked(ip string) *action {
	for id := range s.st.pending {
		if a := s.st.Actions[id]; a != nil && a.ReservedIP == ip {
			return a
		}
	}
	return nil
}

// assignableLocked checks that droplet id can take reserved IP rip: it
// exists in the account, in the reserved IP's region, and holds (or is
// about to hold) no other reserved IP.
func (s *Sim) assignableLocked(account string, rip *reservedIP, id int) *apiError {
	d := s.st.Droplets[id]
	if d == nil || d.Account != account {
		return unprocessable("droplet_id %d is invalid: no such droplet", id)
	}
	if rip != nil && d.Region != rip.Region {
		return unprocessable("droplet_id %d is invalid: the droplet is in %s and the reserved IP in %s; a reserved IP can only be assigned to a droplet in its region", id, d.Region, rip.Region)
	}
	for _, o := range s.st.ReservedIPs {
		if (rip == nil || o.IP != rip.IP) && o.DropletID == id {
			return unprocessable("droplet_id %d is invalid: the droplet already has reserved IP %s", id, o.IP)
		}
	}
	for pid := range s.st.pending {
		if a := s.st.Actions[pid]; a != nil && a.ReservedIP != "" && a.Type == "assign_ip" && a.TargetDroplet == id && (rip == nil || a.ReservedIP != rip.IP) {
			return unprocessable("droplet_id %d is invalid: reserved IP %s is being assigned to the droplet", id, a.ReservedIP)
		}
	}
	return nil
}

func (s *Sim) newReservedIPActionLocked(rip *reservedIP, typ string, target int, now time.Time) *action {
	lim := s.limitsLocked()
	a := &action{
		ID:            s.st.NextAct,
		Account:       rip.Account,
		Type:          typ,
		Status:        actionInProgress,
		StartedAt:     now,
		DueAt:         now.Add(lim.ActionDelay.Std()),
		Region:        rip.Region,
		Fail:          s.takeActionFaultLocked(rip.Account),
		ReservedIP:    rip.IP,
		TargetDroplet: target,
	}
	s.st.NextAct++
	s.st.Actions[a.ID] = a
	s.st.pending[a.ID] = struct{}{}
	s.dirty = true
	s.log.Info("action started", "account", rip.Account, "reserved_ip", rip.IP, "action", a.ID, "type", typ)
	return a
}

// completeReservedIPActionLocked applies a due reserved IP action.
func (s *Sim) completeReservedIPActionLocked(a *action) {
	rip := s.st.ReservedIPs[a.ReservedIP]
	var target *droplet
	if a.Type == "assign_ip" {
		target = s.st.Droplets[a.TargetDroplet]
	}
	if a.Fail || rip == nil || (a.Type == "assign_ip" && target == nil) {
		a.Status = actionErrored
		s.log.Info("action errored", "action", a.ID, "type", a.Type, "reserved_ip", a.ReservedIP)
		return
	}
	a.Status = actionCompleted
	switch a.Type {
	case "assign_ip":
		rip.DropletID = target.ID
	case "unassign_ip":
		rip.DropletID = 0
	}
	s.log.Debug("action completed", "action", a.ID, "type", a.Type, "reserved_ip", a.ReservedIP)
}

// unassignReservedIPsLocked frees the reserved IP of a destroyed droplet.
func (s *Sim) unassignReservedIPsLocked(dropletID int) {
	for _, rip := range s.st.ReservedIPs {
		if rip.DropletID == dropletID {
			rip.DropletID = 0
			s.dirty = true
			s.log.Info("reserved ip unassigned", "account", rip.Account, "reserved_ip", rip.IP, "droplet", dropletID)
		}
	}
}

func (st *state) sortedReservedIPs() []*reservedIP {
	out := make([]*reservedIP, 0, len(st.ReservedIPs))
	for _, r := range st.ReservedIPs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return ipResourceID(out[i].IP) < ipResourceID(out[j].IP) })
	return out
}

// --- endpoints ---

func (s *Sim) listReservedIPs(rq *request, w http.ResponseWriter, r *http.Request) {
	p, perr := parsePage(r.URL.Query())
	if perr != nil {
		s.writeError(w, rq, perr)
		return
	}
	var views []any
	var total int
	s.update(func(time.Time) error {
		var match []*reservedIP
		for _, rip := range s.st.sortedReservedIPs() {
			if rip.Account == rq.account {
				match = append(match, rip)
			}
		}
		views, total = cut(p, rq, match, func(x *reservedIP) any { return s.reservedIPViewLocked(x) })
		return nil
	})
	writeJSON(w, http.StatusOK, map[string]any{"reserved_ips": views, "links": p.links(rq, r, total), "meta": map[string]int{"total": total}})
}

func (s *Sim) createReservedIP(rq *request, w http.ResponseWriter, r *http.Request) {
	req, derr := decodeCreateReservedIP(rq.body)
	if derr != nil {
		s.writeError(w, rq, derr)
		return
	}
	var view any
	links := map[string]any{}
	err := s.update(func(now time.Time) error {
		rip := &reservedIP{Account: rq.account, Region: req.Region, CreatedAt: now}
		if req.DropletID != 0 {
			if aerr := s.assignableLocked(rq.account, nil, req.DropletID); aerr != nil {
				return aerr
			}
			rip.Region = s.st.Droplets[req.DropletID].Region
		} else if _, ok := findRegion(req.Region); !ok {
			return unprocessable("region %q is invalid: you specified an invalid region for the reserved IP", truncate(req.Region, 32))
		}
		rip.IP = s.st.allocReservedIP()
		s.st.ReservedIPs[rip.IP] = rip
		s.dirty = true
		if req.DropletID != 0 {
			a := s.newReservedIPActionLocked(rip, "assign_ip", req.DropletID, now)
			links["droplets"] = []any{map[string]any{"id": req.DropletID, "rel": "droplet", "href": rq.base + "v2/droplets/" + itoa(req.DropletID)}}
			links["actions"] = []any{map[string]any{"id": a.ID, "rel": "assign_ip", "href": rq.base + "v2/actions/" + itoa(a.ID)}}
		}
		s.log.Info("reserved ip created", "account", rq.account, "reserved_ip", rip.IP, "region", rip.Region)
		view = s.reservedIPViewLocked(rip)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"reserved_ip": view, "links": links})
}

func (s *Sim) getReservedIP(rq *request, w http.ResponseWriter, r *http.Request) {
	var view any
	err := s.update(func(time.Time) error {
		rip, aerr := s.reservedIPLocked(rq.account, r)
		if aerr != nil {
			return aerr
		}
		view = s.reservedIPViewLocked(rip)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"reserved_ip": view})
}

func (s *Sim) deleteReservedIP(rq *request, w http.ResponseWriter, r *http.Request) {
	err := s.update(func(time.Time) error {
		rip, aerr := s.reservedIPLocked(rq.account, r)
		if aerr != nil {
			return aerr
		}
		if s.pendingReservedIPActionLocked(rip.IP) != nil {
			return unprocessable("The reserved IP has a pending event.")
		}
		delete(s.st.ReservedIPs, rip.IP)
		s.dirty = true
		s.log.Info("reserved ip deleted", "account", rq.account, "reserved_ip", rip.IP)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) postReservedIPAction(rq *request, w http.ResponseWriter, r *http.Request) {
	var view any
	err := s.update(func(now time.Time) error {
		rip, aerr := s.reservedIPLocked(rq.account, r)
		if aerr != nil {
			return aerr
		}
		req, derr := decodeReservedIPAction(rq.body)
		if derr != nil {
			return derr
		}
		if s.pendingReservedIPActionLocked(rip.IP) != nil {
			return unprocessable("The reserved IP already has a pending event.")
		}
		var a *action
		switch req.Type {
		case "assign":
			if aerr := s.assignableLocked(rq.account, rip, req.DropletID); aerr != nil {
				return aerr
			}
			a = s.newReservedIPActionLocked(rip, "assign_ip", req.DropletID, now)
		case "unassign":
			if rip.DropletID == 0 {
				return unprocessable("The reserved IP is not assigned to a Droplet.")
			}
			a = s.newReservedIPActionLocked(rip, "unassign_ip", 0, now)
		}
		view = s.actionView(a)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"action": view})
}

func (s *Sim) getReservedIPAction(rq *request, w http.ResponseWriter, r *http.Request) {
	aid, ok := pathID(r, "action_id")
	if !ok {
		s.writeError(w, rq, errorFor(http.StatusNotFound, ""))
		return
	}
	ip := r.PathValue("reserved_ip")
	s.writeAction(rq, w, func(a *action) bool { return a.ReservedIP == ip }, aid)
}

func (s *Sim) reservedIPViewLocked(rip *reservedIP) map[string]any {
	var d any
	if rip.DropletID != 0 {
		if x := s.st.Droplets[rip.DropletID]; x != nil {
			d = s.dropletView(x)
		}
	}
	return map[string]any{
		"ip":         rip.IP,
		"region":     regionView(rip.Region),
		"droplet":    d,
		"locked":     s.pendingReservedIPActionLocked(rip.IP) != nil,
		"project_id": fakeUUID(rip.Account + "/default-project"),
	}
}
