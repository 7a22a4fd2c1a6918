package schema

import (
	"fmt"
	"regexp"
	"time"

	"filippo.io/age"
)

// Backup defaults: the schedule, objective and retention of a tier that
// spec.backup.tiers leaves out (seed: VIP hourly, others daily).
const (
	DefaultBackupEveryStarter    = 24 * time.Hour
	DefaultBackupEveryPro        = 24 * time.Hour
	DefaultBackupEveryEnterprise = time.Hour
	DefaultBackupKeepLast        = 3
	DefaultBackupKeepDaily       = 7
	DefaultBackupKeepWeekly      = 4
	// MinBackupEvery bounds how often a droplet may dump its database.
	MinBackupEvery = 5 * time.Minute
)

// Backup is spec.backup: where agents' encrypted backups go, who can open
// them, and each tier's schedule, recovery-point objective and retention.
// Absent, no backups are taken and a tenant's recovery point is its newest
// snapshot.
type Backup struct {
	// Recipients are the age recipients every backup is encrypted to:
	// the operators' offline keys, separate from spec.recipients (a backup
	// key compromise is not a credential compromise). At least one.
	Recipients []string `yaml:"recipients" json:"recipients"`
	// Storage is the S3-compatible bucket (DigitalOcean Spaces).
	Storage BackupStorage `yaml:"storage" json:"storage"`
	// Tiers holds the schedule of each tier (starter, pro, enterprise);
	// a tier left out gets the defaults.
	Tiers map[Tier]BackupTier `yaml:"tiers" json:"tiers,omitempty"`
}

// BackupStorage names the bucket and the environment variables that hold
// its keys; the keys themselves never appear in the state repository, and
// only the reconciler reads them (agents get presigned URLs).
type BackupStorage struct {
	Endpoint     string `yaml:"endpoint" json:"endpoint"`
	Region       string `yaml:"region" json:"region"`
	Bucket       string `yaml:"bucket" json:"bucket"`
	Prefix       string `yaml:"prefix" json:"prefix,omitempty"`
	AccessKeyEnv string `yaml:"accessKeyEnv" json:"accessKeyEnv"`
	SecretKeyEnv string `yaml:"secretKeyEnv" json:"secretKeyEnv"`
}

// BackupTier is one tier's backup policy.
type BackupTier struct {
	// Every is how often the agent takes a backup.
	Every Duration `yaml:"every" json:"every"`
	// Objective is the recovery-point objective: a tenant whose newest copy
	// (backup or snapshot) is older is alerted on. Default 2 × Every.
	Objective Duration `yaml:"objective" json:"objective"`
	// KeepLast, KeepDaily and KeepWeekly are the retention: the newest
	// KeepLast backups, plus the newest of each of the last KeepDaily days
	// and KeepWeekly ISO weeks.
	KeepLast   int `yaml:"keepLast" json:"keepLast"`
	KeepDaily  int `yaml:"keepDaily" json:"keepDaily"`
	KeepWeekly int `yaml:"keepWeekly" json:"keepWeekly"`
}

var (
	bucketName   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	objectPrefix = regexp.MustCompile(`^[A-Za-z0-9._/-]{0,128}$`)
	// endpointURL is an http(s) URL of a host (name or IPv4, optional
	// port) without a path, user or query; a pattern rather than net/url,
	// which schema must not link (the planner is pure: no net packages).
	endpointURL = regexp.MustCompile(`^https?://[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?/?$`)
)

// Tiers lists every tier, in order.
func Tiers() []Tier { return []Tier{TierStarter, TierPro, TierEnterprise} }

// Enabled reports whether backups are declared.
func (b *Backup) Enabled() bool { return b != nil && len(b.Recipients) > 0 }

// Policy is tier's policy with defaults filled.
func (b *Backup) Policy(tier Tier) BackupTier {
	var p BackupTier
	if b != nil {
		p = b.Tiers[tier]
	}
	if p.Every == 0 {
		switch tier {
		case TierEnterprise:
			p.Every = Duration(DefaultBackupEveryEnterprise)
		case TierPro:
			p.Every = Duration(DefaultBackupEveryPro)
		default:
			p.Every = Duration(DefaultBackupEveryStarter)
		}
	}
	if p.Objective == 0 {
		p.Objective = 2 * p.Every
	}
	if p.KeepLast == 0 {
		p.KeepLast = DefaultBackupKeepLast
	}
	if p.KeepDaily == 0 {
		p.KeepDaily = DefaultBackupKeepDaily
	}
	if p.KeepWeekly == 0 {
		p.KeepWeekly = DefaultBackupKeepWeekly
	}
	return p
}

