package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"genesis.dev/fleet/reconciler/auth"

	"genesis.dev/fleet/internal/cliexit"
)

func TestTokenNew(t *testing.T) {
	var out, errb bytes.Buffer
	err := program.Run(context.Background(), []string{"token", "new", "--name", "dash", "--scopes", "dashboard,metrics"}, cliexit.Env{Getenv: func(string) string { return "" }, Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("token new: %v %s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("output:\n%s", out.String())
	}
	toks, err := auth.ParseTokens([]byte(lines[1]))
	if err != nil {
		t.Fatal(err)
	}
	if toks[0].SHA256 != auth.Hash(lines[0]) || toks[0].Name != "dash" || len(toks[0].Scopes) != 2 {
		t.Errorf("line %s does not describe token %s", lines[1], lines[0])
	}
	for _, bad := range [][]string{{"token"}, {"token", "new", "--name", "x"}, {"token", "new", "--name", "a b", "--scopes", "admin"}, {"token", "new", "--name", "x", "--scopes", "root"}} {
		if err := program.Run(context.Background(), bad, cliexit.Env{Getenv: func(string) string { return "" }, Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}); cliexit.Code("genesis", err, &errb) != 2 {
			t.Errorf("%q: exit %d, want 2", bad, cliexit.Code("genesis", err, &errb))
		}
	}
}
