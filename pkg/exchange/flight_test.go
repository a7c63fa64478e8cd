package exchange

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// queued and running read the exchange slot gauges.
func (h *harness) queued() int  { return int(testutil.ToFloat64(h.src.m.exchangesQueued)) }
func (h *harness) running() int { return int(testutil.ToFloat64(h.src.m.exchangesRunning)) }

// waiters returns how many callers wait for the flight of k, -1 for no
// flight.
func (h *harness) waiters(k cacheKey) int {
	g := h.src.ex.flights
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.flights[k]; ok {
		return f.waiters
	}
	return -1
}

func keyFor(resource string) cacheKey {
	return cacheKey{tenant: "tenant-1", clientID: clientA, scope: scopeFor(resource)}
}

// TestExchangeConcurrencyCap: 64 concurrent misses for distinct resources
// put at most MaxConcurrentExchanges (8) exchanges in flight; the others
// queue, and all 64 are answered once Entra answers.
func TestExchangeConcurrencyCap(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.block = make(chan struct{})
	const n = 64
	var wg sync.WaitGroup
	toks := make([]Token, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = h.src.Token(context.Background(), defaultReq(fmt.Sprintf("https://r%d", i)))
		}()
	}
	waitFor(t, "8 exchanges in flight and 56 queued", func() bool { return h.acq.count() == 8 && h.queued() == n-8 })
	if now, most := h.acq.inFlight(); now != 8 || most != 8 {
		t.Fatalf("in flight = %d (most %d), want 8", now, most)
	}
	if got := h.running(); got != 8 {
		t.Errorf("in-flight gauge = %d, want 8", got)
	}
	close(h.acq.block)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		c, err := decodeClaims(toks[i].AccessToken)
		if want := fmt.Sprintf("https://r%d/.default", i); err != nil || len(c.Audience) != 1 || c.Audience[0] != want {
			t.Errorf("request %d got a token for %v, want %s", i, c.Audience, want)
		}
	}
	if got := h.acq.count(); got != n {
		t.Errorf("exchanges = %d, want %d", got, n)
	}
	if _, most := h.acq.inFlight(); most != 8 {
		t.Errorf("most exchanges in flight = %d, want 8", most)
	}
	if q, r := h.queued(), h.running(); q != 0 || r != 0 {
		t.Errorf("gauges after the burst: queued %d, in flight %d; want 0, 0", q, r)
	}
}

// TestQueuedCallerLeaves: a caller whose context ends while its exchange is
// queued gets its error at once, and its exchange never starts.
func TestQueuedCallerLeaves(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConcurrentExchanges = 1 })
	h.acq.block = make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := h.src.Token(context.Background(), defaultReq("https://r0"))
		first <- err
	}()
	waitFor(t, "the first exchange in flight", func() bool { return h.acq.count() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		_, err := h.src.Token(ctx, defaultReq("https://r1"))
		queued <- err
	}()
	waitFor(t, "the second exchange queued", func() bool { return h.queued() == 1 })
	cancel()
	select {
	case err := <-queued:
		var xe *Error
		if !errors.As(err, &xe) || xe.Reason != ReasonUnavailable || !errors.Is(err, context.Canceled) ||
			xe.Detail != "the request ended before Entra ID answered" {
			t.Errorf("queued caller: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued caller did not return when its context ended")
	}
	waitFor(t, "the abandoned flight to leave the queue", func() bool { return h.queued() == 0 && h.waiters(keyFor("https://r1")) == -1 })

	// A caller already gone never starts an exchange either.
	if _, err := h.src.Token(ctx, defaultReq("https://r2")); !errors.Is(err, context.Canceled) {
		t.Errorf("gone caller: %v", err)
	}

	close(h.acq.block)
	if err := <-first; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	// The slot is free again: the next miss goes through at once.
	h.mustToken(defaultReq("https://r3"))
	if got := h.acq.count(); got != 2 {
		t.Errorf("exchanges = %d, want 2 (r0, r3)", got)
	}
	for _, r := range []string{"https://r1", "https://r2"} {
		if got := h.acq.callsFor(clientA, scopeFor(r)); got != 0 {
			t.Errorf("exchanges for %s = %d, want 0", r, got)
		}
	}
}

// TestQueuedFlightKeptWhileOneWaits: two callers share a queued flight;
// when one leaves, the flight keeps its place and the other gets the token
// from one exchange.
func TestQueuedFlightKeptWhileOneWaits(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConcurrentExchanges = 1 })
	h.acq.block = make(chan struct{})
	go func() { _, _ = h.src.Token(context.Background(), defaultReq("https://r0")) }()
	waitFor(t, "the first exchange in flight", func() bool { return h.acq.count() == 1 })

	k := keyFor("https://r1")
	leaving, leave := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := h.src.Token(leaving, defaultReq("https://r1"))
		left <- err
	}()
	type result struct {
		tok Token
		err error
	}
	stayed := make(chan result, 1)
	go func() {
		tok, err := h.src.Token(context.Background(), defaultReq("https://r1"))
		stayed <- result{tok, err}
	}()
	waitFor(t, "two callers on the queued flight", func() bool { return h.waiters(k) == 2 })
	leave()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Errorf("leaving caller: %v", err)
	}
	if got := h.waiters(k); got != 1 {
		t.Fatalf("waiters after one left = %d, want 1 (the flight keeps its place)", got)
	}
	if got := h.queued(); got != 1 {
		t.Fatalf("queued = %d, want 1", got)
	}
	close(h.acq.block)
	r := <-stayed
	if r.err != nil || r.tok.AccessToken == "" {
		t.Fatalf("remaining caller: %v", r.err)
	}
	if got := h.acq.callsFor(clientA, k.scope); got != 1 {
		t.Errorf("exchanges for r1 = %d, want 1", got)
	}
}

