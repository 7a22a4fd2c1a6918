package activator

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// The activator's Caddy front.
//
// The activator's public address is a Caddy (the real binary, as on the
// droplets) that terminates TLS for every hibernated tenant's names with
// on-demand certificates (Caddy asks Handler.Ask before it gets one, so
// only names of tenants no droplet serves get one) and reverse-proxies
// every request, with the original Host and X-Forwarded-For/-Proto/-Host,
// to the Handler's listener. With ACME the certificates come by TLS-ALPN-01
// on the HTTPS listener, which must then be port 443.

// Front is what the activator's Caddy must do.
type Front struct {
	// Listen is the HTTPS listener, e.g. ":443" (tests: 127.0.0.1 and a
	// free port).
	Listen string
	// Upstream is the Handler's listener (host:port).
	Upstream string
	// AskURL is Handler.Ask's URL, e.g. http://127.0.0.1:8091/ask.
	AskURL string
	// Internal issues certificates from Caddy's internal CA (tests, demo)
	// instead of ACME.
	Internal bool
	// ACMECA is the ACME directory URL (empty: Let's Encrypt), ACMEEmail
	// the account's contact, ACMERoots a PEM file of the roots that
	// verify a private ACME server (empty: the system roots).
	ACMECA, ACMEEmail, ACMERoots string
	// AdminListen is Caddy's admin API (default 127.0.0.1:2019).
	AdminListen string
	// GracePeriod bounds a reload's wait for old connections (default
	// 10 s).
	GracePeriod time.Duration
}

type (
	frontDoc struct {
		Admin frontAdmin `json:"admin"`
		Apps  frontApps  `json:"apps"`
	}
	frontAdmin struct {
		Listen string `json:"listen"`
		Config struct {
			Persist bool `json:"persist"`
		} `json:"config"`
	}
	frontApps struct {
		HTTP struct {
			GracePeriod string                 `json:"grace_period"`
			Servers     map[string]frontServer `json:"servers"`
		} `json:"http"`
		TLS struct {
			Automation struct {
				Policies []frontPolicy `json:"policies"`
				OnDemand struct {
					Permission struct {
						Module   string `json:"module"`
						Endpoint string `json:"endpoint"`
					} `json:"permission"`
				} `json:"on_demand"`
			} `json:"automation"`
		} `json:"tls"`
		PKI struct {
			CertificateAuthorities map[string]struct {
				InstallTrust bool `json:"install_trust"`
			} `json:"certificate_authorities"`
		} `json:"pki"`
	}
	frontServer struct {
		Listen                []string         `json:"listen"`
		Routes                []frontRoute     `json:"routes"`
		TLSConnectionPolicies []map[string]any `json:"tls_connection_policies"`
		AutomaticHTTPS        struct {
			DisableRedirects bool `json:"disable_redirects"`
		} `json:"automatic_https"`
	}
	frontRoute struct {
		Handle   []frontProxy `json:"handle"`
		Terminal bool         `json:"terminal"`
	}
	frontProxy struct {
		Handler   string              `json:"handler"`
		Upstreams []map[string]string `json:"upstreams"`
		Headers   struct {
			Request struct {
				Set map[string][]string `json:"set"`
			} `json:"request"`
		} `json:"headers"`
	}
	frontPolicy struct {
		Issuers  []frontIssuer `json:"issuers"`
		OnDemand bool          `json:"on_demand"`
	}
	frontIssuer struct {
		Module       string   `json:"module"`
		CA           string   `json:"ca,omitempty"`
		Email        string   `json:"email,omitempty"`
		TrustedRoots []string `json:"trusted_roots_pem_files,omitempty"`
		// Challenges: the front answers TLS-ALPN-01 on its own listener
		// (it serves no HTTP), bound to its address.
		Challenges *frontChallenges `json:"challenges,omitempty"`
	}
	frontChallenges struct {
		BindHost string         `json:"bind_host,omitempty"`
		HTTP     map[string]any `json:"http"`
		TLSALPN  map[string]any `json:"tls-alpn"`
	}
)

// RenderFront returns the activator Caddy's JSON config, or an error
// naming the field that cannot be rendered.
func RenderFront(f Front) ([]byte, error) {
	for name, addr := range map[string]string{"listen": f.Listen, "upstream": f.Upstream} {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return nil, fmt.Errorf("render activator caddy config: %s %q: want host:port", name, addr)
		}
	}
	adminAddr := cmp.Or(f.AdminListen, "127.0.0.1:2019")
	if _, _, err := net.SplitHostPort(adminAddr); err != nil {
		return nil, fmt.Errorf("render activator caddy config: admin listen %q: want host:port", adminAddr)
	}
	ask, err := url.Parse(f.AskURL)
	if err != nil || (ask.Scheme != "http" && ask.Scheme != "https") || ask.Host == "" {
		return nil, fmt.Errorf("render activator caddy config: ask url %q: want an http(s) URL", f.AskURL)
	}
	grace := cmp.Or(f.GracePeriod, 10*time.Second)
	if grace < 0 {
		return nil, fmt.Errorf("render activator caddy config: negative grace period")
	}
	iss := frontIssuer{Module: "acme", CA: f.ACMECA, Email: f.ACMEEmail}
	if f.ACMERoots != "" {
		iss.TrustedRoots = []string{f.ACMERoots}
	}
	if host, port, _ := net.SplitHostPort(f.Listen); host != "" || port != "443" {
		// A CA validates TLS-ALPN-01 on the address the name resolves
		// to, at its TLS port: the front's own listener.
		p, _ := strconv.Atoi(port)
		iss.Challenges = &frontChallenges{BindHost: host, HTTP: map[string]any{"disabled": true}, TLSALPN: map[string]any{"alternate_port": p}}
	}
	if f.Internal {
		iss = frontIssuer{Module: "internal"}
	}
	proxy := frontProxy{Handler: "reverse_proxy", Upstreams: []map[string]string{{"dial": f.Upstream}}}
	// Caddy keeps the Host and sets X-Forwarded-For/-Proto/-Host by
	// default; the Host is set explicitly so a default change cannot
	// route a tenant's request by the activator's own address.
	proxy.Headers.Request.Set = map[string][]string{"Host": {"{http.request.hostport}"}}
	srv := frontServer{
		Listen:                []string{f.Listen},
		Routes:                []frontRoute{{Handle: []frontProxy{proxy}, Terminal: true}},
		TLSConnectionPolicies: []map[string]any{{}},
	}
	srv.AutomaticHTTPS.DisableRedirects = true
	var doc frontDoc
	doc.Admin.Listen = adminAddr
	doc.Apps.HTTP.GracePeriod = grace.String()
	doc.Apps.HTTP.Servers = map[string]frontServer{"activator": srv}
	doc.Apps.TLS.Automation.Policies = []frontPolicy{{Issuers: []frontIssuer{iss}, OnDemand: true}}
	doc.Apps.TLS.Automation.OnDemand.Permission.Module = "http"
	doc.Apps.TLS.Automation.OnDemand.Permission.Endpoint = ask.String()
	doc.Apps.PKI.CertificateAuthorities = map[string]struct {
		InstallTrust bool `json:"install_trust"`
	}{"local": {InstallTrust: false}}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render activator caddy config: %w", err)
	}
	return out, nil
}
