package dosim

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Domains: /v2/domains hosts zones and /v2/domains/{name}/records edits
// their records, as on DigitalOcean: a new zone gets an SOA record and three
// NS records (ns1-3.digitalocean.com) and, with ip_address, an A record at
// the apex; record names are relative to the zone ("@" is the apex); the
// name filter of a record listing takes the fully qualified name. A, AAAA,
// CNAME, TXT and NS records can be created; SOA records only have their ttl
// changed. A zone name is hosted by one account at a time. The DNS server
// (dns.go) answers from these records.

// Default SOA and NS values DigitalOcean writes into every zone.
const (
	defaultZoneTTL = 1800
	minRecordTTL   = 30
	maxRecordTTL   = 1 << 31 / 2 // about 34 years: bounds an int32 TTL
	maxTXTData     = 4096
)

var defaultNameServers = []string{"ns1.digitalocean.com", "ns2.digitalocean.com", "ns3.digitalocean.com"}

// recordTypes are the types DigitalOcean knows (the spec's enum);
// writableTypes are the ones the simulator creates and serves.
var (
	recordTypes   = []string{"A", "AAAA", "CAA", "CNAME", "MX", "NS", "SOA", "SRV", "TXT"}
	writableTypes = map[string]bool{"A": true, "AAAA": true, "CNAME": true, "TXT": true, "NS": true}
)

func knownRecordType(t string) bool {
	for _, k := range recordTypes {
		if k == t {
			return true
		}
	}
	return false
}

var (
	// zoneLabelRE is one label of a zone name (LDH, no leading or trailing
	// hyphen).
	zoneLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// recordLabelRE is one label of a record name: as zoneLabelRE, plus
	// underscores (_acme-challenge, _dmarc).
	recordLabelRE = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)
)

