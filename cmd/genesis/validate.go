package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"genesis.dev/fleet/schema"

	"genesis.dev/fleet/internal/cliexit"
)

const validateUsage = `Usage: genesis validate [--json] [DIR]

Checks the state repository in DIR (default .): genesis.yaml, every
tenants/*.yaml and every templates/workflows/*.json, against every rule of the
schema. Each error is printed on stderr as path:line:col: message, with the
path relative to DIR; one bad file never hides the errors of the others.

Exit status: 0 valid, 1 invalid, 2 usage error or DIR unreadable.`

func runValidate(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("validate", validateUsage)
	asJSON := fs.Bool("json", false, "print the errors as a JSON array on stdout ([] when valid)")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	dir := "."
	switch len(pos) {
	case 0:
	case 1:
		dir = pos[0]
	default:
		return cliexit.Usage("validate takes at most one directory, got %d", len(pos))
	}
	repo, err := loadRepo(dir)
	if err != nil {
		return err
	}
	if *asJSON {
		errs := repo.Errors
		if errs == nil {
			errs = schema.Errors{}
		}
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(errs); err != nil {
			return err
		}
	} else {
		for _, er := range repo.Errors {
			fmt.Fprintln(e.Stderr, er.Error())
		}
	}
	if len(repo.Errors) > 0 {
		if !*asJSON {
			fmt.Fprintf(e.Stderr, "%d error(s) in %d file(s); %d valid tenant(s)\n", len(repo.Errors), countFiles(repo.Errors), len(repo.Tenants))
		}
		return &cliexit.Error{Code: 1}
	}
	if !*asJSON {
		fmt.Fprintf(e.Stdout, "ok: %s is valid: %d tenant(s), %d template(s), %d account(s)\n", dir, len(repo.Tenants), len(repo.Templates), len(repo.Fleet.Spec.Accounts))
	}
	return nil
}

// loadRepo validates the state repository in dir. A missing or unreadable
// dir is a usage error: there is nothing to judge.
func loadRepo(dir string) (*schema.Repo, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, cliexit.Usage("%v", err)
	}
	if !st.IsDir() {
		return nil, cliexit.Usage("%s is not a directory", dir)
	}
	return schema.LoadDir(os.DirFS(dir)), nil
}

func countFiles(errs schema.Errors) int {
	files := map[string]bool{}
	for _, e := range errs {
		files[e.File] = true
	}
	return len(files)
}
