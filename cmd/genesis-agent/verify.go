package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"

	"genesis.dev/fleet/internal/cliexit"
)

const keysUsage = `Usage: genesis-agent keys --state-dir DIR

Makes the droplet's age X25519 identity and ed25519 key in DIR (files 0600)
if they are missing, and prints the age recipient (first line) and the
ed25519 public key (PKIX PEM). The private halves never leave DIR.`

func runKeys(_ context.Context, e cliexit.Env, args []string) error {
	fs := newFlags(e, "keys", keysUsage)
	dir := fs.String("state-dir", "", "state `directory` (required)")
	if err := parse(e, fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return cliexit.Usage("keys: --state-dir is required")
	}
	var keys agent.Keys
	st, err := agent.OpenState(*dir)
	if err == nil {
		keys = st.Keys()
		st.Close()
	} else {
		// A running agent holds the directory: its keys exist, read them.
		var rerr error
		if keys, rerr = agent.ReadKeys(*dir); rerr != nil {
			return err
		}
	}
	fmt.Fprintln(e.Stdout, keys.Recipient())
	fmt.Fprint(e.Stdout, keys.PublicKeyPEM())
	return nil
}

const verifyUsage = `Usage: genesis-agent verify --trusted-key PUB.pem [--trusted-key ...]
         --workspace WS --droplet ID --state-dir DIR [--now RFC3339] < envelope.json

Judges one manifest envelope from stdin exactly as the running agent does:
signature by a trusted key (the --trusted-key files plus keys that manifests
accepted earlier in DIR announced), payload type, strict decoding, workspace
and droplet, version against the one recorded in DIR (rollback, reuse,
absurd jumps), expiry and issue time, size, workflow digests, and every
credential decrypted with the identity in DIR and checked against its slot.
If accepted, the envelope is recorded in DIR as applied and its version is
printed. Exit status: 0 accepted, 1 rejected (the reason on stderr), 2 usage.`

// keyFiles collects --trusted-key values.
type keyFiles []string

func (k *keyFiles) String() string { return "" }

func (k *keyFiles) Set(v string) error {
	*k = append(*k, v)
	return nil
}

func runVerify(ctx context.Context, e cliexit.Env, args []string) error {
	fs := newFlags(e, "verify", verifyUsage)
	var keys keyFiles
	fs.Var(&keys, "trusted-key", "PKIX PEM ed25519 public key `file` manifests may be signed with (repeatable)")
	workspace := fs.String("workspace", "", "this droplet's workspace `id` (required)")
	droplet := fs.String("droplet", "", "this droplet's `id` (required)")
	dir := fs.String("state-dir", "", "state `directory` (required)")
	nowFlag := fs.String("now", "", "judge expiry and issue time at this RFC3339 `time` (default: now)")
	skew := fs.Duration("max-clock-skew", agent.DefaultMaxClockSkew, "how far in the future issued_at may be")
	if err := parse(e, fs, args); err != nil {
		return err
	}
	switch {
	case len(keys) == 0:
		return cliexit.Usage("verify: at least one --trusted-key is required")
	case *workspace == "" || *droplet == "" || *dir == "":
		return cliexit.Usage("verify: --workspace, --droplet and --state-dir are required")
	case *skew <= 0:
		return cliexit.Usage("verify: --max-clock-skew must be positive")
	}
	now := time.Now()
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return cliexit.Usage("verify: --now: %v", err)
		}
		now = t
	}
	trusted := dsse.Trusted{}
	for _, f := range keys {
		data, err := os.ReadFile(f)
		if err != nil {
			return cliexit.Usage("verify: --trusted-key: %v", err)
		}
		k, err := dsse.ParsePublicKeyPEM(data)
		if err != nil {
			return cliexit.Usage("verify: --trusted-key %s: %v", f, err)
		}
		trusted.Add(k)
	}
	// Read one byte past the limit so an oversized envelope is seen as
	// such, never buffered whole.
	envelope, err := io.ReadAll(io.LimitReader(e.Stdin, schema.MaxEnvelopeSize+1))
	if err != nil {
		return fmt.Errorf("read envelope: %w", err)
	}
	st, err := agent.OpenState(*dir)
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := agent.Accept(ctx, st, envelope, agent.Policy{
		Workspace:    *workspace,
		Droplet:      *droplet,
		Trusted:      trusted,
		Now:          now,
		MaxClockSkew: *skew,
	})
	if err != nil {
		var re *agent.RejectError
		if errors.As(err, &re) {
			return &cliexit.Error{Code: 1, Msg: re.Error()}
		}
		return err
	}
	if v.Unchanged {
		fmt.Fprintf(e.Stderr, "genesis-agent: version %d is already applied (same bytes)\n", v.Manifest.Version)
	}
	fmt.Fprintln(e.Stdout, v.Manifest.Version)
	return nil
}
