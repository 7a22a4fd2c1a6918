package schema

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackupPolicyDefaults(t *testing.T) {
	h := func(d time.Duration) Duration { return Duration(d) }
	declared := &Backup{
		Recipients: []string{"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"},
		Tiers: map[Tier]BackupTier{
			TierEnterprise: {Every: h(30 * time.Minute), KeepLast: 48},
			TierPro:        {Every: h(6 * time.Hour), Objective: h(8 * time.Hour), KeepDaily: 30, KeepWeekly: 12},
		},
	}
	tests := []struct {
		name string
		b    *Backup
		tier Tier
		want BackupTier
	}{
		{"not declared: starter", nil, TierStarter, BackupTier{Every: h(24 * time.Hour), Objective: h(48 * time.Hour), KeepLast: 3, KeepDaily: 7, KeepWeekly: 4}},
		{"not declared: pro", nil, TierPro, BackupTier{Every: h(24 * time.Hour), Objective: h(48 * time.Hour), KeepLast: 3, KeepDaily: 7, KeepWeekly: 4}},
		{"not declared: enterprise", nil, TierEnterprise, BackupTier{Every: h(time.Hour), Objective: h(2 * time.Hour), KeepLast: 3, KeepDaily: 7, KeepWeekly: 4}},
		{"tier left out", declared, TierStarter, BackupTier{Every: h(24 * time.Hour), Objective: h(48 * time.Hour), KeepLast: 3, KeepDaily: 7, KeepWeekly: 4}},
		{"objective defaults to twice every", declared, TierEnterprise, BackupTier{Every: h(30 * time.Minute), Objective: h(time.Hour), KeepLast: 48, KeepDaily: 7, KeepWeekly: 4}},
		{"all set", declared, TierPro, BackupTier{Every: h(6 * time.Hour), Objective: h(8 * time.Hour), KeepLast: 3, KeepDaily: 30, KeepWeekly: 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.b.Policy(tt.tier)); diff != "" {
				t.Errorf("Policy(%s) (-want +got):\n%s", tt.tier, diff)
			}
		})
	}
	if (*Backup)(nil).Enabled() || (&Backup{}).Enabled() || !declared.Enabled() {
		t.Error("Enabled: want true only with recipients")
	}
}

func TestDecodedBackup(t *testing.T) {
	f, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/backup.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	b := f.Spec.Backup
	if !b.Enabled() {
		t.Fatal("backup.good.yaml: backups not enabled")
	}
	got := b.Policy(TierEnterprise)
	want := BackupTier{Every: Duration(30 * time.Minute), Objective: Duration(time.Hour), KeepLast: 48, KeepDaily: 14, KeepWeekly: 8}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("enterprise policy (-want +got):\n%s", diff)
	}
	if got, want := b.Storage.AccessKeyEnv, "GENESIS_SPACES_KEY"; got != want {
		t.Errorf("accessKeyEnv = %q, want %q", got, want)
	}
	rs, err := b.ParsedRecipients()
	if err != nil || len(rs) != 1 {
		t.Errorf("ParsedRecipients = %d, %v; want 1", len(rs), err)
	}
}

func TestBackupEndpoint(t *testing.T) {
	good := string(mustRead(t, "testdata/fleets/backup.good.yaml"))
	const declared = "endpoint: https://nyc3.digitaloceanspaces.com"
	for endpoint, ok := range map[string]bool{
		"https://nyc3.digitaloceanspaces.com":  true,
		"https://nyc3.digitaloceanspaces.com/": true,
		"http://127.0.0.1:8333":                true,
		"http://seaweedfs:8333":                true,
		"ftp://nyc3.digitaloceanspaces.com":    false,
		"https://key:secret@example.com":       false,
		"https://example.com/bucket":           false,
		"https://example.com?x=1":              false,
		"nyc3.digitaloceanspaces.com":          false,
		"https://":                             false,
	} {
		t.Run(endpoint, func(t *testing.T) {
			_, errs := DecodeFleet(FleetFile, []byte(strings.Replace(good, declared, "endpoint: "+endpoint, 1)))
			if got := len(errs) == 0; got != ok {
				t.Errorf("accepted = %v, want %v (%v)", got, ok, errs)
			}
			for _, e := range errs {
				if !strings.Contains(e.Message, "spec.backup.storage.endpoint") || e.Line != 17 {
					t.Errorf("error %d:%d %q does not name the endpoint at its line", e.Line, e.Col, e.Message)
				}
			}
		})
	}
}
