package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// Probe reports one component's health (n8n, Caddy, Postgres). It is called
// with a deadline for every heartbeat.
type Probe func(ctx context.Context) schema.ComponentHealth

// Config configures an Agent. Bootstrap, DropletID and State are required;
// the rest has defaults.
type Config struct {
	// Bootstrap is what cloud-init gave the agent.
	Bootstrap schema.AgentConfig
	// DropletID is the DigitalOcean droplet id, in decimal.
	DropletID string
	// State is the agent's state directory (owned by the caller).
	State *State

	// HTTPClient defaults to one without a global timeout.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Applier accepts every manifest when nil.
	Applier Applier
	// Backup turns on backups and restores (nil: none).
	Backup *BackupConfig
	// Probes report component health by component name ("n8n", "caddy",
	// "postgres"); components without a probe are left out of heartbeats.
	Probes map[string]Probe
	// LastActivity reports the time of n8n's last activity (zero when
	// unknown; nil means unknown).
	LastActivity func(ctx context.Context) (time.Time, error)
	// Rejections are the changes this droplet gave up on, reported in
	// every heartbeat (nil: none are kept).
	Rejections *Rejections
	// Upgrader installs the agent build accepted manifests pin and writes
	// the healthy marker after accepted heartbeats (nil: the agent is
	// never upgraded and pins are ignored).
	Upgrader *Upgrader
	// N8NVersion reports the running n8n version (nil: not reported).
	N8NVersion func(ctx context.Context) (string, error)
	// RotateSecrets carries out the n8n and database part of a secret
	// rotation generation (idempotent per generation; see rotate.go); nil:
	// only the agent's own keys rotate.
	RotateSecrets func(ctx context.Context, generation int64) error
	// Registerer receives the agent's metrics (nil: not registered).
	Registerer prometheus.Registerer

	// HeartbeatInterval is the time between heartbeats (±10%); default 60s.
	HeartbeatInterval time.Duration
	// PollWait is the long-poll ?wait= of manifest requests; default 30s.
	PollWait time.Duration
	// MaxClockSkew bounds how far in the future issued_at may be; default
	// DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// RetryMin and RetryMax bound the jittered exponential backoff after
	// failures; defaults 1s and 1m.
	RetryMin, RetryMax time.Duration
	// RefusedRetry is the wait after a refused enrollment (401, 403,
	// 400) before the agent tries again; default 5m.
	RefusedRetry time.Duration
	// RecheckRejected is how long a rejected manifest is not fetched again
	// (If-None-Match names it) before it is fetched and judged anew, e.g.
	// after the clock was corrected; default 5m.
	RecheckRejected time.Duration
	// Version is the agent's version, sent with enrollment and heartbeats.
	Version string
	// Now defaults to time.Now.
	Now func() time.Time
	// ProcDir is where meminfo and uptime are read; default /proc.
	ProcDir string
	// SwapMaxPercent is the share of the swap in use past which the
	// "swap" component is down; default DefaultSwapMaxPercent.
	SwapMaxPercent float64
}

// DefaultSwapMaxPercent is Config.SwapMaxPercent's default.
const DefaultSwapMaxPercent = 80

// Agent runs the droplet side of the protocol: enroll, then pull manifests
// and send heartbeats until its context ends.
type Agent struct {
	cfg     Config
	client  *Client
	trusted dsse.Trusted
	log     *slog.Logger
	metrics *metrics
	started time.Time
	// kick asks the heartbeat loop for a heartbeat now (after a manifest
	// was accepted or rejected).
	kick chan struct{}
	// upgradeKick asks the upgrade loop to look at the applied manifest's
	// agent pin again.
	upgradeKick chan struct{}
	// rotateKick asks the rotation loop to look at the applied manifest.
	rotateKick chan struct{}

	// bk is the backup state (nil: backups are off).
	bk *backups

	mu          sync.Mutex
	cred        string // the bearer credential in use
	refusals    int    // manifest requests refused (401/403) in a row
	verifyError string
	applyError  string
	// upgradeError is the last agent upgrade's failure (reported with
	// applyError).
	upgradeError string
	clockOffset  time.Duration
	haveOffset   bool
	// repairs are the recent local repairs, newest first (noteRepairs).
	repairs []schema.Repair
}

