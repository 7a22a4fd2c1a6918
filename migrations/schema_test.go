package migrations

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// fixture is committed before the cases run; every case runs in its own
// transaction, which is rolled back.
const fixture = `
INSERT INTO do_accounts (name, regions, max_droplets) VALUES ('acct-a', '{nyc3,sfo3}', 10);
INSERT INTO fleet_status (workspace, droplet_id, account, region, state, desired_state) VALUES
	('ws-acme', 1001, 'acct-a', 'nyc3', 'ACTIVE_HEALTHY', 'running'),
	('ws-other', 1002, 'acct-a', 'nyc3', 'ACTIVE_HEALTHY', 'running');
INSERT INTO fleet_status (workspace, state, desired_state) VALUES ('ws-idle', 'PENDING', 'running');
INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash) VALUES
	(1001, 'ws-acme', 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p', sha256('pk1'), sha256('cred1')),
	(1002, 'ws-other', 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p', sha256('pk2'), sha256('cred2'));
INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit) VALUES
	(1001, 1, 'ws-acme', '\x7b7d', sha256('m1'), now(), now() + interval '24 hours', repeat('a', 40));
INSERT INTO enrollment_tokens (token_hash, workspace, droplet_name, expires_at) VALUES
	(sha256('tok1'), 'ws-acme', 'genesis-ws-acme-1', now() + interval '30 minutes');
INSERT INTO operations (workspace, kind, account) VALUES ('ws-acme', 'create', 'acct-a');
`

// Statement templates the cases fill in.
const (
	insertStatus   = `INSERT INTO fleet_status (workspace, droplet_id, account, state, desired_state, snapshot_id) VALUES (%s, %s, %s, %s, %s, %s)`
	insertAgent    = `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash) VALUES (%s, %s, %s, %s, %s)`
	insertToken    = `INSERT INTO enrollment_tokens (token_hash, workspace, droplet_name, created_at, expires_at, used_at, used_by) VALUES (%s, %s, %s, %s, %s, %s, %s)`
	insertManifest = `INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)`
	insertOp       = `INSERT INTO operations (workspace, kind, state, account, error, started_at, finished_at, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)`
	insertAudit    = `INSERT INTO audit_log (actor, action, workspace, operation_id, detail, commit) VALUES (%s, %s, %s, %s, %s, %s)`
	recipient      = `'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'`
	commitA        = `repeat('a', 40)`
	later          = `now() + interval '1 hour'`
)

func status(ws, droplet, account, state, desired, snapshot string) string {
	return fmt.Sprintf(insertStatus, ws, droplet, account, state, desired, snapshot)
}

func agent(droplet, ws, rcpt, pub, cred string) string {
	return fmt.Sprintf(insertAgent, droplet, ws, rcpt, pub, cred)
}

func token(hash, ws, name, created, expires, usedAt, usedBy string) string {
	return fmt.Sprintf(insertToken, hash, ws, name, created, expires, usedAt, usedBy)
}

func manifest(droplet, version, ws, envelope, digest, issued, expires, commit string) string {
	return fmt.Sprintf(insertManifest, droplet, version, ws, envelope, digest, issued, expires, commit)
}

func op(ws, kind, state, account, errText, started, finished, payload string) string {
	return fmt.Sprintf(insertOp, ws, kind, state, account, errText, started, finished, payload)
}

func retry(ws, attempts, kind, after string) string {
	return fmt.Sprintf(`INSERT INTO tenant_retries (workspace, attempts, last_error_kind, action, retry_after) VALUES (%s, %s, %s, 'create', %s)`, ws, attempts, kind, after)
}

func observation(key, observed, digest, leader, epoch string) string {
	return fmt.Sprintf(`INSERT INTO observation (singleton, observed, digest, observed_at, leader, leader_epoch, complete, droplets) VALUES (%s, %s, %s, now(), %s, %s, true, 0)`,
		key, observed, digest, leader, epoch)
}

func audit(actor, action, ws, opID, detail, commit string) string {
	return fmt.Sprintf(insertAudit, actor, action, ws, opID, detail, commit)
}

type schemaCase struct {
	name       string
	sql        string
	code       string // SQLSTATE; "" means the statement must succeed
	constraint string // the constraint named by the error
}