// ParsedRecipients parses Recipients (validated by DecodeFleet).
func (b *Backup) ParsedRecipients() ([]age.Recipient, error) {
	out := make([]age.Recipient, 0, len(b.Recipients))
	for _, r := range b.Recipients {
		rec, err := age.ParseX25519Recipient(r)
		if err != nil {
			return nil, fmt.Errorf("spec.backup.recipients: %w", err)
		}
		out = append(out, rec)
	}
	return out, nil
}

func (f *Fleet) validateBackup(c *errorf) {
	b := f.Spec.Backup
	if b == nil {
		return
	}
	at := func(path, format string, args ...any) { c.at(f.pos.at(path), format, args...) }
	if len(b.Recipients) == 0 {
		at("spec.backup", "spec.backup.recipients: at least one age recipient is required (the operators' backup keys)")
	}
	checkRecipients(at, "spec.backup.recipients", b.Recipients)
	for _, r := range b.Recipients {
		for _, cr := range f.Spec.Recipients {
			if r == cr {
				at("spec.backup.recipients", "spec.backup.recipients: %s is also a credential recipient (spec.recipients); use a separate key so a backup key compromise is not a credential compromise", r)
			}
		}
	}
	s := b.Storage
	switch {
	case s.Endpoint == "":
		at("spec.backup.storage", "spec.backup.storage.endpoint is required (the S3 endpoint, e.g. https://nyc3.digitaloceanspaces.com)")
	case !endpointURL.MatchString(s.Endpoint):
		at("spec.backup.storage.endpoint", "spec.backup.storage.endpoint: %q is not an http(s) URL of a host without a path or user", s.Endpoint)
	}
	switch {
	case s.Bucket == "":
		at("spec.backup.storage", "spec.backup.storage.bucket is required")
	case !bucketName.MatchString(s.Bucket):
		at("spec.backup.storage.bucket", "spec.backup.storage.bucket: %q is not a bucket name (3-63 characters of a-z, 0-9, . and -)", s.Bucket)
	}
	if !objectPrefix.MatchString(s.Prefix) {
		at("spec.backup.storage.prefix", "spec.backup.storage.prefix: %q may hold only A-Z, a-z, 0-9, ., _, / and - (at most 128)", s.Prefix)
	}
	for _, k := range []struct{ name, v string }{{"accessKeyEnv", s.AccessKeyEnv}, {"secretKeyEnv", s.SecretKeyEnv}} {
		switch {
		case k.v == "":
			at("spec.backup.storage", "spec.backup.storage.%s is required (the name of the environment variable holding the key)", k.name)
		case !envName.MatchString(k.v):
			at("spec.backup.storage."+k.name, "spec.backup.storage.%s: %q is not an environment variable name (A-Z, 0-9, _); put the key in the environment, never in this file", k.name, k.v)
		}
	}
	for _, tier := range sortedKeys(b.Tiers) {
		p := "spec.backup.tiers." + string(tier)
		if !tier.valid() {
			at(p+"#key", "spec.backup.tiers: %q is not one of starter, pro, enterprise", tier)
			continue
		}
		t := b.Tiers[tier]
		if t.Every != 0 && t.Every.Std() < MinBackupEvery {
			at(p+".every", "%s.every: %s is shorter than %s", p, t.Every, MinBackupEvery)
		}
		if t.Objective < 0 || (t.Objective != 0 && t.Objective < b.Policy(tier).Every) {
			at(p+".objective", "%s.objective: must be at least every (%s)", p, b.Policy(tier).Every)
		}
		for _, k := range []struct {
			name string
			v    int
		}{{"keepLast", t.KeepLast}, {"keepDaily", t.KeepDaily}, {"keepWeekly", t.KeepWeekly}} {
			if k.v < 0 || k.v > 1000 {
				at(p+"."+k.name, "%s.%s: must be between 0 and 1000", p, k.name)
			}
		}
	}
}
