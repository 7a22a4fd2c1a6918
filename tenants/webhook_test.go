package tenants

import (
	"errors"
	"strings"
	"testing"
)

func TestVerifySignature(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"ref":"refs/heads/main"}`)
	good := Sign(secret, body)
	// The value GitHub documents for secret "It's a Secret to Everybody" and
	// body "Hello, World!".
	const github = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	tests := []struct {
		name   string
		secret []byte
		body   []byte
		header string
		want   error
	}{
		{"good", secret, body, good, nil},
		{"github's example", []byte("It's a Secret to Everybody"), []byte("Hello, World!"), github, nil},
		{"uppercase hex", secret, body, "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), nil},
		{"body changed", secret, []byte(`{"ref":"refs/heads/evil"}`), good, ErrBadSignature},
		{"wrong secret", []byte("other"), body, good, ErrBadSignature},
		{"missing", secret, body, "", ErrMissingSignature},
		{"sha1 header", secret, body, "sha1=0123456789abcdef0123456789abcdef01234567", ErrMalformedSignature},
		{"no prefix", secret, body, strings.TrimPrefix(good, "sha256="), ErrMalformedSignature},
		{"not hex", secret, body, "sha256=" + strings.Repeat("zz", 32), ErrMalformedSignature},
		{"short", secret, body, good[:len(good)-2], ErrMalformedSignature},
		{"no secret configured", nil, body, good, ErrNoSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifySignature(tt.secret, tt.body, tt.header); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}