// New checks cfg and makes an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.State == nil {
		return nil, errors.New("agent: no state directory")
	}
	if err := CheckDropletID(cfg.DropletID); err != nil {
		return nil, err
	}
	if err := CheckBootstrap(cfg.Bootstrap); err != nil {
		return nil, err
	}
	trusted, err := TrustedKeys(cfg.Bootstrap.SigningKeys)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Applier == nil {
		cfg.Applier = acceptAll{}
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Minute
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 30 * time.Second
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(time.Minute, cfg.RetryMin)
	}
	if cfg.RefusedRetry <= 0 {
		cfg.RefusedRetry = 5 * time.Minute
	}
	if cfg.RecheckRejected <= 0 {
		cfg.RecheckRejected = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.SwapMaxPercent <= 0 {
		cfg.SwapMaxPercent = DefaultSwapMaxPercent
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("agent metrics: %w", err)
	}
	a := &Agent{
		cfg:     cfg,
		client:  &Client{BaseURL: cfg.Bootstrap.ReconcilerURL, HTTP: cfg.HTTPClient},
		trusted: trusted,
		log:     cfg.Logger.With("component", "agent", "workspace", cfg.Bootstrap.Workspace, "droplet", cfg.DropletID),
		metrics: m,
		started: cfg.Now(),
		kick:    make(chan struct{}, 1),

		upgradeKick: make(chan struct{}, 1),
		rotateKick:  make(chan struct{}, 1),
		bk:          newBackups(cfg.Backup, cfg.State.Dir()),
	}
	if a.bk != nil {
		a.cfg.Applier = backupApplier{a: a, inner: cfg.Applier}
	}
	return a, nil
}

// CheckBootstrap checks what cloud-init gave the agent.
func CheckBootstrap(c schema.AgentConfig) error {
	u, err := url.Parse(c.ReconcilerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("agent config: reconciler_url %q is not an http(s) URL", c.ReconcilerURL)
	}
	if c.Workspace == "" {
		return errors.New("agent config: no workspace")
	}
	if len(c.SigningKeys) == 0 {
		return errors.New("agent config: no signing_keys")
	}
	return nil
}

// CheckDropletID checks a DigitalOcean droplet id: a positive decimal
// integer.
func CheckDropletID(id string) error {
	n, err := strconv.ParseUint(id, 10, 63)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != id {
		return fmt.Errorf("droplet id %q is not a positive decimal integer", id)
	}
	return nil
}

// TrustedKeys parses PKIX PEM ed25519 public keys into a trusted set.
func TrustedKeys(pems []string) (dsse.Trusted, error) {
	t := dsse.Trusted{}
	for i, p := range pems {
		k, err := dsse.ParsePublicKeyPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("signing key %d: %w", i+1, err)
		}
		t.Add(k)
	}
	return t, nil
}

// Run enrolls if this droplet has no credential yet, applies the recorded
// manifest again, then pulls manifests and sends heartbeats until ctx ends
// (then it returns nil). Enrollment is retried until it succeeds: with
// capped jittered backoff after network errors, timeouts, 5xx (including
// the reconciler's "not yet" 503 before it recorded the droplet) and 429;
// every RefusedRetry, with an error logged, after a refusal (401, 403,
// 400). The keys are in the state directory before the first try, so a
// retry after a lost response sends the same keys and gets the same
// credential.
func (a *Agent) Run(ctx context.Context) error {
	cred, err := a.enroll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	a.setCredential(cred)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// Converge to the recorded manifest first (heartbeats already flow).
		if ok, err := Reapply(gctx, a.cfg.State, a.cfg.Applier); err != nil {
			a.setApplyError(err)
			a.log.Error("reapply recorded manifest", "err", err)
		} else if ok {
			a.log.Info("reapplied recorded manifest", "version", a.cfg.State.Applied().Version)
		}
		return a.pullLoop(gctx)
	})
	g.Go(func() error { return a.heartbeatLoop(gctx) })
	g.Go(func() error { return a.rotateLoop(gctx) })
	if a.bk != nil {
		g.Go(func() error { return a.backupLoop(gctx) })
	}
	if a.cfg.Upgrader != nil {
		g.Go(func() error { return a.upgradeLoop(gctx) })
	}
	return g.Wait()
}

