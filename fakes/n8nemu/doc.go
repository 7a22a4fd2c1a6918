// Package n8nemu is an in-process emulator of the parts of n8n 1.123.x that the
// agent drives: the REST bootstrap (owner setup, login, API keys), the
// readiness probe, and the public API under /api/v1 (credentials, workflows,
// tags). Unit tests run the real n8n client against it over HTTP; the e2e
// suite runs the same tests against a real n8n.
//
// # Behaviour copied from n8n 1.123
//
// Start-up: /healthz answers ok at once; /healthz/readiness is 503 until the
// server is ready. While starting up every other route answers 200 text/plain
// "n8n is starting up. Please wait" — a success status that is not a success.
// Then, for a few seconds after readiness turned 200, the routes are not
// mounted yet and answer Express's 404 page "Cannot POST /rest/owner/setup"
// (mode Mounting).
//
// Bootstrap: POST /rest/owner/setup {email, firstName, lastName, password}
// creates the owner once (password 8–64 characters with a digit and an
// uppercase letter) and sets the n8n-auth cookie; a second call is 400
// "Instance owner already setup". POST /rest/login {emailOrLdapLoginId,
// password} sets the cookie again. With the cookie, GET /rest/api-keys/scopes
// lists the owner's scopes and POST /rest/api-keys {label, scopes, expiresAt}
// returns the key once as data.rawApiKey; an unknown scope is 400. A label
// already used, or a second key within the same second (n8n's key is a JWT
// of user and issue time), is 500 "There is already an entry with this
// name"; a label over 50 characters is 400 with n8n's zod issue as the body.
//
// Public API: every request needs X-N8N-API-KEY (none: 401 "'X-N8N-API-KEY'
// header required"; unknown: 401 "unauthorized"; a key without the route's
// scope: 403). Bodies are validated like n8n's OpenAPI validator does it:
// read-only fields (id, active, tags, meta, createdAt, updatedAt, versionId,
// ...) and unknown keys (pinData in 1.123, anything else) are 400, as are
// missing required fields (name, nodes, connections, settings for a
// workflow). PUT replaces the whole workflow and keeps an active workflow
// active; activate and deactivate are idempotent; activating a workflow
// without a trigger, or whose webhook path and method an active workflow
// already serves, is 400. Credentials can be created (server-chosen ids,
// duplicate names accepted, data checked against n8n 1.123.81's own
// schemas for gmailOAuth2, openAiApi, httpHeaderAuth and slackApi, copied
// in credtypes/, with the npm jsonschema validator's messages; another type
// is 400 on create and 404 on GET /credentials/schema/{type}) and deleted;
// listing and PATCH are 405. Creating a tag whose name exists is 409.
// Listings page with limit (at most 250) and an opaque cursor, answering
// {data, nextCursor}. Production webhooks (/webhook/<path>) of active
// workflows start their workflow (200 "Workflow was started", recorded as
// an execution); an unknown one is 404 "The requested webhook ... is not
// registered."
//
// # Test controls
//
// Everything lives in memory; Export and Import move the state out and back
// (fakes/dockersim keeps it in n8n's database). SetVersion sets the version
// reported, FailWebhooks makes webhooks answer 500 (a broken release).
// SetMode switches between Ready, StartingUp and
// Down (every connection is closed without an answer, like a stopped
// process). Calls counts requests by route pattern ("POST /api/v1/workflows")
// so tests can assert that a re-apply made no writes; Workflow, Credential
// and the listing helpers let tests look at the state without the API.
package n8nemu
