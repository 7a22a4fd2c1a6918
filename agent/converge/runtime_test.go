package converge_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/agent/converge"
)

func TestComposeRuntime(t *testing.T) {
	type call struct{ Env, Args string }
	for _, tt := range []struct {
		name      string
		readyFail map[string]bool // versions that never get ready
		want      []call
		wantErr   string
		current   string
	}{
		{"switch", nil, []call{{"N8N_VERSION=1.124.0", "docker compose -p genesis -f /opt/genesis/compose.yaml up -d n8n"}}, "", "1.124.0"},
		// A switch that does not get ready is an error and not committed
		// (the converger undoes it).
		{"not ready", map[string]bool{"1.124.0": true}, []call{
			{"N8N_VERSION=1.124.0", "docker compose -p genesis -f /opt/genesis/compose.yaml up -d n8n"},
		}, "n8n 1.124.0 not ready", "1.123.81"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var calls []call
			running := "1.123.81"
			rt := &converge.Compose{Dir: dir,
				Exec: func(_ context.Context, env []string, name string, args ...string) ([]byte, error) {
					calls = append(calls, call{strings.Join(env, " "), name + " " + strings.Join(args, " ")})
					running = strings.TrimPrefix(env[0], "N8N_VERSION=")
					return nil, nil
				},
				Ready: func(ctx context.Context) error {
					if tt.readyFail[running] {
						return errors.New("not ready")
					}
					return nil
				},
				Running: func(context.Context) (string, error) { return running, nil },
			}
			ctx := context.Background()
			if cur, _ := rt.Current(ctx); cur != "1.123.81" {
				t.Errorf("Current before a switch = %q, want n8n's own", cur)
			}
			if err := rt.Commit(ctx, "1.123.81"); err != nil {
				t.Fatal(err)
			}
			err := rt.SwitchTo(ctx, "1.124.0")
			if err == nil {
				err = rt.Commit(ctx, "1.124.0")
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("SwitchTo: %v, want %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, calls); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if cur, _ := rt.Current(ctx); cur != tt.current {
				t.Errorf("Current = %q, want %q", cur, tt.current)
			}
			if tt.wantErr == "" {
				if fi, err := os.Stat(filepath.Join(dir, "n8n-version")); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("pinned version file: %v %v", fi, err)
				}
			}
		})
	}
	if err := (&converge.Compose{Dir: t.TempDir()}).SwitchTo(context.Background(), "latest; rm -rf /"); err == nil {
		t.Error("a non-version was accepted")
	}
	if err := (&converge.Compose{Dir: t.TempDir()}).Commit(context.Background(), "../x"); err == nil {
		t.Error("a non-version was committed")
	}
}

// TestComposeStopStart: hibernation stops n8n with docker compose stop and
// starts it again with docker compose start, then waits for readiness.
func TestComposeStopStart(t *testing.T) {
	type call struct{ Env, Args string }
	var calls []call
	readies := 0
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "n8n-version"), []byte("1.123.81\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rt := &converge.Compose{Dir: dir, Project: "p", File: "/f.yaml",
		Exec: func(_ context.Context, env []string, name string, args ...string) ([]byte, error) {
			calls = append(calls, call{strings.Join(env, " "), name + " " + strings.Join(args, " ")})
			return nil, nil
		},
		Ready: func(context.Context) error { readies++; return nil },
	}
	ctx := context.Background()
	if err := rt.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	want := []call{
		{"N8N_VERSION=1.123.81", "docker compose -p p -f /f.yaml stop n8n"},
		{"N8N_VERSION=1.123.81", "docker compose -p p -f /f.yaml start n8n"},
	}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if readies != 1 {
		t.Errorf("readiness waits = %d, want 1 (after start)", readies)
	}
	failing := &converge.Compose{Dir: dir, Exec: func(context.Context, []string, string, ...string) ([]byte, error) {
		return []byte("no such service"), errors.New("exit status 1")
	}}
	if err := failing.Stop(ctx); err == nil || !strings.Contains(err.Error(), "docker compose stop n8n") || !strings.Contains(err.Error(), "no such service") {
		t.Errorf("failed stop: %v", err)
	}
}

// TestComposeStopStartNeverStarted: on a new droplet, whose n8n the agent
// never started (no committed version, no container: n8n starts with the
// first manifest), a restore's stop and start have nothing to do and
// succeed without asking n8n its version (it does not answer); a
// container that runs anyway is stopped.
func TestComposeStopStartNeverStarted(t *testing.T) {
	var calls []string
	running := false
	rt := &converge.Compose{Dir: t.TempDir(), Project: "p", File: "/f.yaml",
		Exec: func(_ context.Context, _ []string, name string, args ...string) ([]byte, error) {
			calls = append(calls, name+" "+strings.Join(args, " "))
			if args[len(args)-2] == "-q" && running {
				return []byte("0123abcd\n"), nil
			}
			return nil, nil
		},
		Running: func(context.Context) (string, error) {
			return "", errors.New("n8n: GET /rest/settings: connection refused")
		},
		Ready: func(context.Context) error { return errors.New("n8n is not up") },
	}
	ctx := context.Background()
	if err := rt.Stop(ctx); err != nil {
		t.Errorf("stop of a never-started n8n: %v", err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Errorf("start of a never-started n8n: %v", err)
	}
	want := []string{"docker compose -p p -f /f.yaml ps -q n8n", "docker compose -p p -f /f.yaml ps -q n8n"}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	// Its container runs (started by hand): stopped, at the version n8n
	// reports — here it cannot, so the stop says why.
	running, calls = true, nil
	if err := rt.Stop(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("stop of a running, unrecorded n8n: %v", err)
	}
}
