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
		{"key id swapped", tamper(func(e *Envelope) { e.Signatures[0].KeyID = NewSigner(other).KeyID() }), "t", ErrUnknownKey},
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
	trusted := Trusted{}
	trusted.Add(s.Public())
	f.Fuzz(func(t *testing.T, data []byte) {
		payload, _, err := Verify(data, "t", trusted)
		if err == nil && string(payload) != `{"a":1}` {
			t.Fatalf("accepted a payload nobody signed: %q", payload)
		}
	})
}
