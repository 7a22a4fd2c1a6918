package probe

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"genesis.dev/fleet/schema"
)

// Container is one container as docker compose ps reports it.
type Container struct {
	Service string
	Name    string
	// State is docker's: created, running, paused, restarting, removing,
	// exited or dead.
	State string
	// Health is the healthcheck's state: starting, healthy, unhealthy, or
	// empty (no healthcheck).
	Health   string
	ExitCode int
}

// States are the container states docker reports.
var States = []string{"created", "running", "paused", "restarting", "removing", "exited", "dead"}

// healths are the healthcheck states docker reports ("" without one).
var healths = []string{"", "starting", "healthy", "unhealthy"}

// serviceRE is what compose accepts as a service name.
var serviceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)

// MaxContainers bounds the entries ParsePS accepts.
const MaxContainers = 256

// psEntry is the part of an entry ParsePS reads. Docker prints many more
// fields, and their set and types changed between Compose versions
// (Labels, Names and Networks went from lists to strings in v2.21): an
// unknown field is ignored, not refused, so the probe keeps working across
// docker upgrades. What it reads is checked strictly: present, the right
// type, a known value.
type psEntry struct {
	Service  *string `json:"Service"`
	Name     string  `json:"Name"`
	State    *string `json:"State"`
	Health   string  `json:"Health"`
	ExitCode *int    `json:"ExitCode"`
}

// ParsePS reads docker compose ps --format json: one JSON array of
// containers (Compose before v2.21) or one object a line (v2.21 and
// later); empty output is no container. Anything else is an error naming
// the entry and the field.
func ParsePS(data []byte) ([]Container, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil
	}
	var raws []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if data[0] == '[' {
		if err := dec.Decode(&raws); err != nil {
			return nil, fmt.Errorf("docker compose ps: not a JSON array of containers: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("docker compose ps: data after the JSON array")
		}
	} else {
		for {
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("docker compose ps: entry %d: %w", len(raws)+1, err)
			}
			raws = append(raws, raw)
			if len(raws) > MaxContainers {
				break
			}
		}
	}
	if len(raws) > MaxContainers {
		return nil, fmt.Errorf("docker compose ps: more than %d containers", MaxContainers)
	}
	out := make([]Container, 0, len(raws))
	for i, raw := range raws {
		c, err := parseEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("docker compose ps: entry %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func parseEntry(raw json.RawMessage) (Container, error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return Container{}, errors.New("not a JSON object")
	}
	var e psEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Container{}, fmt.Errorf("field %s: want a %s, got a JSON %s", te.Field, te.Type, te.Value)
		}
		return Container{}, err
	}
	switch {
	case e.Service == nil:
		return Container{}, errors.New("no Service")
	case !serviceRE.MatchString(*e.Service) || len(*e.Service) > 255:
		return Container{}, fmt.Errorf("Service %q is not a service name", clip(*e.Service, 100))
	case e.State == nil:
		return Container{}, fmt.Errorf("service %s: no State", *e.Service)
	case !slices.Contains(States, *e.State):
		return Container{}, fmt.Errorf("service %s: State %q is not a container state (%s)", *e.Service, clip(*e.State, 100), strings.Join(States, ", "))
	case !slices.Contains(healths, e.Health):
		return Container{}, fmt.Errorf("service %s: Health %q is not a health state", *e.Service, clip(e.Health, 100))
	case e.ExitCode == nil:
		return Container{}, fmt.Errorf("service %s: no ExitCode", *e.Service)
	case len(e.Name) > 255:
		return Container{}, fmt.Errorf("service %s: Name too long", *e.Service)
	}
	return Container{Service: *e.Service, Name: e.Name, State: *e.State, Health: e.Health, ExitCode: *e.ExitCode}, nil
}

