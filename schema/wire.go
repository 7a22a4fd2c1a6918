package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The agent protocol's wire types. Field names are fixed: other tools read
// them. The reconciler and the agent both build on these types; strict
// decoding (unknown fields, duplicate keys and trailing data are errors)
// lives here so both sides reject the same bytes.

// Manifest payload constants.
const (
	// ManifestPayloadType is the DSSE payloadType of a signed manifest.
	ManifestPayloadType = "application/vnd.genesis.manifest.v1+json"
	// ManifestType is the payload's _type.
	ManifestType = "genesis.manifest.v1"
	// MaxEnvelopeSize bounds a manifest envelope on the wire.
	MaxEnvelopeSize = 4 << 20
	// MaxHeartbeatSize bounds a heartbeat body.
	MaxHeartbeatSize = 64 << 10
)

// Manifest is what one droplet should run, signed by the reconciler.
type Manifest struct {
	Type      string    `json:"_type"`
	Workspace string    `json:"workspace"`
	Droplet   string    `json:"droplet"`
	Version   int64     `json:"version"`
	IssuedAt  time.Time `json:"issued_at"`
	Expires   time.Time `json:"expires"`
	Commit    string    `json:"commit"`
	N8N       N8NPin    `json:"n8n"`
	// State is the tenant's declared state; "hibernated" asks the agent to
	// stop n8n cleanly before its droplet is snapshotted.
	State   string   `json:"state,omitempty"`
	Domains []string `json:"domains"`
	// StableName is the tenant's stable name <workspace>.<spec.dns.zone>,
	// also one of Domains ("" without spec.dns). The agent's caddy
	// component is not healthy until Caddy serves a certificate for it, so
	// a woken or rebuilt droplet counts as healthy only once a visitor
	// reaching it through the name gets HTTPS.
	StableName  string               `json:"stable_name,omitempty"`
	Workflows   []ManifestWorkflow   `json:"workflows"`
	Credentials []ManifestCredential `json:"credentials"`
	// SigningKeys are PEM public keys the agent should trust from now on
	// (key rotation); optional.
	SigningKeys []string `json:"signing_keys,omitempty"`
	// Backup is the droplet's backup duty and, on a new droplet, the
	// backup to restore before n8n starts; nil: no backups are declared.
	Backup *ManifestBackup `json:"backup,omitempty"`
	// Agent names the agent build the droplet should run (spec.defaults.agent,
	// paced by the rollout); nil: keep the running agent.
	Agent *AgentPin `json:"agent,omitempty"`
	// Rotate asks the agent to rotate the droplet's secrets (an operator's
	// rotate_secrets); nil: no rotation is running.
	Rotate *ManifestRotate `json:"rotate,omitempty"`
}

// ManifestRotate is a secret rotation the agent should carry out once:
// new n8n owner password and API key, new database password, new agent
// keys (re-enrolled with Token through POST /v1/agent/reenroll), each old
// one given up only after its successor works. Generation grows per
// workspace; the agent reports the highest it completed
// (Heartbeat.Rotation).
type ManifestRotate struct {
	Generation int64 `json:"generation"`
	// Token is the one-time re-enrollment token, sealed (schema/sealing)
	// to this droplet's age recipient, bound to the slot RotateSlot.
	Token string `json:"token"`
}

// RotateSlot is the SealedCredential name a rotation token is bound to.
func RotateSlot(generation int64) string { return fmt.Sprintf("rotate:%d", generation) }

// ReenrollRequest is POST /v1/agent/reenroll (authenticated with the
// agent's current credential): the rotation's token and the public halves
// of the agent's new keys. The answer is an EnrollResponse with the new
// keys' credential; both work until the reconciler has seen the new one
// used.
type ReenrollRequest struct {
	Token        string `json:"token"`
	Generation   int64  `json:"generation"`
	AgeRecipient string `json:"age_recipient"`
	// SigningKey is the new ed25519 public key, PKIX PEM.
	SigningKey string `json:"signing_key"`
}

// RotationReport is the rotation part of a heartbeat.
type RotationReport struct {
	// Done is the highest generation the agent completed.
	Done int64 `json:"done"`
	// Working is the generation under way (0: none) and Error why its
	// last attempt stopped, at most 500 bytes.
	Working int64  `json:"working,omitempty"`
	Error   string `json:"error,omitempty"`
}

// AgentPin is an agent build: its version (as the binary reports it in
// heartbeats), the hex SHA-256 of the binary and where to download it
// (http or https; the digest, signed with the manifest, is what is
// trusted).
type AgentPin struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	URL     string `json:"url"`
}

// Rejection parts: what an agent gave up on.
const (
	RejectN8N   = "n8n"
	RejectAgent = "agent"
)

// MaxRejections bounds Heartbeat.Rejected.
const MaxRejections = 4