// enroll returns the stored credential for this droplet, or trades the
// token for one and stores it.
func (a *Agent) enroll(ctx context.Context) (string, error) {
	st := a.cfg.State
	cred, ok, err := st.Credential(a.cfg.DropletID)
	if err != nil {
		return "", err
	}
	if ok {
		a.log.Info("enrolled already")
		return cred, nil
	}
	if a.cfg.Bootstrap.Token == "" {
		return "", fmt.Errorf("enroll droplet %s: no credential stored and no token in the agent config", a.cfg.DropletID)
	}
	req := a.enrollRequest()
	bo := Backoff{min: a.cfg.RetryMin, max: a.cfg.RetryMax}
	for {
		cred, err := a.trade(ctx, req)
		if err == nil {
			return cred, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		d := bo.Next()
		if retryable(err) {
			a.log.Warn("enroll failed, retrying", "err", err, "retry_in", d)
		} else {
			// Refused (401, 403, 400): only a new token helps, and a
			// rebuild brings one with a new droplet. Exiting would
			// only make systemd restart the agent every few seconds.
			d = jitter(a.cfg.RefusedRetry, 0.1)
			a.log.Error("enrollment refused; retrying slowly", "err", err, "retry_in", d)
		}
		if !sleep(ctx, d) {
			return "", ctx.Err()
		}
	}
}

// enrollRequest is this droplet's enrollment: the bootstrap token and the
// public halves of the agent's keys.
func (a *Agent) enrollRequest() schema.EnrollRequest {
	keys := a.cfg.State.Keys()
	return schema.EnrollRequest{
		Token:        a.cfg.Bootstrap.Token,
		Workspace:    a.cfg.Bootstrap.Workspace,
		DropletID:    a.cfg.DropletID,
		DropletName:  a.cfg.Bootstrap.DropletName,
		AgeRecipient: keys.Recipient(),
		SigningKey:   keys.PublicKeyPEM(),
		AgentVersion: a.cfg.Version,
	}
}

// trade sends one enrollment and stores the credential it returns.
func (a *Agent) trade(ctx context.Context, req schema.EnrollRequest) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := a.client.Enroll(rctx, req)
	cancel()
	if err != nil {
		return "", err
	}
	if err := a.cfg.State.SaveCredential(req.Workspace, req.DropletID, resp.Credential); err != nil {
		return "", err
	}
	a.log.Info("enrolled", "age_recipient", req.AgeRecipient)
	return resp.Credential, nil
}

// RevokedAfter is how many manifest requests refused in a row (401 or 403)
// make the agent take its credential for revoked rather than not yet known
// to the replica that answered (a replica learns of a new credential
// within milliseconds). The reconciler revokes a droplet's credential when
// the droplet is destroyed or replaced (a droplet woken or resized from a
// snapshot of this one, a rebuild, a spare's assignment elsewhere).
const RevokedAfter = 3

func (a *Agent) credential() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cred
}

func (a *Agent) setCredential(cred string) {
	a.mu.Lock()
	a.cred, a.refusals = cred, 0
	a.mu.Unlock()
}

// refused handles a manifest request refused with 401 or 403 and returns
// how long to wait before the next. At RevokedAfter refusals in a row the
// agent enrolls once more if cloud-init gave it a token (a reconciler that
// lost its agent row takes a token it still holds unused); from then on,
// or when that enrollment is refused, it keeps asking at the slowest
// backoff (RetryMax): only the reconciler can help, and it should hear
// little from a droplet it no longer knows.
func (a *Agent) refused(ctx context.Context, code int, bo *Backoff) time.Duration {
	a.mu.Lock()
	a.refusals++
	n := a.refusals
	a.mu.Unlock()
	if n < RevokedAfter {
		d := bo.Next()
		a.log.Warn("manifest request refused: credential not accepted", "code", code, "retry_in", d)
		return d
	}
	if n == RevokedAfter {
		// A rotation's switch the reconciler accepted before this agent
		// recorded it: the next credential is the droplet's now.
		if gen := a.cfg.State.rotation().Working; gen > 0 {
			if ok, err := a.trySwitch(ctx, gen); ok {
				bo.Reset()
				return 0
			} else if err != nil {
				a.log.Warn("switch to the new credential failed", "err", err)
			}
		}
	}
	if n == RevokedAfter && a.cfg.Bootstrap.Token != "" {
		cred, err := a.trade(ctx, a.enrollRequest())
		if err == nil {
			a.log.Info("credential refused; enrolled again with the bootstrap token")
			a.setCredential(cred)
			bo.Reset()
			return 0
		}
		a.log.Error("credential refused and enrollment with the bootstrap token failed; retrying slowly", "err", err, "retry_in", a.cfg.RetryMax)
		return a.cfg.RetryMax
	}
	if n == RevokedAfter {
		a.log.Error("credential refused, no bootstrap token to enroll again; retrying slowly", "code", code, "retry_in", a.cfg.RetryMax)
	}
	return a.cfg.RetryMax
}

