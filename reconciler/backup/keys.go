package backup

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"

	"filippo.io/age"
)

// Keys derives each workspace's backup identity from the reconciler's
// backup key (an age X25519 identity, --backup-key). Every backup is
// encrypted to the fleet's backup recipients (the operators' offline keys)
// and to its workspace's recipient; a restore hands the new droplet its
// workspace's identity, sealed to that droplet, so a droplet can open its
// own workspace's backups and no other's.
type Keys struct {
	secret []byte

	// recipients caches Recipient: every manifest render asks for its
	// workspace's, and deriving one costs a scalar multiplication.
	mu         sync.Mutex
	recipients map[string]string
}

// NewKeys parses the backup key file's content: an age identity
// (AGE-SECRET-KEY-1...; comment and blank lines are ignored).
func NewKeys(file []byte) (*Keys, error) {
	ids, err := age.ParseIdentities(strings.NewReader(string(file)))
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf("backup key: want one identity, got %d", len(ids))
	}
	x, ok := ids[0].(*age.X25519Identity)
	if !ok {
		return nil, fmt.Errorf("backup key: not an X25519 identity")
	}
	return &Keys{secret: []byte(x.String()), recipients: map[string]string{}}, nil
}

// Identity is workspace ws's backup identity: HKDF-SHA256 of the backup
// key, labelled with ws, as an age X25519 identity.
func (k *Keys) Identity(ws string) (*age.X25519Identity, error) {
	scalar, err := hkdf.Key(sha256.New, k.secret, nil, "genesis backup identity v1\x00"+ws, 32)
	if err != nil {
		return nil, err
	}
	return age.ParseX25519Identity(strings.ToUpper(bech32Encode("age-secret-key-", scalar)))
}

// Recipient is workspace ws's backup recipient.
func (k *Keys) Recipient(ws string) (string, error) {
	k.mu.Lock()
	r, ok := k.recipients[ws]
	k.mu.Unlock()
	if ok {
		return r, nil
	}
	id, err := k.Identity(ws)
	if err != nil {
		return "", err
	}
	r = id.Recipient().String()
	k.mu.Lock()
	k.recipients[ws] = r
	k.mu.Unlock()
	return r, nil
}

// bech32Encode is BIP 173's encoding of data under hrp (lower case), the
// form age writes its keys in.
func bech32Encode(hrp string, data []byte) string {
	const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
	// 8-bit groups to 5-bit groups, padded.
	var values []byte
	acc, bits := 0, 0
	for _, b := range data {
		acc = acc<<8 | int(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			values = append(values, byte(acc>>bits&31))
		}
	}
	if bits > 0 {
		values = append(values, byte(acc<<(5-bits)&31))
	}
	polymod := func(vs []byte) uint32 {
		gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
		chk := uint32(1)
		for _, v := range vs {
			top := chk >> 25
			chk = (chk&0x1ffffff)<<5 ^ uint32(v)
			for i := range 5 {
				if top>>i&1 == 1 {
					chk ^= gen[i]
				}
			}
		}
		return chk
	}
	var exp []byte
	for i := range len(hrp) {
		exp = append(exp, hrp[i]>>5)
	}
	exp = append(exp, 0)
	for i := range len(hrp) {
		exp = append(exp, hrp[i]&31)
	}
	mod := polymod(append(append(exp, values...), 0, 0, 0, 0, 0, 0)) ^ 1
	var sb strings.Builder
	sb.WriteString(hrp)
	sb.WriteByte('1')
	for _, v := range values {
		sb.WriteByte(charset[v])
	}
	for i := range 6 {
		sb.WriteByte(charset[mod>>(5*(5-i))&31])
	}
	return sb.String()
}
