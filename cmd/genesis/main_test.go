package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// cli runs genesis in-process and returns its exit status and output.
func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := program.Run(context.Background(), args, cliexit.Env{Getenv: func(string) string { return "" }, Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
	return cliexit.Code("genesis", err, &errb), out.String(), errb.String()
}

// needAge returns the path of the real age CLI; make deps installs it.
func needAge(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("age")
	if err != nil {
		t.Fatalf("the age CLI is required (Debian package age; make deps installs it): %v", err)
	}
	return p
}

// testRepo copies the schema package's test context into a new state
// repository and adds files.
func testRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	testkit.CopyTree(t, "../../schema/testdata/context", dir)
	for name, body := range files {
		if err := writeFile(filepath.Join(dir, name), body); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeFile(p, body string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(body), 0o644)
}

const goodTenant = `apiVersion: genesis.dev/v1
kind: Tenant
metadata: {id: ws-good, name: Good, tier: pro}
spec:
  state: running
  droplet: {region: nyc3}
  domains: [track.good.example.com]
`

const badTenant = `apiVersion: genesis.dev/v1
kind: Tenant
metadata: {id: ws-bad, name: Bad, tier: pro}
spec:
  state: sleeping
  droplet: {region: nyc3}
`

func TestValidate(t *testing.T) {
	good := testRepo(t, map[string]string{"tenants/ws-good.yaml": goodTenant})
	bad := testRepo(t, map[string]string{"tenants/ws-good.yaml": goodTenant, "tenants/ws-bad.yaml": badTenant})
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string
		wantStderr string
	}{
		{"valid", []string{"validate", good}, 0, "ok: " + good + " is valid: 1 tenant(s), 2 template(s), 2 account(s)\n", ""},
		{"invalid", []string{"validate", bad}, 1, "",
			"tenants/ws-bad.yaml:5:10: spec.state: \"sleeping\" is not one of running, hibernated, absent\n1 error(s) in 1 file(s); 1 valid tenant(s)\n"},
		{"flag after dir", []string{"validate", good, "--json"}, 0, "[]\n", ""},
		{"json", []string{"validate", "--json", bad}, 1,
			"[\n  {\n    \"file\": \"tenants/ws-bad.yaml\",\n    \"line\": 5,\n    \"col\": 10,\n    \"message\": \"spec.state: \\\"sleeping\\\" is not one of running, hibernated, absent\"\n  }\n]\n", ""},
		{"missing dir", []string{"validate", filepath.Join(good, "nope")}, 2, "", "genesis: stat " + filepath.Join(good, "nope") + ": no such file or directory\n"},
		{"two dirs", []string{"validate", good, bad}, 2, "", "genesis: validate takes at most one directory, got 2\n"},
		{"bad flag", []string{"validate", "--yaml", good}, 2, "", "flag provided but not defined: -yaml\n"},
		{"no command", nil, 2, "", ""},
		{"unknown command", []string{"deploy"}, 2, "", "genesis: unknown command \"deploy\" (run 'genesis --help')\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, "", tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit status = %d, want %d (stderr %q)", code, tt.wantCode, errOut)
			}
			if diff := cmp.Diff(tt.wantOut, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if tt.name == "bad flag" || tt.name == "no command" {
				if !strings.Contains(errOut, tt.wantStderr) || !strings.Contains(errOut, "Usage") {
					t.Errorf("stderr = %q, want usage and %q", errOut, tt.wantStderr)
				}
				return
			}
			if diff := cmp.Diff(tt.wantStderr, errOut); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidateStateExample is the acceptance check:
// genesis validate state-example exits 0.
func TestValidateStateExample(t *testing.T) {
	code, out, errOut := cli(t, "", "validate", "../../state-example")
	if code != 0 {
		t.Fatalf("validate state-example: exit %d\n%s%s", code, out, errOut)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	code, out, _ := cli(t, "", "--help")
	if code != 0 || !strings.Contains(out, "Commands:") {
		t.Fatalf("genesis --help: exit %d, output %q", code, out)
	}
	for _, c := range commands() {
		t.Run(c.Name, func(t *testing.T) {
			code, out, errOut := cli(t, "", c.Name, "--help")
			if code != 0 || !strings.Contains(out, "Usage") || errOut != "" {
				t.Errorf("genesis %s --help: exit %d, stdout %q, stderr %q", c.Name, code, out, errOut)
			}
			if !strings.Contains(out, "genesis "+c.Name) {
				t.Errorf("genesis %s --help does not show how to call it:\n%s", c.Name, out)
			}
		})
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "fleet.key")
	code, out, errOut := cli(t, "", "keygen", "age", "--out", key)
	if code != 0 {
		t.Fatalf("keygen age: exit %d: %s", code, errOut)
	}
	recipient := strings.TrimSpace(out)
	if !strings.HasPrefix(recipient, "age1") {
		t.Errorf("printed recipient %q", recipient)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("identity file: %v, mode %v; want 0600", err, st.Mode())
	}
	if code, _, errOut := cli(t, "", "keygen", "age", "--out", key); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("keygen over an existing file: exit %d, stderr %q; want a refusal", code, errOut)
	}
	// The real age CLI reads the identity we wrote.
	cmd := exec.Command("age-keygen", "-y", key)
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("age-keygen -y: %v", err)
	}
	if strings.TrimSpace(string(got)) != recipient {
		t.Errorf("age-keygen -y = %q, we printed %q", got, recipient)
	}

	sk := filepath.Join(dir, "signing.pem")
	code, out, errOut = cli(t, "", "keygen", "signing", "--out", sk)
	if code != 0 {
		t.Fatalf("keygen signing: exit %d: %s", code, errOut)
	}
	privPEM, _ := os.ReadFile(sk)
	pubPEM, _ := os.ReadFile(sk + ".pub")
	if out != string(pubPEM) {
		t.Errorf("printed public key differs from %s.pub", sk)
	}
	pb, _ := pem.Decode(privPEM)
	if pb == nil || pb.Type != "PRIVATE KEY" {
		t.Fatalf("private key is not a PKCS#8 PEM block")
	}
	priv, err := x509.ParsePKCS8PrivateKey(pb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ub, _ := pem.Decode(pubPEM)
	if ub == nil || ub.Type != "PUBLIC KEY" {
		t.Fatalf("public key is not a PKIX PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(ub.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	edPriv, ok := priv.(ed25519.PrivateKey)
	if !ok || !edPriv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Errorf("the public key is not the private key's half (or not ed25519)")
	}
	msg := []byte("manifest")
	if !ed25519.Verify(pub.(ed25519.PublicKey), msg, ed25519.Sign(edPriv, msg)) {
		t.Errorf("signature does not verify")
	}
	if code, _, _ := cli(t, "", "keygen", "rsa", "--out", sk); code != 2 {
		t.Errorf("keygen rsa: exit %d, want 2", code)
	}
	if code, _, _ := cli(t, "", "keygen", "age"); code != 2 {
		t.Errorf("keygen without --out: exit %d, want 2", code)
	}
}

// TestSealInteroperatesWithAge: a credential sealed by genesis opens with
// the real age CLI, and one sealed by age passes validation.
func TestSealInteroperatesWithAge(t *testing.T) {
	agePath := needAge(t)
	dir := t.TempDir()
	key1, key2 := filepath.Join(dir, "one.key"), filepath.Join(dir, "two.key")
	_, r1, _ := cli(t, "", "keygen", "age", "--out", key1)
	_, r2, _ := cli(t, "", "keygen", "age", "--out", key2)
	r1, r2 = strings.TrimSpace(r1), strings.TrimSpace(r2)
	plain := `{"clientId":"id-123","clientSecret":"s3cret"}`

	code, sealed, errOut := cli(t, plain, "seal", "--recipient", r1, "--recipient", r2)
	if code != 0 {
		t.Fatalf("seal: exit %d: %s", code, errOut)
	}
	if strings.Contains(sealed, "s3cret") || !strings.HasPrefix(sealed, "-----BEGIN AGE ENCRYPTED FILE-----") {
		t.Fatalf("sealed output is not armored ciphertext:\n%s", sealed)
	}
	for _, key := range []string{key1, key2} {
		cmd := exec.Command(agePath, "-d", "-i", key)
		cmd.Stdin = strings.NewReader(sealed)
		got, err := cmd.Output()
		if err != nil {
			t.Fatalf("age -d -i %s: %v", filepath.Base(key), err)
		}
		if string(got) != plain {
			t.Errorf("age -d -i %s = %q, want %q", filepath.Base(key), got, plain)
		}
	}

	// Recipients from the fleet file.
	fleetDir := testRepo(t, nil)
	fleetFile := filepath.Join(fleetDir, "genesis.yaml")
	data, _ := os.ReadFile(fleetFile)
	fleet, errs := schema.DecodeFleet("genesis.yaml", data)
	if errs != nil {
		t.Fatal(errs)
	}
	fleetData := strings.Replace(string(data), fleet.Spec.Recipients[0], r1, 1)
	if err := os.WriteFile(fleetFile, []byte(fleetData), 0o644); err != nil {
		t.Fatal(err)
	}
	code, sealed, errOut = cli(t, plain, "seal", "--fleet", fleetFile)
	if code != 0 {
		t.Fatalf("seal --fleet: exit %d: %s", code, errOut)
	}
	cmd := exec.Command(agePath, "-d", "-i", key1)
	cmd.Stdin = strings.NewReader(sealed)
	if got, err := cmd.Output(); err != nil || string(got) != plain {
		t.Errorf("age -d of seal --fleet output = %q, %v", got, err)
	}

	// The other way: the real age CLI seals, validation accepts it.
	cmd = exec.Command(agePath, "-a", "-r", r1)
	cmd.Stdin = strings.NewReader(plain)
	byAge, err := cmd.Output()
	if err != nil {
		t.Fatalf("age -a -r: %v", err)
	}
	tenant := goodTenant + "  credentials:\n    - name: gmail\n      type: gmailOAuth2\n      sealed: |\n" + indent(string(byAge), "        ")
	repo := testRepo(t, map[string]string{"tenants/ws-good.yaml": tenant, "genesis.yaml": fleetData})
	if code, out, errOut := cli(t, "", "validate", repo); code != 0 {
		t.Errorf("validate with an age-sealed credential: exit %d\n%s%s", code, out, errOut)
	}
}

func TestSealRefusals(t *testing.T) {
	dir := t.TempDir()
	_, r, _ := cli(t, "", "keygen", "age", "--out", filepath.Join(dir, "k"))
	r = strings.TrimSpace(r)
	tests := []struct {
		name, stdin string
		args        []string
		wantCode    int
		wantErr     string
	}{
		{"not json", "password=hunter2", []string{"--recipient", r}, 1, "plaintext is not a JSON object"},
		{"empty", "  \n", []string{"--recipient", r}, 1, "no plaintext on stdin"},
		{"bad recipient", "{}", []string{"--recipient", "age1nope"}, 2, "not an age X25519 recipient"},
		{"both sources", "{}", []string{"--recipient", r, "--fleet", "x.yaml"}, 2, "not both"},
		{"no fleet file", "{}", []string{"--fleet", filepath.Join(dir, "missing.yaml")}, 1, "read recipients"},
		{"too big", "{\"a\":\"" + strings.Repeat("x", maxPlaintext) + "\"}", []string{"--recipient", r}, 1, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.stdin, append([]string{"seal"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, tt.wantCode, tt.wantErr)
			}
			if strings.Contains(errOut, "hunter2") {
				t.Errorf("the error repeats the plaintext: %q", errOut)
			}
		})
	}
	// --raw seals anything.
	if code, out, _ := cli(t, "password=hunter2", "seal", "--raw", "--recipient", r); code != 0 || !strings.Contains(out, "BEGIN AGE") {
		t.Errorf("seal --raw: exit %d", code)
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

func TestJSONErrorsAreSchemaErrors(t *testing.T) {
	bad := testRepo(t, map[string]string{"tenants/ws-bad.yaml": badTenant})
	_, out, _ := cli(t, "", "validate", "--json", bad)
	var errs schema.Errors
	if err := json.Unmarshal([]byte(out), &errs); err != nil || len(errs) != 1 || errs[0].File != "tenants/ws-bad.yaml" {
		t.Errorf("--json output %q does not decode as the errors (%v)", out, err)
	}
}

func TestPlan(t *testing.T) {
	absent := strings.Replace(strings.Replace(goodTenant, "ws-good", "ws-gone", 1), "state: running", "state: absent", 1)
	absent = strings.Replace(absent, "track.good.example.com", "track.gone.example.com", 1)
	repo := testRepo(t, map[string]string{"tenants/ws-good.yaml": goodTenant, "tenants/ws-gone.yaml": absent})

	code, out, errOut := cli(t, "", "plan", "--state", repo)
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"ws-good", "create", "genesis-ws-good-1", "acct-a", "+$6.00", "$0.00 → $6.00"} {
		if !strings.Contains(out, want) {
			t.Errorf("text plan lacks %q:\n%s", want, out)
		}
	}

	// Against a running reconciler's observed fleet: ws-gone's droplet is
	// destroyed, an undeclared droplet is an orphan, ws-good exists.
	observed := `{"observed_at": "` + time.Now().UTC().Format(time.RFC3339) + `", "leader": "replica-a/1", "Droplets": [
		{"ID": 1, "Name": "genesis-ws-good-1", "Account": "acct-a", "Region": "nyc3", "Size": "s-1vcpu-1gb", "Workspace": "ws-good"},
		{"ID": 2, "Name": "genesis-ws-gone-1", "Account": "acct-a", "Region": "nyc3", "Size": "s-1vcpu-2gb", "Workspace": "ws-gone"},
		{"ID": 3, "Name": "genesis-ws-old-1", "Account": "acct-a", "Region": "nyc3", "Size": "s-1vcpu-1gb", "Workspace": "ws-old"}],
		"Status": {"ws-good": {"DropletID": 1, "Generation": 1}, "ws-gone": {"DropletID": 2, "Generation": 1}}}`
	var gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if r.URL.Path != "/v1/observed" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(observed))
	}))
	defer srv.Close()
	code, out, errOut = cli(t, "", "plan", "--state", repo, "--reconciler", srv.URL, "--token", "t0k", "--format", "markdown")
	if code != 0 {
		t.Fatalf("plan --reconciler: exit %d: %s", code, errOut)
	}
	if gotAuth != "Bearer t0k" {
		t.Errorf("Authorization = %q", gotAuth)
	}
	for _, want := range []string{"<!-- genesis-plan -->", "| `ws-gone` | destroy | `genesis-ws-gone-1`", "**Orphans**", "`genesis-ws-old-1`", "$18.00 → $6.00", "-$12.00"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown plan lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = cli(t, "", "plan", "--state", repo, "--format", "json")
	var doc struct {
		Plan struct {
			Actions []struct{ Kind, Workspace string }
		}
		Summary struct {
			CostDelta float64 `json:"monthly_usd_delta"`
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Plan.Actions) != 1 || doc.Summary.CostDelta != 6 {
		t.Errorf("json plan: exit %d, %s", code, out)
	}

	// Invalid files: their errors on stderr, the valid tenants still
	// planned, exit 1.
	bad := testRepo(t, map[string]string{"tenants/ws-good.yaml": goodTenant, "tenants/ws-bad.yaml": badTenant})
	code, out, errOut = cli(t, "", "plan", "--state", bad)
	if code != 1 || !strings.Contains(errOut, "tenants/ws-bad.yaml:5:10") || !strings.Contains(out, "ws-good") {
		t.Errorf("plan with an invalid file: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if code, _, _ := cli(t, "", "plan", "--state", repo, "--format", "yaml"); code != 2 {
		t.Errorf("--format yaml: exit %d, want 2", code)
	}
}
