// Package certreload serves a TLS certificate from a PEM certificate and
// key file pair that is replaced in place (by certbot, cert-manager, an
// operator's cp) without a restart.
//
// A TLS handshake asks GetCertificate for the certificate. At most once per
// Config.CheckEvery, that call stats both files; when either one's identity,
// size or modification time changed since the last look, the pair is read
// and parsed again. A pair that loads becomes the certificate of every later
// handshake. A pair that does not (a key that does not match, a half-written
// file, a missing file) is logged as an error and counted in
// genesis_tls_cert_reloads_total{result="error"}, and the last good
// certificate keeps being served: a bad rotation never takes the server
// down. The failed stamps are remembered, so a broken pair is reported once,
// not on every handshake, and loaded as soon as either file changes again.
//
// The certificate's expiry is exported as genesis_tls_cert_not_after_seconds
// so an alert can fire before it lapses.
package certreload

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultCheckEvery is how often a handshake may stat the files.
const DefaultCheckEvery = 5 * time.Second

// Config says which files to serve and where to report.
type Config struct {
	CertFile, KeyFile string
	// CheckEvery bounds how often the files are stat'ed (default
	// DefaultCheckEvery).
	CheckEvery time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Reloader holds the current certificate. Its methods are safe for
// concurrent use.
type Reloader struct {
	cfg      Config
	log      *slog.Logger
	reloads  *prometheus.CounterVec
	notAfter prometheus.Gauge

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
	checked   time.Time
}

// stamp is what tells a file changed.
type stamp struct {
	info os.FileInfo
}

func (s stamp) same(o stamp) bool {
	if s.info == nil || o.info == nil {
		return s.info == nil && o.info == nil
	}
	return os.SameFile(s.info, o.info) && s.info.Size() == o.info.Size() && s.info.ModTime().Equal(o.info.ModTime())
}

func statFile(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{info: fi}
}

// New loads the pair once; an error here (naming the files, never their
// content) means there is nothing to serve.
func New(cfg Config) (*Reloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("certreload: a certificate file and a key file are both required")
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{
		cfg: cfg,
		log: cfg.Logger.With("component", "tls"),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_tls_cert_reloads_total",
			Help: "Loads of the TLS certificate and key files after a change, by result (ok, error: the last good certificate is still served).",
		}, []string{"result"}),
		notAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "genesis_tls_cert_not_after_seconds",
			Help: "Expiry (Unix seconds) of the TLS certificate being served.",
		}),
	}
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("error")
	cs, ks := statFile(cfg.CertFile), statFile(cfg.KeyFile)
	cert, err := load(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	r.install(cert, cs, ks, cfg.Now())
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.reloads, r.notAfter} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("certreload: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// TLSConfig is a server configuration that serves the current certificate,
// TLS 1.2 or later, HTTP/2 or HTTP/1.1.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first if the files changed (checked at most every CheckEvery).
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	if now.Sub(r.checked) < r.cfg.CheckEvery && !now.Before(r.checked) {
		return r.cert, nil
	}
	r.checked = now
	cs, ks := statFile(r.cfg.CertFile), statFile(r.cfg.KeyFile)
	if cs.same(r.certStamp) && ks.same(r.keyStamp) {
		return r.cert, nil
	}
	r.certStamp, r.keyStamp = cs, ks
	cert, err := load(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		r.reloads.WithLabelValues("error").Inc()
		r.log.Error("tls certificate reload failed; still serving the previous certificate", "err", err,
			"not_after", r.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		return r.cert, nil
	}
	r.install(cert, cs, ks, now)
	r.reloads.WithLabelValues("ok").Inc()
	r.log.Info("tls certificate reloaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return r.cert, nil
}

func (r *Reloader) install(cert *tls.Certificate, cs, ks stamp, now time.Time) {
	r.cert, r.certStamp, r.keyStamp, r.checked = cert, cs, ks, now
	r.notAfter.Set(float64(cert.Leaf.NotAfter.Unix()))
}

// load reads and checks the pair: the key matches the certificate and the
// leaf parses.
func load(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("load tls certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}
