// Package dsse signs and verifies manifests as DSSE envelopes
// (github.com/secure-systems-lab/dsse) with ed25519 keys.
//
// The signature covers the Pre-Authentication Encoding of the payload type
// and the payload, PAE(type, body) = "DSSEv1" SP len(type) SP type SP
// len(body) SP body, so a signature for one payload type can never be
// replayed as another. Keys are PKCS#8 (private) and PKIX (public) PEM; a
// key's id is the hex SHA-256 of its PKIX DER encoding. A verifier holds a
// set of trusted keys, so the signing key can rotate: the new key is added
// to the set (through a manifest signed by the old one) before the
// reconciler switches to it.
package dsse

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"

	"genesis.dev/fleet/schema"
)

// Envelope is a DSSE envelope. Payload and Sig are base64: Sign writes
// standard, padded; Verify reads standard or URL-safe, padded or not.
type Envelope struct {
	Payload     string      `json:"payload"`
	PayloadType string      `json:"payloadType"`
	Signatures  []Signature `json:"signatures"`
}

// Signature is one signature of an envelope.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// PAE is DSSE's pre-authentication encoding.
func PAE(payloadType string, payload []byte) []byte {
	b := make([]byte, 0, len(payloadType)+len(payload)+32)
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}

// KeyID is the id of a public key: hex SHA-256 of its PKIX DER.
func KeyID(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub) // an ed25519 key always marshals
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Signer signs with one key.
type Signer struct {
	key ed25519.PrivateKey
	id  string
}

// NewSigner makes a Signer for key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, id: KeyID(key.Public().(ed25519.PublicKey))}
}

// KeyID is the signer's key id.
func (s *Signer) KeyID() string { return s.id }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign wraps payload in a signed envelope and returns its JSON.
func (s *Signer) Sign(payloadType string, payload []byte) ([]byte, error) {
	sig := ed25519.Sign(s.key, PAE(payloadType, payload))
	return json.Marshal(Envelope{
		Payload:     base64.StdEncoding.EncodeToString(payload),
		PayloadType: payloadType,
		Signatures:  []Signature{{KeyID: s.id, Sig: base64.StdEncoding.EncodeToString(sig)}},
	})
}

// The ways verification fails.
var (
	ErrPayloadType  = errors.New("wrong payload type")
	ErrUnknownKey   = errors.New("no signature by a trusted key")
	ErrBadSignature = errors.New("bad signature")
	ErrMalformed    = errors.New("malformed envelope")
)

// Trusted is a set of verification keys by id.
type Trusted map[string]ed25519.PublicKey

// Add trusts pub.
func (t Trusted) Add(pub ed25519.PublicKey) { t[KeyID(pub)] = pub }

// maxSignatures bounds the signatures an envelope may carry.
const maxSignatures = 8

// Verify checks an envelope's JSON: strictly decoded, of payloadType, with a
// valid signature by a trusted key. It returns the payload and the id of the
// key that signed it.
//
// As DSSE's envelope specification allows, payload and signatures may be in
// standard or URL-safe base64, padded or not, and a signature's keyid is only
// a hint: a keyid naming a trusted key is tried with that key first (the
// fast path every envelope of ours takes); an empty or unknown keyid is tried
// with every trusted key (a verifier holds few). At most 8 signatures.
func Verify(envelope []byte, payloadType string, trusted Trusted) ([]byte, string, error) {
	if len(envelope) > schema.MaxEnvelopeSize {
		return nil, "", fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrMalformed, len(envelope), schema.MaxEnvelopeSize)
	}
	var env Envelope
	if err := schema.DecodeStrict(envelope, &env); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if env.PayloadType != payloadType {
		return nil, "", fmt.Errorf("%w: %q", ErrPayloadType, env.PayloadType)
	}
	payload, err := decodeBase64(env.Payload)
	if err != nil {
		return nil, "", fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if len(env.Signatures) == 0 || len(env.Signatures) > maxSignatures {
		return nil, "", fmt.Errorf("%w: %d signatures", ErrMalformed, len(env.Signatures))
	}
	pae := PAE(env.PayloadType, payload)
	named := false // a signature named a trusted key
	for _, s := range env.Signatures {
		sig, err := decodeBase64(s.Sig)
		if err != nil || len(sig) != ed25519.SignatureSize {
			if _, ok := trusted[s.KeyID]; ok {
				named = true
			}
			continue
		}
		if pub, ok := trusted[s.KeyID]; ok {
			named = true
			if ed25519.Verify(pub, pae, sig) {
				return payload, s.KeyID, nil
			}
			continue
		}
		for id, pub := range trusted {
			if ed25519.Verify(pub, pae, sig) {
				return payload, id, nil
			}
		}
	}
	if !named {
		return nil, "", ErrUnknownKey
	}
	return nil, "", ErrBadSignature
}

// b64 are the encodings DSSE allows, tried in turn: the alphabet and the
// padding of a well-formed string select exactly one.
var b64 = [...]*base64.Encoding{
	base64.StdEncoding.Strict(), base64.RawStdEncoding.Strict(),
	base64.URLEncoding.Strict(), base64.RawURLEncoding.Strict(),
}

// DecodedPayload is the envelope's payload, decoded as Verify decodes it,
// without checking any signature (for an envelope verified earlier).
func (e Envelope) DecodedPayload() ([]byte, error) { return decodeBase64(e.Payload) }

// decodeBase64 reads standard or URL-safe base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	var first error
	for _, enc := range b64 {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// ParsePublicKeyPEM reads a PKIX PEM ed25519 public key.
func ParsePublicKeyPEM(data []byte) (ed25519.PublicKey, error) {
	return parseKeyPEM[ed25519.PublicKey](data, "PUBLIC KEY", x509.ParsePKIXPublicKey, "public")
}

// ParsePrivateKeyPEM reads a PKCS#8 PEM ed25519 private key.
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	return parseKeyPEM[ed25519.PrivateKey](data, "PRIVATE KEY", x509.ParsePKCS8PrivateKey, "private")
}

// parseKeyPEM reads the one PEM block of blockType in data with parse and
// requires an ed25519 key of type K (which names the key in the error).
func parseKeyPEM[K any](data []byte, blockType string, parse func([]byte) (any, error), which string) (K, error) {
	var none K
	b, _ := pem.Decode(data)
	if b == nil || b.Type != blockType {
		return none, fmt.Errorf("not a PEM %s block", blockType)
	}
	k, err := parse(b.Bytes)
	if err != nil {
		return none, err
	}
	key, ok := k.(K)
	if !ok {
		return none, fmt.Errorf("not an ed25519 %s key", which)
	}
	return key, nil
}

// MarshalPublicKeyPEM writes pub as PKIX PEM.
func MarshalPublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// MarshalPrivateKeyPEM writes key as PKCS#8 PEM.
func MarshalPrivateKeyPEM(key ed25519.PrivateKey) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