// pullLoop long-polls the manifest and accepts each new one.
func (a *Agent) pullLoop(ctx context.Context) error {
	st := a.cfg.State
	_, etag := st.Floor(a.workspace(), a.cfg.DropletID)
	if v := st.Applied().Version; v > 0 {
		a.metrics.appliedVersion.Set(float64(v))
	}
	var rejected string // digest of the last rejected envelope
	var rejectedAt time.Time
	bo := Backoff{min: a.cfg.RetryMin, max: a.cfg.RetryMax}
	for ctx.Err() == nil {
		inm := etag
		if rejected != "" && a.cfg.Now().Sub(rejectedAt) < a.cfg.RecheckRejected {
			// Wait for something other than the manifest just refused.
			inm = rejected
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+30*time.Second)
		resp, err := a.client.Manifest(rctx, a.credential(), inm, a.cfg.PollWait)
		cancel()
		a.observeDate(time.Since(start), resp.Date)
		if ctx.Err() != nil {
			return nil
		}
		a.metrics.requests.WithLabelValues(codeLabel(err, resp.NotModified)).Inc()
		var se *StatusError
		if errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden) {
			sleep(ctx, a.refused(ctx, se.Code, &bo))
			continue
		}
		if err != nil {
			d := bo.Next()
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				a.log.Info("no manifest yet", "retry_in", d)
			} else {
				a.log.Warn("manifest request failed", "err", err, "retry_in", d)
			}
			sleep(ctx, d)
			continue
		}
		a.mu.Lock()
		a.refusals = 0
		a.mu.Unlock()
		if resp.NotModified {
			bo.Reset()
			// A server that does not hold the request still sees one
			// request per PollWait.
			if el := time.Since(start); el < a.cfg.PollWait/2 {
				sleep(ctx, a.cfg.PollWait-el)
			}
			continue
		}
		var v *Verified
		if resp.TooLarge {
			err = reject(ReasonTooLarge, "envelope is over %d bytes", schema.MaxEnvelopeSize)
			rejected = resp.ETag
		} else {
			applyStart := time.Now()
			v, err = Accept(ctx, st, resp.Envelope, Policy{
				Workspace:    a.workspace(),
				Droplet:      a.cfg.DropletID,
				Trusted:      a.trusted,
				Now:          a.cfg.Now(),
				MaxClockSkew: a.cfg.MaxClockSkew,
				Applier:      a.cfg.Applier,
			})
			rejected = digest(resp.Envelope)
			var ae *ApplyError
			if (err == nil && !v.Unchanged) || errors.As(err, &ae) {
				a.metrics.applySeconds.Observe(time.Since(applyStart).Seconds())
			}
		}
		var re *RejectError
		var ae *ApplyError
		switch {
		case err == nil:
			rejected = ""
			etag = v.Digest
			bo.Reset()
			a.mu.Lock()
			a.verifyError, a.applyError = "", ""
			a.mu.Unlock()
			if v.Unchanged {
				continue
			}
			a.metrics.accepted.Inc()
			a.metrics.appliedVersion.Set(float64(v.Manifest.Version))
			a.log.Info("manifest applied", "version", v.Manifest.Version, "commit", v.Manifest.Commit, "key_id", v.KeyID, "new_keys", len(v.SigningKeys),
				"serves", v.Manifest.Workspace)
			a.heartbeatSoon()
			select {
			case a.upgradeKick <- struct{}{}:
			default:
			}
			select {
			case a.rotateKick <- struct{}{}:
			default:
			}
			continue
		case errors.As(err, &re):
			rejectedAt = a.cfg.Now()
			a.mu.Lock()
			a.verifyError = err.Error()
			a.mu.Unlock()
			a.metrics.rejections.WithLabelValues(string(re.Reason)).Inc()
			a.log.Warn("manifest rejected, keeping the last good one", "reason", re.Reason, "err", err, "applied_version", st.Applied().Version)
		case errors.As(err, &ae) && isRejectedChange(err):
			// Everything else applied; the droplet keeps the version it
			// had, and the heartbeat's rejected list says why. Not an
			// apply error: the droplet is healthy, nothing to remediate.
			rejected = ""
			a.mu.Lock()
			a.verifyError, a.applyError = "", ""
			a.mu.Unlock()
			a.log.Warn("manifest applied but for a rejected change; keeping what runs", "version", ae.Version, "err", err)
		case errors.As(err, &ae):
			// Valid but not applied: fetch and try again after a while.
			rejected = ""
			a.setApplyError(err)
			a.metrics.applyErrors.WithLabelValues(stepLabel(err)).Inc()
			a.log.Error("apply manifest", "version", ae.Version, "err", err)
		default:
			rejected = ""
			a.setApplyError(err)
			a.log.Error("accept manifest", "err", err)
		}
		a.heartbeatSoon()
		sleep(ctx, bo.Next())
	}
	return nil
}

