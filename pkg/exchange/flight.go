package exchange

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// flightGroup runs at most one exchange per key at a time, shared by every
// caller that asks for the key meanwhile (a singleflight), and at most
// cap(slots) exchanges at once across all keys, so a burst of misses for
// distinct resources cannot put an unbounded number of requests in flight
// at Entra.
//
// A flight first waits in a queue for a free slot. Its callers wait for it,
// each bounded by its own context. A flight whose callers have all left
// before it got a slot leaves the queue and never exchanges; while one
// caller still waits, it keeps its place. A flight that got its slot runs
// to the end on its own context, so its token still reaches the cache. The
// whole flight, queue and exchange, is bounded by the exchange timeout.
type flightGroup struct {
	slots   chan struct{}
	timeout time.Duration
	m       *metrics
	// noSlot is told about a flight that timed out in the queue while
	// callers still waited for it, once per flight.
	noSlot func(k cacheKey, err *Error)

	mu      sync.Mutex
	flights map[cacheKey]*flight
}

// flight is one exchange for one key and the callers waiting for it.
type flight struct {
	done chan struct{} // closed when tok and err are set
	tok  Token
	err  *Error

	// waiters and started are guarded by flightGroup.mu.
	waiters int
	started bool
	// cancel ends the flight's context: when its last caller leaves while
	// it is queued, and when it is done.
	cancel context.CancelFunc
}

func newFlightGroup(maxConcurrent int, timeout time.Duration, m *metrics, noSlot func(cacheKey, *Error)) *flightGroup {
	return &flightGroup{
		slots:   make(chan struct{}, maxConcurrent),
		timeout: timeout,
		m:       m,
		noSlot:  noSlot,
		flights: make(map[cacheKey]*flight),
	}
}

// do joins the flight for k, starting one with fn if there is none, and
// waits for its outcome or for ctx to end. A flight started by a detached
// caller runs on a context detached from the caller's (keeping its values);
// one started by a background caller ends with ctx.
func (g *flightGroup) do(ctx context.Context, k cacheKey, detach bool, fn func(context.Context) (Token, *Error)) (Token, *Error) {
	if err := ctx.Err(); err != nil {
		return Token{}, callerGone(err)
	}
	f := g.join(ctx, k, detach, fn)
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		select {
		case <-f.done: // both ready: the outcome wins
			return f.tok, f.err
		default:
		}
		g.leave(k, f)
		return Token{}, callerGone(ctx.Err())
	}
}

func callerGone(err error) *Error {
	return &Error{Reason: ReasonUnavailable, Detail: "the request ended before Entra ID answered", Err: err}
}

func (g *flightGroup) join(ctx context.Context, k cacheKey, detach bool, fn func(context.Context) (Token, *Error)) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.flights[k]; ok {
		f.waiters++
		return f
	}
	base := ctx
	if detach {
		base = context.WithoutCancel(ctx)
	}
	fctx, cancel := context.WithTimeout(base, g.timeout)
	f := &flight{done: make(chan struct{}), waiters: 1, cancel: cancel}
	g.flights[k] = f
	go g.run(fctx, k, f, fn)
	return f
}

// leave drops one caller of f. The last caller of a flight still in the
// queue takes it out: no exchange starts for callers that are gone.
func (g *flightGroup) leave(k cacheKey, f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f.waiters--
	if f.waiters == 0 && !f.started {
		g.removeLocked(k, f)
		f.cancel()
	}
}

func (g *flightGroup) removeLocked(k cacheKey, f *flight) {
	if g.flights[k] == f {
		delete(g.flights, k)
	}
}

// run is the flight's goroutine: queue, exchange, publish.
func (g *flightGroup) run(ctx context.Context, k cacheKey, f *flight, fn func(context.Context) (Token, *Error)) {
	defer f.cancel()
	tok, err := g.exec(ctx, k, f, fn)
	g.mu.Lock()
	g.removeLocked(k, f)
	g.mu.Unlock()
	f.tok, f.err = tok, err
	close(f.done)
}

func (g *flightGroup) exec(ctx context.Context, k cacheKey, f *flight, fn func(context.Context) (Token, *Error)) (Token, *Error) {
	if !g.acquireSlot(ctx) {
		if !g.claim(f, false) {
			return Token{}, callerGone(context.Canceled) // nobody reads it
		}
		err := g.queueError(ctx)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			g.noSlot(k, err)
		}
		return Token{}, err
	}
	defer func() { <-g.slots }()
	if !g.claim(f, true) {
		return Token{}, callerGone(context.Canceled)
	}
	g.m.exchangesRunning.Inc()
	defer g.m.exchangesRunning.Dec()
	return fn(ctx)
}

// claim reports whether anyone still waits for f. With start set it also
// marks f as started, so callers leaving from now on no longer take it out
// of the group.
func (g *flightGroup) claim(f *flight, start bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f.waiters == 0 {
		return false
	}
	f.started = start
	return true
}

// acquireSlot waits for a free slot until ctx ends.
func (g *flightGroup) acquireSlot(ctx context.Context) bool {
	g.m.exchangesQueued.Inc()
	defer g.m.exchangesQueued.Dec()
	select {
	case g.slots <- struct{}{}:
		if ctx.Err() != nil { // the slot came as the wait ended
			<-g.slots
			return false
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// queueError explains a flight that never got a slot.
func (g *flightGroup) queueError(ctx context.Context) *Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Reason: ReasonUnavailable,
			Detail: fmt.Sprintf("no token exchange could start within %s: %d exchanges with Entra ID were already running", g.timeout, cap(g.slots)),
			Err:    ctx.Err()}
	}
	return &Error{Reason: ReasonUnavailable, Detail: "the token exchange was cancelled", Err: ctx.Err()}
}
