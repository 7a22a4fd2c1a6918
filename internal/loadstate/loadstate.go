// Package loadstate writes the production-shaped state files that the load
// tool (cmd/genesis-load) commits for its fleets and that the tenants
// package's benchmarks decode: one fleet file, one golden template, and
// tenant files with sealed credentials and a workflow. The two measure the
// same files, so their figures can be set side by side.
package loadstate

import (
	"fmt"
	"strings"
)

// The fleet the files declare.
const (
	Account = "load"
	Region  = "nyc3"
	Size    = "s-1vcpu-1gb"
	Image   = "ubuntu-22-04-x64"
	// TokenEnv is the variable the fleet file names for the account's
	// DigitalOcean token.
	TokenEnv = "GENESIS_LOAD_DO_TOKEN"
)

// Template is the golden template welcome.json: a Gmail workflow with one
// credential placeholder and one parameter (greeting).
const Template = `{"name":"Welcome","nodes":[{"name":"Gmail","type":"n8n-nodes-base.gmail","parameters":{"subject":"{{param.greeting}}"},"credentials":{"gmailOAuth2":{"id":"TEMPLATE_GMAIL_UUID","name":"gmail"}}}],"connections":{}}`

// Fleet is genesis.yaml: one account of maxDroplets serving Region, the
// fleet's credentials sealed to recipient (an age recipient), no
// destruction or hibernation allowed.
func Fleet(maxDroplets int, recipient string) []byte {
	return fmt.Appendf(nil, `apiVersion: genesis.dev/v1
kind: Fleet
metadata: {name: genesis-load}
spec:
  accounts:
    - {name: %s, regions: [%s], maxDroplets: %d, tokenEnv: %s}
  defaults: {size: %s, image: %s, n8nVersion: 1.123.81}
  recipients: [%s]
  safety: {maxDestroyPerRun: 0, maxHibernatePercent: 0}
  sizes:
    %s: {monthlyUSD: 6}
`, Account, Region, maxDroplets, TokenEnv, Size, Image, recipient, Size)
}

// Tenant is tenant id's file: running in Region, with domain (none when
// empty), one credential per sealed value (armored age files; the first is
// gmail, the template's, the others extra-1, extra-2, …) and the welcome
// workflow with greeting.
func Tenant(id, domain string, sealed []string, greeting string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata: {id: %s, name: %s, tier: pro}\nspec:\n  state: running\n  droplet: {region: %s}\n", id, id, Region)
	if domain != "" {
		fmt.Fprintf(&b, "  domains: [%s]\n", domain)
	}
	b.WriteString("  credentials:\n")
	for k, s := range sealed {
		name, typ := "gmail", "gmailOAuth2"
		if k > 0 {
			name, typ = fmt.Sprintf("extra-%d", k), "slackApi"
		}
		fmt.Fprintf(&b, "    - name: %s\n      type: %s\n      sealed: |\n", name, typ)
		for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
			b.WriteString("        " + line + "\n")
		}
	}
	fmt.Fprintf(&b, "  workflows:\n    - template: welcome\n      credentials: {TEMPLATE_GMAIL_UUID: gmail}\n      params: {greeting: %q}\n", greeting)
	return []byte(b.String())
}
