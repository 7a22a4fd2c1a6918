package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// Files in the state directory.
const (
	ageKeyFile     = "age.key"         // the droplet's age X25519 identity (age-keygen format)
	signingKeyFile = "signing.key"     // the droplet's ed25519 key (PKCS#8 PEM)
	credentialFile = "credential.json" // the per-droplet bearer credential
	appliedFile    = "applied.json"    // the applied manifest, its version and the learned keys
	seqFile        = "heartbeat.seq"   // the last heartbeat sequence number sent
	lockFile       = "lock"            // flock held while a process owns the directory
)

// State is the agent's state directory: its keys, its credential, the
// applied manifest and the heartbeat sequence. One process owns it at a
// time (an exclusive flock); its methods are safe for concurrent use.
type State struct {
	dir  string
	lock *os.File

	// keys are the droplet's keys; prev is the age identity a secret
	// rotation replaced, kept to open what was sealed to it (mu).
	keys Keys
	prev *age.X25519Identity

	mu      sync.Mutex
	applied Applied
	seq     int64
}

// Keys are the droplet's own keys. The private halves never leave the
// droplet.
type Keys struct {
	Identity *age.X25519Identity
	Signing  ed25519.PrivateKey
}

// Recipient is the age recipient the reconciler seals credentials to.
func (k Keys) Recipient() string { return k.Identity.Recipient().String() }

// PublicKeyPEM is the droplet's ed25519 public key, PKIX PEM.
func (k Keys) PublicKeyPEM() string {
	return string(dsse.MarshalPublicKeyPEM(k.Signing.Public().(ed25519.PublicKey)))
}

// Applied is what the state directory records about the last accepted
// manifest.
type Applied struct {
	Workspace string `json:"workspace"`
	Droplet   string `json:"droplet"`
	Version   int64  `json:"version"`
	// Digest is the hex SHA-256 of Envelope (also the manifest's ETag).
	Digest     string    `json:"digest"`
	AcceptedAt time.Time `json:"accepted_at"`
	// TrustedKeys are signing keys (PKIX PEM) announced by accepted
	// manifests; they outlive a change of droplet id.
	TrustedKeys []string `json:"trusted_keys,omitempty"`
	// Envelope is the exact accepted envelope (base64 in the file).
	Envelope []byte `json:"envelope,omitempty"`
	// State is the manifest's state; "hibernated" once the applier
	// stopped n8n for a hibernation.
	State string `json:"state,omitempty"`
}

// OpenState opens (creating it, mode 0700) the state directory dir, takes
// its lock, and makes the droplet's keys on first use. Close releases it.
func OpenState(dir string) (*State, error) {
	if dir == "" {
		return nil, errors.New("open state: empty directory name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("open state %s: in use by another process: %w", dir, err)
	}
	s := &State{dir: dir, lock: lf}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the directory's lock.
func (s *State) Close() error { return s.lock.Close() }

// Dir is the directory's path.
func (s *State) Dir() string { return s.dir }

// Keys are the droplet's keys (a secret rotation replaces them).
func (s *State) Keys() Keys {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

func (s *State) load() error {
	keys, err := readKeys(s.dir, true)
	if err != nil {
		return err
	}
	s.keys = keys
	if err := s.loadPrev(); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(s.dir, appliedFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read applied manifest: %w", err)
	default:
		if err := schema.DecodeStrict(data, &s.applied); err != nil {
			// Never start from zero over a damaged floor: that would let a
			// rollback through.
			return fmt.Errorf("read applied manifest %s: %w", filepath.Join(s.dir, appliedFile), err)
		}
		if s.applied.Version < 0 || digest(s.applied.Envelope) != s.applied.Digest {
			return fmt.Errorf("read applied manifest %s: digest or version does not match the stored envelope", filepath.Join(s.dir, appliedFile))
		}
	}
	data, err = os.ReadFile(filepath.Join(s.dir, seqFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read heartbeat sequence: %w", err)
	default:
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("read heartbeat sequence %s: not a non-negative integer", filepath.Join(s.dir, seqFile))
		}
		s.seq = n
	}
	return nil
}

// ReadKeys reads the droplet's keys from the state directory dir without
// taking its lock or making anything.
func ReadKeys(dir string) (Keys, error) { return readKeys(dir, false) }

// readKeys reads the droplet's keys, making whichever is missing if create.
func readKeys(dir string, create bool) (Keys, error) {
	return readKeyFiles(dir, ageKeyFile, signingKeyFile, create)
}

// readKeyFiles reads keys from the files ageName and sigName of dir,
// making whichever is missing if create.
func readKeyFiles(dir, ageName, sigName string, create bool) (Keys, error) {
	var keys Keys
	agePath := filepath.Join(dir, ageName)
	data, err := os.ReadFile(agePath)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return keys, fmt.Errorf("make age identity: %w", err)
		}
		body := fmt.Sprintf("# genesis-agent droplet identity\n# public key: %s\n%s\n", id.Recipient(), id)
		if err := writeFileAtomic(agePath, []byte(body), 0o600); err != nil {
			return keys, fmt.Errorf("write age identity: %w", err)
		}
		keys.Identity = id
	case err != nil:
		return keys, fmt.Errorf("read age identity: %w", err)
	default:
		ids, err := age.ParseIdentities(strings.NewReader(string(data)))
		if err != nil || len(ids) != 1 {
			return keys, fmt.Errorf("read age identity %s: want exactly one X25519 identity", agePath)
		}
		id, ok := ids[0].(*age.X25519Identity)
		if !ok {
			return keys, fmt.Errorf("read age identity %s: want an X25519 identity", agePath)
		}
		keys.Identity = id
	}
	sigPath := filepath.Join(dir, sigName)
	data, err = os.ReadFile(sigPath)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return keys, fmt.Errorf("make signing key: %w", err)
		}
		if err := writeFileAtomic(sigPath, dsse.MarshalPrivateKeyPEM(priv), 0o600); err != nil {
			return keys, fmt.Errorf("write signing key: %w", err)
		}
		keys.Signing = priv
	case err != nil:
		return keys, fmt.Errorf("read signing key: %w", err)
	default:
		priv, err := dsse.ParsePrivateKeyPEM(data)
		if err != nil {
			return keys, fmt.Errorf("read signing key %s: %w", sigPath, err)
		}
		keys.Signing = priv
	}
	return keys, nil
}