func schemaCases() []schemaCase {
	cases := []schemaCase{
		// fleet_status
		{"status: invalid lifecycle state", status(`'ws-new'`, `2001`, `'acct-a'`, `'RUNNING'`, `'running'`, `NULL`), "23514", "fleet_status_state_check"},
		{"status: lowercase lifecycle state", status(`'ws-new'`, `2001`, `'acct-a'`, `'active_healthy'`, `'running'`, `NULL`), "23514", "fleet_status_state_check"},
		{"status: duplicate droplet id", status(`'ws-new'`, `1001`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `'running'`, `NULL`), "23505", "fleet_status_droplet_id_key"},
		{"status: duplicate workspace", status(`'ws-acme'`, `2001`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `'running'`, `NULL`), "23505", "fleet_status_pkey"},
		{"status: unknown account", status(`'ws-new'`, `2001`, `'acct-zzz'`, `'ACTIVE_HEALTHY'`, `'running'`, `NULL`), "23503", "fleet_status_account_fkey"},
		{"status: bad workspace id", status(`'WS_Bad'`, `2001`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `'running'`, `NULL`), "23514", "workspace_id_check"},
		{"status: unknown desired state", status(`'ws-new'`, `2001`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `'paused'`, `NULL`), "23514", "fleet_status_desired_state_check"},
		{"status: desired state missing", status(`'ws-new'`, `2001`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `NULL`, `NULL`), "23502", ""},
		{"status: non-positive droplet id", status(`'ws-new'`, `0`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `'running'`, `NULL`), "23514", "fleet_status_droplet_id_check"},
		{"status: active without droplet", status(`'ws-new'`, `NULL`, `'acct-a'`, `'ACTIVE_HEALTHY'`, `'running'`, `NULL`), "23514", "fleet_status_droplet_check"},
		{"status: hibernated without snapshot", status(`'ws-new'`, `NULL`, `'acct-a'`, `'HIBERNATED'`, `'hibernated'`, `NULL`), "23514", "fleet_status_snapshot_check"},
		{"status: hibernated with snapshot", status(`'ws-new'`, `NULL`, `'acct-a'`, `'HIBERNATED'`, `'hibernated'`, `'123456'`), "", ""},
		{"status: pending without droplet or account", status(`'ws-new'`, `NULL`, `NULL`, `'PENDING'`, `'running'`, `NULL`), "", ""},
		{"status: unknown health", `UPDATE fleet_status SET health = 'fine' WHERE workspace = 'ws-acme'`, "23514", "fleet_status_health_check"},
		{"status: negative issued version", `UPDATE fleet_status SET manifest_version_issued = -1 WHERE workspace = 'ws-acme'`, "23514", "fleet_status_manifest_version_issued_check"},
		{"status: heartbeat not an object", `UPDATE fleet_status SET heartbeat = '[]' WHERE workspace = 'ws-acme'`, "23514", "fleet_status_heartbeat_check"},
		{"status: bad commit", `UPDATE fleet_status SET last_commit = 'main' WHERE workspace = 'ws-acme'`, "23514", "git_commit_check"},
		{"status: sha256 commit", `UPDATE fleet_status SET last_commit = repeat('b', 64) WHERE workspace = 'ws-acme'`, "", ""},
		{"status: account in use cannot be deleted", `DELETE FROM do_accounts WHERE name = 'acct-a'`, "23503", "fleet_status_account_fkey"},

		// do_accounts
		{"account: duplicate name", `INSERT INTO do_accounts (name, max_droplets) VALUES ('acct-a', 5)`, "23505", "do_accounts_pkey"},
		{"account: negative capacity", `INSERT INTO do_accounts (name, max_droplets) VALUES ('acct-b', -1)`, "23514", "do_accounts_max_droplets_check"},
		{"account: unknown status", `INSERT INTO do_accounts (name, max_droplets, status) VALUES ('acct-b', 5, 'paused')`, "23514", "do_accounts_status_check"},
		{"account: name with spaces", `INSERT INTO do_accounts (name, max_droplets) VALUES ('acct b', 5)`, "23514", "do_accounts_name_check"},

		// agents
		{"agent: valid", agent(`1003`, `'ws-idle'`, recipient, `sha256('pk3')`, `sha256('cred3')`), "", ""},
		{"agent: unknown workspace", agent(`1003`, `'ws-nobody'`, recipient, `sha256('pk3')`, `sha256('cred3')`), "23503", "agents_workspace_fkey"},
		{"agent: duplicate droplet", agent(`1001`, `'ws-idle'`, recipient, `sha256('pk3')`, `sha256('cred3')`), "23505", "agents_pkey"},
		{"agent: short public key", agent(`1003`, `'ws-idle'`, recipient, `'\x0102'`, `sha256('cred3')`), "23514", "agents_ed25519_public_key_check"},
		{"agent: short credential hash", agent(`1003`, `'ws-idle'`, recipient, `sha256('pk3')`, `'\x0102'`), "23514", "sha256_digest_check"},
		{"agent: reused credential hash", agent(`1003`, `'ws-idle'`, recipient, `sha256('pk3')`, `sha256('cred1')`), "23505", "agents_credential_hash_key"},
		{"agent: not an age recipient", agent(`1003`, `'ws-idle'`, `'ssh-ed25519 AAAA'`, `sha256('pk3')`, `sha256('cred3')`), "23514", "agents_age_recipient_check"},

		// enrollment_tokens
		{"token: valid", token(`sha256('tok2')`, `'ws-idle'`, `'genesis-ws-idle-1'`, `now()`, later, `NULL`, `NULL`), "", ""},
		{"token: duplicate hash", token(`sha256('tok1')`, `'ws-idle'`, `'genesis-ws-idle-1'`, `now()`, later, `NULL`, `NULL`), "23505", "enrollment_tokens_pkey"},
		{"token: plaintext instead of hash", token(`'\x746f6b'`, `'ws-idle'`, `'genesis-ws-idle-1'`, `now()`, later, `NULL`, `NULL`), "23514", "sha256_digest_check"},
		{"token: unknown workspace", token(`sha256('tok2')`, `'ws-nobody'`, `'genesis-ws-nobody-1'`, `now()`, later, `NULL`, `NULL`), "23503", "enrollment_tokens_workspace_fkey"},
		{"token: expires before created", token(`sha256('tok2')`, `'ws-idle'`, `'genesis-ws-idle-1'`, `now()`, `now() - interval '1 second'`, `NULL`, `NULL`), "23514", "enrollment_tokens_expiry_check"},
		{"token: used by without used at", `UPDATE enrollment_tokens SET droplet_id = 1003, used_by = 1003 WHERE token_hash = sha256('tok1')`, "23514", "enrollment_tokens_used_check"},
		{"token: empty droplet name", token(`sha256('tok2')`, `'ws-idle'`, `''`, `now()`, later, `NULL`, `NULL`), "23514", "enrollment_tokens_droplet_name_check"},
		{"token: used by an unbound droplet", token(`sha256('tok2')`, `'ws-idle'`, `'genesis-ws-idle-1'`, `now()`, later, `now()`, `1003`), "23514", "enrollment_tokens_bound_check"},
		{"token: used by another droplet than bound", `UPDATE enrollment_tokens SET droplet_id = 1001, used_at = now(), used_by = 1002 WHERE token_hash = sha256('tok1')`, "23514", "enrollment_tokens_bound_check"},
		{"token: used by the bound droplet", `UPDATE enrollment_tokens SET droplet_id = 1001, used_at = now(), used_by = 1001 WHERE token_hash = sha256('tok1')`, "", ""},
		{"token: bound to a non-positive id", `UPDATE enrollment_tokens SET droplet_id = 0 WHERE token_hash = sha256('tok1')`, "23514", "enrollment_tokens_droplet_id_check"},

		// manifests
		{"manifest: next version", manifest(`1001`, `2`, `'ws-acme'`, `'\x7b7d'`, `sha256('m2')`, `now()`, later, commitA), "", ""},
		{"manifest: version jumps ahead", manifest(`1001`, `7`, `'ws-acme'`, `'\x7b7d'`, `sha256('m7')`, `now()`, later, commitA), "", ""},
		{"manifest: version 0", manifest(`1002`, `0`, `'ws-other'`, `'\x7b7d'`, `sha256('m0')`, `now()`, later, commitA), "23514", "manifests_version_check"},
		{"manifest: negative version", manifest(`1002`, `-1`, `'ws-other'`, `'\x7b7d'`, `sha256('m0')`, `now()`, later, commitA), "23514", "manifests_version_check"},
		{"manifest: duplicate droplet and version", manifest(`1001`, `1`, `'ws-acme'`, `'\x7b7d'`, `sha256('m1b')`, `now()`, later, commitA), "23505", "manifests_pkey"},
		{"manifest: version lower than issued", manifest(`1001`, `5`, `'ws-acme'`, `'\x7b7d'`, `sha256('m5')`, `now()`, later, commitA) + "; " +
			manifest(`1001`, `3`, `'ws-acme'`, `'\x7b7d'`, `sha256('m3')`, `now()`, later, commitA), "23514", "manifests_version_increasing"},
		{"manifest: version reused after pruning", `DELETE FROM manifests WHERE droplet_id = 1001; ` +
			manifest(`1001`, `1`, `'ws-acme'`, `'\x7b7d'`, `sha256('m1b')`, `now()`, later, commitA), "23514", "manifests_version_increasing"},
		{"manifest: unknown droplet", manifest(`9999`, `1`, `'ws-acme'`, `'\x7b7d'`, `sha256('m1')`, `now()`, later, commitA), "23503", "manifests_droplet_id_workspace_fkey"},
		{"manifest: another tenant's droplet", manifest(`1002`, `1`, `'ws-acme'`, `'\x7b7d'`, `sha256('m1')`, `now()`, later, commitA), "23503", "manifests_droplet_id_workspace_fkey"},
		{"manifest: short digest", manifest(`1001`, `2`, `'ws-acme'`, `'\x7b7d'`, `'\x00'`, `now()`, later, commitA), "23514", "sha256_digest_check"},
		{"manifest: empty envelope", manifest(`1001`, `2`, `'ws-acme'`, `''`, `sha256('m2')`, `now()`, later, commitA), "23514", "manifests_envelope_check"},
		{"manifest: expires before issued", manifest(`1001`, `2`, `'ws-acme'`, `'\x7b7d'`, `sha256('m2')`, `now()`, `now() - interval '1 hour'`, commitA), "23514", "manifests_expiry_check"},
		{"manifest: bad commit", manifest(`1001`, `2`, `'ws-acme'`, `'\x7b7d'`, `sha256('m2')`, `now()`, later, `'HEAD'`), "23514", "git_commit_check"},
		{"manifest: commit missing", manifest(`1001`, `2`, `'ws-acme'`, `'\x7b7d'`, `sha256('m2')`, `now()`, later, `NULL`), "23502", ""},

		// operations
		{"operation: second in flight for a workspace", op(`'ws-acme'`, `'reboot'`, `'pending'`, `NULL`, `NULL`, `NULL`, `NULL`, `'{}'`), "23505", "operations_one_in_flight"},
		{"operation: running beside pending", op(`'ws-acme'`, `'reboot'`, `'running'`, `NULL`, `NULL`, `now()`, `NULL`, `'{}'`), "23505", "operations_one_in_flight"},
		{"operation: finished beside pending", op(`'ws-acme'`, `'reboot'`, `'succeeded'`, `NULL`, `NULL`, `now()`, `now()`, `'{}'`), "", ""},
		{"operation: in flight for another workspace", op(`'ws-other'`, `'destroy'`, `'pending'`, `NULL`, `NULL`, `NULL`, `NULL`, `'{"reason": "absent"}'`), "", ""},
		{"operation: new one after the first finished", `UPDATE operations SET state = 'failed', error = 'boom', started_at = now(), finished_at = now() WHERE workspace = 'ws-acme'; ` +
			op(`'ws-acme'`, `'create'`, `'pending'`, `NULL`, `NULL`, `NULL`, `NULL`, `'{}'`), "", ""},
		{"operation: unknown kind", op(`'ws-other'`, `'explode'`, `'pending'`, `NULL`, `NULL`, `NULL`, `NULL`, `'{}'`), "23514", "operations_kind_check"},
		{"operation: unknown state", op(`'ws-other'`, `'wake'`, `'paused'`, `NULL`, `NULL`, `NULL`, `NULL`, `'{}'`), "23514", "operations_state_check"},
		{"operation: unknown account", op(`'ws-other'`, `'wake'`, `'pending'`, `'acct-zzz'`, `NULL`, `NULL`, `NULL`, `'{}'`), "23503", "operations_account_fkey"},
		{"operation: failed without error", op(`'ws-other'`, `'wake'`, `'failed'`, `NULL`, `NULL`, `now()`, `now()`, `'{}'`), "23514", "operations_error_check"},
		{"operation: succeeded without finish time", op(`'ws-other'`, `'wake'`, `'succeeded'`, `NULL`, `NULL`, `now()`, `NULL`, `'{}'`), "23514", "operations_finished_check"},
		{"operation: pending with finish time", op(`'ws-other'`, `'wake'`, `'pending'`, `NULL`, `NULL`, `NULL`, `now()`, `'{}'`), "23514", "operations_finished_check"},
		{"operation: running without start time", op(`'ws-other'`, `'wake'`, `'running'`, `NULL`, `NULL`, `NULL`, `NULL`, `'{}'`), "23514", "operations_started_check"},
		{"operation: payload not an object", op(`'ws-other'`, `'wake'`, `'pending'`, `NULL`, `NULL`, `NULL`, `NULL`, `'[1]'`), "23514", "operations_payload_check"},
		{"operation: negative attempts", `UPDATE operations SET attempts = -1 WHERE workspace = 'ws-acme'`, "23514", "operations_attempts_check"},

		// audit_log
		{"audit: valid", audit(`'reconciler'`, `'create'`, `'ws-acme'`, `(SELECT id FROM operations LIMIT 1)`, `'{"droplet": 1001}'`, commitA), "", ""},
		{"audit: without workspace or commit", audit(`'admin'`, `'override'`, `NULL`, `NULL`, `'{}'`, `NULL`), "", ""},
		{"audit: empty actor", audit(`''`, `'create'`, `'ws-acme'`, `NULL`, `'{}'`, commitA), "23514", "audit_log_actor_check"},
		{"audit: missing action", audit(`'reconciler'`, `NULL`, `'ws-acme'`, `NULL`, `'{}'`, commitA), "23502", ""},
		{"audit: bad commit", audit(`'reconciler'`, `'create'`, `'ws-acme'`, `NULL`, `'{}'`, `'abc'`), "23514", "git_commit_check"},
		{"audit: detail not an object", audit(`'reconciler'`, `'create'`, `'ws-acme'`, `NULL`, `'"text"'`, commitA), "23514", "audit_log_detail_check"},
		// observation (one row: the leader's last observation)
		{"observation: valid", observation(`true`, `'{"Droplets": []}'`, `sha256('o1')`, `'replica-a/1'`, `NULL`), "", ""},
		{"observation: valid with an epoch", observation(`true`, `'{}'`, `sha256('o1')`, `'pod-7f9c.genesis:8080'`, `3`), "", ""},
		{"observation: a second row", observation(`true`, `'{}'`, `sha256('o1')`, `'a'`, `NULL`) + "; " +
			observation(`true`, `'{}'`, `sha256('o2')`, `'b'`, `NULL`), "23505", "observation_pkey"},
		{"observation: key false", observation(`false`, `'{}'`, `sha256('o1')`, `'a'`, `NULL`), "23514", "observation_singleton_check"},
		{"observation: not an object", observation(`true`, `'[]'`, `sha256('o1')`, `'a'`, `NULL`), "23514", "observation_observed_check"},
		{"observation: not json", observation(`true`, `'{'`, `sha256('o1')`, `'a'`, `NULL`), "22P02", ""},
		{"observation: short digest", observation(`true`, `'{}'`, `'\x01'`, `'a'`, `NULL`), "23514", "sha256_digest_check"},
		{"observation: empty leader", observation(`true`, `'{}'`, `sha256('o1')`, `''`, `NULL`), "23514", "observation_leader_check"},
		{"observation: leader with a space", observation(`true`, `'{}'`, `sha256('o1')`, `'replica a'`, `NULL`), "23514", "observation_leader_check"},
		{"observation: epoch 0", observation(`true`, `'{}'`, `sha256('o1')`, `'a'`, `0`), "23514", "observation_leader_epoch_check"},

		{"audit: unknown operation", audit(`'reconciler'`, `'create'`, `'ws-acme'`, `424242`, `'{}'`, commitA), "23503", "audit_log_operation_id_fkey"},

		// tenant_retries
		{"retry: transient with a time", retry(`'ws-acme'`, `1`, `'transient'`, `now() + interval '10 seconds'`), "", ""},
		{"retry: terminal waits for new input", retry(`'ws-acme'`, `3`, `'terminal'`, `NULL`), "", ""},
		{"retry: terminal with a time", retry(`'ws-acme'`, `1`, `'terminal'`, `now()`), "23514", "tenant_retries_after_check"},
		{"retry: transient without a time", retry(`'ws-acme'`, `1`, `'transient'`, `NULL`), "23514", "tenant_retries_after_check"},
		{"retry: unknown kind", retry(`'ws-acme'`, `1`, `'flaky'`, `now()`), "23514", "tenant_retries_last_error_kind_check"},
		{"retry: no attempt", retry(`'ws-acme'`, `0`, `'pending'`, `now()`), "23514", "tenant_retries_attempts_check"},
		{"retry: bad workspace id", retry(`'WS_Bad'`, `1`, `'capacity'`, `now()`), "23514", "workspace_id_check"},
	}

	// Every lifecycle state of ARCHITECTURE.md is accepted.
	for i, state := range []string{
		"PENDING", "PROVISIONING", "BOOTING", "INITIALIZING", "HANDSHAKE", "CONFIGURING", "DEPLOYING",
		"ACTIVE_HEALTHY", "ACTIVE_DEGRADED", "ACTIVE_CRITICAL", "REBOOTING", "FAILED",
		"HIBERNATING", "HIBERNATED", "WAKING", "DESTROYING", "DESTROYED",
	} {
		cases = append(cases, schemaCase{"status: state " + state,
			status(`'ws-new'`, fmt.Sprint(3000+i), `'acct-a'`, "'"+state+"'", `'running'`, `'snap-1'`), "", ""})
	}
	// Every operation kind is accepted.
	for _, kind := range []string{"create", "hibernate", "wake", "destroy", "resize", "adopt", "reboot", "power_cycle", "rebuild", "snapshot_delete"} {
		cases = append(cases, schemaCase{"operation: kind " + kind,
			op(`'ws-other'`, "'"+kind+"'", `'pending'`, `'acct-a'`, `NULL`, `NULL`, `NULL`, `'{}'`), "", ""})
	}
	return cases
}

