// Package probe checks the parts of a droplet's compose stack the agent
// does not talk to through an API of their own, for its heartbeats'
// components:
//
//   - Postgres: n8n's database answers a query. The probe runs a command
//     that reads SQL on its standard input and prints the rows unaligned
//     (psql -tA), by default psql inside the stack's postgres container
//     (docker compose exec -T postgres psql -U n8n -d n8n -tA), sends
//     "SELECT 1;" and wants exactly the row "1" back. The query goes on
//     stdin so that the command, which operators give as one
//     space-separated flag, needs no quoting.
//   - Containers: every service of the compose file has a running
//     container. The probe asks docker compose config --services for the
//     services and docker compose ps --all --format json for the
//     containers, and names each service that does not run ("postgres
//     exited (1)", "caddy has no container", "n8n running (unhealthy)"). A
//     service that is down on purpose (n8n during a hibernation, a version
//     switch, a backup) counts as fine when Containers.Expected says so.
//
// Each probe is bounded by its context (the agent gives every probe a
// deadline), and a command still running then is killed. Docker's output
// is outside input: ParsePS reads it strictly (one JSON array, or one
// object a line as Compose v2.21 and later print; every entry with a
// service name and a known state) and refuses anything else with an error
// naming the entry and field, never a panic.
package probe
