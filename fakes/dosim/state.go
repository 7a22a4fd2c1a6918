package dosim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

const (
	statusNew    = "new"
	statusActive = "active"
	statusOff    = "off"

	actionInProgress = "in-progress"
	actionCompleted  = "completed"
	actionErrored    = "errored"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("1.5s"); a bare JSON number is read as seconds.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q", s)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return errors.New("duration must be a string like \"1.5s\" or a number of seconds")
	}
	if f > 1e9 || f < -1e9 {
		return errors.New("duration out of range")
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// imageRef is what a droplet was built from: a public image or a snapshot.
type imageRef struct {
	ID           int       `json:"id"`
	Slug         string    `json:"slug,omitempty"` // empty for snapshots
	Name         string    `json:"name"`
	Distribution string    `json:"distribution"`
	Type         string    `json:"type"` // base or snapshot
	MinDiskSize  int       `json:"min_disk_size"`
	SizeGB       float64   `json:"size_gigabytes"`
	CreatedAt    time.Time `json:"created_at"`
}

type droplet struct {
	ID             int       `json:"id"`
	Account        string    `json:"account"`
	Name           string    `json:"name"`
	Region         string    `json:"region"`
	Size           string    `json:"size"`
	Image          imageRef  `json:"image"`
	Tags           []string  `json:"tags"`
	UserData       string    `json:"user_data,omitempty"`
	Status         string    `json:"status"`
	CreatedAt      time.Time `json:"created_at"`
	IP             string    `json:"ip"`
	SnapshotIDs    []int     `json:"snapshot_ids"`
	CreateActionID int       `json:"create_action_id"`
	Features       []string  `json:"features"`
	VPCUUID        string    `json:"vpc_uuid,omitempty"`
}

type action struct {
	ID           int        `json:"id"`
	Account      string     `json:"account"`
	DropletID    int        `json:"droplet_id"`
	Type         string     `json:"type"`
	Status       string     `json:"status"`
	StartedAt    time.Time  `json:"started_at"`
	DueAt        time.Time  `json:"due_at"`
	CompletedAt  *time.Time `json:"completed_at,omitempty"`
	Region       string     `json:"region"`
	Fail         bool       `json:"fail,omitempty"`
	SnapshotID   int        `json:"snapshot_id,omitempty"`
	SnapshotName string     `json:"snapshot_name,omitempty"`
	// NewName is a rename's new droplet name (applied when it completes).
	NewName string `json:"new_name,omitempty"`
	// ReservedIP is set on reserved IP actions (assign_ip, unassign_ip),
	// whose DropletID is 0; TargetDroplet is the droplet assign_ip assigns
	// the address to when it completes.
	ReservedIP    string `json:"reserved_ip,omitempty"`
	TargetDroplet int    `json:"target_droplet,omitempty"`
}

// domain is a hosted zone. Serial is its SOA serial, bumped on every
// change to its records.
type domain struct {
	Name      string    `json:"name"`
	Account   string    `json:"account"`
	TTL       int       `json:"ttl"`
	Serial    uint32    `json:"serial"`
	CreatedAt time.Time `json:"created_at"`
}

// domainRecord is one record of a zone. Name is relative to the zone ("@"
// for the apex), lower case; Data is as DigitalOcean returns it (CNAME and
// NS targets end in "." or are "@"; the default NS records are written
// without the dot, as DigitalOcean does).
type domainRecord struct {
	ID     int    `json:"id"`
	Domain string `json:"domain"`
	Type   string `json:"type"`
	Name   string `json:"name"`
	Data   string `json:"data"`
	TTL    int    `json:"ttl"`
}

// reservedIP is a reserved IP address: data only, never routed.
type reservedIP struct {
	IP        string    `json:"ip"`
	Account   string    `json:"account"`
	Region    string    `json:"region"`
	DropletID int       `json:"droplet_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

type snapshot struct {
	ID          int       `json:"id"`
	Account     string    `json:"account"`
	Name        string    `json:"name"`
	DropletID   int       `json:"droplet_id"`
	Region      string    `json:"region"`
	MinDiskSize int       `json:"min_disk_size"`
	SizeGB      float64   `json:"size_gigabytes"`
	CreatedAt   time.Time `json:"created_at"`
	Tags        []string  `json:"tags"`
	Image       imageRef  `json:"image"` // the image the droplet came from
}

// state is everything the simulator persists.
type state struct {
	Accounts  map[string]*Account `json:"accounts"`
	Droplets  map[int]*droplet    `json:"droplets"`
	Actions   map[int]*action     `json:"actions"`
	Snapshots map[int]*snapshot   `json:"snapshots"`
	NextID    int                 `json:"next_id"`     // droplets
	NextAct   int                 `json:"next_action"` // actions
	NextSnap  int                 `json:"next_snapshot"`
	NextIP    uint32              `json:"next_ip"`
	// Tags are the tags made with POST /v2/tags, by account (a tag on a
	// droplet exists too).
	Tags map[string]map[string]bool `json:"tags,omitempty"`
	// Domains are the hosted zones by (lower-case) name; a name is hosted by
	// at most one account, as on DigitalOcean. Records are keyed by id.
	// Since version 2.
	Domains     map[string]*domain     `json:"domains,omitempty"`
	Records     map[int]*domainRecord  `json:"domain_records,omitempty"`
	NextRecord  int                    `json:"next_domain_record,omitempty"`
	ReservedIPs map[string]*reservedIP `json:"reserved_ips,omitempty"`
	NextRIP     uint32                 `json:"next_reserved_ip,omitempty"`

	pending map[int]struct{}  // in-progress action ids (derived)
	tokens  map[string]string // token -> account name (derived)
}

func newState() *state {
	return &state{
		Accounts:    map[string]*Account{},
		Droplets:    map[int]*droplet{},
		Actions:     map[int]*action{},
		Snapshots:   map[int]*snapshot{},
		NextID:      300000001,
		Domains:     map[string]*domain{},
		Records:     map[int]*domainRecord{},
		NextRecord:  40000001,
		ReservedIPs: map[string]*reservedIP{},
		NextAct:     2000000001,
		NextSnap:    170000001,
		pending:     map[int]struct{}{},
		tokens:      map[string]string{},
	}
}

func (st *state) reindex() {
	st.pending = map[int]struct{}{}
	for id, a := range st.Actions {
		if a.Status == actionInProgress {
			st.pending[id] = struct{}{}
		}
	}
	st.tokens = map[string]string{}
	for name, a := range st.Accounts {
		st.tokens[a.Token] = name
	}
}

func (st *state) upsertAccount(a Account) error {
	if err := a.validate(); err != nil {
		return err
	}
	if owner, ok := st.tokens[a.Token]; ok && owner != a.Name {
		return fmt.Errorf("account %s: token already belongs to account %s", a.Name, owner)
	}
	if old, ok := st.Accounts[a.Name]; ok {
		delete(st.tokens, old.Token)
	}
	acc := a
	st.Accounts[a.Name] = &acc
	st.tokens[a.Token] = a.Name
	return nil
}

func (st *state) sortedDroplets() []*droplet {
	return st.sortedDropletsWhere(func(*droplet) bool { return true })
}

// sortedDropletsWhere is sortedDroplets of those keep keeps, filtered
// before the sort: a listing of one account's page sorts that account's
// droplets, not every droplet of the simulator (a scale run lists 100
// accounts of 1,000 each on every pass of its leader).
func (st *state) sortedDropletsWhere(keep func(*droplet) bool) []*droplet {
	var out []*droplet
	for _, d := range st.Droplets {
		if keep(d) {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (st *state) sortedActions() []*action {
	out := make([]*action, 0, len(st.Actions))
	for _, a := range st.Actions {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (st *state) sortedSnapshots() []*snapshot {
	out := make([]*snapshot, 0, len(st.Snapshots))
	for _, s := range st.Snapshots {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (st *state) pendingFor(dropletID int) *action {
	for id := range st.pending {
		if a := st.Actions[id]; a != nil && a.DropletID == dropletID {
			return a
		}
	}
	return nil
}

func (st *state) countDroplets(account string) int {
	n := 0
	for _, d := range st.Droplets {
		if d.Account == account {
			n++
		}
	}
	return n
}

// allocIP hands out distinct loopback addresses 127.1.0.1, 127.1.0.2, ...
// skipping .0 and .255 so every address is usable on 127.0.0.0/8.
func (st *state) allocIP() string {
	for {
		n := st.NextIP
		st.NextIP++
		v := uint32(127)<<24 | uint32(1)<<16 + n + 1
		if v>>24 != 127 {
			st.NextIP = 0
			continue
		}
		if b := v & 0xff; b == 0 || b == 255 {
			continue
		}
		return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&0xff, v>>8&0xff, v&0xff)
	}
}

// allocReservedIP hands out distinct loopback addresses 127.2.0.1,
// 127.2.0.2, ... for reserved IPs, a range apart from droplets' 127.1.x.y.
// They are data only: nothing listens on them and no traffic is routed.
func (st *state) allocReservedIP() string {
	for {
		n := st.NextRIP
		st.NextRIP++
		v := uint32(127)<<24 | uint32(2)<<16 + n + 1
		if v>>16 != 127<<8|2 {
			st.NextRIP = 0
			continue
		}
		if b := v & 0xff; b == 0 || b == 255 {
			continue
		}
		ip := fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&0xff, v>>8&0xff, v&0xff)
		if _, taken := st.ReservedIPs[ip]; taken {
			continue
		}
		return ip
	}
}

// stateVersion is the state file format written. Version 1 files (before
// domains and reserved IPs) load unchanged: the new maps start empty.
const stateVersion = 2

type stateFile struct {
	Version     int      `json:"version"`
	ClockOffset Duration `json:"clock_offset"`
	State       *state   `json:"state"`
}

func loadState(path string) (*state, time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	if f.Version < 1 || f.Version > stateVersion || f.State == nil {
		return nil, 0, fmt.Errorf("%s: unsupported state file version %d", path, f.Version)
	}
	st := f.State
	if st.Accounts == nil {
		st.Accounts = map[string]*Account{}
	}
	if st.Droplets == nil {
		st.Droplets = map[int]*droplet{}
	}
	if st.Actions == nil {
		st.Actions = map[int]*action{}
	}
	if st.Snapshots == nil {
		st.Snapshots = map[int]*snapshot{}
	}
	if st.Domains == nil {
		st.Domains = map[string]*domain{}
	}
	if st.Records == nil {
		st.Records = map[int]*domainRecord{}
	}
	if st.NextRecord == 0 {
		st.NextRecord = newState().NextRecord
	}
	if st.ReservedIPs == nil {
		st.ReservedIPs = map[string]*reservedIP{}
	}
	st.reindex()
	return st, f.ClockOffset.Std(), nil
}

// saveState writes the state to a temporary file in the same directory and
// renames it over path, so a crash leaves either the old or the new file.
func saveState(path string, st *state, offset time.Duration) error {
	b, err := json.Marshal(stateFile{Version: stateVersion, ClockOffset: Duration(offset), State: st})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func itoa(n int) string { return strconv.Itoa(n) }
