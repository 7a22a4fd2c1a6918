package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/internal/cliexit"
)

const keygenUsage = `Usage:
  genesis keygen age --out FILE [--force]
  genesis keygen signing --out FILE [--force]

age:      makes an age X25519 identity (the reconciler's decryption key for
          sealed credentials), writes it to FILE (mode 0600, age-keygen format)
          and prints its recipient (age1...) on stdout: put that recipient in
          genesis.yaml spec.recipients.
signing:  makes an ed25519 manifest-signing key: FILE holds the private key
          (PKCS#8 PEM, mode 0600), FILE.pub the public key (PKIX PEM), which
          agents trust. The public key is also printed on stdout.

An existing FILE is never overwritten unless --force is given.`

func runKeygen(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("keygen", keygenUsage)
	out := fs.String("out", "", "file to write the private key to (required)")
	force := fs.Bool("force", false, "overwrite an existing file")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cliexit.Usage("keygen takes one kind: age or signing (see genesis keygen --help)")
	}
	if *out == "" {
		return cliexit.Usage("keygen: --out FILE is required")
	}
	switch pos[0] {
	case "age":
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return err
		}
		body := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
		if err := writeSecret(*out, []byte(body), *force); err != nil {
			return err
		}
		fmt.Fprintln(e.Stdout, id.Recipient())
		fmt.Fprintf(e.Stderr, "wrote age identity to %s\n", *out)
		return nil
	case "signing":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		privDER, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return err
		}
		pubDER, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return err
		}
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
		if !*force {
			if _, err := os.Stat(*out + ".pub"); err == nil {
				return fmt.Errorf("%s.pub exists; use --force to overwrite", *out)
			}
		}
		if err := writeSecret(*out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), *force); err != nil {
			return err
		}
		if err := os.WriteFile(*out+".pub", pubPEM, 0o644); err != nil {
			return err
		}
		e.Stdout.Write(pubPEM)
		fmt.Fprintf(e.Stderr, "wrote signing key to %s and public key to %s.pub\n", *out, *out)
		return nil
	default:
		return cliexit.Usage("keygen: unknown kind %q (age or signing)", pos[0])
	}
}

// writeSecret writes a private key with mode 0600, refusing to replace an
// existing file unless force.
func writeSecret(path string, data []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; use --force to overwrite", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