// Containers checks that every service of the droplet's compose stack has
// a running container.
type Containers struct {
	// Docker is the docker CLI; default "docker".
	Docker string
	// Project is the compose project; default "genesis".
	Project string
	// File is the compose file; default /opt/genesis/compose.yaml.
	File string
	// Expected says whether service is down on purpose, and why (nil:
	// none is).
	Expected func(service string) (reason string, ok bool)
}

// Probe lists the services and their containers; OK when every service
// runs (or is down on purpose). The detail names the ones that do not.
func (c Containers) Probe(ctx context.Context) schema.ComponentHealth {
	start := time.Now()
	base := []string{cmp.Or(c.Docker, "docker"), "compose", "-p", cmp.Or(c.Project, "genesis"), "-f", cmp.Or(c.File, "/opt/genesis/compose.yaml")}
	fail := func(what string, err error, stderr []byte) schema.ComponentHealth {
		if ctx.Err() != nil {
			return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%s: no answer within %s: %v", what, time.Since(start).Round(time.Millisecond), ctx.Err())}
		}
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%s: %v%s", what, err, tail(stderr))}
	}
	out, stderr, err := run(ctx, append(slices.Clone(base), "config", "--services"), nil)
	if err != nil {
		return fail("docker compose config --services", err, stderr)
	}
	services, err := parseServices(out)
	if err != nil {
		return fail("docker compose config --services", err, nil)
	}
	out, stderr, err = run(ctx, append(slices.Clone(base), "ps", "--all", "--format", "json"), nil)
	if err != nil {
		return fail("docker compose ps", err, stderr)
	}
	cs, err := ParsePS(out)
	if err != nil {
		return fail("docker compose ps", err, nil)
	}
	return Judge(services, cs, c.Expected)
}

// parseServices reads config --services: one service name a line.
func parseServices(out []byte) ([]string, error) {
	var services []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !serviceRE.MatchString(line) || len(line) > 255 {
			return nil, fmt.Errorf("%q is not a service name", clip(line, 100))
		}
		services = append(services, line)
	}
	if len(services) == 0 {
		return nil, errors.New("no services")
	}
	if len(services) > MaxContainers {
		return nil, fmt.Errorf("more than %d services", MaxContainers)
	}
	slices.Sort(services)
	return slices.Compact(services), nil
}

// Judge is the containers component for services and what ps listed:
// every service needs a running container that is not unhealthy, unless
// expected says it is down on purpose. A container of a service not in the
// file (an orphan) is not judged.
func Judge(services []string, cs []Container, expected func(service string) (string, bool)) schema.ComponentHealth {
	by := map[string][]Container{}
	for _, c := range cs {
		by[c.Service] = append(by[c.Service], c)
	}
	var bad, notes []string
	running := 0
	for _, svc := range services {
		problem := ""
		list := by[svc]
		switch {
		case len(list) == 0:
			problem = svc + " has no container"
		default:
			for _, c := range list {
				switch {
				case c.State == "exited" || c.State == "dead":
					problem = fmt.Sprintf("%s %s (%d)", svc, c.State, c.ExitCode)
				case c.State != "running":
					problem = fmt.Sprintf("%s %s", svc, c.State)
				case c.Health == "unhealthy":
					problem = svc + " running (unhealthy)"
				}
				if problem != "" {
					break
				}
			}
		}
		if problem == "" {
			running++
			continue
		}
		if expected != nil {
			if why, ok := expected(svc); ok {
				notes = append(notes, problem+": down on purpose ("+why+")")
				continue
			}
		}
		bad = append(bad, problem)
	}
	summary := fmt.Sprintf("%d of %d services running", running, len(services))
	if len(bad) > 0 {
		return schema.ComponentHealth{OK: false, Detail: clip(strings.Join(append(bad, notes...), "; ")+"; "+summary, 1000)}
	}
	if len(notes) > 0 {
		return schema.ComponentHealth{OK: true, Detail: clip(strings.Join(notes, "; ")+"; "+summary, 1000)}
	}
	return schema.ComponentHealth{OK: true, Detail: summary}
}
