package dsse

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
)

func key(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPAE(t *testing.T) {
	// The DSSE spec's example.
	if got, want := string(PAE("http://example.com/HelloWorld", []byte("hello world"))), "DSSEv1 29 http://example.com/HelloWorld 11 hello world"; got != want {
		t.Errorf("PAE = %q, want %q", got, want)
	}
}

func TestSignVerify(t *testing.T) {
	k, other := key(t), key(t)
	s := NewSigner(k)
	trusted := Trusted{}
	trusted.Add(s.Public())
	env, err := s.Sign("t", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	payload, id, err := Verify(env, "t", trusted)
	if err != nil || string(payload) != `{"a":1}` || id != s.KeyID() {
		t.Fatalf("Verify = %q, %q, %v", payload, id, err)
	}
	tamper := func(f func(e *Envelope)) []byte {
		var e Envelope
		json.Unmarshal(env, &e)
		f(&e)
		b, _ := json.Marshal(e)
		return b
	}
	otherEnv, _ := NewSigner(other).Sign("t", []byte(`{"a":1}`))
	tests := []struct {
		name string
		env  []byte
		typ  string
		want error
	}{
		{"wrong type", env, "u", ErrPayloadType},
		{"unknown key", otherEnv, "t", ErrUnknownKey},
		{"payload changed", tamper(func(e *Envelope) { e.Payload = base64.StdEncoding.EncodeToString([]byte(`{"a":2}`)) }), "t", ErrBadSignature},
		{"type changed", tamper(func(e *Envelope) { e.PayloadType = "u" }), "u", ErrBadSignature},
		{"signature garbage", tamper(func(e *Envelope) { e.Signatures[0].Sig = "!!" }), "t", ErrBadSignature},
		{"no signatures", tamper(func(e *Envelope) { e.Signatures = nil }), "t", ErrMalformed},
		{"untrusted signer named as trusted", tamper(func(e *Envelope) { e.Signatures = otherSigs(t, otherEnv, s.KeyID()) }), "t", ErrBadSignature},
		{"untrusted signer, no keyid", tamper(func(e *Envelope) { e.Signatures = otherSigs(t, otherEnv, "") }), "t", ErrUnknownKey},
		{"payload in two alphabets", tamper(func(e *Envelope) { e.Payload = "e30-/w==" }), "t", ErrMalformed},
		{"payload badly padded", tamper(func(e *Envelope) { e.Payload = "e30==" }), "t", ErrMalformed},
		{"nine signatures", tamper(func(e *Envelope) {
			for len(e.Signatures) < 9 {
				e.Signatures = append(e.Signatures, e.Signatures[0])
			}
		}), "t", ErrMalformed},
		{"duplicate key", []byte(`{"payload":"e30=","payload":"e30=","payloadType":"t","signatures":[]}`), "t", ErrMalformed},
		{"trailing", append(append([]byte{}, env...), []byte(" {}")...), "t", ErrMalformed},
		{"unknown field", []byte(`{"payload":"e30=","payloadType":"t","signatures":[],"x":1}`), "t", ErrMalformed},
	}
	for _, tt := range tests {
		if _, _, err := Verify(tt.env, tt.typ, trusted); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// Rotation: trusting both keys accepts either.
	trusted.Add(other.Public().(ed25519.PublicKey))
	if _, _, err := Verify(otherEnv, "t", trusted); err != nil {
		t.Errorf("rotated key: %v", err)
	}
}

// otherSigs are env's signatures with their keyid replaced by id.
func otherSigs(t *testing.T, env []byte, id string) []Signature {
	t.Helper()
	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	for i := range e.Signatures {
		e.Signatures[i].KeyID = id
	}
	return e.Signatures
}

// TestEnvelopeEncodings: DSSE's envelope specification lets a producer
// write payload and signatures in standard or URL-safe base64, padded or
// not, and leave keyid empty or name a key the verifier does not know by
// that id; each must verify, and the signer's real key id is returned.
func TestEnvelopeEncodings(t *testing.T) {
	s := NewSigner(key(t))
	trusted := Trusted{}
	trusted.Add(key(t).Public().(ed25519.PublicKey)) // a second trusted key, tried too
	trusted.Add(s.Public())
	// A payload whose standard encoding has '+', '/' and padding, so each
	// encoding below differs from the others.
	payload := []byte{0xfb, 0xff, 0xfe, '{', '}'}
	sig := ed25519.Sign(s.key, PAE("t", payload))
	encs := map[string]*base64.Encoding{"std": base64.StdEncoding, "raw std": base64.RawStdEncoding,
		"url": base64.URLEncoding, "raw url": base64.RawURLEncoding}
	for name, enc := range encs {
		for _, keyid := range []string{s.KeyID(), "", "some-other-id"} {
			t.Run(name+"/keyid="+keyid, func(t *testing.T) {
				env, _ := json.Marshal(Envelope{Payload: enc.EncodeToString(payload), PayloadType: "t",
					Signatures: []Signature{{KeyID: keyid, Sig: enc.EncodeToString(sig)}}})
				got, id, err := Verify(env, "t", trusted)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if string(got) != string(payload) || id != s.KeyID() {
					t.Errorf("Verify = %x, %q; want %x, %q", got, id, payload, s.KeyID())
				}
			})
		}
	}
	// The same envelopes with the payload changed still fail.
	env, _ := json.Marshal(Envelope{Payload: base64.RawURLEncoding.EncodeToString([]byte("{}")), PayloadType: "t",
		Signatures: []Signature{{Sig: base64.RawURLEncoding.EncodeToString(sig)}}})
	if _, _, err := Verify(env, "t", trusted); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("changed payload, no keyid: err = %v, want %v", err, ErrUnknownKey)
	}
}

func TestKeyPEM(t *testing.T) {
	k := key(t)
	got, err := ParsePrivateKeyPEM(MarshalPrivateKeyPEM(k))
	if err != nil || !got.Equal(k) {
		t.Fatalf("private round trip: %v", err)
	}
	pub, err := ParsePublicKeyPEM(MarshalPublicKeyPEM(k.Public().(ed25519.PublicKey)))
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("public round trip: %v", err)
	}
	if _, err := ParsePublicKeyPEM([]byte("garbage")); err == nil {
		t.Error("garbage parsed as a key")
	}
}

func FuzzVerify(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := NewSigner(priv)
	env, _ := s.Sign("t", []byte(`{"a":1}`))
	f.Add(env)
	f.Add([]byte(`{"payload":"","payloadType":"t","signatures":[{"keyid":"x","sig":""}]}`))
	f.Add([]byte(`{"payload":"eyJhIjoxfQ","payloadType":"t","signatures":[{"keyid":"","sig":"AAAA-_"}]}`))
	trusted := Trusted{}
	trusted.Add(s.Public())
	f.Fuzz(func(t *testing.T, data []byte) {
		payload, _, err := Verify(data, "t", trusted)
		if err == nil && string(payload) != `{"a":1}` {
			t.Fatalf("accepted a payload nobody signed: %q", payload)
		}
	})
}
