package agent

import (
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// TestAgentConfirmsHibernation: a manifest saying state: hibernated is
// applied and confirmed at once with n8n_stopped in a heartbeat (the
// heartbeat interval is long, so only the immediate one can carry it); a
// woken droplet's heartbeats do not claim it, nor does a running manifest.
func TestAgentConfirmsHibernation(t *testing.T) {
	h := newHarness(t)
	fx := h.fx
	slow := func(c *Config) { c.HeartbeatInterval = time.Hour }
	r := h.start(fx.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), nil, slow)
	h.fake.publish(fx.droplet, fx.sign(fx.manifest(1), nil))
	hb := h.fake.waitBeat(t, "v1 applied", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 1 })
	if hb.N8NStopped {
		t.Errorf("a running manifest's heartbeat says n8n_stopped: %+v", hb)
	}
	m := fx.manifest(2)
	m.State = string(schema.StateHibernated)
	h.fake.publish(fx.droplet, fx.sign(m, nil))
	h.fake.waitBeat(t, "n8n_stopped for v2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 && hb.N8NStopped })
	r.stop()

	woken := *fx
	woken.droplet = "5151"
	r = h.start(woken.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), nil, slow)
	first := h.fake.waitBeat(t, "the woken droplet's first heartbeat", func(hb schema.Heartbeat) bool { return hb.Droplet == "5151" })
	if first.N8NStopped {
		t.Errorf("the woken droplet claims n8n_stopped before its own manifest: %+v", first)
	}
	h.fake.publish(woken.droplet, woken.sign(woken.manifest(1), nil))
	hb = h.fake.waitBeat(t, "v1 on the woken droplet", func(hb schema.Heartbeat) bool { return hb.Droplet == "5151" && hb.AppliedVersion == 1 })
	if hb.N8NStopped {
		t.Errorf("woken droplet heartbeat: %+v", hb)
	}
	r.stop()
}
