package watchdog

import (
	"fmt"
	"sort"

	"genesis.dev/fleet/schema"
)

// PressurePercent is the memory or disk use past which an agent's report
// counts as a problem.
const PressurePercent = 90

// Problems lists what an agent's heartbeat reports wrong on its droplet: a
// component down, a manifest it could not verify or apply, memory or disk
// past PressurePercent. None means the heartbeat is ok. The heartbeat writer
// moves ACTIVE_HEALTHY to ACTIVE_DEGRADED on a heartbeat with problems (and
// back on one without); they never make a droplet critical.
func Problems(hb schema.Heartbeat) []string {
	var out []string
	names := make([]string, 0, len(hb.Components))
	for name := range hb.Components {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if c := hb.Components[name]; !c.OK {
			out = append(out, fmt.Sprintf("component %s down", name))
		}
	}
	if hb.VerifyError != "" {
		out = append(out, "manifest verification failed")
	}
	if hb.ApplyError != "" {
		out = append(out, "manifest apply failed")
	}
	if over(hb.MemoryUsed, hb.MemoryTotal) {
		out = append(out, fmt.Sprintf("memory above %d%%", PressurePercent))
	}
	if over(hb.DiskUsed, hb.DiskTotal) {
		out = append(out, fmt.Sprintf("disk above %d%%", PressurePercent))
	}
	return out
}

// over reports used > PressurePercent of total (false when total is
// unknown). Floats: byte counts past 2^53 lose only their last bits.
func over(used, total uint64) bool {
	return total > 0 && float64(used)*100 > float64(total)*PressurePercent
}
