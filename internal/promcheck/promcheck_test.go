package promcheck

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	good := "# HELP genesis_x_total Things.\n# TYPE genesis_x_total counter\ngenesis_x_total 1\n"
	if err := Check([]byte(good)); err != nil {
		t.Errorf("good scrape: %v", err)
	}
	bad := "# HELP foo_count x\n# TYPE foo_count counter\nfoo_count 1\n"
	err := Check([]byte(bad))
	if err == nil || !strings.Contains(err.Error(), `should have "_total" suffix`) {
		t.Errorf("bad scrape: %v, want the _total complaint", err)
	}
}
