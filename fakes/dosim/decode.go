package dosim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// MaxBodyBytes is the largest request body the simulator reads (1 MiB).
const MaxBodyBytes = 1 << 20

// MaxUserData is DigitalOcean's user_data limit (64 KiB).
const MaxUserData = 64 << 10

var (
	// tagRE is DigitalOcean's tag name rule.
	tagRE = regexp.MustCompile(`^[a-zA-Z0-9_\-:]+$`)
	// dropletNameRE is the droplet name rule from the OpenAPI description.
	dropletNameRE = regexp.MustCompile(`^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$`)
)

// apiError is an error answered to the client as {"id","message"}.
type apiError struct {
	status  int
	id      string
	message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.id, e.message) }

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...)}
}

func unprocessable(format string, args ...any) *apiError {
	return &apiError{http.StatusUnprocessableEntity, "unprocessable_entity", fmt.Sprintf(format, args...)}
}

// validTag reports whether DigitalOcean would accept tag as a tag name.
func validTag(tag string) bool { return len(tag) <= 255 && tagRE.MatchString(tag) }

// decodeJSON decodes an object body into v, turning decoder errors into
// messages that name the offending field.
func decodeJSON(body []byte, v any) *apiError {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return badRequest("request body is required")
	}
	if body[0] != '{' {
		return badRequest("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				field = "body"
			}
			return unprocessable("invalid value for %q: expected %s, got %s", field, jsonKind(te.Type.String()), te.Value)
		}
		return badRequest("malformed JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

func jsonKind(goType string) string {
	switch {
	case goType == "string":
		return "string"
	case strings.HasPrefix(goType, "[]"):
		return "array"
	case goType == "bool":
		return "boolean"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "float"):
		return "number"
	default:
		return "object"
	}
}

// createDropletRequest is a validated POST /v2/droplets body.
type createDropletRequest struct {
	Names             []string
	Region            string
	Size              string
	ImageSlug         string // set when image was a slug
	ImageID           int    // set when image was a number
	Tags              []string
	UserData          string
	Backups           bool
	IPv6              bool
	Monitoring        bool
	PrivateNetworking bool
	VPCUUID           string
	multi             bool
}

type rawCreateDroplet struct {
	Name              *string           `json:"name"`
	Names             []string          `json:"names"`
	Region            string            `json:"region"`
	Size              string            `json:"size"`
	Image             json.RawMessage   `json:"image"`
	SSHKeys           []json.RawMessage `json:"ssh_keys"`
	Backups           bool              `json:"backups"`
	IPv6              bool              `json:"ipv6"`
	Monitoring        bool              `json:"monitoring"`
	PrivateNetworking bool              `json:"private_networking"`
	PublicNetworking  *bool             `json:"public_networking"`
	WithDropletAgent  *bool             `json:"with_droplet_agent"`
	UserData          string            `json:"user_data"`
	Volumes           []string          `json:"volumes"`
	Tags              []string          `json:"tags"`
	VPCUUID           string            `json:"vpc_uuid"`
}

