package agent

import (
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// TestAgentReactsToRevocation: when the reconciler stops accepting the
// credential, the agent enrolls once more with its bootstrap token if it
// has one (and carries on with the new credential when that works), and
// otherwise keeps asking at its slowest pace without giving up.
func TestAgentReactsToRevocation(t *testing.T) {
	for _, tc := range []struct {
		name string
		// token: the agent keeps its bootstrap token; reusable: the
		// reconciler accepts it once more.
		token, reusable bool
		wantEnrolls     int // enrollment requests after the revocation
	}{
		{"token accepted again", true, true, 1},
		{"token refused", true, false, 1},
		{"no token", false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			fx := h.fx
			tok := h.fake.token(fx.workspace, "genesis-ws-acme")
			r := h.start(fx.droplet, tok, nil, nil)
			h.fake.publish(fx.droplet, fx.sign(fx.manifest(3), nil))
			h.fake.waitBeat(t, "v3 applied", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 3 })
			if !tc.token {
				// Restarted without a token (cloud-init's copy removed):
				// the stored credential is used.
				r.stop()
				r = h.start(fx.droplet, "", nil, nil)
				h.fake.waitBeat(t, "a heartbeat after the restart", func(schema.Heartbeat) bool { return true })
			}
			if tc.reusable {
				h.fake.unuse(tok)
			}
			enrolled := len(h.fake.enrollments())
			h.fake.revoke(fx.droplet)
			h.fake.publish(fx.droplet, fx.sign(fx.manifest(4), nil)) // ends the held long-poll

			if tc.reusable {
				h.fake.publish(fx.droplet, fx.sign(fx.manifest(5), nil))
				h.fake.waitBeat(t, "v5 applied with the new credential", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 5 })
			} else {
				// Well past the retries that may be a replica's lag: the
				// agent is still running and still asking.
				deadline := time.Now().Add(10 * time.Second)
				for h.fake.count("GET /v1/manifest 401") < RevokedAfter+3 {
					if time.Now().After(deadline) {
						t.Fatalf("manifest refusals = %d, want the agent to keep asking", h.fake.count("GET /v1/manifest 401"))
					}
					time.Sleep(10 * time.Millisecond)
				}
				select {
				case err := <-r.done:
					t.Fatalf("the agent gave up: %v", err)
				default:
				}
			}
			got := h.fake.count("POST /v1/enroll 200") + h.fake.count("POST /v1/enroll 401") - enrolled
			if got != tc.wantEnrolls {
				t.Errorf("enrollment requests after the revocation = %d, want %d", got, tc.wantEnrolls)
			}
		})
	}
}
