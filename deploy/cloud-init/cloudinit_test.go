package cloudinit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/deploy/droplet"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

type cloudConfig struct {
	PackageUpdate  bool     `yaml:"package_update"`
	PackageUpgrade bool     `yaml:"package_upgrade"`
	Packages       []string `yaml:"packages"`
	Swap           struct {
		Filename string `yaml:"filename"`
		Size     int64  `yaml:"size"`
		MaxSize  int64  `yaml:"maxsize"`
	} `yaml:"swap"`
	WriteFiles []File `yaml:"write_files"`
	RunCmd     []any  `yaml:"runcmd"`
}

func pubPEM(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return string(dsse.MarshalPublicKeyPEM(pub))
}

func TestRender(t *testing.T) {
	agent := schema.AgentConfig{
		ReconcilerURL: "https://fleet.example.com",
		SigningKeys:   []string{pubPEM(t)},
		Workspace:     "ws-acme",
		DropletName:   "genesis-ws-acme-1",
		Token:         "tok-0123456789",
	}
	tests := []struct {
		name      string
		in        Input
		wantPaths []string
	}{
		{"defaults", Input{Agent: agent}, nil},
		{"stable name", Input{Agent: agent, StableName: "ws-acme.t.genesis.example"}, nil},
		{"with compose and agent url", Input{Agent: agent, Compose: []byte("services:\n  n8n:\n    image: n8nio/n8n:1.123.81\n"), AgentURL: "https://dl.example.com/genesis-agent", AgentSHA256: strings.Repeat("ab", 32)},
			[]string{AgentURLPath, AgentSHA256Path}},
		// Hostile values cannot change the document's structure.
		{"hostile values", Input{Agent: schema.AgentConfig{
			ReconcilerURL: "https://x.example.com/\n- path: /etc/evil",
			SigningKeys:   []string{"---\n", "key: |\n  x"},
			Workspace:     "ws: \"x\"\n  - path: /root/.ssh/authorized_keys",
			DropletName:   "'\"{}[]&*!|>%@`#",
			Token:         "\x00\t\r\n...",
		}, Compose: []byte("write_files:\n  - path: /etc/shadow\n"), AgentURL: "http://a.example/#\n", AgentSHA256: strings.Repeat("0", 64), InsecureHTTP: true},
			[]string{AgentURLPath, AgentSHA256Path}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "hostile values" {
				// Render refuses a reconciler URL that is not a URL;
				// check the YAML encoding itself with a valid one.
				tc.in.Agent.ReconcilerURL = "https://x.example.com/a%0Ab"
				tc.in.AgentURL = "http://a.example/#x"
			}
			out, err := Render(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(out), "#cloud-config\n") {
				t.Fatalf("user data starts with %q, want #cloud-config", strings.SplitN(string(out), "\n", 2)[0])
			}
			var cc cloudConfig
			dec := yaml.NewDecoder(strings.NewReader(string(out)))
			dec.KnownFields(true)
			if err := dec.Decode(&cc); err != nil {
				t.Fatalf("rendered user data is not the expected cloud-config: %v\n%s", err, out)
			}
			if cc.Swap.Size != 4<<30 || cc.Swap.Filename == "" {
				t.Errorf("swap = %+v, want 4 GiB", cc.Swap)
			}
			if len(cc.RunCmd) == 0 {
				t.Error("no runcmd")
			}
			want := append([]string{"/usr/local/sbin/genesis-bootstrap", "/usr/local/sbin/genesis-agent-install", schema.AgentConfigPath, ComposePath, AgentUnitPath, AgentEnvPath, StableNamePath}, tc.wantPaths...)
			var got []string
			byPath := map[string]File{}
			for _, f := range cc.WriteFiles {
				got = append(got, f.Path)
				byPath[f.Path] = f
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("write_files paths (-want +got):\n%s", diff)
			}
			if want := strings.TrimSpace(tc.in.StableName + "\n"); strings.TrimSpace(byPath[StableNamePath].Content) != want {
				t.Errorf("%s = %q, want %q", StableNamePath, byPath[StableNamePath].Content, want)
			}
			if sh, err := exec.LookPath("sh"); err == nil {
				for _, script := range []string{"/usr/local/sbin/genesis-bootstrap", "/usr/local/sbin/genesis-agent-install"} {
					cmd := exec.Command(sh, "-n")
					cmd.Stdin = strings.NewReader(byPath[script].Content)
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("%s: sh -n: %v\n%s", script, err, out)
					}
				}
			}
			if got, want := byPath[AgentEnvPath].Content, fmt.Sprintf("GENESIS_AGENT_INSECURE_HTTP=%t\n", tc.in.InsecureHTTP); got != want {
				t.Errorf("agent env = %q, want %q", got, want)
			}
			cfgFile := byPath[schema.AgentConfigPath]
			if cfgFile.Permissions != "0600" || cfgFile.Owner != "root:root" {
				t.Errorf("agent config file mode %q owner %q, want 0600 root:root", cfgFile.Permissions, cfgFile.Owner)
			}
			var cfg schema.AgentConfig
			if err := schema.DecodeStrict([]byte(cfgFile.Content), &cfg); err != nil {
				t.Fatalf("agent config: %v", err)
			}
			if diff := cmp.Diff(tc.in.Agent, cfg); diff != "" {
				t.Errorf("agent config (-want +got):\n%s", diff)
			}
			wantCompose := tc.in.Compose
			if len(wantCompose) == 0 {
				wantCompose = droplet.Compose()
			}
			if byPath[ComposePath].Content != string(wantCompose) {
				t.Errorf("compose = %q, want %q", byPath[ComposePath].Content, wantCompose)
			}
			if byPath[AgentUnitPath].Content != string(droplet.AgentUnit()) {
				t.Errorf("agent unit is not deploy/droplet's")
			}
			if tc.in.AgentURL != "" && byPath[AgentURLPath].Content != tc.in.AgentURL+"\n" {
				t.Errorf("agent url = %q", byPath[AgentURLPath].Content)
			}
			if tc.in.AgentURL != "" && byPath[AgentSHA256Path].Content != tc.in.AgentSHA256+"\n" {
				t.Errorf("agent sha256 = %q", byPath[AgentSHA256Path].Content)
			}
		})
	}
}

