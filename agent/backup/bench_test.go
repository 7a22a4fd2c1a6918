package backup

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/internal/pgserver/pgtest"
)

// heapPeak samples the Go heap in use until stop is called and returns
// the highest sample above the level at the start, and the bytes
// allocated in between.
func heapPeak() (stop func() (peak, allocated uint64)) {
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var (
		mu   sync.Mutex
		peak uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		if m.HeapInuse > base.HeapInuse {
			peak = max(peak, m.HeapInuse-base.HeapInuse)
		}
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		sample()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return peak, m.TotalAlloc - base.TotalAlloc
	}
}

// TestMemoryBounded: taking and restoring a 200 MB dump keeps the Go heap
// to a few fixed buffers: the dump streams, it is never held.
func TestMemoryBounded(t *testing.T) {
	const payload = 200_000_000
	const bound = 16 << 20 // ~8% of the payload
	ctx := t.Context()
	id := newIdentity(t)
	src := Source{Dump: []string{"sh", "-c", "printf PGDMP; head -c " + strconv.Itoa(payload) + " /dev/urandom"}}

	stop := heapPeak()
	a, err := Take(ctx, src, testBinding, []age.Recipient{id.Recipient()}, t.TempDir())
	peak, allocated := stop()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	t.Logf("Take of %d bytes: archive %d bytes, heap peak +%d, allocated %d", payload, a.Size, peak, allocated)
	if a.Size < payload {
		t.Fatalf("archive of %d bytes for a %d-byte dump", a.Size, payload)
	}
	if peak > bound || allocated > bound {
		t.Errorf("Take: heap peak +%d bytes, %d allocated; want both under %d", peak, allocated, bound)
	}

	counted := filepath.Join(t.TempDir(), "count")
	stop = heapPeak()
	_, err = Restore(ctx, a.Path, []age.Identity{id}, testBinding, Target{
		Restore:    []string{"sh", "-c", "wc -c > " + counted},
		StagingDir: t.TempDir(),
	})
	peak, allocated = stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Restore: heap peak +%d, allocated %d", peak, allocated)
	if got, _ := os.ReadFile(counted); string(got) != strconv.Itoa(payload+len(dumpMagic))+"\n" {
		t.Errorf("restore command read %q bytes, want %d", got, payload+len(dumpMagic))
	}
	// age's decrypting reader allocates a new 64 KiB buffer per chunk (so
	// about the payload in total, all of it garbage at once): only the
	// peak says whether the backup is held.
	if peak > bound {
		t.Errorf("Restore: heap peak +%d bytes; want under %d", peak, bound)
	}
}

// BenchmarkTakeRestore backs up and restores a database of 10,000
// execution rows and, in the same run, does the bare minimum the same
// work needs (pg_dump -Fc | age encrypt to a file; age decrypt |
// pg_restore), reporting each phase's time and their ratios to the
// baseline.
//
//	go test ./agent/backup -run '^$' -bench TakeRestore -benchtime 10x
func BenchmarkTakeRestore(b *testing.B) {
	ctx := b.Context()
	srcURL := pgtest.New(b)
	seed(b, srcURL, 10_000)
	dataDir := n8nDataDir(b, b.TempDir(), "bench")
	id := newIdentity(b)
	ids, recipients := []age.Identity{id}, []age.Recipient{id.Recipient()}
	work := b.TempDir()
	admin, err := pgx.Connect(ctx, srcURL)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	fresh := func(i int, kind string) string {
		name := "bench_" + kind + "_" + strconv.Itoa(i)
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)") })
		u, err := url.Parse(srcURL)
		if err != nil {
			b.Fatal(err)
		}
		u.Path = "/" + name
		return u.String()
	}

	var take, restore, bareTake, bareRestore time.Duration
	var archiveBytes, dumpBytes int64
	i := 0
	for b.Loop() {
		i++
		b.StopTimer()
		dst, dstBare := fresh(i, "dst"), fresh(i, "bare")
		root := b.TempDir()
		b.StartTimer()

		t0 := time.Now()
		a, err := Take(ctx, Source{Dump: dumpArgv(b, srcURL), DataDir: dataDir}, testBinding, recipients, work)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := Restore(ctx, a.Path, ids, testBinding, Target{Restore: restoreArgv(b, dst), DataDir: filepath.Join(root, "n8n"), StagingDir: root}); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		bare := filepath.Join(work, "bare.age")
		dumpBytes = bareDump(b, srcURL, recipients, bare)
		t3 := time.Now()
		bareRestoreRun(b, dstBare, ids, bare)
		t4 := time.Now()

		take += t1.Sub(t0)
		restore += t2.Sub(t1)
		bareTake += t3.Sub(t2)
		bareRestore += t4.Sub(t3)
		archiveBytes = a.Size
		a.Remove()
	}
	n := float64(b.N)
	b.ReportMetric(float64(take.Nanoseconds())/n, "take-ns/op")
	b.ReportMetric(float64(restore.Nanoseconds())/n, "restore-ns/op")
	b.ReportMetric(float64(bareTake.Nanoseconds())/n, "bare-dump-ns/op")
	b.ReportMetric(float64(bareRestore.Nanoseconds())/n, "bare-restore-ns/op")
	b.ReportMetric(float64(take)/float64(bareTake), "take/bare")
	b.ReportMetric(float64(restore)/float64(bareRestore), "restore/bare")
	b.ReportMetric(float64(archiveBytes), "archive-bytes")
	b.ReportMetric(float64(dumpBytes), "bare-archive-bytes")
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		b.ReportMetric(float64(ru.Maxrss)*1024, "peak-rss-bytes")
	}
}

// bareDump is the baseline of Take: pg_dump -Fc piped into age, to a file.
func bareDump(b *testing.B, url string, recipients []age.Recipient, path string) int64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w, err := age.Encrypt(f, recipients...)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(dumpArgv(b, url)[0], dumpArgv(b, url)[1:]...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%v: %s", err, stderr.Bytes())
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	fi, _ := f.Stat()
	return fi.Size()
}

// bareRestoreRun is the baseline of Restore: age decrypt piped into
// pg_restore.
func bareRestoreRun(b *testing.B, url string, ids []age.Identity, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, ids...)
	if err != nil {
		b.Fatal(err)
	}
	argv := restoreArgv(b, url)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = r
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
}
