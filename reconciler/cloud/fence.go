package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// ErrFenced means this process no longer holds the leader's lease: the
// mutating DigitalOcean call it was about to make was not sent. It is not
// an action's failure (the tenant is neither failed nor backed off): the
// caller stops leading and leaves the journaled operation to the leader
// that fenced it out, which resumes it.
var ErrFenced = errors.New("fenced: the leader lease is lost")

// Lease is the leader's right to mutate DigitalOcean, under one epoch of
// the leader lock (reconciler/store). It is valid from NewLease until
// Revoke; its Context is cancelled on Revoke. Before every mutating
// request the transport calls Fence, which also runs the lease's check
// (a round trip on the lock's own session), so a leader whose lock
// session died stops before its next create, delete or action, not at its
// next ping.
type Lease struct {
	epoch  int64
	check  func(context.Context) error
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu  sync.Mutex
	err error
}

// NewLease returns a valid lease of epoch whose Context derives from
// parent. check, when set, proves the lease still holds (nil: no proof
// beyond not being revoked); its failure revokes the lease.
func NewLease(parent context.Context, epoch int64, check func(context.Context) error) *Lease {
	ctx, cancel := context.WithCancelCause(parent)
	return &Lease{epoch: epoch, check: check, ctx: ctx, cancel: cancel}
}

// Epoch is the leader lock's epoch the lease was taken under.
func (l *Lease) Epoch() int64 { return l.epoch }

// Context is cancelled (with cause ErrFenced) when the lease is revoked.
func (l *Lease) Context() context.Context { return l.ctx }

// Revoke ends the lease for cause; later calls keep the first cause.
func (l *Lease) Revoke(cause error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = fmt.Errorf("%w (epoch %d): %v", ErrFenced, l.epoch, cause)
	}
	err := l.err
	l.mu.Unlock()
	l.cancel(err)
}

// Valid is nil while the lease holds, else an error wrapping ErrFenced. It
// makes no I/O.
func (l *Lease) Valid() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Fence is Valid followed by the lease's check: nil means the lease held
// at the moment of the call. A failed check revokes the lease.
func (l *Lease) Fence(ctx context.Context) error {
	if err := l.Valid(); err != nil {
		return err
	}
	if l.check == nil {
		return nil
	}
	if err := l.check(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("check the leader lease: %w", ctx.Err())
		}
		l.Revoke(err)
		return l.Valid()
	}
	return nil
}

type leaseKey struct{}

// WithLease makes every mutating DigitalOcean request made with ctx (or a
// context derived from it) fenced by l.
func WithLease(ctx context.Context, l *Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// LeaseFrom returns ctx's lease, or nil.
func LeaseFrom(ctx context.Context) *Lease {
	l, _ := ctx.Value(leaseKey{}).(*Lease)
	return l
}

// leaseValid is ctx's lease's Valid (nil without a lease): a call that
// would mutate checks it before it makes any request, even a read.
func leaseValid(ctx context.Context) error {
	if l := LeaseFrom(ctx); l != nil {
		return l.Valid()
	}
	return nil
}

// mutating says whether a request changes DigitalOcean (anything but a
// read).
func mutating(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// fence decides whether a request may be sent: reads always; a mutating
// request only under a lease that holds, or with no lease at all when the
// Pool does not require one.
func fence(ctx context.Context, method string, require bool) error {
	if !mutating(method) {
		return nil
	}
	l := LeaseFrom(ctx)
	if l == nil {
		if require {
			return fmt.Errorf("%w: a mutating request carries no lease", ErrFenced)
		}
		return nil
	}
	return l.Fence(ctx)
}
