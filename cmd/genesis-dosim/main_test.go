package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/syncio"
)

func noEnv(string) string { return "" }

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--account", "a:b"}, `want NAME:TOKEN:DROPLET_LIMIT, got "a:…"`},
		{[]string{"--account", "a:s3cr3t:x"}, `droplet limit "x" is not a non-negative integer`},
		{[]string{"extra"}, "unexpected arguments: [extra]"},
		{[]string{"--log-format", "xml"}, "--log-format: want text or json"},
		{[]string{"--rate-per-minute", "0"}, "must not be 0"},
		{[]string{"--public-url", "http://x"}, "--public-url must end in /"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, noEnv, &bytes.Buffer{}, &stderr)
			if !cliexit.IsUsage(err) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "Usage: genesis-dosim") {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "s3cr3t") {
				t.Errorf("token leaked into stderr:\n%s", stderr.String())
			}
		})
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, noEnv, &bytes.Buffer{}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, f := range []string{"listen", "account", "rate-per-minute", "rate-per-hour", "boot-delay", "action-delay",
		"fault-rate", "latency", "seed", "state", "disk-root", "boot-cmd", "DOSIM_DROPLET_IP", "DOSIM_USER_DATA_FILE", "/_sim/", "dns-listen"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

// serve runs the binary's run function until the returned stop is called.
func serve(t *testing.T, args ...string) (string, func()) {
	t.Helper()
	url, stop, _ := serveLog(t, args...)
	return url, stop
}

// serveLog is serve that also returns the log (stderr).
func serveLog(t *testing.T, args ...string) (string, func(), *syncio.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncio.Buffer{}, &syncio.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), noEnv, stdout, stderr) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.HasSuffix(stdout.String(), "/\n") {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no URL printed; stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), `msg=listening`) {
			t.Errorf("no structured listening log:\n%s", stderr.String())
		}
	}
	t.Cleanup(stop)
	return strings.TrimSpace(stdout.String()), stop, stderr
}

func TestServesGodoAndKeepsStateAcrossRestarts(t *testing.T) {
	state := filepath.Join(t.TempDir(), "dosim.json")
	args := []string{"--account", "ops:secret:token:3", "--boot-delay", "0s", "--state", state}
	url, stop := serve(t, args...)
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/") {
		t.Fatalf("url %q", url)
	}
	ctx := context.Background()
	c := dosimtest.NewClient(url, "secret:token")
	acct, _, err := c.Account.Get(ctx)
	if err != nil || acct.DropletLimit != 3 {
		t.Fatalf("account: %+v %v", acct, err)
	}
	d, _, err := c.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "persist", Region: "ams3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: []string{"genesis:ws:p"}})
	if err != nil {
		t.Fatal(err)
	}
	stop()

	url2, _ := serve(t, args...)
	c2 := dosimtest.NewClient(url2, "secret:token")
	ds, _, err := c2.Droplets.ListByTag(ctx, "genesis:ws:p", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range ds {
		got = append(got, x.Name+" "+x.Status)
	}
	if diff := cmp.Diff(got, []string{"persist active"}); diff != "" || ds[0].ID != d.ID {
		t.Errorf("after restart (-got +want):\n%s", diff)
	}
	// The default rate limits are DigitalOcean's.
	_, resp, err := c2.Account.Get(ctx)
	if err != nil || resp.Rate.Limit != dosim.DefaultRatePerHour {
		t.Errorf("rate limit %+v %v", resp.Rate, err)
	}
}

func TestDNSListen(t *testing.T) {
	url, _, log := serveLog(t, "--account", "ops:tok:3", "--dns-listen", "127.0.0.1:0")
	m := regexp.MustCompile(`msg="dns listening".*dns_addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no dns_addr logged:\n%s", log.String())
	}
	ctx := context.Background()
	c := dosimtest.NewClient(url, "tok")
	if _, _, err := c.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "cli.test", IPAddress: "127.1.0.3"}); err != nil {
		t.Fatal(err)
	}
	ips, err := dosimtest.Resolver(m[1]).LookupHost(ctx, "cli.test")
	if err != nil || !cmp.Equal(ips, []string{"127.1.0.3"}) {
		t.Errorf("LookupHost(cli.test) via %s = %v, %v", m[1], ips, err)
	}
}

func TestDNSListenRefusesNonLoopback(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--listen", "127.0.0.1:0", "--dns-listen", "0.0.0.0:0"}, noEnv, &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--dns-listen") || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("err = %v, want a refusal of the non-loopback address", err)
	}
}
