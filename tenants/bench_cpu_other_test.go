//go:build !unix

package tenants

import "time"

// processCPU is not measured here.
func processCPU() (time.Duration, bool) { return 0, false }
