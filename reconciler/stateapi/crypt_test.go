package stateapi_test

import (
	"testing"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema/sealing"
)

func decrypt(t *testing.T, sealed string) string {
	t.Helper()
	plain, err := sealing.Decrypt(sealed, testkit.DemoIdentities(t)...)
	if err != nil {
		t.Fatal(err)
	}
	return string(plain)
}
