package availability

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
)

// maxHealthBody bounds the /healthz body read.
const maxHealthBody = 4 << 10

// The kinds of a failed probe (genesis_availability_probe_errors_total's
// kind label).
const (
	KindDNS     = "dns"     // the name does not resolve
	KindConnect = "connect" // refused, reset or unreachable
	KindTLS     = "tls"     // handshake or certificate verification failed
	KindTimeout = "timeout" // no answer within the probe timeout
	KindStatus  = "status"  // an answer other than 200
	KindBody    = "body"    // 200 without {"status":"ok"}
	KindOther   = "other"
)

// Kinds lists every kind of failure.
func Kinds() []string {
	return []string{KindDNS, KindConnect, KindTLS, KindTimeout, KindStatus, KindBody, KindOther}
}

// probe fetches https://host/healthz within the timeout: "" when up, else
// the failure's kind.
func (p *Prober) probe(ctx context.Context, host string) string {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url(host), nil)
	if err != nil {
		return KindOther
	}
	req.Header.Set("User-Agent", "genesis-availability-prober")
	resp, err := p.client.Do(req)
	if err != nil {
		return errorKind(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody+1))
	if resp.StatusCode != http.StatusOK {
		return KindStatus
	}
	if err != nil {
		if k := errorKind(err); k == KindTimeout {
			return k
		}
		return KindBody
	}
	if err := ParseHealth(body); err != nil {
		return KindBody
	}
	return ""
}

// ParseHealth accepts n8n's GET /healthz answer: a JSON object (at most
// 4 KiB) whose status is "ok". The error says what is wrong.
func ParseHealth(body []byte) error {
	if len(body) > maxHealthBody {
		return fmt.Errorf("health body: longer than %d bytes", maxHealthBody)
	}
	var h struct {
		Status *string `json:"status"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("health body: not a JSON object: %w", err)
	}
	switch {
	case h.Status == nil:
		return errors.New("health body: no status field")
	case *h.Status != "ok":
		return fmt.Errorf("health body: status is %q, not \"ok\"", *h.Status)
	}
	return nil
}

// errorKind sorts a failed request.
func errorKind(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var header tls.RecordHeaderError
	var alert tls.AlertError
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		return KindDNS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid),
		errors.As(err, &header), errors.As(err, &alert):
		return KindTLS
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.As(err, &opErr) && opErr.Op == "dial":
		return KindConnect
	}
	return KindOther
}
