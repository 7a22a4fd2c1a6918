package converge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"genesis.dev/fleet/internal/atomicfile"
)

// The droplet's Postgres password, a secret rotation's last n8n-side step.
//
// n8n reaches its database as the role n8n with the password in the
// compose project's .env (POSTGRES_PASSWORD, made by cloud-init at first
// boot; compose.yaml interpolates it into n8n's DB_POSTGRESDB_PASSWORD).
// A rotation moves both, the new password working before the old one is
// given up:
//
//  1. A new random password is made and saved in the state directory as
//     next, with the current one (the .env's) as old, before anything
//     uses it.
//  2. The role's password is set to it: ALTER ROLE ... PASSWORD with a
//     SCRAM-SHA-256 verifier computed here, sent on stdin to psql in the
//     stack's postgres service (the plaintext never reaches a command
//     line, Postgres or its logs; n8n's open connections stay up).
//  3. The .env is rewritten with it (atomically: a crash leaves the old
//     file or the new, every other line kept).
//  4. n8n is recreated from it (docker compose up -d --no-deps n8n) and
//     must become ready: n8n connects with the new password or never gets
//     ready.
//  5. Only then is the generation recorded done and next forgotten.
//
// A failure at 2-4 puts the old password back the same way (role, .env,
// n8n recreated) and reports the error, which the heartbeat carries; the
// rotation is tried again on the agent's backoff with a new password. A
// crash (or a stop) anywhere after 1 leaves next and old saved: the next
// attempt tries the saved next first (steps 2-4 are idempotent), then
// falls back to old. So at every point the role's password, the .env and
// n8n's are next or old, both of which the agent still holds.

// dbPasswordFile in the state directory is the rotation's record
// (dbPasswordRecord); it holds passwords: 0600 like everything there.
const dbPasswordFile = "db-password.json"

// roleRE bounds the role name that goes into ALTER ROLE.
var roleRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// DBPassword rotates the password n8n's database role has and the compose
// stack's .env gives n8n.
type DBPassword struct {
	// Dir is the agent's state directory (the record is kept there).
	Dir string
	// EnvFile is the compose project's .env (/opt/genesis/.env).
	EnvFile string
	// Key is the .env variable n8n's password is in; default
	// POSTGRES_PASSWORD.
	Key string
	// Role is n8n's database role; default n8n.
	Role string
	// SQL is a command that runs the SQL on its stdin against n8n's
	// database as a role allowed to change Role's password, stopping at
	// the first error (default with the compose stack: docker compose
	// exec -T postgres psql -X -q -v ON_ERROR_STOP=1 -U n8n -d n8n).
	SQL []string
	// Recreate recreates n8n from the .env and waits until it is ready
	// (Compose.Recreate).
	Recreate func(ctx context.Context) error
	// Logger; default: discard.
	Logger *slog.Logger
}

// DefaultDBPasswordSQL is the SQL command of the droplet's compose stack:
// psql in its postgres service as n8n (its superuser, trusted on the
// container's socket).
func DefaultDBPasswordSQL(docker, project, file string) []string {
	return []string{docker, "compose", "-p", project, "-f", file, "exec", "-T", "postgres",
		"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "n8n", "-d", "n8n"}
}

// dbPasswordRecord is db-password.json.
type dbPasswordRecord struct {
	// Rotated is the highest rotation generation done.
	Rotated int64 `json:"rotated,omitempty"`
	// Generation is the rotation under way (0: none); Next is the
	// password it moves to and Old the one it moves from.
	Generation int64  `json:"generation,omitempty"`
	Next       string `json:"next,omitempty"`
	Old        string `json:"old,omitempty"`
}

// Rotated is the highest rotation generation whose database password is
// done (0: none).
func (d *DBPassword) Rotated() int64 {
	var rec dbPasswordRecord
	_, _ = loadJSON(d.Dir, dbPasswordFile, &rec)
	return rec.Rotated
}

// Rotate moves n8n's database password to a new one for rotation
// generation gen (a generation done already is a no-op); see above for
// the steps and what a failure leaves.
func (d *DBPassword) Rotate(ctx context.Context, gen int64) error {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "converge")
	if len(d.SQL) == 0 || d.Recreate == nil || d.EnvFile == "" {
		return errors.New("rotate database password: no SQL command, env file or n8n runtime")
	}
	role := d.role()
	if !roleRE.MatchString(role) {
		return fmt.Errorf("rotate database password: role %q is not a plain role name", role)
	}
	var rec dbPasswordRecord
	if _, err := loadJSON(d.Dir, dbPasswordFile, &rec); err != nil {
		return fmt.Errorf("rotate database password: %w", err)
	}
	if rec.Rotated >= gen {
		return nil
	}
	if rec.Next == "" || rec.Old == "" {
		old, err := envValue(d.EnvFile, d.key())
		if err != nil {
			return fmt.Errorf("rotate database password: %w", err)
		}
		rec = dbPasswordRecord{Rotated: rec.Rotated, Generation: gen, Next: newDBPassword(), Old: old}
		if err := saveJSON(d.Dir, dbPasswordFile, rec); err != nil {
			return fmt.Errorf("rotate database password: %w", err)
		}
	} else {
		// A rotation a crash or a stop interrupted: its saved next
		// password first (it may be in use already).
		log.WarnContext(ctx, "resuming an interrupted database password rotation", "generation", gen, "interrupted_generation", rec.Generation)
		rec.Generation = gen
	}
	err := d.use(ctx, rec.Next)
	if err == nil {
		if err := saveJSON(d.Dir, dbPasswordFile, dbPasswordRecord{Rotated: gen}); err != nil {
			return fmt.Errorf("rotate database password: %w", err)
		}
		log.InfoContext(ctx, "database password rotated", "generation", gen, "role", role)
		return nil
	}
	if ctx.Err() != nil {
		// Stopping: next and old stay saved; the next attempt resumes.
		return fmt.Errorf("rotate database password: %w", err)
	}
	log.ErrorContext(ctx, "new database password failed; putting the old one back", "generation", gen, "err", err)
	if rerr := d.use(ctx, rec.Old); rerr != nil {
		// Both saved still: the next attempt tries next, then old again.
		return fmt.Errorf("rotate database password: %w; putting the old password back failed too: %v", err, rerr)
	}
	if serr := saveJSON(d.Dir, dbPasswordFile, dbPasswordRecord{Rotated: rec.Rotated}); serr != nil {
		return fmt.Errorf("rotate database password: %w (old password back in use; %v)", err, serr)
	}
	return fmt.Errorf("rotate database password: %w (the old password is back in use)", err)
}

