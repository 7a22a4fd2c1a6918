package service

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	cloudinit "genesis.dev/fleet/deploy/cloud-init"
	"genesis.dev/fleet/internal/certreload"
	"genesis.dev/fleet/internal/cliexit"
)

// CheckTransportFlags checks the TLS and agent-download flags: both TLS
// files or neither; an agent download URL comes with the SHA-256 droplets
// check it against, and is https unless --agent-insecure-http.
func CheckTransportFlags(c *Config) error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return cliexit.Usage("give both --tls-cert and --tls-key (or $GENESIS_TLS_CERT and $GENESIS_TLS_KEY), or neither")
	}
	c.AgentBinarySHA256 = strings.ToLower(strings.TrimSpace(c.AgentBinarySHA256))
	switch {
	case c.AgentBinaryURL == "" && c.AgentBinarySHA256 != "":
		return cliexit.Usage("--agent-binary-sha256 without --agent-binary-url")
	case c.AgentBinaryURL == "":
		return nil
	case c.AgentBinarySHA256 == "":
		return cliexit.Usage("--agent-binary-url needs --agent-binary-sha256 (or $GENESIS_AGENT_BINARY_SHA256): droplets install only a download with that SHA-256")
	}
	if err := cloudinit.CheckSHA256(c.AgentBinarySHA256); err != nil {
		return cliexit.Usage("--agent-binary-sha256: %v", err)
	}
	u, err := url.Parse(c.AgentBinaryURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return cliexit.Usage("--agent-binary-url: not an http(s) URL")
	}
	if u.Scheme == "http" && !c.AgentInsecureHTTP {
		return cliexit.Usage("--agent-binary-url %s://%s is plain http: droplets refuse to download the agent over it (--agent-insecure-http allows it, demo and tests only)", u.Scheme, u.Host)
	}
	return nil
}

// listenTLS wraps ln in TLS when --tls-cert and --tls-key are given (the
// pair is reloaded when either file changes; see package certreload) and
// returns the scheme the listener speaks.
func listenTLS(c Config, ln net.Listener, log *slog.Logger, reg prometheus.Registerer) (net.Listener, string, error) {
	if c.TLSCert == "" {
		return ln, "http", nil
	}
	r, err := certreload.New(certreload.Config{CertFile: c.TLSCert, KeyFile: c.TLSKey, Logger: log, Registerer: reg})
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	return tls.NewListener(ln, r.TLSConfig()), "https", nil
}

// warnPlainHTTP says loudly that agents will refuse a plain http public URL
// unless droplets are told to allow it (--agent-insecure-http).
func warnPlainHTTP(log *slog.Logger, publicURL string, agentInsecureHTTP bool) {
	u, err := url.Parse(publicURL)
	if err != nil || u.Scheme != "http" {
		return
	}
	if agentInsecureHTTP {
		log.Warn("--agent-insecure-http: droplets' agents are told to accept this plain http public URL; tokens, credentials and manifests cross the network in the clear (demo and tests only)",
			"component", "agentapi", "public_url", u.Scheme+"://"+u.Host)
		return
	}
	log.Warn("the public URL is plain http: agents on droplets refuse it and will not enroll; serve https (--tls-cert and --tls-key, or a TLS load balancer) and set --public-url to it, or give --agent-insecure-http (demo and tests only)",
		"component", "agentapi", "public_url", u.Scheme+"://"+u.Host)
}
