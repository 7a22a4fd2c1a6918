package dosim_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/testkit"
)

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestBootHookRunsAndStops(t *testing.T) {
	disks := t.TempDir()
	// The hook records its environment on the droplet's disk, starts a
	// grandchild in its process group and waits.
	hook := `printf '%s|%s|%s|%s\n' "$DOSIM_DROPLET_ID" "$DOSIM_DROPLET_NAME" "$DOSIM_DROPLET_IP" "$DOSIM_DROPLET_TAGS" >> "$DOSIM_DISK_DIR/boots"
cp "$DOSIM_USER_DATA_FILE" "$DOSIM_DISK_DIR/user_data"
sleep 300 & echo $! > "$DOSIM_DISK_DIR/child.pid"
wait`
	e := start(t, func(c *dosim.Config) { c.DiskRoot = disks; c.BootCmd = hook; c.HookGrace = 2 * time.Second })
	ctx := context.Background()
	d, _, err := e.a.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "hooked", Region: "fra1", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: []string{"genesis", "genesis:ws:h"}, UserData: "#cloud-config\nruncmd: []\n"})
	if err != nil {
		t.Fatal(err)
	}
	if pid := e.Sim.HookPID(d.ID); pid != 0 {
		t.Fatalf("hook running before boot: %d", pid)
	}
	e.Sim.Advance(30 * time.Second)
	pid := e.Sim.HookPID(d.ID)
	if !alive(pid) {
		t.Fatalf("hook not running after boot (pid %d)", pid)
	}
	dir := filepath.Join(disks, "droplets", strconv.Itoa(d.ID))
	childPID := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "child.pid"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	testkit.WaitFor(t, "the hook's child", func() bool { return alive(childPID()) })
	d, _, _ = e.a.Droplets.Get(ctx, d.ID)
	ip, _ := d.PublicIPv4()
	boots, _ := os.ReadFile(filepath.Join(dir, "boots"))
	if want := fmt.Sprintf("%d|hooked|%s|genesis,genesis:ws:h\n", d.ID, ip); string(boots) != want {
		t.Errorf("hook environment = %q, want %q", boots, want)
	}
	if ud, _ := os.ReadFile(filepath.Join(dir, "user_data")); string(ud) != "#cloud-config\nruncmd: []\n" {
		t.Errorf("user data file = %q", ud)
	}

	// power_off stops the whole process group.
	child := childPID()
	if _, _, err := e.a.DropletActions.PowerOff(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if !alive(pid) {
		t.Errorf("hook stopped before power_off completed")
	}
	e.Sim.Advance(10 * time.Second)
	if got := e.Sim.HookPID(d.ID); got != 0 {
		t.Errorf("hook pid %d after power_off", got)
	}
	testkit.WaitFor(t, "the hook's processes to be reaped", func() bool { return !alive(pid) && !alive(child) })

	// power_on and reboot start it again.
	if _, _, err := e.a.DropletActions.PowerOn(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	e.Sim.Advance(10 * time.Second)
	pid2 := e.Sim.HookPID(d.ID)
	if !alive(pid2) || pid2 == pid {
		t.Fatalf("hook after power_on: pid %d (was %d)", pid2, pid)
	}
	// Let the second boot's hook record itself before the reboot kills it
	// (on a loaded machine the shell may not have run its first line yet).
	testkit.WaitFor(t, "two boots recorded", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "boots"))
		return strings.Count(string(b), "\n") == 2
	})
	if _, _, err := e.a.DropletActions.Reboot(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	e.Sim.Advance(10 * time.Second)
	pid3 := e.Sim.HookPID(d.ID)
	if !alive(pid3) || pid3 == pid2 || alive(pid2) {
		t.Fatalf("hook after reboot: pid %d (before %d, alive %v)", pid3, pid2, alive(pid2))
	}
	testkit.WaitFor(t, "three boots recorded", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "boots"))
		return strings.Count(string(b), "\n") == 3
	})

	// destroy stops it.
	if _, err := e.a.Droplets.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.Sim.HookPID(d.ID); got != 0 || alive(pid3) {
		t.Errorf("hook after destroy: pid %d, old alive %v", got, alive(pid3))
	}

	// Close stops whatever still runs.
	d2 := e.create(e.a, "left-running")
	e.Sim.Advance(30 * time.Second)
	pid4 := e.Sim.HookPID(d2.ID)
	if !alive(pid4) {
		t.Fatalf("second droplet's hook not running")
	}
	if err := e.Sim.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(pid4) {
		t.Errorf("hook %d survived Close", pid4)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	wall := time.Now()
	cfg := dosim.Config{
		Accounts:  []dosim.Account{{Name: "alpha", Token: tokenA, DropletLimit: 10}},
		Limits:    dosim.Limits{RatePerMinute: -1, RatePerHour: -1, BootDelay: dosim.Duration(time.Minute), ActionDelay: dosim.Duration(time.Minute)},
		StatePath: statePath,
		DiskRoot:  filepath.Join(dir, "disks"),
		Now:       func() time.Time { return epoch.Add(time.Since(wall)) },
	}
	ctx := context.Background()

	// First life: one droplet booted and snapshotted, one still booting.
	sim1, err := dosim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sim1.Freeze(true)
	srv1 := httptest.NewServer(sim1.Handler())
	c1 := dosimtest.NewClient(srv1.URL+"/", tokenA)
	d1, _, err := c1.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "one", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{"genesis:ws:1"}})
	if err != nil {
		t.Fatal(err)
	}
	sim1.Advance(time.Minute)
	if _, _, err := c1.DropletActions.Snapshot(ctx, d1.ID, "one-snap"); err != nil {
		t.Fatal(err)
	}
	sim1.Advance(time.Minute)
	d2, _, err := c1.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "two", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}})
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		Droplets  []string
		Snapshots []string
	}
	look := func(c *godo.Client) view {
		var v view
		ds, _, err := c.Droplets.List(ctx, &godo.ListOptions{PerPage: 200})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			ip, _ := d.PublicIPv4()
			v.Droplets = append(v.Droplets, fmt.Sprintf("%d %s %s %s", d.ID, d.Name, d.Status, ip))
		}
		ss, _, err := c.Snapshots.List(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			v.Snapshots = append(v.Snapshots, s.ID+" "+s.Name+" "+s.Created)
		}
		return v
	}
	before := look(c1)
	srv1.Close()
	if err := sim1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(statePath); err != nil {
		t.Fatalf("state file: %v", err)
	}

	// Second life from the same file.
	sim2, err := dosim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sim2.Close()
	sim2.Freeze(true)
	srv2 := httptest.NewServer(sim2.Handler())
	defer srv2.Close()
	c2 := dosimtest.NewClient(srv2.URL+"/", tokenA)
	if diff := cmp.Diff(look(c2), before); diff != "" {
		t.Errorf("state after restart (-got +want):\n%s", diff)
	}
	// The booting droplet finishes booting on the restored clock, and ids
	// keep growing.
	sim2.Advance(time.Minute)
	if d, _, _ := c2.Droplets.Get(ctx, d2.ID); d.Status != "active" {
		t.Errorf("droplet two after restart: %s", d.Status)
	}
	d3, _, err := c2.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "three", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}})
	if err != nil || d3.ID <= d2.ID {
		t.Errorf("new droplet after restart: %v %v", d3, err)
	}
	d1again, _, _ := c2.Droplets.Get(ctx, d1.ID)
	d3again, _, _ := c2.Droplets.Get(ctx, d3.ID)
	sim2.Advance(time.Minute)
	d3again, _, _ = c2.Droplets.Get(ctx, d3.ID)
	ip1, _ := d1again.PublicIPv4()
	ip3, _ := d3again.PublicIPv4()
	if ip1 == ip3 || ip3 == "" {
		t.Errorf("addresses after restart: %q and %q", ip1, ip3)
	}
}
