// Package promcheck lints a Prometheus scrape with Prometheus's own rules
// (promtool check metrics: naming, units, help texts, types), so tests of
// every binary that serves /metrics hold it to the same conventions.
// promtool comes from Debian's prometheus package (make deps installs it).
package promcheck

import (
	"bytes"
	"fmt"
	"os/exec"
)

// Check runs promtool check metrics over scrape and returns its complaints
// as an error, or nil when it has none.
func Check(scrape []byte) error {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		return fmt.Errorf("promtool not found (make deps installs Debian's prometheus package): %w", err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	return nil
}
