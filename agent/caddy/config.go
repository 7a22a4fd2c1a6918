package caddy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults used when a Config leaves a field empty.
const (
	DefaultAdminListen = "127.0.0.1:2019"
	DefaultUpstream    = "127.0.0.1:5678"
	DefaultGracePeriod = 10 * time.Second
	DefaultHTTPPort    = 80
	DefaultHTTPSPort   = 443
)

// Config is what the droplet's Caddy must do.
type Config struct {
	// Hosts are served by n8n: the bootstrap <ip>.sslip.io name and the
	// tracking domains. Order and case don't matter; duplicates are removed.
	Hosts []string
	// Upstream is n8n's dial address; default 127.0.0.1:5678.
	Upstream string
	// AskURL is the on-demand TLS permission endpoint, e.g.
	// http://127.0.0.1:8089/ask. Required.
	AskURL string
	// HTTPPort and HTTPSPort default to 80 and 443.
	HTTPPort, HTTPSPort int
	// BindHost restricts the listeners to one address (tests use
	// 127.0.0.1); empty listens on every interface.
	BindHost string
	// Internal issues certificates from Caddy's internal CA (offline tests)
	// instead of ACME.
	Internal bool
	// ACMEEmail and ACMECA configure the ACME issuer; ACMECA empty is Let's
	// Encrypt's production directory.
	ACMEEmail, ACMECA string
	// ACMECARoots is a PEM file of the CA certificates the ACME issuer
	// trusts when it talks to ACMECA's API (trusted_roots_pem_files): a
	// private ACME CA such as Pebble in tests. Empty: the system's roots.
	//
	// A CA validates a name on the address it resolves to, at port 80
	// (HTTP-01) or 443 (TLS-ALPN-01) in production and at HTTPPort and
	// HTTPSPort for a private CA configured so. So when BindHost or a port
	// is set, the ACME issuer's challenge solvers bind to BindHost and
	// answer on HTTPPort and HTTPSPort (challenges.bind_host,
	// challenges.http.alternate_port, challenges["tls-alpn"].alternate_port):
	// several Caddys on distinct loopback addresses then each answer the
	// validation of their own names on the same ports.
	ACMECARoots string
	// AdminListen is the admin API address; default 127.0.0.1:2019. Tests
	// use a free port.
	AdminListen string
	// GracePeriod bounds a reload's wait for old connections; default 10 s.
	GracePeriod time.Duration
}

// Digest identifies a rendered config: the hex SHA-256 of its canonical JSON.
type Digest string

// The subset of Caddy's JSON config the droplet uses. Field names follow
// https://caddyserver.com/docs/json/.
type (
	document struct {
		Admin admin `json:"admin"`
		Apps  apps  `json:"apps"`
	}
	admin struct {
		Listen string      `json:"listen"`
		Config adminConfig `json:"config"`
	}
	adminConfig struct {
		Persist bool `json:"persist"`
	}
	apps struct {
		HTTP httpApp `json:"http"`
		TLS  tlsApp  `json:"tls"`
		PKI  pkiApp  `json:"pki"`
	}
	httpApp struct {
		HTTPPort    int               `json:"http_port"`
		HTTPSPort   int               `json:"https_port"`
		GracePeriod string            `json:"grace_period"`
		Servers     map[string]server `json:"servers"`
	}
	server struct {
		Listen []string `json:"listen"`
		Routes []route  `json:"routes"`
	}
	route struct {
		Match    []match   `json:"match,omitempty"`
		Handle   []handler `json:"handle"`
		Terminal bool      `json:"terminal,omitempty"`
	}
	match struct {
		Host []string `json:"host"`
	}
	// handler is the union of the two handlers used: reverse_proxy
	// (Upstreams) and static_response (StatusCode).
	handler struct {
		Handler    string     `json:"handler"`
		Upstreams  []upstream `json:"upstreams,omitempty"`
		StatusCode int        `json:"status_code,omitempty"`
	}
	upstream struct {
		Dial string `json:"dial"`
	}
	tlsApp struct {
		Automation automation `json:"automation"`
	}
	automation struct {
		Policies []policy `json:"policies"`
		OnDemand onDemand `json:"on_demand"`
	}
	policy struct {
		Issuers  []issuer `json:"issuers"`
		OnDemand bool     `json:"on_demand"`
	}
	issuer struct {
		Module       string      `json:"module"`
		CA           string      `json:"ca,omitempty"`
		Email        string      `json:"email,omitempty"`
		TrustedRoots []string    `json:"trusted_roots_pem_files,omitempty"`
		Challenges   *challenges `json:"challenges,omitempty"`
	}
	// challenges is the ACME issuer's challenges block: where the solvers
	// bind and the ports the CA connects to.
	challenges struct {
		BindHost string        `json:"bind_host,omitempty"`
		HTTP     challengePort `json:"http"`
		TLSALPN  challengePort `json:"tls-alpn"`
	}
	challengePort struct {
		AlternatePort int `json:"alternate_port"`
	}
	onDemand struct {
		Permission permission `json:"permission"`
	}
	permission struct {
		Module   string `json:"module"`
		Endpoint string `json:"endpoint"`
	}
	pkiApp struct {
		CertificateAuthorities map[string]certificateAuthority `json:"certificate_authorities"`
	}
	certificateAuthority struct {
		InstallTrust bool `json:"install_trust"`
	}
)

