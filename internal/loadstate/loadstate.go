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

// Accounts is how many DigitalOcean accounts hold droplets droplets at
// perAccount each: one when perAccount is 0 or holds them all.
func Accounts(droplets, perAccount int) int {
	if perAccount <= 0 || perAccount >= droplets {
		return 1
	}
	return (droplets + perAccount - 1) / perAccount
}

// AccountName is the name of account k of n: Account when n is 1, else
// Account-000, Account-001, ...
func AccountName(k, n int) string {
	if n == 1 {
		return Account
	}
	return fmt.Sprintf("%s-%03d", Account, k)
}

// TokenEnvOf is the variable the fleet file names for account k of n's
// token: TokenEnv when n is 1, else TokenEnv_000, TokenEnv_001, ...
func TokenEnvOf(k, n int) string {
	if n == 1 {
		return TokenEnv
	}
	return fmt.Sprintf("%s_%03d", TokenEnv, k)
}

// Fleet is genesis.yaml: Accounts(droplets, perAccount) accounts serving
// Region, room for perAccount droplets each (droplets in one account when
// perAccount is 0), the fleet's credentials sealed to recipient (an age
// recipient), no destruction or hibernation allowed.
func Fleet(droplets, perAccount int, recipient string) []byte {
	n := Accounts(droplets, perAccount)
	room := droplets
	if n > 1 {
		room = perAccount
	}
	var accounts strings.Builder
	for k := range n {
		fmt.Fprintf(&accounts, "    - {name: %s, regions: [%s], maxDroplets: %d, tokenEnv: %s}\n", AccountName(k, n), Region, max(room, 1), TokenEnvOf(k, n))
	}
	return fmt.Appendf(nil, `apiVersion: genesis.dev/v1
kind: Fleet
metadata: {name: genesis-load}
spec:
  accounts:
%s  defaults: {size: %s, image: %s, n8nVersion: 1.123.81}
  recipients: [%s]
  safety: {maxDestroyPerRun: 0, maxHibernatePercent: 0}
  sizes:
    %s: {monthlyUSD: 6}
`, accounts.String(), Size, Image, recipient, Size)
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
