package stateapi_test

import (
	"os"
	"testing"

	"filippo.io/age"

	"genesis.dev/fleet/schema/sealing"
)

func decrypt(t *testing.T, sealed string) string {
	t.Helper()
	f, err := os.Open("../../state-example/demo-keys/age.key")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := sealing.Decrypt(sealed, ids...)
	if err != nil {
		t.Fatal(err)
	}
	return string(plain)
}
