package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"filippo.io/age"
	"filippo.io/age/armor"

	"genesis.dev/fleet/schema"

	"genesis.dev/fleet/internal/cliexit"
)

const sealUsage = `Usage: genesis seal [--fleet genesis.yaml | --recipient R ...] [--raw] < plaintext > sealed

Reads a credential's plaintext on stdin and writes it, encrypted with age to
every recipient, as an armored age file on stdout: paste it under
spec.credentials[].sealed of a tenant. The plaintext is the JSON object of the
n8n credential's data (for example {"apiKey": "..."}); --raw skips that check.
Recipients come from --recipient (repeatable) or from the fleet file's
spec.recipients (default ./genesis.yaml). The output opens with 'age -d -i KEY'.`

// maxPlaintext bounds what seal reads: a credential, not a disk image.
const maxPlaintext = 256 << 10

func runSeal(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("seal", sealUsage)
	fleet := fs.String("fleet", "", "read recipients from this genesis.yaml (default ./genesis.yaml when no --recipient)")
	var recips stringList
	fs.Var(&recips, "recipient", "age recipient (age1...) to seal to; repeatable")
	raw := fs.Bool("raw", false, "do not require the plaintext to be a JSON object")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cliexit.Usage("seal reads stdin and takes no arguments, got %q", pos)
	}
	if *fleet != "" && len(recips) > 0 {
		return cliexit.Usage("seal: use --fleet or --recipient, not both")
	}
	if len(recips) == 0 {
		path := *fleet
		if path == "" {
			path = schema.FleetFile
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read recipients: %w (give --fleet or --recipient)", err)
		}
		f, errs := schema.DecodeFleet(path, data)
		if errs != nil {
			return fmt.Errorf("read recipients from %s:\n%w", path, errs)
		}
		recips = f.Spec.Recipients
	}
	var rs []age.Recipient
	for _, r := range recips {
		rcp, err := age.ParseX25519Recipient(r)
		if err != nil {
			return cliexit.Usage("seal: %q is not an age X25519 recipient", r)
		}
		rs = append(rs, rcp)
	}
	plain, err := io.ReadAll(io.LimitReader(e.Stdin, maxPlaintext+1))
	if err != nil {
		return fmt.Errorf("read plaintext: %w", err)
	}
	if len(plain) > maxPlaintext {
		return fmt.Errorf("plaintext is larger than %d bytes", maxPlaintext)
	}
	if len(bytes.TrimSpace(plain)) == 0 {
		return fmt.Errorf("no plaintext on stdin")
	}
	if !*raw {
		var obj map[string]any
		if err := json.Unmarshal(plain, &obj); err != nil {
			// The message of a JSON error may quote the input: keep the
			// plaintext out of it.
			return fmt.Errorf("plaintext is not a JSON object of n8n credential data (use --raw to seal anything)")
		}
	}
	sealed, err := seal(plain, rs)
	if err != nil {
		return err
	}
	_, err = e.Stdout.Write(sealed)
	return err
}

// seal encrypts plain to every recipient as an armored age file.
func seal(plain []byte, rs []age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, rs...)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return buf.Bytes(), nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
