package agent

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/schema"
)

// maxConfigSize bounds the agent config and cloud-config user data
// (DigitalOcean limits user data to 64 KiB; gzip may expand it).
const maxConfigSize = 1 << 20

// ParseConfig reads the agent config JSON (strictly: unknown fields,
// duplicate keys and trailing data are errors).
func ParseConfig(data []byte) (schema.AgentConfig, error) {
	var c schema.AgentConfig
	if len(data) > maxConfigSize {
		return c, errors.New("agent config: too large")
	}
	if err := schema.DecodeStrict(data, &c); err != nil {
		return schema.AgentConfig{}, fmt.Errorf("agent config: %w", err)
	}
	return c, nil
}

// cloudConfig is the part of a cloud-config document the agent reads.
type cloudConfig struct {
	WriteFiles []struct {
		Path     string `yaml:"path"`
		Content  string `yaml:"content"`
		Encoding string `yaml:"encoding"`
	} `yaml:"write_files"`
}

// ConfigFromUserData takes the agent config from a cloud-config document:
// the write_files entry at schema.AgentConfigPath, decoded as cloud-init
// would (encoding text, b64/base64, gz/gzip, gz+b64 and the like).
func ConfigFromUserData(data []byte) (schema.AgentConfig, error) {
	if len(data) > maxConfigSize {
		return schema.AgentConfig{}, errors.New("user data: too large")
	}
	if !bytes.HasPrefix(data, []byte("#cloud-config")) {
		return schema.AgentConfig{}, errors.New("user data: not a #cloud-config document")
	}
	var cc cloudConfig
	if err := yaml.Unmarshal(data, &cc); err != nil {
		return schema.AgentConfig{}, fmt.Errorf("user data: %w", err)
	}
	found := -1
	for i, f := range cc.WriteFiles {
		if f.Path != schema.AgentConfigPath {
			continue
		}
		if found >= 0 {
			return schema.AgentConfig{}, fmt.Errorf("user data: two write_files entries for %s", schema.AgentConfigPath)
		}
		found = i
	}
	if found < 0 {
		return schema.AgentConfig{}, fmt.Errorf("user data: no write_files entry for %s", schema.AgentConfigPath)
	}
	content, err := decodeWriteFile(cc.WriteFiles[found].Content, cc.WriteFiles[found].Encoding)
	if err != nil {
		return schema.AgentConfig{}, fmt.Errorf("user data: %s: %w", schema.AgentConfigPath, err)
	}
	return ParseConfig(content)
}

// decodeWriteFile decodes a write_files content by its encoding, as
// cloud-init's decode_perms/decode_contents does.
func decodeWriteFile(content, encoding string) ([]byte, error) {
	var b64, gz bool
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "text/plain":
	case "b64", "base64":
		b64 = true
	case "gz", "gzip":
		gz = true
	case "gz+b64", "gzip+base64", "gz+base64", "gzip+b64":
		b64, gz = true, true
	default:
		return nil, fmt.Errorf("unknown encoding %q", encoding)
	}
	data := []byte(content)
	if b64 {
		d, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(content), ""))
		if err != nil {
			return nil, fmt.Errorf("base64: %w", err)
		}
		data = d
	}
	if gz {
		r, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		d, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		if len(d) > maxConfigSize {
			return nil, errors.New("gzip: too large")
		}
		data = d
	}
	return data, nil
}

// CheckTransport refuses a reconciler URL that is not https unless
// insecureHTTP: over plain HTTP the one-time token, the droplet's
// credential and its sealed manifests cross the network in the clear, and
// anyone on the path can answer in the reconciler's place. The error names
// the URL's origin (scheme and host), never a user name or password it may
// carry.
func CheckTransport(c schema.AgentConfig, insecureHTTP bool) error {
	u, err := url.Parse(c.ReconcilerURL)
	if err != nil {
		return errors.New("agent config: reconciler_url is not a URL")
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && insecureHTTP:
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("agent config: reconciler_url %s://%s is plain http: the reconciler must be reached over https (give --insecure-http for a demo or test)", u.Scheme, u.Host)
	}
	return fmt.Errorf("agent config: reconciler_url scheme %q: want https", u.Scheme)
}
