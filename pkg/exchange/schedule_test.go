package exchange

import (
	"context"
	"testing"
	"time"
)

// settle waits until Run has taken the cache's change signal and stopped
// reading the clock, and returns the clock's readings then.
func (h *harness) settle() int {
	h.t.Helper()
	settled := -1
	waitFor(h.t, "Run to settle", func() bool {
		time.Sleep(200 * time.Millisecond)
		now := h.clock.Reads()
		defer func() { settled = now }()
		return len(h.src.cache.changed) == 0 && now == settled
	})
	return settled
}

// TestRoundSchedulesNextEvent: round returns when the next refresh,
// eviction or retry is due, which is what Run sleeps until.
func TestRoundSchedulesNextEvent(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	if next := h.src.round(ctx); !next.IsZero() {
		t.Fatalf("empty cache: next = %v, want none", next)
	}

	// A trial token is not handed out: its next event is its idle eviction
	// (a whole lifetime without use), here equal to its expiry.
	h.acq.respond = func(n int, c call) (acquired, error) {
		return h.acq.issue(n, c.clientID, c.scope, map[string]any{"oid": "oid-" + c.clientID}), nil
	}
	if _, err := h.src.token(ctx, clientB, vaultSc, Request{Resource: vault}, true); err != nil {
		t.Fatal(err)
	}
	if next := h.src.round(ctx); !next.Equal(t0.Add(time.Hour)) {
		t.Errorf("unserved token: next = %v, want expiry %v", next, t0.Add(time.Hour))
	}

	// A token handed out is due for a refresh at half-life.
	h.clock.Advance(time.Minute)
	h.mustToken(defaultReq(vault)) // fetched at t0+1m, 1 h
	if next := h.src.round(ctx); !next.Equal(t0.Add(31 * time.Minute)) {
		t.Errorf("served token: next = %v, want its half-life %v", next, t0.Add(31*time.Minute))
	}

	// The refresh fails: next is the retry, 30 s on.
	h.clock.Advance(30 * time.Minute) // t0+31m
	h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, upstream(503, "") }
	h.src.round(ctx)
	if next := h.src.round(ctx); !next.Equal(t0.Add(31*time.Minute + refreshRetryInterval)) {
		t.Errorf("after a failed refresh: next = %v, want %v", next, t0.Add(31*time.Minute+refreshRetryInterval))
	}

	// Entra throttles the retry for 10 min: next is the end of the throttle.
	h.clock.Advance(refreshRetryInterval)
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{}, upstream(429, "", "Retry-After", "600")
	}
	h.src.round(ctx)
	throttledUntil := h.clock.Now().Add(10 * time.Minute)
	h.clock.Advance(refreshRetryInterval)
	if next := h.src.round(ctx); !next.Equal(throttledUntil) {
		t.Errorf("throttled refresh: next = %v, want %v", next, throttledUntil)
	}
	if got := h.acq.count(); got != 4 {
		t.Errorf("exchanges = %d, want 4 (trial, fetch, failed refresh, throttled refresh)", got)
	}

	// The refresh goes through when the throttle ends. The renewed token
	// has not been handed out since, so the next event is the trial
	// entry's idle eviction at t0+1h (before the renewed one's, t0+1h1m).
	h.clock.Advance(throttledUntil.Sub(h.clock.Now()))
	h.acq.respond = nil
	h.src.round(ctx) // the refresh succeeds
	if next := h.src.round(ctx); !next.Equal(t0.Add(time.Hour)) {
		t.Errorf("after the refresh: next = %v, want the trial entry's eviction %v", next, t0.Add(time.Hour))
	}
}

// TestRunSleepsUntilDue: with one token cached and nothing due for half an
// hour, Run does not wake: the clock is not read at all.
func TestRunSleepsUntilDue(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.src.Run(ctx) }()
	h.mustToken(defaultReq(vault))
	// Run wakes once for the new token and goes back to sleep.
	settled := h.settle()
	time.Sleep(2 * minRoundInterval)
	if got := h.clock.Reads(); got != settled {
		t.Errorf("Run read the clock %d times while nothing was due", got-settled)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestRunWakesWhenDue: Run arms its timer for the refresh of a token
// handed out, and refreshes it when that time comes.
func TestRunWakesWhenDue(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.lifetime = 2 * time.Second // half-life in 1 s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.src.Run(ctx) }()
	first := h.mustToken(defaultReq(vault))
	// Run wakes for the new token, arms its timer for the half-life (one
	// second on) and sleeps.
	h.settle()
	if got := h.acq.count(); got != 1 {
		t.Fatalf("exchanges before the half-life = %d, want 1", got)
	}
	h.clock.Advance(time.Second)
	// The refresh counts its success after it stored the new token; the
	// acquirer's count moves earlier, before the token is stored.
	waitFor(t, "the refresh", func() bool { return h.counter(h.src.m.refreshes, "success") == 1 })
	if got := h.acq.count(); got != 2 {
		t.Errorf("exchanges after the half-life = %d, want 2", got)
	}
	if tok := h.mustToken(defaultReq(vault)); tok.AccessToken == first.AccessToken {
		t.Error("the refresh did not replace the token")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
