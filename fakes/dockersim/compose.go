package dockersim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxComposeFile bounds the compose file read.
const maxComposeFile = 1 << 20

// Service is one service of a compose file after interpolation.
type Service struct {
	Image       string
	Environment map[string]string
}

// hash is the configuration hash compose compares to decide whether a
// container must be recreated.
func (s Service) hash() string {
	keys := slices.Sorted(maps.Keys(s.Environment))
	h := sha256.New()
	h.Write([]byte(s.Image))
	for _, k := range keys {
		h.Write([]byte{0})
		h.Write([]byte(k + "=" + s.Environment[k]))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ParseCompose reads the services of a compose file, interpolating
// variables from lookup. Only image and environment are read; other keys
// are accepted and ignored.
func ParseCompose(data []byte, lookup func(string) (string, bool)) (map[string]Service, error) {
	if len(data) > maxComposeFile {
		return nil, errors.New("compose file too large")
	}
	var doc struct {
		Services map[string]struct {
			Image       string `yaml:"image"`
			Environment any    `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	out := map[string]Service{}
	for name, raw := range doc.Services {
		img, err := Interpolate(raw.Image, lookup)
		if err != nil {
			return nil, fmt.Errorf("service %q: image: %w", name, err)
		}
		env := map[string]string{}
		switch e := raw.Environment.(type) {
		case nil:
		case map[string]any:
			for k, v := range e {
				s := ""
				if v != nil {
					s = fmt.Sprint(v)
				}
				if env[k], err = Interpolate(s, lookup); err != nil {
					return nil, fmt.Errorf("service %q: environment %s: %w", name, k, err)
				}
			}
		case []any:
			for _, item := range e {
				s, ok := item.(string)
				if !ok {
					return nil, fmt.Errorf("service %q: environment: want strings", name)
				}
				k, v, _ := strings.Cut(s, "=")
				if env[k], err = Interpolate(v, lookup); err != nil {
					return nil, fmt.Errorf("service %q: environment %s: %w", name, k, err)
				}
			}
		default:
			return nil, fmt.Errorf("service %q: environment must be a mapping or a list", name)
		}
		out[name] = Service{Image: img, Environment: env}
	}
	return out, nil
}

// Interpolate expands $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
// ${VAR:?message}, ${VAR?message} and $$ like compose.
func Interpolate(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			b.WriteByte('$')
			continue
		}
		switch c := s[i+1]; {
		case c == '$':
			b.WriteByte('$')
			i++
		case c == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("invalid interpolation format for %q", s)
			}
			v, err := expand(s[i+2:i+2+end], lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i += 2 + end
		case isNameStart(c):
			j := i + 1
			for j < len(s) && isName(s[j]) {
				j++
			}
			v, _ := lookup(s[i+1 : j])
			b.WriteString(v)
			i = j - 1
		default:
			return "", fmt.Errorf("invalid interpolation format for %q", s)
		}
	}
	return b.String(), nil
}

func expand(expr string, lookup func(string) (string, bool)) (string, error) {
	j := 0
	for j < len(expr) && isName(expr[j]) {
		j++
	}
	name, rest := expr[:j], expr[j:]
	if name == "" || !isNameStart(name[0]) {
		return "", fmt.Errorf("invalid interpolation format for ${%s}", expr)
	}
	v, set := lookup(name)
	switch {
	case rest == "":
		return v, nil
	case strings.HasPrefix(rest, ":-"):
		if v == "" {
			return rest[2:], nil
		}
		return v, nil
	case strings.HasPrefix(rest, "-"):
		if !set {
			return rest[1:], nil
		}
		return v, nil
	case strings.HasPrefix(rest, ":?"):
		if v == "" {
			return "", fmt.Errorf("required variable %s is missing a value: %s", name, rest[2:])
		}
		return v, nil
	case strings.HasPrefix(rest, "?"):
		if !set {
			return "", fmt.Errorf("required variable %s is missing a value: %s", name, rest[1:])
		}
		return v, nil
	}
	return "", fmt.Errorf("invalid interpolation format for ${%s}", expr)
}

func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isName(c byte) bool      { return isNameStart(c) || c >= '0' && c <= '9' }

// record is a container's state file.
type record struct {
	Name    string `json:"name"` // <project>-<service>-1
	Hash    string `json:"hash"`
	Image   string `json:"image"`
	PID     int    `json:"pid"` // 0 when stopped
	Log     string `json:"log"`
	Created string `json:"created"`
	// Started and Finished are the last start and end (RFC 3339; empty:
	// never started, or running), ExitCode the last end's status.
	Started  string `json:"started,omitempty"`
	Finished string `json:"finished,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
}

func (r record) marshal() []byte {
	data, _ := json.MarshalIndent(r, "", "  ")
	return append(data, '\n')
}