// workspace is the workspace the droplet serves now: the bootstrap one, or
// the tenant's a hot spare adopted (State.Workspace).
func (a *Agent) workspace() string {
	return a.cfg.State.Workspace(a.cfg.Bootstrap.Workspace, a.cfg.DropletID)
}

// isRejectedChange reports whether err is a change this droplet tried,
// undid and rejected (converge.RejectedError: reported in heartbeats'
// rejected list).
func isRejectedChange(err error) bool {
	var rc interface{ RejectedChange() schema.Rejection }
	return errors.As(err, &rc)
}

func (a *Agent) setApplyError(err error) {
	a.mu.Lock()
	a.applyError = err.Error()
	a.mu.Unlock()
}

func (a *Agent) heartbeatSoon() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// observeDate records the reconciler's clock offset (server minus local,
// positive when the server is ahead) from a response's Date header, which
// has one-second resolution. For a short request the Date is taken as
// stamped at its midpoint; a held long-poll is answered at its end.
func (a *Agent) observeDate(rtt time.Duration, date time.Time) {
	if date.IsZero() {
		return
	}
	local := a.cfg.Now()
	if rtt < 5*time.Second {
		local = local.Add(-rtt / 2)
	}
	off := date.Add(500 * time.Millisecond).Sub(local)
	a.mu.Lock()
	a.clockOffset, a.haveOffset = off, true
	a.mu.Unlock()
	a.metrics.clockOffset.Set(off.Seconds())
}