// decodeCreateDroplet parses and validates a droplet create body. Catalog
// checks (region, size, image existence) are left to the caller.
func decodeCreateDroplet(body []byte) (createDropletRequest, *apiError) {
	var raw rawCreateDroplet
	if err := decodeJSON(body, &raw); err != nil {
		return createDropletRequest{}, err
	}
	req := createDropletRequest{
		Region:            raw.Region,
		Size:              raw.Size,
		UserData:          raw.UserData,
		Backups:           raw.Backups,
		IPv6:              raw.IPv6,
		Monitoring:        raw.Monitoring,
		PrivateNetworking: raw.PrivateNetworking,
		VPCUUID:           raw.VPCUUID,
	}
	switch {
	case raw.Name != nil && raw.Names != nil:
		return req, unprocessable("specify either name or names, not both")
	case raw.Name != nil:
		req.Names = []string{*raw.Name}
	case raw.Names != nil:
		if len(raw.Names) == 0 {
			return req, unprocessable("names: must list at least one name")
		}
		if len(raw.Names) > 10 {
			return req, unprocessable("names: at most 10 droplets can be created at once, got %d", len(raw.Names))
		}
		req.Names = raw.Names
		req.multi = true
	default:
		return req, unprocessable("name is required")
	}
	for _, n := range req.Names {
		if n == "" {
			return req, unprocessable("name is required")
		}
		if len(n) > 255 || !dropletNameRE.MatchString(n) {
			return req, unprocessable("name %q is invalid: only valid hostname characters are allowed (a-z, A-Z, 0-9, . and -), at most 255", n)
		}
	}
	if req.Size == "" {
		return req, unprocessable("size is required")
	}
	img := bytes.TrimSpace(raw.Image)
	switch {
	case len(img) == 0 || string(img) == "null":
		return req, unprocessable("image is required")
	case img[0] == '"':
		if err := json.Unmarshal(img, &req.ImageSlug); err != nil || req.ImageSlug == "" {
			return req, unprocessable("image: must be a slug or a numeric image id")
		}
		// A numeric id sent as a string is accepted, as DigitalOcean does.
		if id, err := strconv.Atoi(req.ImageSlug); err == nil && id > 0 {
			req.ImageSlug, req.ImageID = "", id
		}
	default:
		id, err := strconv.ParseInt(string(img), 10, 64)
		if err != nil || id <= 0 || id > 1<<31-1 {
			return req, unprocessable("image: must be a slug or a positive integer image id, got %s", truncate(string(img), 40))
		}
		req.ImageID = int(id)
	}
	for i, k := range raw.SSHKeys {
		k = bytes.TrimSpace(k)
		if len(k) == 0 || (k[0] != '"' && (k[0] < '0' || k[0] > '9')) {
			return req, unprocessable("ssh_keys[%d]: must be a key id or a fingerprint", i)
		}
	}
	for i, t := range raw.Tags {
		if !validTag(t) {
			return req, unprocessable("tags[%d] %q is invalid: tag names may only contain letters, numbers, colons, dashes and underscores, and be at most 255 characters", i, truncate(t, 64))
		}
	}
	req.Tags = dedupTags(raw.Tags)
	if len(req.UserData) > MaxUserData {
		return req, unprocessable("user_data: must not exceed 64 KiB, got %d bytes", len(req.UserData))
	}
	return req, nil
}

func dedupTags(tags []string) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, t := range tags {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Action types DigitalOcean knows, and the ones the simulator performs.
var (
	knownActionTypes = map[string]bool{
		"enable_backups": true, "disable_backups": true, "reboot": true, "power_cycle": true,
		"shutdown": true, "power_off": true, "power_on": true, "restore": true,
		"password_reset": true, "resize": true, "rebuild": true, "rename": true,
		"change_kernel": true, "enable_ipv6": true, "snapshot": true, "change_backup_policy": true,
		"enable_private_networking": true,
	}
	supportedActionTypes = map[string]bool{
		"reboot": true, "power_cycle": true, "shutdown": true, "power_off": true,
		"power_on": true, "snapshot": true, "rename": true,
	}
)

// actionRequest is a validated POST /v2/droplets/{id}/actions body.
type actionRequest struct {
	Type string
	Name string // snapshot name, or the droplet's new name (rename)
}

func decodeAction(body []byte) (actionRequest, *apiError) {
	var raw struct {
		Type *string `json:"type"`
		Name *string `json:"name"`
	}
	if err := decodeJSON(body, &raw); err != nil {
		return actionRequest{}, err
	}
	if raw.Type == nil || *raw.Type == "" {
		return actionRequest{}, unprocessable("type is required")
	}
	req := actionRequest{Type: *raw.Type}
	if !knownActionTypes[req.Type] {
		return req, unprocessable("type %q is not a valid droplet action", truncate(req.Type, 64))
	}
	if !supportedActionTypes[req.Type] {
		return req, unprocessable("type %q is not supported by the simulator (supported: power_off, power_on, shutdown, reboot, power_cycle, snapshot, rename)", req.Type)
	}
	if req.Type == "rename" {
		switch {
		case raw.Name == nil || *raw.Name == "":
			return req, unprocessable("name is required for a rename")
		case len(*raw.Name) > 255 || !dropletNameRE.MatchString(*raw.Name):
			return req, unprocessable("name %q is invalid: only valid hostname characters are allowed (a-z, A-Z, 0-9, . and -), at most 255", truncate(*raw.Name, 64))
		}
		req.Name = *raw.Name
		return req, nil
	}
	if raw.Name != nil {
		if req.Type != "snapshot" {
			return req, unprocessable("name is only valid for snapshot and rename actions")
		}
		if len(*raw.Name) > 255 {
			return req, unprocessable("name: must be at most 255 characters")
		}
		req.Name = *raw.Name
	}
	return req, nil
}

// decodeFault parses a control API fault body.
func decodeFault(body []byte) (Fault, *apiError) {
	var f Fault
	if err := decodeJSON(body, &f); err != nil {
		return f, err
	}
	f.ID, f.served = 0, 0
	if err := f.normalize(); err != nil {
		return f, unprocessable("%s", err.Error())
	}
	return f, nil
}
