package service

import (
	"context"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// crashHook is the reliability suite's fault injector (--crash-after-journal-writes,
// test use only): it kills this process with SIGKILL right after the Nth
// committed write to the operations journal.
//
// It watches the store's connections as a pgx query tracer rather than
// sitting in each journal function of reconciler/store: it sees every
// statement that writes the journal (Begin, Step, Created, Finish, the
// resume's attempt count, the hibernation's steps, the watchdog's rebuild,
// and any added later) without those functions knowing, and it counts a
// write only once it is durable: a statement outside a transaction when it
// returns, one inside a transaction when that transaction's COMMIT returns.
// The kill is synchronous in the goroutine that made the write, so that
// goroutine never makes its next DigitalOcean call; it is the same signal
// an OOM kill or a node loss delivers, so no deferred cleanup runs.
type crashHook struct {
	after int    // crash after this many committed journal writes
	kill  func() // sends SIGKILL to this process and never returns

	mu      sync.Mutex
	written int
	inTx    map[*pgx.Conn]bool // a transaction is open on the connection
	dirty   map[*pgx.Conn]bool // ...and it wrote the journal
}

func newCrashHook(after int) *crashHook {
	return &crashHook{after: after, kill: killSelf, inTx: map[*pgx.Conn]bool{}, dirty: map[*pgx.Conn]bool{}}
}

func killSelf() {
	_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way; never return to the caller
}

type sqlKey struct{}

func (h *crashHook) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, sqlKey{}, data.SQL)
}

func (h *crashHook) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	sql, _ := ctx.Value(sqlKey{}).(string)
	sql = strings.ToLower(strings.Join(strings.Fields(sql), " "))
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case data.Err != nil:
		return
	case strings.HasPrefix(sql, "begin"):
		h.inTx[conn], h.dirty[conn] = true, false
	case sql == "commit":
		if h.dirty[conn] {
			h.count()
		}
		delete(h.inTx, conn)
		delete(h.dirty, conn)
	case sql == "rollback":
		delete(h.inTx, conn)
		delete(h.dirty, conn)
	case (strings.HasPrefix(sql, "insert into operations ") || strings.HasPrefix(sql, "update operations ")) && data.CommandTag.RowsAffected() > 0:
		if h.inTx[conn] {
			h.dirty[conn] = true
		} else {
			h.count()
		}
	}
}

// count records one committed journal write; called with mu held.
func (h *crashHook) count() {
	h.written++
	if h.written == h.after {
		h.kill()
	}
}
