package converge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Forget removes what a converger recorded in dir about its n8n: the login
// and API key (n8n.json) and the ids of the credentials and workflows it
// made there (converge.json). It is for an n8n whose database is gone (a
// new, empty n8n behind the same address): the next Apply bootstraps it and
// creates everything again, instead of using a key the new n8n refuses.
// Nothing else in dir (the agent's keys, credential, applied manifest) is
// touched. Missing files are fine.
func Forget(dir string) error {
	for _, name := range []string{n8nFile, stateFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("converge: forget n8n: %w", err)
		}
	}
	return nil
}
