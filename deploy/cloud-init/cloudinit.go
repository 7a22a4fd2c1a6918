// Package cloudinit renders a droplet's cloud-init user data: the shared
// bootstrap in user-data.yaml (swap, Docker, UFW allowing 22/80/443 only,
// the stack's .env made on the droplet, the compose stack and the agent
// started) plus the files: the agent's config, the compose stack and the
// agent's systemd unit (deploy/droplet's, embedded), the agent's
// environment and where to download the agent.
//
// Transport: the agent refuses a plain http:// reconciler URL unless its
// environment file sets GENESIS_AGENT_INSECURE_HTTP=true, which the
// renderer writes only for Input.InsecureHTTP (the reconciler's
// --agent-insecure-http). When the image lacks the agent,
// genesis-agent-install downloads Input.AgentURL (https, or http only with
// InsecureHTTP) to a temporary file and installs it only if its SHA-256 is
// Input.AgentSHA256; on a mismatch nothing is installed, the bootstrap
// exits nonzero and the agent never starts.
//
// The per-droplet values (the agent's config with its one-time token, the
// agent download URL) and the files are never pasted into the template's
// text: the template is parsed as YAML, each file is appended to
// write_files as a YAML node built from Go values, and the whole document
// is marshalled again, so no value can change the document's structure.
// The agent config is encoded with encoding/json and carried as a block
// scalar. Nothing else secret is ever added: the fleet's age identity, the
// signing private key and DigitalOcean tokens have no way in.
package cloudinit

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/deploy/droplet"
	"genesis.dev/fleet/schema"
)

//go:embed user-data.yaml
var template []byte

// Template is the shared part of every droplet's user data.
func Template() []byte { return bytes.Clone(template) }

// MaxSize is DigitalOcean's user_data limit.
const MaxSize = 64 << 10

// Header is the first line of every cloud-config document.
const Header = "#cloud-config\n"

// Paths of the files the renderer adds.
const (
	ComposePath   = "/opt/genesis/compose.yaml"
	AgentUnitPath = "/etc/systemd/system/genesis-agent.service"
	AgentURLPath  = "/etc/genesis/agent.url"
	// AgentSHA256Path holds the hex SHA-256 the downloaded agent must have.
	AgentSHA256Path = "/etc/genesis/agent.sha256"
	// AgentEnvPath is the agent unit's EnvironmentFile.
	AgentEnvPath = "/etc/genesis/agent.env"
	// StableNamePath holds the tenant's stable DNS name (spec.dns), n8n's
	// N8N_HOST and WEBHOOK_URL host from the first boot; without it the
	// bootstrap uses <ip>.sslip.io.
	StableNamePath = "/etc/genesis/stable-name"
)

// Input is one droplet's part of its user data.
type Input struct {
	// Agent is written as JSON to schema.AgentConfigPath (mode 0600).
	Agent schema.AgentConfig
	// Compose is the droplet's compose file (default: deploy/droplet's).
	Compose []byte
	// AgentUnit is the agent's systemd unit (default: deploy/droplet's).
	AgentUnit []byte
	// AgentURL is where the bootstrap downloads the agent binary when the
	// image lacks it (optional; https, or http with InsecureHTTP).
	AgentURL string
	// AgentSHA256 is the lowercase hex SHA-256 of the agent binary at
	// AgentURL (required with AgentURL): a download that differs is not
	// installed.
	AgentSHA256 string
	// StableName is the tenant's stable DNS name <workspace>.<zone>
	// (optional): n8n's host and webhook URL use it from the first boot,
	// so webhooks registered with third parties survive wake, resize and
	// rebuild.
	StableName string
	// InsecureHTTP lets the agent use a plain http:// reconciler URL and
	// the bootstrap download the agent over http:// (demo and tests only).
	InsecureHTTP bool
}

// File is one write_files entry.
type File struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner,omitempty"`
	Permissions string `yaml:"permissions,omitempty"`
	Content     string `yaml:"content"`
}

