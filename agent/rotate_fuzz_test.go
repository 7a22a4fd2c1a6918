package agent

import (
	"encoding/json"
	"strings"
	"testing"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// FuzzVerifyRotate: a signed manifest's rotate section with a generation
// below 1, no token or an oversized one is refused as malformed with an
// error naming the field; a well-typed good one is accepted as sent. The
// raw form reaches the strict decoder with any JSON in rotate's place.
func FuzzVerifyRotate(f *testing.F) {
	st, err := OpenState(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	fx := &fixture{t: f, signer: dsse.NewSigner(fixedKey()), recipient: st.Keys().Identity.Recipient(), workspace: "ws-acme", droplet: "4242", now: testNow}
	exp := Expectation{Workspace: fx.workspace, Droplet: fx.droplet, Trusted: trustedOf(fx.signer), Identity: st.Keys().Identity, Now: testNow}
	f.Add(int64(1), "sealed-token", "")
	f.Add(int64(0), "sealed-token", "")
	f.Add(int64(-3), "", "")
	f.Add(int64(2), strings.Repeat("x", MaxRotateToken+1), "")
	f.Add(int64(0), "", `{"generation":"1","token":"t"}`)
	f.Add(int64(0), "", `{"generation":1,"token":"t","extra":1}`)
	f.Add(int64(0), "", `{"generation":1}`)
	f.Add(int64(0), "", `[]`)
	f.Add(int64(0), "", `null`)
	base := fx.manifest(1) // fx's helpers are f's: not inside the target
	f.Fuzz(func(t *testing.T, gen int64, token, raw string) {
		m := base
		var payload []byte
		var err error
		if raw == "" {
			m.Rotate = &schema.ManifestRotate{Generation: gen, Token: token}
			payload, err = json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
		} else {
			var doc map[string]json.RawMessage
			data, _ := json.Marshal(m)
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			if !json.Valid([]byte(raw)) {
				return
			}
			doc["rotate"] = json.RawMessage(raw)
			if payload, err = json.Marshal(doc); err != nil {
				t.Fatal(err)
			}
		}
		env, err := fx.signer.Sign(schema.ManifestPayloadType, payload)
		if err != nil {
			t.Fatal(err)
		}
		v, err := Verify(env, exp)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			if raw == "" && !strings.Contains(err.Error(), "rotate") {
				t.Fatalf("error names no field: %v", err)
			}
			return
		}
		r := v.Manifest.Rotate
		if r != nil && (r.Generation < 1 || r.Token == "" || len(r.Token) > MaxRotateToken) {
			t.Fatalf("accepted rotate %+v", r)
		}
		if raw == "" {
			// What was signed (invalid UTF-8 aside) is what is accepted.
			var sent schema.Manifest
			if err := json.Unmarshal(payload, &sent); err != nil {
				t.Fatal(err)
			}
			if r == nil || *r != *sent.Rotate {
				t.Fatalf("rotate %+v, signed %+v", r, sent.Rotate)
			}
		}
	})
}
