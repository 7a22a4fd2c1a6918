package schema

import (
	"fmt"
	"strconv"
	"strings"
)

// Hot spares (seed "VIP pre-warm") are droplets made like a tenant's but for
// a pseudo-workspace that owns no data: spare-<region>-<slot>. The prefix is
// reserved (no tenant may use it), so a workspace id alone says whether it
// is a spare, on the reconciler and on the droplet.

// SparePrefix starts every spare workspace id; tenant ids may not use it.
const SparePrefix = "spare-"

// ManifestStateSpare is the manifest state of a spare: no workflows, no
// credentials, no domains; the agent waits for a tenant's manifest.
const ManifestStateSpare = "spare"

// SpareWorkspace is the workspace id of spare slot (1-based) in region.
func SpareWorkspace(region string, slot int) string {
	return fmt.Sprintf("%s%s-%d", SparePrefix, region, slot)
}

// IsSpareWorkspace reports whether id names a spare.
func IsSpareWorkspace(id string) bool { return strings.HasPrefix(id, SparePrefix) }

// ParseSpareWorkspace returns the region and slot of a spare workspace id.
func ParseSpareWorkspace(id string) (region string, slot int, ok bool) {
	rest, ok := strings.CutPrefix(id, SparePrefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 1 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 1 || strconv.Itoa(n) != rest[i+1:] {
		return "", 0, false
	}
	return rest[:i], n, true
}