// validZoneName reports whether n (lower case, no trailing dot) is a domain
// name of at least two labels.
func validZoneName(n string) bool {
	if len(n) > 253 {
		return false
	}
	labels := strings.Split(n, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !zoneLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// validHostname reports whether n, without its trailing dot, is a host name
// (labels of letters, digits, hyphens and underscores).
func validHostname(n string) bool {
	n = strings.TrimSuffix(n, ".")
	if n == "" || len(n) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.ToLower(n), ".") {
		if !recordLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// createDomainRequest is a validated POST /v2/domains body.
type createDomainRequest struct {
	Name      string
	IPAddress string
}

// decodeCreateDomain parses a domain create body (outside input: fuzzed).
func decodeCreateDomain(body []byte) (createDomainRequest, *apiError) {
	var raw struct {
		Name      *string `json:"name"`
		IPAddress *string `json:"ip_address"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return createDomainRequest{}, err
	}
	if raw.Name == nil || *raw.Name == "" {
		return createDomainRequest{}, unprocessable("name is required")
	}
	req := createDomainRequest{Name: strings.ToLower(*raw.Name)}
	if !validZoneName(req.Name) {
		return req, unprocessable("name %q is invalid: want a domain name such as example.com (letters, digits and hyphens, at least two labels, no trailing dot)", truncate(*raw.Name, 64))
	}
	if raw.IPAddress != nil && *raw.IPAddress != "" {
		ip, err := netip.ParseAddr(*raw.IPAddress)
		if err != nil || !ip.Is4() {
			return req, unprocessable("ip_address %q is invalid: want an IPv4 address", truncate(*raw.IPAddress, 64))
		}
		req.IPAddress = ip.String()
	}
	return req, nil
}

// recordRequest is a parsed record create or update body: nil fields were
// absent (or null). Fields DigitalOcean uses only for MX, SRV and CAA
// records (priority, port, weight, flags, tag) are accepted and ignored, as
// godo always sends them.
type recordRequest struct {
	Type *string
	Name *string
	Data *string
	TTL  *int
}

// decodeRecord parses a record body (outside input: fuzzed). It checks each
// field on its own; checks that need the record's type or zone are in
// validateRecord.
func decodeRecord(body []byte) (recordRequest, *apiError) {
	var raw struct {
		Type     *string `json:"type"`
		Name     *string `json:"name"`
		Data     *string `json:"data"`
		TTL      *int64  `json:"ttl"`
		Priority *int64  `json:"priority"`
		Port     *int64  `json:"port"`
		Weight   *int64  `json:"weight"`
		Flags    *int64  `json:"flags"`
		Tag      *string `json:"tag"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return recordRequest{}, err
	}
	req := recordRequest{Type: raw.Type, Data: raw.Data}
	if raw.Type != nil && !knownRecordType(*raw.Type) {
		return req, unprocessable("type %q is invalid: want one of %s", truncate(*raw.Type, 32), strings.Join(recordTypes, ", "))
	}
	if raw.Name != nil {
		n := strings.ToLower(*raw.Name)
		if err := checkRecordName(n); err != nil {
			return req, err
		}
		req.Name = &n
	}
	if raw.TTL != nil {
		if *raw.TTL < minRecordTTL || *raw.TTL > maxRecordTTL {
			return req, unprocessable("ttl %d is invalid: want at least %d seconds and at most %d", *raw.TTL, minRecordTTL, maxRecordTTL)
		}
		ttl := int(*raw.TTL)
		req.TTL = &ttl
	}
	return req, nil
}

// checkRecordName accepts "@" or a relative name: labels of letters, digits,
// hyphens and underscores, no trailing dot (names are relative to the zone).
func checkRecordName(n string) *apiError {
	switch {
	case n == "":
		return unprocessable("name is required (\"@\" for the apex)")
	case n == "@":
		return nil
	case strings.HasSuffix(n, "."):
		return unprocessable("name %q is invalid: record names are relative to the domain (\"www\", or \"@\" for the apex), without a trailing dot", truncate(n, 64))
	case strings.HasPrefix(n, "*"):
		return unprocessable("name %q is invalid: wildcard records are not supported by the simulator", truncate(n, 64))
	case len(n) > 253:
		return unprocessable("name is invalid: at most 253 characters, got %d", len(n))
	}
	for _, l := range strings.Split(n, ".") {
		if !recordLabelRE.MatchString(l) {
			return unprocessable("name %q is invalid: want \"@\" or dot-separated labels of letters, digits, hyphens and underscores (1-63 characters, no leading or trailing hyphen)", truncate(n, 64))
		}
	}
	return nil
}

// validateRecord checks a complete record of zone: its data against its
// type, and the whole name's length.
func validateRecord(zone string, r domainRecord) *apiError {
	if r.Name != "@" && len(r.Name)+1+len(zone) > 253 {
		return unprocessable("name %q is invalid: %s.%s is longer than 253 characters", truncate(r.Name, 64), truncate(r.Name, 16), zone)
	}
	d := r.Data
	switch r.Type {
	case "A":
		if ip, err := netip.ParseAddr(d); err != nil || !ip.Is4() {
			return unprocessable("data %q is invalid: an A record's data must be an IPv4 address", truncate(d, 64))
		}
	case "AAAA":
		if ip, err := netip.ParseAddr(d); err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return unprocessable("data %q is invalid: an AAAA record's data must be an IPv6 address", truncate(d, 64))
		}
	case "CNAME", "NS":
		switch {
		case d == "@":
		case d == "":
			return unprocessable("data is required: the %s record's target host name, ending in a dot (or \"@\" for the apex)", r.Type)
		case !strings.HasSuffix(d, "."):
			return unprocessable("data %q is invalid: a %s record's target must be a fully qualified host name ending in a dot (%q), or \"@\"", truncate(d, 64), r.Type, truncate(d, 64)+".")
		case !validHostname(d):
			return unprocessable("data %q is invalid: a %s record's target must be a host name", truncate(d, 64), r.Type)
		}
		if r.Type == "CNAME" && r.Name == "@" {
			return unprocessable("name \"@\" is invalid for a CNAME record: the apex holds the SOA and NS records")
		}
	case "TXT":
		if d == "" {
			return unprocessable("data is required for a TXT record")
		}
		if len(d) > maxTXTData {
			return unprocessable("data is invalid: a TXT record's data must be at most %d characters, got %d", maxTXTData, len(d))
		}
	}
	return nil
}

// --- endpoints ---

func domainName(r *http.Request) string {
	return strings.TrimSuffix(strings.ToLower(r.PathValue("domain_name")), ".")
}

// domainLocked returns the account's zone name, or a 404.
func (s *Sim) domainLocked(account, name string) (*domain, *apiError) {
	d := s.st.Domains[name]
	if d == nil || d.Account != account {
		return nil, errorFor(http.StatusNotFound, "")
	}
	return d, nil
}

func (s *Sim) listDomains(rq *request, w http.ResponseWriter, r *http.Request) {
	p, perr := parsePage(r.URL.Query())
	if perr != nil {
		s.writeError(w, rq, perr)
		return
	}
	var views []any
	var total int
	s.update(func(time.Time) error {
		var match []*domain
		for _, name := range sortedKeys(s.st.Domains) {
			if d := s.st.Domains[name]; d.Account == rq.account {
				match = append(match, d)
			}
		}
		views, total = cut(p, rq, match, func(d *domain) any { return s.domainViewLocked(d) })
		return nil
	})
	writeJSON(w, http.StatusOK, map[string]any{"domains": views, "links": p.links(rq, r, total), "meta": map[string]int{"total": total}})
}

func (s *Sim) createDomain(rq *request, w http.ResponseWriter, r *http.Request) {
	req, derr := decodeCreateDomain(rq.body)
	if derr != nil {
		s.writeError(w, rq, derr)
		return
	}
	var view any
	err := s.update(func(now time.Time) error {
		if _, taken := s.st.Domains[req.Name]; taken {
			return unprocessable("name %q is already in use", req.Name)
		}
		d := &domain{Name: req.Name, Account: rq.account, TTL: defaultZoneTTL, Serial: uint32(now.Unix()), CreatedAt: now}
		s.st.Domains[d.Name] = d
		s.addRecordLocked(d, domainRecord{Type: "SOA", Name: "@", Data: strconv.Itoa(defaultZoneTTL), TTL: defaultZoneTTL})
		for _, ns := range defaultNameServers {
			s.addRecordLocked(d, domainRecord{Type: "NS", Name: "@", Data: ns, TTL: defaultZoneTTL})
		}
		if req.IPAddress != "" {
			s.addRecordLocked(d, domainRecord{Type: "A", Name: "@", Data: req.IPAddress, TTL: defaultZoneTTL})
		}
		s.dirty = true
		s.log.Info("domain created", "account", rq.account, "domain", d.Name)
		view = s.domainViewLocked(d)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"domain": view})
}

func (s *Sim) addRecordLocked(d *domain, rec domainRecord) *domainRecord {
	rec.ID = s.st.NextRecord
	rec.Domain = d.Name
	s.st.NextRecord++
	s.st.Records[rec.ID] = &rec
	d.Serial++
	s.dirty = true
	return &rec
}

func (s *Sim) getDomain(rq *request, w http.ResponseWriter, r *http.Request) {
	var view any
	err := s.update(func(time.Time) error {
		d, aerr := s.domainLocked(rq.account, domainName(r))
		if aerr != nil {
			return aerr
		}
		view = s.domainViewLocked(d)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"domain": view})
}

func (s *Sim) deleteDomain(rq *request, w http.ResponseWriter, r *http.Request) {
	err := s.update(func(time.Time) error {
		d, aerr := s.domainLocked(rq.account, domainName(r))
		if aerr != nil {
			return aerr
		}
		s.deleteDomainLocked(d)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) deleteDomainLocked(d *domain) {
	for id, rec := range s.st.Records {
		if rec.Domain == d.Name {
			delete(s.st.Records, id)
		}
	}
	delete(s.st.Domains, d.Name)
	s.dirty = true
	s.log.Info("domain deleted", "account", d.Account, "domain", d.Name)
}

// zoneRecordsLocked lists a zone's records by id.
func (s *Sim) zoneRecordsLocked(zone string) []*domainRecord {
	var out []*domainRecord
	for _, rec := range s.st.Records {
		if rec.Domain == zone {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Sim) listRecords(rq *request, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, perr := parsePage(q)
	if perr != nil {
		s.writeError(w, rq, perr)
		return
	}
	typ := q.Get("type")
	if typ != "" && !knownRecordType(typ) {
		s.writeError(w, rq, badRequest("type: must be one of %s, got %q", strings.Join(recordTypes, ", "), truncate(typ, 32)))
		return
	}
	// name is the fully qualified name (sub.example.com), as on DigitalOcean.
	fqdn, byName := strings.TrimSuffix(strings.ToLower(q.Get("name")), "."), q.Has("name") && q.Get("name") != ""
	var views []any
	var total int
	err := s.update(func(time.Time) error {
		d, aerr := s.domainLocked(rq.account, domainName(r))
		if aerr != nil {
			return aerr
		}
		rel, inZone := relativeName(fqdn, d.Name)
		var match []*domainRecord
		for _, rec := range s.zoneRecordsLocked(d.Name) {
			if (typ != "" && rec.Type != typ) || (byName && (!inZone || rec.Name != rel)) {
				continue
			}
			match = append(match, rec)
		}
		views, total = cut(p, rq, match, func(rec *domainRecord) any { return recordView(rec) })
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"domain_records": views, "links": p.links(rq, r, total), "meta": map[string]int{"total": total}})
}

// relativeName turns a fully qualified name (no trailing dot) into a name
// relative to zone ("@" for the apex); ok is false outside the zone.
func relativeName(fqdn, zone string) (string, bool) {
	if fqdn == zone {
		return "@", true
	}
	if rel, ok := strings.CutSuffix(fqdn, "."+zone); ok && rel != "" {
		return rel, true
	}
	return "", false
}

// conflictLocked enforces that a CNAME owns its name alone (RFC 1034 3.6.2),
// which DigitalOcean checks too. self is the record being updated (0 on
// create).
func (s *Sim) conflictLocked(zone string, rec domainRecord, self int) *apiError {
	for _, o := range s.zoneRecordsLocked(zone) {
		if o.ID == self || o.Name != rec.Name {
			continue
		}
		if rec.Type == "CNAME" || o.Type == "CNAME" {
			return unprocessable("name %q is invalid: a CNAME record cannot share its name with other records (record %d is a %s record)", rec.Name, o.ID, o.Type)
		}
	}
	return nil
}

func (s *Sim) createRecord(rq *request, w http.ResponseWriter, r *http.Request) {
	var view any
	err := s.update(func(time.Time) error {
		d, aerr := s.domainLocked(rq.account, domainName(r))
		if aerr != nil {
			return aerr
		}
		req, derr := decodeRecord(rq.body)
		if derr != nil {
			return derr
		}
		if req.Type == nil || *req.Type == "" {
			return unprocessable("type is required")
		}
		if *req.Type == "SOA" {
			return unprocessable("type \"SOA\" is invalid: the SOA record is created with the domain and only its ttl can be changed")
		}
		if !writableTypes[*req.Type] {
			return unprocessable("type %q is not supported by the simulator (supported: A, AAAA, CNAME, TXT, NS)", *req.Type)
		}
		if req.Name == nil {
			return unprocessable("name is required (\"@\" for the apex)")
		}
		rec := domainRecord{Type: *req.Type, Name: *req.Name, TTL: defaultZoneTTL}
		if req.Data != nil {
			rec.Data = *req.Data
		}
		if req.TTL != nil {
			rec.TTL = *req.TTL
		}
		if verr := validateRecord(d.Name, rec); verr != nil {
			return verr
		}
		if cerr := s.conflictLocked(d.Name, rec, 0); cerr != nil {
			return cerr
		}
		added := s.addRecordLocked(d, rec)
		s.log.Info("domain record created", "account", rq.account, "domain", d.Name, "record", added.ID, "type", added.Type, "name", added.Name)
		view = recordView(added)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"domain_record": view})
}

// recordLocked finds an account's record of a zone, or a 404.
func (s *Sim) recordLocked(rq *request, r *http.Request) (*domain, *domainRecord, *apiError) {
	d, aerr := s.domainLocked(rq.account, domainName(r))
	if aerr != nil {
		return nil, nil, aerr
	}
	id, ok := pathID(r, "domain_record_id")
	rec := s.st.Records[id]
	if !ok || rec == nil || rec.Domain != d.Name {
		return nil, nil, errorFor(http.StatusNotFound, "")
	}
	return d, rec, nil
}

func (s *Sim) getRecord(rq *request, w http.ResponseWriter, r *http.Request) {
	var view any
	err := s.update(func(time.Time) error {
		_, rec, aerr := s.recordLocked(rq, r)
		if aerr != nil {
			return aerr
		}
		view = recordView(rec)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"domain_record": view})
}

// updateRecord serves PUT and PATCH alike: fields present in the body
// change (godo's EditRecord sends PUT without its empty fields).
func (s *Sim) updateRecord(rq *request, w http.ResponseWriter, r *http.Request) {
	var view any
	err := s.update(func(time.Time) error {
		d, rec, aerr := s.recordLocked(rq, r)
		if aerr != nil {
			return aerr
		}
		req, derr := decodeRecord(rq.body)
		if derr != nil {
			return derr
		}
		if req.Type != nil && *req.Type != rec.Type {
			return unprocessable("type cannot be changed (record %d is a %s record): delete it and create a %s record", rec.ID, rec.Type, truncate(*req.Type, 16))
		}
		next := *rec
		if req.Name != nil {
			next.Name = *req.Name
		}
		if req.Data != nil {
			next.Data = *req.Data
		}
		if req.TTL != nil {
			next.TTL = *req.TTL
		}
		if rec.Type == "SOA" {
			if next.Name != rec.Name || (req.Data != nil && next.Data != rec.Data) {
				return unprocessable("only the ttl of the SOA record can be changed")
			}
			next.Data = strconv.Itoa(next.TTL)
		}
		if verr := validateRecord(d.Name, next); verr != nil {
			return verr
		}
		if cerr := s.conflictLocked(d.Name, next, rec.ID); cerr != nil {
			return cerr
		}
		*rec = next
		d.Serial++
		s.dirty = true
		s.log.Info("domain record updated", "account", rq.account, "domain", d.Name, "record", rec.ID)
		view = recordView(rec)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"domain_record": view})
}

func (s *Sim) deleteRecord(rq *request, w http.ResponseWriter, r *http.Request) {
	err := s.update(func(time.Time) error {
		d, rec, aerr := s.recordLocked(rq, r)
		if aerr != nil {
			return aerr
		}
		if rec.Type == "SOA" {
			return unprocessable("the SOA record cannot be deleted")
		}
		delete(s.st.Records, rec.ID)
		d.Serial++
		s.dirty = true
		s.log.Info("domain record deleted", "account", rq.account, "domain", d.Name, "record", rec.ID)
		return nil
	})
	if err != nil {
		s.writeAny(w, rq, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNoContent)
}

// --- views ---

func recordView(rec *domainRecord) map[string]any {
	return map[string]any{
		"id":       rec.ID,
		"type":     rec.Type,
		"name":     rec.Name,
		"data":     rec.Data,
		"priority": nil,
		"port":     nil,
		"ttl":      rec.TTL,
		"weight":   nil,
		"flags":    nil,
		"tag":      nil,
	}
}

func (s *Sim) domainViewLocked(d *domain) map[string]any {
	return map[string]any{"name": d.Name, "ttl": d.TTL, "zone_file": s.zoneFileLocked(d)}
}

// zoneFileLocked renders the zone in master file format, as DigitalOcean's
// zone_file attribute does.
func (s *Sim) zoneFileLocked(d *domain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL %d\n", d.Name, d.TTL)
	for _, rec := range s.zoneRecordsLocked(d.Name) {
		if rr := recordRR(d, rec); rr != nil {
			b.WriteString(rr.String())
			b.WriteByte('\n')
		}
	}
	return b.String()
}