// heartbeatLoop sends a heartbeat now, then every HeartbeatInterval (±10%)
// and soon after every manifest accepted or rejected.
func (a *Agent) heartbeatLoop(ctx context.Context) error {
	minGap := min(time.Second, a.cfg.HeartbeatInterval/10)
	for {
		last := time.Now()
		a.sendHeartbeat(ctx, a.credential())
		t := time.NewTimer(jitter(a.cfg.HeartbeatInterval, 0.1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-a.kick:
			t.Stop()
			sleep(ctx, minGap-time.Since(last))
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (a *Agent) sendHeartbeat(ctx context.Context, cred string) {
	seq, err := a.cfg.State.NextSeq()
	if err != nil {
		a.metrics.heartbeats.WithLabelValues("error").Inc()
		a.log.Error("heartbeat", "err", err)
		return
	}
	hb := a.heartbeat(ctx, seq)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := a.client.Heartbeat(rctx, cred, hb)
	a.observeDate(time.Since(start), resp.Date)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		a.metrics.heartbeats.WithLabelValues("error").Inc()
		a.log.Warn("heartbeat failed", "seq", seq, "err", err)
		return
	}
	a.metrics.heartbeats.WithLabelValues("ok").Inc()
	if a.cfg.Upgrader != nil {
		a.cfg.Upgrader.MarkHealthy()
	}
	a.log.Debug("heartbeat sent", "seq", seq, "applied_version", hb.AppliedVersion)
}

// heartbeat gathers one heartbeat's fields.
func (a *Agent) heartbeat(ctx context.Context, seq int64) schema.Heartbeat {
	ws := a.workspace()
	version, dig := a.cfg.State.Floor(ws, a.cfg.DropletID)
	hb := schema.Heartbeat{
		Workspace:      ws,
		Droplet:        a.cfg.DropletID,
		Seq:            seq,
		SentAt:         a.cfg.Now().UTC(),
		AppliedVersion: version,
		AppliedDigest:  dig,
		AgentVersion:   a.cfg.Version,
		Components:     map[string]schema.ComponentHealth{},
		N8NStopped:     a.cfg.State.N8NStopped(a.cfg.Bootstrap.Workspace, a.cfg.DropletID),
		Backup:         a.bk.report(),
		Rejected:       a.cfg.Rejections.List(),
		Rotation:       a.cfg.State.RotationReport(),
	}
	a.mu.Lock()
	hb.VerifyError, hb.ApplyError = a.verifyError, a.applyError
	if a.upgradeError != "" {
		hb.ApplyError = strings.TrimPrefix(hb.ApplyError+"; "+a.upgradeError, "; ")
	}
	offset, haveOffset := a.clockOffset, a.haveOffset
	a.mu.Unlock()
	// Only probed components are reported: an unprobed one is no evidence
	// either way, and reporting it failed would keep a droplet from ever
	// counting as healthy.
	for name, p := range a.cfg.Probes {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		hb.Components[name] = p(pctx)
		cancel()
	}
	hb.Repairs = a.noteRepairs(hb.Components, hb.SentAt)
	if haveOffset {
		// The heartbeat has no field of its own for it: it is reported as
		// the "clock" component (sent_at lets the reconciler check too).
		hb.Components["clock"] = schema.ComponentHealth{
			OK:     offset.Abs() <= a.cfg.MaxClockSkew,
			Detail: fmt.Sprintf("offset %+.1fs", offset.Seconds()),
		}
	}
	if used, total, err := memory(a.cfg.ProcDir + "/meminfo"); err == nil {
		hb.MemoryUsed, hb.MemoryTotal = used, total
	}
	if used, total, err := swap(a.cfg.ProcDir + "/meminfo"); err == nil {
		hb.SwapUsed, hb.SwapTotal = used, total
		hb.Components["swap"] = swapHealth(used, total, a.cfg.SwapMaxPercent)
	} else if !errors.Is(err, fs.ErrNotExist) {
		// No meminfo (not Linux) is no evidence; a malformed one is.
		hb.Components["swap"] = schema.ComponentHealth{OK: false, Detail: err.Error()}
	}
	if used, total, err := disk(a.cfg.State.Dir()); err == nil {
		hb.DiskUsed, hb.DiskTotal = used, total
	}
	if up, err := uptime(a.cfg.ProcDir + "/uptime"); err == nil {
		hb.UptimeSeconds = up.Seconds()
	} else {
		hb.UptimeSeconds = a.cfg.Now().Sub(a.started).Seconds()
	}
	if a.cfg.LastActivity != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if t, err := a.cfg.LastActivity(pctx); err == nil {
			hb.LastActivity = t.UTC()
		} else {
			a.log.Warn("last n8n activity", "err", err)
		}
		cancel()
	}
	if a.cfg.N8NVersion != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if v, err := a.cfg.N8NVersion(pctx); err == nil {
			hb.N8NVersion = v
		}
		cancel()
	}
	return hb
}

// noteRepairs records the local repairs the probes just made (a
// component whose detail says "repaired: ...") and returns the recent
// ones, newest first: at most schema.MaxRepairs, kept in memory since the
// agent started, each detail clipped for the heartbeat's bounds.
func (a *Agent) noteRepairs(components map[string]schema.ComponentHealth, at time.Time) []schema.Repair {
	var names []string
	for name, h := range components {
		if strings.HasPrefix(h.Detail, "repaired") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, name := range names {
		a.repairs = append([]schema.Repair{{Component: name, At: at, Detail: clip(components[name].Detail, 500)}}, a.repairs...)
	}
	if len(a.repairs) > schema.MaxRepairs {
		a.repairs = a.repairs[:schema.MaxRepairs]
	}
	return slices.Clone(a.repairs)
}