// serverName names the one HTTPS server in the config.
const serverName = "genesis"

// Render returns the canonical JSON config for cfg and its digest, or an
// error naming the field that can't be rendered.
func Render(cfg Config) ([]byte, Digest, error) {
	hosts, err := normalizeHosts(cfg.Hosts)
	if err != nil {
		return nil, "", err
	}
	upstreamAddr := cmp.Or(cfg.Upstream, DefaultUpstream)
	if _, _, err := net.SplitHostPort(upstreamAddr); err != nil {
		return nil, "", fmt.Errorf("render caddy config: upstream %q: want host:port", upstreamAddr)
	}
	ask, err := url.Parse(cfg.AskURL)
	if err != nil || (ask.Scheme != "http" && ask.Scheme != "https") || ask.Host == "" {
		return nil, "", fmt.Errorf("render caddy config: ask url %q: want an http(s) URL", cfg.AskURL)
	}
	adminAddr := cmp.Or(cfg.AdminListen, DefaultAdminListen)
	if _, _, err := net.SplitHostPort(adminAddr); err != nil {
		return nil, "", fmt.Errorf("render caddy config: admin listen %q: want host:port", adminAddr)
	}
	httpPort, httpsPort := cmp.Or(cfg.HTTPPort, DefaultHTTPPort), cmp.Or(cfg.HTTPSPort, DefaultHTTPSPort)
	for _, p := range []int{httpPort, httpsPort} {
		if p < 1 || p > 65535 {
			return nil, "", fmt.Errorf("render caddy config: port %d out of range", p)
		}
	}
	grace := cmp.Or(cfg.GracePeriod, DefaultGracePeriod)
	if grace < 0 {
		return nil, "", fmt.Errorf("render caddy config: negative grace period")
	}

	var routes []route
	for _, h := range hosts {
		routes = append(routes, route{
			Match:    []match{{Host: []string{h}}},
			Handle:   []handler{{Handler: "reverse_proxy", Upstreams: []upstream{{Dial: upstreamAddr}}}},
			Terminal: true,
		})
	}
	// Anything else (an IP, an undeclared Host) gets a 404, not an empty 200.
	routes = append(routes, route{Handle: []handler{{Handler: "static_response", StatusCode: 404}}})

	iss := issuer{Module: "acme", CA: cfg.ACMECA, Email: cfg.ACMEEmail}
	if cfg.ACMECARoots != "" {
		iss.TrustedRoots = []string{cfg.ACMECARoots}
	}
	if cfg.BindHost != "" || httpPort != DefaultHTTPPort || httpsPort != DefaultHTTPSPort {
		iss.Challenges = &challenges{BindHost: cfg.BindHost,
			HTTP: challengePort{AlternatePort: httpPort}, TLSALPN: challengePort{AlternatePort: httpsPort}}
	}
	if cfg.Internal {
		if cfg.ACMECA != "" || cfg.ACMECARoots != "" {
			return nil, "", fmt.Errorf("render caddy config: an ACME CA with the internal issuer")
		}
		iss = issuer{Module: "internal"}
	}
	doc := document{
		Admin: admin{Listen: adminAddr, Config: adminConfig{Persist: false}},
		Apps: apps{
			HTTP: httpApp{
				HTTPPort: httpPort, HTTPSPort: httpsPort, GracePeriod: grace.String(),
				Servers: map[string]server{serverName: {
					Listen: []string{net.JoinHostPort(cfg.BindHost, strconv.Itoa(httpsPort))},
					Routes: routes,
				}},
			},
			TLS: tlsApp{Automation: automation{
				Policies: []policy{{Issuers: []issuer{iss}, OnDemand: true}},
				OnDemand: onDemand{Permission: permission{Module: "http", Endpoint: ask.String()}},
			}},
			PKI: pkiApp{CertificateAuthorities: map[string]certificateAuthority{"local": {InstallTrust: false}}},
		},
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, "", fmt.Errorf("render caddy config: %w", err)
	}
	out, d, err := canonical(raw)
	if err != nil {
		return nil, "", fmt.Errorf("render caddy config: %w", err)
	}
	return out, d, nil
}

// DigestOf returns the digest of a JSON config in any formatting.
func DigestOf(cfg []byte) (Digest, error) {
	_, d, err := canonical(cfg)
	return d, err
}

// canonical re-encodes JSON with sorted keys and no spaces, as Caddy's
// GET /config/ does, and returns it with its digest.
func canonical(data []byte) ([]byte, Digest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, "", fmt.Errorf("config is not JSON: %w", err)
	}
	if dec.More() {
		return nil, "", fmt.Errorf("config is not JSON: trailing data")
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(out)
	return out, Digest(hex.EncodeToString(sum[:])), nil
}

// normalizeHosts lowercases, checks, sorts and deduplicates host names.
func normalizeHosts(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, h := range in {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if !validHost(h) {
			return nil, fmt.Errorf("render caddy config: host %q is not a DNS name", h)
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// validHost accepts lowercase DNS names of at least two labels.
func validHost(h string) bool {
	if len(h) == 0 || len(h) > 253 || net.ParseIP(h) != nil {
		return false
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
