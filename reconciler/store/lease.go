package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrStaleEpoch means a journal write was refused because another replica
// took the leader lock after the writer's epoch (migrations 0015): the
// writer is no longer the leader and must stop.
var ErrStaleEpoch = errors.New("journal write refused: the leader epoch moved on")

type epochKey struct{}

type epochFence struct {
	epoch int64
	stale func(error)
}

// WithEpoch makes every journal write made with ctx (Begin, Step, Created,
// Retry, Finish) conditional on the leader epoch still being epoch, and
// records epoch on the operation. A refused write returns ErrStaleEpoch
// and calls stale (when set) first, so the leader can stop at once.
// Without it journal writes are unconditional (tools and tests that hold
// no lease).
func WithEpoch(ctx context.Context, epoch int64, stale func(error)) context.Context {
	return context.WithValue(ctx, epochKey{}, epochFence{epoch: epoch, stale: stale})
}

// epochArg is ctx's epoch as a SQL argument (NULL without one).
func epochArg(ctx context.Context) any {
	if f, ok := ctx.Value(epochKey{}).(epochFence); ok {
		return f.epoch
	}
	return nil
}

// checkEpoch refuses tx when ctx carries an epoch that is no longer the
// leader's. It reads the lease row FOR SHARE: a new leader's increment
// waits until tx ends, so no write of the old epoch commits after it.
func checkEpoch(ctx context.Context, tx pgx.Tx) error {
	f, ok := ctx.Value(epochKey{}).(epochFence)
	if !ok {
		return nil
	}
	var cur int64
	err := tx.QueryRow(ctx, `SELECT epoch FROM leader_lease WHERE id FOR SHARE`).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		cur = 0
	} else if err != nil {
		return fmt.Errorf("read the leader epoch: %w", err)
	}
	if cur != f.epoch {
		err := fmt.Errorf("%w: this replica's epoch is %d, the leader's %d", ErrStaleEpoch, f.epoch, cur)
		if f.stale != nil {
			f.stale(err)
		}
		return err
	}
	return nil
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// underEpoch runs a one-statement journal write: in a transaction behind
// checkEpoch when ctx carries an epoch, else straight on the pool.
func (s *Store) underEpoch(ctx context.Context, write func(execer) error) error {
	if _, ok := ctx.Value(epochKey{}).(epochFence); !ok {
		return write(s.pool)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		return write(tx)
	})
}

// Leader is a held leadership under one epoch. Lost is closed when the
// lock's session fails (another replica may then lead).
type Leader struct {
	// Epoch is the leader_lease epoch this leadership took (it grows by
	// one at every take-over).
	Epoch int64
	Lost  chan struct{}

	mu   sync.Mutex // serialises use of conn (watch and Check)
	conn *pgxpool.Conn
	pid  uint32 // the lock session's backend pid
	lost sync.Once
	stop chan struct{}
	done chan struct{}
}

// holderName names this process in leader_lease.
func holderName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// TryLead takes the leader lock if it is free and, in the same session,
// increments and reads the leader epoch. It returns nil, nil when another
// replica leads. The lock's session is pinged every check; Check proves it
// on demand.
func (s *Store) TryLead(ctx context.Context, check time.Duration) (*Leader, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LeaderLockKey).Scan(&got); err != nil {
		conn.Release()
		return nil, fmt.Errorf("leader election: %w", err)
	}
	if !got {
		conn.Release()
		return nil, nil
	}
	var epoch int64
	err = conn.QueryRow(ctx, `INSERT INTO leader_lease (id, epoch, holder) VALUES (true, 1, $1)
		ON CONFLICT (id) DO UPDATE SET epoch = leader_lease.epoch + 1, holder = $1, taken_at = now()
		RETURNING epoch`, holderName()).Scan(&epoch)
	if err != nil {
		// Closing the session frees the lock.
		conn.Conn().Close(context.Background())
		conn.Release()
		return nil, fmt.Errorf("leader election: take the epoch: %w", err)
	}
	l := &Leader{Epoch: epoch, conn: conn, pid: conn.Conn().PgConn().PID(), Lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go l.watch(check)
	return l, nil
}

// Check proves the lock is still held: a round trip on the lock's own
// session (if that session died, so did the lock). A failure closes Lost.
func (l *Leader) Check(ctx context.Context) error {
	select {
	case <-l.Lost:
		return errors.New("the leader lock's session is gone")
	default:
	}
	l.mu.Lock()
	err := l.conn.Ping(ctx)
	l.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		l.markLost()
		return fmt.Errorf("leader lock session: %w", err)
	}
	return err
}

func (l *Leader) markLost() { l.lost.Do(func() { close(l.Lost) }) }

// watch pings the lock's connection; a failed ping means the session (and
// so the lock) may be gone.
func (l *Leader) watch(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.Lost:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := l.Check(ctx)
			cancel()
			if err != nil {
				l.markLost()
				return
			}
		}
	}
}

// Release gives up leadership.
func (l *Leader) Release() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.Lost:
		l.conn.Conn().Close(context.Background())
	default:
		if _, err := l.conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, LeaderLockKey); err != nil {
			// A session that cannot unlock is not given back to the
			// pool; closing it frees the lock if it still held it.
			l.conn.Conn().Close(context.Background())
		}
	}
	l.conn.Release()
}