// use makes password the role's, the .env's and n8n's (steps 2-4; each
// idempotent).
func (d *DBPassword) use(ctx context.Context, password string) error {
	verifier, err := scramVerifier(password)
	if err != nil {
		return err
	}
	sql := fmt.Sprintf("ALTER ROLE %q WITH PASSWORD '%s';\n", d.role(), verifier)
	if err := runSQL(ctx, d.SQL, sql); err != nil {
		return fmt.Errorf("set the role's password: %w", err)
	}
	if err := setEnvValue(d.EnvFile, d.key(), password); err != nil {
		return fmt.Errorf("write %s: %w", d.EnvFile, err)
	}
	if err := d.Recreate(ctx); err != nil {
		return fmt.Errorf("recreate n8n with the password: %w", err)
	}
	return nil
}

func (d *DBPassword) role() string {
	if d.Role == "" {
		return "n8n"
	}
	return d.Role
}

func (d *DBPassword) key() string {
	if d.Key == "" {
		return "POSTGRES_PASSWORD"
	}
	return d.Key
}

// newDBPassword is 24 random bytes in hex, like cloud-init's first one.
func newDBPassword() string {
	var b [24]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// scramIterations is Postgres's default (scram_iterations).
const scramIterations = 4096

// scramVerifier is the SCRAM-SHA-256 verifier Postgres stores for password
// (RFC 5802/7677, Postgres's format
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>); ALTER ROLE
// ... PASSWORD takes it as is. password is ASCII here, which SASLprep
// leaves alone.
func scramVerifier(password string) (string, error) {
	var salt [16]byte
	rand.Read(salt[:])
	salted, err := pbkdf2.Key(sha256.New, password, salt[:], scramIterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b64(salt[:]), b64(stored[:]), b64(server)), nil
}

// runSQL runs argv with sql on its stdin (never in its arguments: it holds
// a verifier). Its output goes into the error, which holds no secret
// (psql echoes no statement with -q and ON_ERROR_STOP).
func runSQL(ctx context.Context, argv []string, sql string) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(rctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	cmd.Stdin = strings.NewReader(sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		out = bytes.TrimSpace(out)
		if len(out) > 500 {
			out = out[len(out)-500:]
		}
		// Should the command echo what it read, the verifier goes no
		// further.
		out = scramRE.ReplaceAll(out, []byte("SCRAM-SHA-256$…"))
		return fmt.Errorf("%s: %w: %s", argv[0], err, out)
	}
	return nil
}

var scramRE = regexp.MustCompile(`SCRAM-SHA-256\$[^'\s]*`)

// envValue is key's value in the .env file at path.
func envValue(path, key string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		k, v, ok := envLine(line)
		if ok && k == key {
			if v == "" {
				break
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: no %s", path, key)
}

// setEnvValue sets key to value in the .env file at path, every other line
// kept, atomically (its mode kept; a missing file is an error: the stack
// has none then).
func setEnvValue(path, key, value string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var out strings.Builder
	set := false
	for line := range strings.Lines(string(data)) {
		if k, _, ok := envLine(line); ok && k == key {
			if !set {
				out.WriteString(key + "=" + value + "\n")
				set = true
			}
			continue
		}
		out.WriteString(line)
	}
	if !set {
		if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
			out.WriteString("\n")
		}
		out.WriteString(key + "=" + value + "\n")
	}
	if out.String() == string(data) {
		return nil
	}
	return atomicfile.Write(path, []byte(out.String()), info.Mode().Perm())
}

// envLine splits a .env line into its key and (unquoted) value; false for
// blank lines and comments.
func envLine(line string) (key, value string, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return "", "", false
	}
	k, v, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", false
	}
	v = strings.TrimSpace(v)
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		v = v[1 : len(v)-1]
	}
	return strings.TrimSpace(strings.TrimPrefix(k, "export ")), v, true
}

// RotateSecrets carries out the droplet's part of secret rotation
// generation gen: n8n's API key and owner password (RotateN8N), then, with
// Config.DBPassword, the database password — under the converger's lock
// (no version switch recreates n8n meanwhile) and with ProbeN8N's repairs
// held (n8n is recreated on purpose). Each part is done once per
// generation and resumes after a failure or a crash.
func (c *Converger) RotateSecrets(ctx context.Context, gen int64) error {
	if err := c.RotateN8N(ctx, gen); err != nil {
		return err
	}
	db := c.cfg.DBPassword
	if db == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if db.Rotated() >= gen {
		return nil
	}
	if c.asleep.Load() {
		return errors.New("rotate database password: n8n is stopped for a hibernation; after the wake")
	}
	release := c.HoldRepairs()
	defer release()
	err := db.Rotate(ctx, gen)
	c.forgetVersion()
	return err
}