// stableName is a lowercase DNS name of two or more labels (the bootstrap
// script keeps only these characters too).
var stableName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Render returns the user data for one droplet.
func Render(in Input) ([]byte, error) {
	if err := check(in); err != nil {
		return nil, fmt.Errorf("render user data: %w", err)
	}
	cfg, err := json.MarshalIndent(in.Agent, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render user data: %w", err)
	}
	if len(in.Compose) == 0 {
		in.Compose = droplet.Compose()
	}
	if len(in.AgentUnit) == 0 {
		in.AgentUnit = droplet.AgentUnit()
	}
	files := []File{
		{Path: schema.AgentConfigPath, Owner: "root:root", Permissions: "0600", Content: string(cfg) + "\n"},
		{Path: ComposePath, Owner: "root:root", Permissions: "0644", Content: string(in.Compose)},
		{Path: AgentUnitPath, Owner: "root:root", Permissions: "0644", Content: string(in.AgentUnit)},
		// Always written, so a droplet woken from a snapshot follows its
		// new user data rather than an old file.
		{Path: AgentEnvPath, Owner: "root:root", Permissions: "0644", Content: fmt.Sprintf("GENESIS_AGENT_INSECURE_HTTP=%t\n", in.InsecureHTTP)},
	}
	// Always written (empty without a stable name), so a droplet woken
	// from a snapshot follows its new user data rather than an old file.
	sn := ""
	if in.StableName != "" {
		sn = in.StableName + "\n"
	}
	files = append(files, File{Path: StableNamePath, Owner: "root:root", Permissions: "0644", Content: sn})
	if in.AgentURL != "" {
		files = append(files,
			File{Path: AgentURLPath, Owner: "root:root", Permissions: "0644", Content: in.AgentURL + "\n"},
			File{Path: AgentSHA256Path, Owner: "root:root", Permissions: "0644", Content: in.AgentSHA256 + "\n"})
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(template, &doc); err != nil {
		return nil, fmt.Errorf("render user data: parse template: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("render user data: the template is not a YAML mapping")
	}
	top := doc.Content[0]
	var list *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "write_files" {
			list = top.Content[i+1]
		}
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, errors.New("render user data: the template has no write_files list")
	}
	for _, f := range files {
		var n yaml.Node
		if err := n.Encode(f); err != nil {
			return nil, fmt.Errorf("render user data: %w", err)
		}
		for i := 1; i < len(n.Content); i += 2 {
			if n.Content[i-1].Value == "content" {
				n.Content[i].Style = yaml.LiteralStyle
			}
			if n.Content[i-1].Value == "permissions" {
				n.Content[i].Style = yaml.DoubleQuotedStyle
			}
		}
		list.Content = append(list.Content, &n)
	}
	// The template's comments are for its readers, not for droplets.
	doc.HeadComment, top.HeadComment = "", ""
	if len(top.Content) > 0 {
		top.Content[0].HeadComment = ""
	}
	var buf bytes.Buffer
	buf.WriteString(Header)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("render user data: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render user data: %w", err)
	}
	if buf.Len() > MaxSize {
		return nil, fmt.Errorf("render user data: %d bytes, over DigitalOcean's %d-byte limit", buf.Len(), MaxSize)
	}
	return buf.Bytes(), nil
}

func check(in Input) error {
	a := in.Agent
	switch {
	case a.ReconcilerURL == "":
		return errors.New("no reconciler URL")
	case len(a.SigningKeys) == 0:
		return errors.New("no signing public key")
	case a.Workspace == "" || a.DropletName == "" || a.Token == "":
		return errors.New("workspace, droplet name and token are required")
	}
	for _, u := range []string{a.ReconcilerURL, in.AgentURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%q is not an http(s) URL", u)
		}
	}
	if in.StableName != "" && !stableName.MatchString(in.StableName) {
		return fmt.Errorf("stable name %q is not a lowercase DNS name", in.StableName)
	}
	if in.AgentURL != "" {
		if err := CheckSHA256(in.AgentSHA256); err != nil {
			return fmt.Errorf("agent download: %w", err)
		}
		if p, _ := url.Parse(in.AgentURL); p.Scheme != "https" && !in.InsecureHTTP {
			return fmt.Errorf("agent download URL %s://%s is plain http (allowed only with insecure http)", p.Scheme, p.Host)
		}
	}
	for _, k := range a.SigningKeys {
		if bytes.Contains([]byte(k), []byte("PRIVATE KEY")) {
			return errors.New("a signing key is a private key; give the public key")
		}
	}
	return nil
}

// CheckSHA256 checks a SHA-256 digest as the bootstrap compares it: 64
// lowercase hex digits.
func CheckSHA256(h string) error {
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return errors.New("sha256: want 64 lowercase hex digits")
	}
	return nil
}
