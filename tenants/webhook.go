package tenants

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// SignatureHeader is the header a GitHub-style push webhook signs its body in.
const SignatureHeader = "X-Hub-Signature-256"

// The ways a webhook signature fails. All are bad input: the request is
// refused (401) and nothing is fetched.
var (
	ErrNoSecret           = errors.New("webhook secret is not configured")
	ErrMissingSignature   = errors.New("missing " + SignatureHeader + " header")
	ErrMalformedSignature = errors.New("malformed " + SignatureHeader + " header: want sha256=<64 hex digits>")
	ErrBadSignature       = errors.New(SignatureHeader + " does not match the body")
)

// VerifySignature checks a GitHub-style webhook signature: header is the
// value of X-Hub-Signature-256, "sha256=" and the hex HMAC-SHA256 of body
// under secret. The comparison takes constant time. An empty secret refuses
// every request, so an unconfigured secret never means "unauthenticated".
func VerifySignature(secret, body []byte, header string) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	if header == "" {
		return ErrMissingSignature
	}
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSum) != 2*sha256.Size {
		return ErrMalformedSignature
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return ErrMalformedSignature
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}

// Sign returns the X-Hub-Signature-256 value for body under secret, as a
// sender computes it (for tests and tools that post webhooks).
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