// TestQueueBoundedByExchangeTimeout: a flight that finds no free slot
// within ExchangeTimeout fails with ReasonUnavailable without exchanging,
// and the failure is logged.
func TestQueueBoundedByExchangeTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConcurrentExchanges = 1; c.ExchangeTimeout = 200 * time.Millisecond })
	h.acq.hold = make(chan struct{}) // the first exchange holds its slot past any deadline
	go func() { _, _ = h.src.Token(context.Background(), defaultReq("https://r0")) }()
	waitFor(t, "the first exchange in flight", func() bool { return h.acq.count() == 1 })

	_, err := h.src.Token(context.Background(), defaultReq("https://r1"))
	var xe *Error
	want := "no token exchange could start within 200ms: 1 exchanges with Entra ID were already running"
	if !errors.As(err, &xe) || xe.Reason != ReasonUnavailable || xe.Detail != want || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ReasonUnavailable %q", err, want)
	}
	close(h.acq.hold)
	if got := h.acq.callsFor(clientA, scopeFor("https://r1")); got != 0 {
		t.Errorf("exchanges for r1 = %d, want 0", got)
	}
	if !strings.Contains(h.logs.String(), "no token exchange could start within 200ms") {
		t.Errorf("the queue timeout was not logged:\n%s", h.logs)
	}
}

// TestRefreshTakesSlots: a background refresh takes its slot from the same
// cap as foreground misses.
func TestRefreshTakesSlots(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConcurrentExchanges = 1 })
	h.mustToken(defaultReq(vault))
	h.clock.Advance(31 * time.Minute)
	h.acq.block = make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.src.round(context.Background())
	}()
	waitFor(t, "the refresh in flight", func() bool { return h.acq.count() == 2 })
	miss := make(chan error, 1)
	go func() {
		_, err := h.src.Token(context.Background(), defaultReq("https://other"))
		miss <- err
	}()
	waitFor(t, "the miss queued behind the refresh", func() bool { return h.queued() == 1 })
	if now, _ := h.acq.inFlight(); now != 1 {
		t.Fatalf("in flight = %d, want 1", now)
	}
	close(h.acq.block)
	<-done
	if err := <-miss; err != nil {
		t.Fatal(err)
	}
	if _, most := h.acq.inFlight(); most != 1 {
		t.Errorf("most in flight = %d, want 1", most)
	}
}

func TestRefreshWorkers(t *testing.T) {
	for cap, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 8: 4, 64: 4} {
		if got := refreshWorkers(cap); got != want {
			t.Errorf("refreshWorkers(%d) = %d, want %d", cap, got, want)
		}
	}
}