// N8NStopped reports whether the manifest applied on droplet said state:
// hibernated: the applier stopped n8n for a hibernation (PREPARE_HIBERNATE),
// which the heartbeat confirms. A disk woken on another droplet does not
// count.
func (s *State) N8NStopped(workspace, droplet string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied.Workspace == workspace && s.applied.Droplet == droplet && s.applied.State == string(schema.StateHibernated)
}

// Applied is the record of the last accepted manifest (zero if none).
func (s *State) Applied() Applied {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.applied
	a.TrustedKeys = append([]string(nil), a.TrustedKeys...)
	return a
}

// Floor is the version and digest a manifest for (workspace, droplet) is
// judged against. A manifest for another droplet id (this disk was woken
// from a snapshot on a new droplet) starts from zero: versions are per
// droplet.
func (s *State) Floor(workspace, droplet string) (int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applied.Workspace != workspace || s.applied.Droplet != droplet {
		return 0, ""
	}
	return s.applied.Version, s.applied.Digest
}

// Workspace is the workspace this droplet serves. It is bootstrap (what
// cloud-init said), except for a hot spare (a bootstrap workspace with
// schema.SparePrefix) that accepted a tenant's manifest for this droplet:
// it serves that tenant from then on, across restarts (the record is the
// applied manifest, written atomically when it was accepted).
func (s *State) Workspace(bootstrap, droplet string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if schema.IsSpareWorkspace(bootstrap) && s.applied.Droplet == droplet && s.applied.Workspace != "" {
		return s.applied.Workspace
	}
	return bootstrap
}

// Trusted is base plus the keys accepted manifests announced.
func (s *State) Trusted(base dsse.Trusted) (dsse.Trusted, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := dsse.Trusted{}
	for id, k := range base {
		t[id] = k
	}
	for _, p := range s.applied.TrustedKeys {
		k, err := dsse.ParsePublicKeyPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("stored trusted key: %w", err)
		}
		t.Add(k)
	}
	return t, nil
}

// commit records v as applied, with its signing keys added to the trusted
// set, in one atomic replace.
func (s *State) commit(v *Verified, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := append([]string(nil), s.applied.TrustedKeys...)
	have := map[string]bool{}
	for _, p := range keys {
		if k, err := dsse.ParsePublicKeyPEM([]byte(p)); err == nil {
			have[dsse.KeyID(k)] = true
		}
	}
	for _, k := range v.SigningKeys {
		if id := dsse.KeyID(k); !have[id] {
			have[id] = true
			keys = append(keys, string(dsse.MarshalPublicKeyPEM(k)))
		}
	}
	next := Applied{
		Workspace:   v.Manifest.Workspace,
		Droplet:     v.Manifest.Droplet,
		Version:     v.Manifest.Version,
		Digest:      v.Digest,
		AcceptedAt:  now.UTC(),
		TrustedKeys: keys,
		Envelope:    v.Envelope,
		State:       v.Manifest.State,
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, appliedFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("record applied manifest version %d: %w", next.Version, err)
	}
	s.applied = next
	return nil
}

// storedCredential is credential.json.
type storedCredential struct {
	Workspace  string `json:"workspace"`
	Droplet    string `json:"droplet"`
	Credential string `json:"credential"`
}

// Credential returns the stored bearer credential if it was issued for
// droplet.
func (s *State) Credential(droplet string) (string, bool, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, credentialFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read credential: %w", err)
	}
	var c storedCredential
	if err := schema.DecodeStrict(data, &c); err != nil {
		return "", false, fmt.Errorf("read credential %s: malformed", filepath.Join(s.dir, credentialFile))
	}
	if c.Droplet != droplet || c.Credential == "" {
		return "", false, nil
	}
	return c.Credential, true, nil
}

// SaveCredential stores the credential issued for droplet (mode 0600).
func (s *State) SaveCredential(workspace, droplet, credential string) error {
	data, err := json.Marshal(storedCredential{Workspace: workspace, Droplet: droplet, Credential: credential})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, credentialFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("store credential: %w", err)
	}
	return nil
}

// NextSeq returns the next heartbeat sequence number, persisted before it
// is returned so that a restart never sends one twice.
func (s *State) NextSeq() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.seq + 1
	if err := writeFileAtomic(filepath.Join(s.dir, seqFile), []byte(strconv.FormatInt(n, 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("persist heartbeat sequence: %w", err)
	}
	s.seq = n
	return n, nil
}

// writeFileAtomic replaces path with data: write a temporary file in the
// same directory, fsync it, rename it over path, fsync the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return finishTemp(f, path, perm)
}

// finishTemp makes the temporary file f path's content: mode, fsync,
// close, rename over path, fsync the directory. f is closed either way.
func finishTemp(f *os.File, path string, perm os.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
