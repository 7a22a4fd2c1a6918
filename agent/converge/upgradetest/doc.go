// Package upgradetest holds the end-to-end tests of n8n version switches
// (converge's upgrade sequence): a real Postgres (pgtest) as n8n's
// database, the docker CLI emulator (fakes/dockersim) running the n8n
// emulator as a container process, real pg_dump/pg_restore for the local
// pre-upgrade backups, and the agent's rejection list. It has no code of
// its own.
package upgradetest
