// Package dockersim emulates the part of the docker CLI the agent calls
// to run n8n, for machines without a container engine (this project's
// development machines and CI: no Docker daemon, and rootless podman
// cannot start containers there). genesis-demo runs it as "docker" (a
// symlink named docker to genesis-demo, first in the agent's PATH).
//
// # The CLI subset
//
//	docker compose -p P -f F up -d [--no-deps] SERVICE
//	docker compose -p P -f F stop SERVICE
//	docker compose -p P -f F start SERVICE
//	docker compose -p P -f F ps -q SERVICE   (the contract test's)
//	docker compose -p P -f F ps --all --format json [SERVICE]
//	docker compose -p P -f F config --services
//
// with the semantics documented for docker compose v2:
//
//   - up -d creates and starts the service's container when there is none.
//     When there is one, it is recreated (stopped, removed, created, started)
//     only when its configuration changed — here the image after
//     interpolating the environment (N8N_VERSION) and the service's
//     environment; an unchanged running container is left alone and an
//     unchanged stopped one is started.
//   - stop stops the container (SIGTERM, SIGKILL after 10 s) and keeps it;
//     stopping a stopped or missing one succeeds.
//   - start starts a stopped container; without one it fails with compose's
//     `service "n8n" has no container to start`.
//   - ps --all --format json prints every container of the project, one
//     JSON object a line with Compose v2.21's keys (State running, exited
//     or created; ExitCode 0 after a stop, 137 for a container killed or
//     ended behind the CLI's back; Health empty: no healthchecks run); a
//     service without a container prints nothing. config --services prints
//     the file's services, one a line.
//   - A compose file that does not open or parse, an unknown service, or a
//     missing required variable (${X:?message}) fails with exit status 1
//     and the message on stderr, as docker does; usage errors exit 1 too.
//
// Interpolation supports $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
// ${VAR:?message} and $$, from the calling process's environment and the
// .env file next to the compose file (the project directory's, as compose
// reads it; the process environment wins).
//
// # The container
//
// A "container" is a child process, detached from the CLI (its own session)
// like a container is from the docker client: $DOCKERSIM_N8N_BIN (default:
// the running executable) with the argument "n8n-container" and the
// service's environment plus DOCKERSIM_IMAGE. Only n8n images
// (…/n8nio/n8n:TAG) can run; TAG is the version the container reports.
// RunContainer serves the n8n emulator (fakes/n8nemu) on
// N8N_LISTEN_ADDRESS:N8N_PORT and keeps its state the way n8n does, in its
// database: Postgres when DB_TYPE=postgresdb (DB_POSTGRESDB_HOST, _PORT,
// _DATABASE, _USER, _PASSWORD), else a file in N8N_USER_FOLDER. So state
// survives stop, start and recreation, and a pg_dump/pg_restore of the
// database takes and puts back exactly what the emulator serves.
//
// On start a container "migrates" its database: it records its version in
// a migrations table. A database migrated by a newer version makes an
// older one exit without getting ready (n8n cannot run on a schema a newer
// version migrated). Versions whose pre-release part contains "broken"
// migrate (write to the database) and then fail every webhook execution
// with 500 "Workflow could not be started!"; "hang" never gets ready.
//
// The CLI keeps each project's containers in $DOCKERSIM_STATE/<project>/
// (a JSON record per service: configuration hash, image, pid, log file),
// under a file lock. A container exits by itself when its record is gone
// or names another process, so removing the state directory (a test's
// temporary directory) ends it.
package dockersim