func TestSchemaConstraints(t *testing.T) {
	conn, _ := connect(t)
	ctx := t.Context()
	if _, err := Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fixture); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	for _, tc := range schemaCases() {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background())
			type result struct{ Code, Constraint string }
			var got result
			var pgErr *pgconn.PgError
			if _, err := tx.Exec(ctx, tc.sql); errors.As(err, &pgErr) {
				got = result{pgErr.Code, pgErr.ConstraintName}
				t.Logf("%s", pgErr.Message)
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, result{tc.code, tc.constraint}); diff != "" {
				t.Errorf("%s\n(-got +want):\n%s", tc.sql, diff)
			}
		})
	}
}

// TestManifestVersionHighWaterMark checks that the trigger records the
// highest version issued per droplet on its agent row.
func TestManifestVersionHighWaterMark(t *testing.T) {
	conn, _ := connect(t)
	ctx := t.Context()
	if _, err := Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fixture); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	for _, v := range []string{"2", "5"} {
		if _, err := conn.Exec(ctx, manifest(`1001`, v, `'ws-acme'`, `'\x7b7d'`, `sha256('m`+v+`')`, `now()`, later, commitA)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.Query(ctx, `SELECT droplet_id, manifest_version FROM agents ORDER BY droplet_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]int64, error) {
		var p [2]int64
		err := r.Scan(&p[0], &p[1])
		return p, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, [][2]int64{{1001, 5}, {1002, 0}}); diff != "" {
		t.Errorf("agents.manifest_version (-got +want):\n%s", diff)
	}
}
