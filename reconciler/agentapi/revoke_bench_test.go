package agentapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkBogusCredentialXacts measures, from pg_stat_database, the
// database transactions that requests with random agent credentials cost
// (half GET /v1/manifest, half POST /v1/heartbeat), against a baseline
// interval without requests. Run with
//
//	go test ./reconciler/agentapi -run '^$' -bench BogusCredentialXacts -benchtime 1000x
//
// It reports xacts/1000req. Backends flush their statistics within 10 s
// of going idle, so each reading waits 11 s.
func BenchmarkBogusCredentialXacts(b *testing.B) {
	w := newWorld(b)
	w.setTenant("ws-real", "blob", tenantSpec{})
	a := w.mustEnroll("ws-real", 1, 9101, "203.0.113.7")
	poll.Until(b, "ready", func() bool {
		return credentialsLoaded(w.svc) && manifestCode(b, w.srv.URL, a.cred) == http.StatusOK
	})
	conn, err := pgx.ConnectConfig(context.Background(), w.st.Pool().Config().ConnConfig.Copy())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	xacts := func() int64 {
		time.Sleep(11 * time.Second)
		var n int64
		if _, err := conn.Exec(context.Background(), `SELECT pg_stat_clear_snapshot()`); err != nil {
			b.Fatal(err)
		}
		if err := conn.QueryRow(context.Background(), `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	x0 := xacts()
	x1 := xacts() // the baseline: no requests
	b.ResetTimer()
	for i := range b.N {
		if got := sendBogus(b, w.srv.URL, i); got != http.StatusUnauthorized {
			b.Fatalf("bogus credential: %d", got)
		}
	}
	b.StopTimer()
	x2 := xacts()
	b.ReportMetric(float64((x2-x1)-(x1-x0))*1000/float64(b.N), "xacts/1000req")
}
