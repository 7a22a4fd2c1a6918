package dockersim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

// psEntry is one line of docker compose ps --format json as Compose v2.21
// and later print it (one object a line, keys in this order, most values
// strings formatted like docker ps's columns). Health is empty: the
// emulator runs no healthchecks.
type psEntry struct {
	Command      string        `json:"Command"`
	CreatedAt    string        `json:"CreatedAt"`
	ExitCode     int           `json:"ExitCode"`
	Health       string        `json:"Health"`
	ID           string        `json:"ID"`
	Image        string        `json:"Image"`
	Labels       string        `json:"Labels"`
	LocalVolumes string        `json:"LocalVolumes"`
	Mounts       string        `json:"Mounts"`
	Name         string        `json:"Name"`
	Names        string        `json:"Names"`
	Networks     string        `json:"Networks"`
	Ports        string        `json:"Ports"`
	Project      string        `json:"Project"`
	Publishers   []psPublisher `json:"Publishers"`
	RunningFor   string        `json:"RunningFor"`
	Service      string        `json:"Service"`
	Size         string        `json:"Size"`
	State        string        `json:"State"`
	Status       string        `json:"Status"`
}

type psPublisher struct {
	URL           string `json:"URL"`
	TargetPort    int    `json:"TargetPort"`
	PublishedPort int    `json:"PublishedPort"`
	Protocol      string `json:"Protocol"`
}

// psJSON prints every container of c's project (of c.service only when
// set), running or not, sorted by name: docker compose ps --all --format
// json. A service without a container prints nothing.
func psJSON(state string, c command, services map[string]Service, stdout io.Writer) error {
	if c.service != "" {
		if _, ok := services[c.service]; !ok {
			return fmt.Errorf("no such service: %s", c.service)
		}
	}
	enc := json.NewEncoder(stdout)
	for _, name := range slices.Sorted(maps.Keys(services)) {
		if c.service != "" && name != c.service {
			continue
		}
		e := newEngine(state, c.project, name, "", io.Discard)
		unlock, err := e.lock()
		if err != nil {
			return err
		}
		r, ok, err := e.load()
		unlock()
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := enc.Encode(e.entry(r, time.Now())); err != nil {
			return err
		}
	}
	return nil
}

// entry is r as ps shows it at now.
func (e *engine) entry(r record, now time.Time) psEntry {
	sum := sha256.Sum256([]byte(r.Name + "\x00" + r.Created))
	created, _ := time.Parse(time.RFC3339Nano, r.Created)
	p := psEntry{
		Command:   `"tini -- /docker-ent…"`,
		CreatedAt: created.Local().Format("2006-01-02 15:04:05 -0700 MST"),
		ID:        hex.EncodeToString(sum[:])[:12],
		Image:     r.Image,
		Labels: fmt.Sprintf("com.docker.compose.config-hash=%s,com.docker.compose.container-number=1,com.docker.compose.oneoff=False,"+
			"com.docker.compose.project=%s,com.docker.compose.service=%s", r.Hash, e.project, e.service),
		LocalVolumes: "0",
		Name:         r.Name,
		Names:        r.Name,
		Networks:     e.project + "_default",
		Project:      e.project,
		Publishers:   []psPublisher{},
		RunningFor:   humanDuration(now.Sub(created)) + " ago",
		Service:      e.service,
		Size:         "0B",
	}
	started, _ := time.Parse(time.RFC3339Nano, r.Started)
	finished, _ := time.Parse(time.RFC3339Nano, r.Finished)
	switch {
	case r.PID != 0:
		p.State, p.Status = "running", "Up "+humanDuration(now.Sub(started))
	case r.Started == "":
		p.State, p.Status = "created", "Created"
	default:
		p.State, p.ExitCode = "exited", r.ExitCode
		if r.Finished == "" {
			// Ended behind the CLI's back (killed, crashed): see kill.
			p.ExitCode, finished = 137, now
		}
		p.Status = fmt.Sprintf("Exited (%d) %s ago", p.ExitCode, humanDuration(now.Sub(finished)))
	}
	return p
}

// humanDuration is docker's (go-units HumanDuration) for d up to weeks.
func humanDuration(d time.Duration) string {
	switch s := int(d.Seconds()); {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", s)
	}
	switch m := int(d.Minutes()); {
	case m == 1:
		return "About a minute"
	case m < 60:
		return fmt.Sprintf("%d minutes", m)
	}
	switch h := int(d.Hours() + 0.5); {
	case h == 1:
		return "About an hour"
	case h < 48:
		return fmt.Sprintf("%d hours", h)
	default:
		return fmt.Sprintf("%d days", h/24)
	}
}
