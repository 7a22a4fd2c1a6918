package tenants

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/internal/testkit"
)

// Benchmark sizes: the seed's 15,000 tenants and the 100,000 we design for.
var benchSizes = []int{15_000, 100_000}

// benchRepos generates one packed state repository per size, lazily, under
// the parent benchmark's temp dir, so sub-benchmarks re-run by the framework
// reuse it.
type benchRepos struct {
	parent *testing.B
	dirs   map[int]string
}

func (br *benchRepos) get(b *testing.B, n int) string {
	b.Helper()
	if dir, ok := br.dirs[n]; ok {
		return dir
	}
	dir := br.parent.TempDir()
	testkit.Git(b, dir, "init", "-q", "-b", "main")
	testkit.CopyTree(b, testkit.ExamplePath(b, "genesis.yaml"), filepath.Join(dir, "genesis.yaml"))
	testkit.CopyTree(b, testkit.ExamplePath(b, "templates"), filepath.Join(dir, "templates"))
	genTenants(b, dir, n)
	testkit.Git(b, dir, "add", "-A")
	testkit.Git(b, dir, "commit", "-q", "-m", "generated")
	testkit.Git(b, dir, "repack", "-adq") // as a clone receives it: one pack
	br.dirs[n] = dir
	return dir
}

// BenchmarkColdLoad is a reconciler's first Sync: read every blob of the
// commit from git, decode and validate every tenant, apply the cross-tenant
// rules. Compare with BenchmarkRawYAMLDecode of the same files.
func BenchmarkColdLoad(b *testing.B) {
	repos := &benchRepos{parent: b, dirs: map[int]string{}}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			dir := repos.get(b, n)
			b.ResetTimer()
			for range b.N {
				s := openLocal(b, dir)
				snap := mustSync(b, s)
				if len(snap.Tenants) != n || len(snap.Errors) != 0 {
					b.Fatalf("%d tenants, %d errors", len(snap.Tenants), len(snap.Errors))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/tenant")
		})
	}
}

// BenchmarkRawYAMLDecode is the floor: read the same tenant files from disk
// and yaml.v3-decode each into an untyped value, nothing else.
func BenchmarkRawYAMLDecode(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			genTenants(b, dir, n)
			entries, err := os.ReadDir(filepath.Join(dir, "tenants"))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				for _, e := range entries {
					data, err := os.ReadFile(filepath.Join(dir, "tenants", e.Name()))
					if err != nil {
						b.Fatal(err)
					}
					var v any
					if err := yaml.Unmarshal(data, &v); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/tenant")
		})
	}
}

// BenchmarkIncrementalOneTenant is the steady state at 100,000 tenants: a
// commit edits one tenant and the Source syncs it (resolve the head, check
// history, compare the changed tree, decode one file, re-apply the
// cross-tenant rules, build the snapshot). unique=incremental is the
// Source as it runs: the tenants tree compared with the index entry by
// entry and the snapshot patched where the commit touched it, the
// cross-tenant rules re-checked for the touched files. The same-run
// baselines recompute every tenant's state on every sync (list and diff
// the whole tree, rebuild the map and the changed list): with the
// incremental cross-tenant check (unique=incremental,snapshot=full, as
// before the snapshot was patched) and with the whole-set check
// (unique=whole-set, as before issue 23). cpu-ms/op is the CPU time of
// the whole process during the syncs (a copy made alongside the sync and
// the garbage collector included): on a shared machine it moves less than
// the wall time.
func BenchmarkIncrementalOneTenant(b *testing.B) {
	const n = 100_000
	repos := &benchRepos{parent: b, dirs: map[int]string{}}
	edits := 0
	for _, mode := range []struct {
		name           string
		wholeSet, full bool
	}{{"unique=whole-set", true, true}, {"unique=incremental,snapshot=full", false, true}, {"unique=incremental", false, false}} {
		b.Run(mode.name, func(b *testing.B) {
			dir := repos.get(b, n)
			s := openLocal(b, dir)
			s.ix.wholeSet, s.ix.full = mode.wholeSet, mode.full
			mustSync(b, s)
			// The cold load's garbage is not the syncs' to collect.
			runtime.GC()
			before := s.Stats()
			var cpu time.Duration
			cpuOK := true
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				i := edits
				edits++
				p := filepath.Join(dir, "tenants", fmt.Sprintf("ws-gen-%06d.yaml", i%n))
				data, err := os.ReadFile(p)
				if err != nil {
					b.Fatal(err)
				}
				data = []byte(strings.Replace(string(data), "name: Tenant", fmt.Sprintf("name: Edit %d", i), 1))
				if err := os.WriteFile(p, data, 0o644); err != nil {
					b.Fatal(err)
				}
				testkit.Git(b, dir, "commit", "-q", "-a", "-m", "edit")
				start, ok := processCPU()
				b.StartTimer()
				snap := mustSync(b, s)
				b.StopTimer()
				end, ok2 := processCPU()
				cpu += end - start
				cpuOK = cpuOK && ok && ok2
				if len(snap.Changed) != 1 {
					b.Fatalf("changed: %v", snap.Changed)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(s.Stats().Parses-before.Parses)/float64(b.N), "parses/op")
			if cpuOK {
				// All the process's threads: the sync's, a copy made
				// alongside, and the garbage collector's.
				b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			}
		})
	}
}
