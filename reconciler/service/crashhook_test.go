package service

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestCrashHookCounts: the hook counts a journal write once it is durable
// (a lone statement when it returns, a transaction's at its COMMIT, once
// per transaction), never a rolled-back or failed one or another table's.
func TestCrashHookCounts(t *testing.T) {
	type stmt struct {
		conn int
		sql  string
		tag  string
		err  bool
	}
	for _, tc := range []struct {
		name  string
		stmts []stmt
		want  int
	}{
		{"lone update", []stmt{{0, "UPDATE operations SET step = $2 WHERE id = $1", "UPDATE 1", false}}, 1},
		{"update of no row", []stmt{{0, "UPDATE operations SET step = $2 WHERE id = $1", "UPDATE 0", false}}, 0},
		{"failed insert", []stmt{{0, "INSERT INTO operations (workspace) VALUES ($1)", "", true}}, 0},
		{"other table", []stmt{{0, "UPDATE fleet_status SET state = $2", "UPDATE 1", false}}, 0},
		{"transaction counts at commit, once", []stmt{
			{0, "begin", "BEGIN", false},
			{0, "INSERT INTO operations (workspace) VALUES ($1) RETURNING id", "INSERT 0 1", false},
			{0, "\n\t\tUPDATE operations\n SET state = 'failed'", "UPDATE 1", false},
			{0, "commit", "COMMIT", false},
		}, 1},
		{"rolled back", []stmt{
			{0, "begin", "BEGIN", false},
			{0, "UPDATE operations SET step = $2", "UPDATE 1", false},
			{0, "rollback", "ROLLBACK", false},
		}, 0},
		{"failed commit", []stmt{
			{0, "begin", "BEGIN", false},
			{0, "UPDATE operations SET step = $2", "UPDATE 1", false},
			{0, "commit", "", true},
		}, 0},
		{"two connections", []stmt{
			{0, "begin", "BEGIN", false},
			{0, "UPDATE operations SET step = $2", "UPDATE 1", false},
			{1, "UPDATE operations SET step = $2", "UPDATE 1", false},
			{1, "begin", "BEGIN", false},
			{1, "commit", "COMMIT", false},
			{0, "commit", "COMMIT", false},
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns := []*pgx.Conn{{}, {}}
			killed := 0
			replay := func(after int) *crashHook {
				h := newCrashHook(after)
				h.kill = func() { killed++ }
				for _, s := range tc.stmts {
					ctx := h.TraceQueryStart(context.Background(), conns[s.conn], pgx.TraceQueryStartData{SQL: s.sql})
					end := pgx.TraceQueryEndData{CommandTag: pgconn.NewCommandTag(s.tag)}
					if s.err {
						end.Err = context.Canceled
					}
					h.TraceQueryEnd(ctx, conns[s.conn], end)
				}
				return h
			}
			if got := replay(-1).written; got != tc.want {
				t.Errorf("counted %d journal writes, want %d", got, tc.want)
			}
			if tc.want > 0 {
				replay(tc.want)
				if killed != 1 {
					t.Errorf("killed %d times with --crash-after-journal-writes %d, want once", killed, tc.want)
				}
			}
		})
	}
}