// TestNoOtherSecret renders user data next to real fleet secrets and checks
// none of them, nor anything shaped like one, is in it.
func TestNoOtherSecret(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	doToken := "dop_v1_" + strings.Repeat("ab", 32)
	agent := schema.AgentConfig{ReconcilerURL: "http://127.0.0.1:8080", SigningKeys: []string{string(dsse.MarshalPublicKeyPEM(priv.Public().(ed25519.PublicKey)))},
		Workspace: "ws-acme", DropletName: "genesis-ws-acme-1", Token: "one-time-token"}
	out, err := Render(Input{Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{id.String(), "AGE-SECRET-KEY-", string(dsse.MarshalPrivateKeyPEM(priv)), "PRIVATE KEY", doToken, "dop_v1_"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("user data contains %q", secret)
		}
	}
	// The only secret is the token, and it appears exactly once (in the
	// agent config). The stack's password is made on the droplet.
	if regexp.MustCompile(`POSTGRES_PASSWORD=[0-9A-Za-z]{8,}`).Match(out) {
		t.Error("user data carries a database password")
	}
	if n := strings.Count(string(out), agent.Token); n != 1 {
		t.Errorf("token appears %d times, want 1", n)
	}
	// A private key given as a signing key is refused.
	agent.SigningKeys = []string{string(dsse.MarshalPrivateKeyPEM(priv))}
	if _, err := Render(Input{Agent: agent}); err == nil {
		t.Error("Render accepted a private key as a signing key")
	}
}

func TestRenderRefuses(t *testing.T) {
	good := schema.AgentConfig{ReconcilerURL: "http://r.example", SigningKeys: []string{"k"}, Workspace: "ws-a", DropletName: "d", Token: "t"}
	sum := strings.Repeat("0f", 32)
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"no url", Input{Agent: func() schema.AgentConfig { a := good; a.ReconcilerURL = ""; return a }()}, "no reconciler URL"},
		{"not http", Input{Agent: func() schema.AgentConfig { a := good; a.ReconcilerURL = "file:///etc/passwd"; return a }()}, "is not an http(s) URL"},
		{"no keys", Input{Agent: func() schema.AgentConfig { a := good; a.SigningKeys = nil; return a }()}, "no signing public key"},
		{"no token", Input{Agent: func() schema.AgentConfig { a := good; a.Token = ""; return a }()}, "token are required"},
		{"bad agent url", Input{Agent: good, AgentURL: "ftp://x", AgentSHA256: sum}, `"ftp://x" is not an http(s) URL`},
		{"agent url without sha256", Input{Agent: good, AgentURL: "https://dl.example/a"}, "agent download: sha256: want 64 lowercase hex digits"},
		{"agent sha256 too short", Input{Agent: good, AgentURL: "https://dl.example/a", AgentSHA256: sum[:63]}, "sha256: want 64"},
		{"agent sha256 uppercase", Input{Agent: good, AgentURL: "https://dl.example/a", AgentSHA256: strings.ToUpper(sum)}, "sha256: want 64"},
		{"agent url plain http", Input{Agent: good, AgentURL: "http://u:pw@dl.example/a", AgentSHA256: sum}, "agent download URL http://dl.example is plain http"},
		{"too large", Input{Agent: good, Compose: []byte(strings.Repeat("#", MaxSize))}, "over DigitalOcean's 65536-byte limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.in)
			if err == nil {
				t.Fatal("Render succeeded")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestTemplateIsCloudConfig(t *testing.T) {
	var v map[string]any
	if err := yaml.Unmarshal(Template(), &v); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v["packages"])
	if !strings.Contains(string(b), "ufw") {
		t.Errorf("packages = %s, want ufw", b)
	}
}

// TestStableNameRefused: a stable name that is not a DNS name never
// reaches the droplet's .env (it would become n8n's host).
func TestStableNameRefused(t *testing.T) {
	for _, bad := range []string{"ws-a.T.example", "ws a.example", "ws-a\nN8N_HOST=evil.example", "-x.example", "single"} {
		_, err := Render(Input{Agent: schema.AgentConfig{ReconcilerURL: "https://fleet.example.com", SigningKeys: []string{pubPEM(t)},
			Workspace: "ws-a", DropletName: "genesis-ws-a-1", Token: "tok"}, StableName: bad})
		if err == nil || !strings.Contains(err.Error(), "stable name") {
			t.Errorf("StableName %q: err = %v, want a refusal naming the stable name", bad, err)
		}
	}
}
