package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"

	"genesis.dev/fleet/internal/loadstate"
)

// stateRepo is a real git state repository declaring one tenant per agent,
// each with sealed credentials and one workflow. A round rewrites every
// tenant's workflow parameter, so one commit changes every tenant.
type stateRepo struct {
	dir    string
	n      int
	sealed [][]string // per tenant, its credentials sealed to the fleet
	// stale: importAll moved the branch past the work tree and the index.
	stale bool
}

// newStateRepo makes the repository under dir with fleetFile as its
// genesis.yaml and n tenants, each with
// creds sealed credentials. distinct > 0 seals only that many different
// credential sets, shared by the tenants in turn (sealing costs ~1 ms a
// credential here: at 100,000 tenants a fresh one each would take minutes);
// 0 gives every tenant its own.
func newStateRepo(ctx context.Context, dir string, fleetFile []byte, fleet *age.X25519Recipient, n, creds, distinct int) (*stateRepo, error) {
	r := &stateRepo{dir: filepath.Join(dir, "state"), n: n, sealed: make([][]string, n)}
	for _, d := range []string{"tenants", "templates/workflows"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, "genesis.yaml"), fleetFile, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.dir, "templates/workflows/welcome.json"), []byte(loadstate.Template), 0o644); err != nil {
		return nil, err
	}
	for i := range n {
		if distinct > 0 && i >= distinct {
			r.sealed[i] = r.sealed[i%distinct]
			continue
		}
		for k := range creds {
			var secret [16]byte
			rand.Read(secret[:])
			s, err := seal(fleet, fmt.Sprintf(`{"clientId":"load-%d-%d","clientSecret":"%s"}`, i, k, hex.EncodeToString(secret[:])))
			if err != nil {
				return nil, err
			}
			r.sealed[i] = append(r.sealed[i], s)
		}
	}
	if err := r.writeTenants(0); err != nil {
		return nil, err
	}
	if err := r.git(ctx, "init", "-q", "-b", "main"); err != nil {
		return nil, err
	}
	// No automatic gc: after a commit of every tenant file it would repack
	// the whole repository on the run's cores while the replicas decode
	// the commit. A hosted state repository packs on its own machine, and
	// a replica reads its own clone (tenants.Source survives a gc of a
	// local repository anyway: TestSyncSurvivesGC).
	if err := r.git(ctx, "config", "gc.auto", "0"); err != nil {
		return nil, err
	}
	return r, r.commit(ctx, "genesis-load: initial fleet")
}

// seal encrypts plaintext to the fleet, as genesis seal does.
func seal(to age.Recipient, plaintext string) (string, error) {
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, to)
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, plaintext); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// tenantFile is tenant i's file in round (no domain; the round is in the
// workflow's greeting).
func (r *stateRepo) tenantFile(i, round int) []byte {
	return loadstate.Tenant(tenantID(i), "", r.sealed[i], fmt.Sprintf("Hello, round %d", round))
}

func (r *stateRepo) writeTenants(round int) error {
	for i := range r.n {
		if err := os.WriteFile(filepath.Join(r.dir, "tenants", tenantID(i)+".yaml"), r.tenantFile(i, round), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// changeAll commits round's version of every tenant: one commit that
// changes them all, as a fleet-wide pull request does.
func (r *stateRepo) changeAll(ctx context.Context, round int) error {
	if err := r.writeTenants(round); err != nil {
		return err
	}
	return r.commit(ctx, fmt.Sprintf("genesis-load: round %d changes every tenant", round))
}

// importAll commits round's version of every tenant onto the branch with
// git fast-import: one stream of blobs, as a hosting service's merge makes
// the commit, without writing the work tree or the index (writing and
// hashing 100,000 files next to a loaded fleet took 4–8 minutes on 2
// cores). The work tree and the index stay at the commit before, so every
// later commit through them is refused (stale).
func (r *stateRepo) importAll(ctx context.Context, round int) error {
	if r.stale {
		return errors.New("the state repository's work tree is behind its branch")
	}
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 1<<20)
		msg := fmt.Sprintf("genesis-load: round %d changes every tenant", round)
		fmt.Fprintf(w, "commit refs/heads/main\ncommitter genesis-load <load@genesis.invalid> %d +0000\ndata %d\n%s\nfrom refs/heads/main^0\n",
			time.Now().Unix(), len(msg), msg)
		for i := range r.n {
			data := r.tenantFile(i, round)
			fmt.Fprintf(w, "M 100644 inline tenants/%s.yaml\ndata %d\n", tenantID(i), len(data))
			w.Write(data)
			w.WriteString("\n")
		}
		w.WriteString("done\n")
		pw.CloseWithError(w.Flush())
	}()
	_, err := r.gitIn(ctx, pr, "fast-import", "--quiet", "--done")
	pr.Close()
	if err == nil {
		r.stale = true
	}
	return err
}

// changeTemplate commits round's version of the golden template every
// tenant uses: one file, and every tenant's manifest changes.
func (r *stateRepo) changeTemplate(ctx context.Context, round int) error {
	tpl := strings.Replace(loadstate.Template, `"name":"Welcome"`, fmt.Sprintf(`"name":"Welcome, template round %d"`, round), 1)
	if err := os.WriteFile(filepath.Join(r.dir, "templates/workflows/welcome.json"), []byte(tpl), 0o644); err != nil {
		return err
	}
	return r.commit(ctx, fmt.Sprintf("genesis-load: template round %d", round))
}

// touch commits a change outside tenants/ and templates/ (a README): a new
// commit, and no tenant's manifest changes.
func (r *stateRepo) touch(ctx context.Context) error {
	if err := os.WriteFile(filepath.Join(r.dir, "README.md"), []byte("State repository of a genesis-load run.\n"), 0o644); err != nil {
		return err
	}
	return r.commit(ctx, "genesis-load: a commit that changes no tenant")
}

func (r *stateRepo) commit(ctx context.Context, msg string) error {
	if r.stale {
		return errors.New("the state repository's work tree is behind its branch (importAll); a commit through it would undo that")
	}
	if err := r.git(ctx, "add", "-A", "."); err != nil {
		return err
	}
	return r.git(ctx, "commit", "-q", "-m", msg)
}

// head is the branch's commit hash.
func (r *stateRepo) head(ctx context.Context) (string, error) {
	out, err := r.gitOut(ctx, "rev-parse", "HEAD")
	return strings.TrimSpace(out), err
}

func (r *stateRepo) git(ctx context.Context, args ...string) error {
	_, err := r.gitOut(ctx, args...)
	return err
}

func (r *stateRepo) gitOut(ctx context.Context, args ...string) (string, error) {
	return r.gitIn(ctx, nil, args...)
}

// gitIn runs git in the repository with stdin (nil: none).
func (r *stateRepo) gitIn(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", r.dir, "-c", "user.name=genesis-load", "-c", "user.email=load@genesis.invalid",
		"-c", "commit.gpgsign=false"}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", args[0], err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