// Rejection is a manifest change an agent tried, failed, undid and will not
// try again until a manifest asks for something else: an n8n version that
// did not pass its checks (the database and the previous image were
// restored) or an agent build that did not report healthy in time (the
// previous binary was restored).
type Rejection struct {
	// Version is the manifest version that asked for the change.
	Version int64 `json:"version"`
	// Part is what was refused: n8n or agent.
	Part string `json:"part"`
	// Target is the refused version (n8n's or the agent's).
	Target string `json:"target"`
	// Reason says why, at most 500 bytes.
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// ManifestBackup tells the agent how often to back up and to whom to
// encrypt (the fleet's backup recipients plus the workspace's own).
type ManifestBackup struct {
	EverySeconds int64    `json:"every_seconds"`
	Recipients   []string `json:"recipients"`
	// Restore names the backup a new droplet restores before n8n starts
	// (it asks GET /v1/agent/backups/{id} for a presigned URL).
	Restore *ManifestRestore `json:"restore,omitempty"`
	// RequestedAt is an operator's request for a backup now (POST
	// /v1/tenants/{id}/actions backup): the agent takes one unless it
	// took one for this request already. Zero: none outstanding.
	RequestedAt time.Time `json:"requested_at,omitzero"`
}

// ManifestRestore is a backup to restore. Identity is the workspace's
// backup identity sealed to this droplet (schema/sealing, bound to the
// slot "backup:<id>"), so only this droplet can open the backup.
type ManifestRestore struct {
	ID       string    `json:"id"`
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	Created  time.Time `json:"created"`
	Identity string    `json:"identity"`
}

// BackupSlot is the SealedCredential name a restore identity is bound to.
func BackupSlot(id string) string { return "backup:" + id }

// BackupStart is the answer to POST /v1/agent/backups: where to PUT the
// encrypted backup (a presigned URL: agents never hold storage keys).
type BackupStart struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// BackupFinish is POST /v1/agent/backups/{id}: the uploaded object's size
// and SHA-256, or the error that stopped the backup.
type BackupFinish struct {
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Error  string `json:"error,omitempty"`
}

// BackupFetch is the answer to GET /v1/agent/backups/{id}: a presigned
// URL to download the workspace's backup from.
type BackupFetch struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	SHA256  string    `json:"sha256"`
	Size    int64     `json:"size"`
	Expires time.Time `json:"expires"`
}

// BackupReport is the backup part of a heartbeat.
type BackupReport struct {
	// LastOK is when the newest backup this droplet uploaded was taken.
	LastOK time.Time `json:"last_ok,omitzero"`
	// LastError is the last backup's error ("" after a success).
	LastError string `json:"last_error,omitempty"`
	// Restored is the backup this droplet restored (once, before n8n
	// started), RestoreError why a restore was refused.
	Restored     string `json:"restored,omitempty"`
	RestoreError string `json:"restore_error,omitempty"`
}

// N8NPin is the n8n version to run.
type N8NPin struct {
	Version string `json:"version"`
}

// ManifestWorkflow is one rendered workflow: the template with the tenant's
// params filled; credential placeholders stay for the agent to map.
type ManifestWorkflow struct {
	Name   string          `json:"name"`
	SHA256 string          `json:"sha256"`
	JSON   json.RawMessage `json:"json"`
}

// ManifestCredential is one credential sealed to this droplet's age
// recipient; SHA256 is the hex digest of Sealed.
type ManifestCredential struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Sealed string `json:"sealed"`
	SHA256 string `json:"sha256"`
}

// SealedCredential is the plaintext inside a ManifestCredential's
// ciphertext: the data bound to the slot it was sealed for.
type SealedCredential struct {
	Workspace string          `json:"workspace"`
	Droplet   string          `json:"droplet"`
	Name      string          `json:"name"`
	Data      json.RawMessage `json:"data"`
}

// EnrollRequest is POST /v1/enroll: the one-time token and the public
// halves of the keys the agent made on first boot.
type EnrollRequest struct {
	Token        string `json:"token"`
	Workspace    string `json:"workspace"`
	DropletID    string `json:"droplet_id"`
	DropletName  string `json:"droplet_name"`
	AgeRecipient string `json:"age_recipient"`
	// SigningKey is the agent's ed25519 public key, PKIX PEM.
	SigningKey   string `json:"signing_key"`
	AgentVersion string `json:"agent_version"`
}

// EnrollResponse returns the per-droplet credential (a bearer token for the
// agent endpoints), shown once.
type EnrollResponse struct {
	Workspace  string `json:"workspace"`
	DropletID  string `json:"droplet_id"`
	Credential string `json:"credential"`
}

// Heartbeat is POST /v1/heartbeat. SwapUsed and SwapTotal are the
// droplet's swap (SwapTotal - SwapFree and SwapTotal of /proc/meminfo; 0
// and 0: no swap, or an agent older than the fields).
type Heartbeat struct {
	Workspace      string                     `json:"workspace"`
	Droplet        string                     `json:"droplet"`
	Seq            int64                      `json:"seq"`
	SentAt         time.Time                  `json:"sent_at"`
	AppliedVersion int64                      `json:"applied_version"`
	AppliedDigest  string                     `json:"applied_digest,omitempty"`
	VerifyError    string                     `json:"verify_error,omitempty"`
	ApplyError     string                     `json:"apply_error,omitempty"`
	Components     map[string]ComponentHealth `json:"components,omitempty"`
	MemoryUsed     uint64                     `json:"memory_used_bytes"`
	MemoryTotal    uint64                     `json:"memory_total_bytes"`
	SwapUsed       uint64                     `json:"swap_used_bytes"`
	SwapTotal      uint64                     `json:"swap_total_bytes"`
	DiskUsed       uint64                     `json:"disk_used_bytes"`
	DiskTotal      uint64                     `json:"disk_total_bytes"`
	UptimeSeconds  float64                    `json:"uptime_seconds"`
	LastActivity   time.Time                  `json:"last_activity,omitzero"`
	AgentVersion   string                     `json:"agent_version"`
	N8NVersion     string                     `json:"n8n_version,omitempty"`
	// N8NStopped confirms the agent stopped n8n for a hibernation.
	N8NStopped bool `json:"n8n_stopped,omitempty"`
	// Backup reports backups and restores (nil: none declared).
	Backup *BackupReport `json:"backup,omitempty"`
	// Rejected lists the changes this agent gave up on (at most
	// MaxRejections, newest first); a rollout counts such a droplet as
	// failed.
	Rejected []Rejection `json:"rejected,omitempty"`
	// Rotation reports secret rotations (nil: none ever asked for).
	Rotation *RotationReport `json:"rotation,omitempty"`
	// Repairs are the agent's recent local repairs, newest first (at
	// most MaxRepairs, since the agent started).
	Repairs []Repair `json:"repairs,omitempty"`
}

// MaxRepairs bounds Heartbeat.Repairs.
const MaxRepairs = 10

// Repair is a local repair the agent made: a component its probe found
// down and brought back (n8n's exited container started again, a config
// Caddy lost loaded again), with the probe's detail.
type Repair struct {
	Component string    `json:"component"`
	At        time.Time `json:"at"`
	Detail    string    `json:"detail"`
}

// HealthDetail is what a tenant's newest heartbeat said about its droplet,
// as the API shows it: each component's state and reason (a local repair
// the agent made shows in its detail), memory, swap, disk, uptime and the
// last apply or verification error.
type HealthDetail struct {
	ReportedAt    time.Time                  `json:"reported_at"`
	Components    map[string]ComponentHealth `json:"components,omitempty"`
	MemoryUsed    uint64                     `json:"memory_used_bytes"`
	MemoryTotal   uint64                     `json:"memory_total_bytes"`
	SwapUsed      uint64                     `json:"swap_used_bytes"`
	SwapTotal     uint64                     `json:"swap_total_bytes"`
	DiskUsed      uint64                     `json:"disk_used_bytes"`
	DiskTotal     uint64                     `json:"disk_total_bytes"`
	UptimeSeconds float64                    `json:"uptime_seconds"`
	ApplyError    string                     `json:"apply_error,omitempty"`
	VerifyError   string                     `json:"verify_error,omitempty"`
	// Repairs are the agent's recent local repairs, newest first.
	Repairs []Repair `json:"repairs,omitempty"`
}

// ComponentHealth is one component's state in a heartbeat.
type ComponentHealth struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// DecodeStrict decodes exactly one JSON value from data into v: unknown
// fields, duplicate object keys and trailing data are errors. Every
// decoder of outside JSON in the protocol goes through it.
func DecodeStrict(data []byte, v any) error {
	if err := checkJSON(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// checkJSON walks data's tokens: one value, no duplicate key in any object,
// nothing after it.
func checkJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		obj  bool
		keys map[string]bool
		key  bool // the next token is a key
	}
	var stack []*frame
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if depth != 0 {
				return errors.New("unexpected end of JSON")
			}
			return errors.New("empty JSON")
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.obj && top.key
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{obj: t == '{', keys: map[string]bool{}, key: t == '{'})
				depth++
				if depth > 64 {
					return errors.New("JSON nested too deeply")
				}
			case '}', ']':
				stack = stack[:len(stack)-1]
				depth--
			}
		case string:
			if isKey {
				if top.keys[t] {
					return fmt.Errorf("duplicate key %q", t)
				}
				top.keys[t] = true
				top.key = false
				continue
			}
			if top != nil && top.obj {
				top.key = true
			}
		default:
			if top != nil && top.obj {
				top.key = true
			}
		}
		if depth == 0 {
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				return errors.New("trailing data after the JSON value")
			}
			return nil
		}
	}
}

// AgentConfig is what cloud-init gives the agent: cloud-config write_files
// puts it, as JSON, at AgentConfigPath.
type AgentConfig struct {
	// ReconcilerURL is the base URL of the reconciler's agent API.
	ReconcilerURL string `json:"reconciler_url"`
	// SigningKeys are the PKIX PEM ed25519 keys manifests are signed with.
	SigningKeys []string `json:"signing_keys"`
	Workspace   string   `json:"workspace"`
	DropletName string   `json:"droplet_name"`
	// Token is the one-time provisioning token for POST /v1/enroll.
	Token string `json:"token"`
}

// AgentConfigPath is where cloud-init writes the agent's config.
const AgentConfigPath = "/etc/genesis/agent.json"
