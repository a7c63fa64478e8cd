package exchange

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// throttleOnce makes the harness's Entra answer the next exchange with 429
// and Retry-After 300, and every later one with a token.
func (h *harness) throttleOnce() {
	var once sync.Once
	h.acq.respond = func(n int, c call) (acquired, error) {
		throttle := false
		once.Do(func() { throttle = true })
		if throttle {
			return acquired{}, upstream(429, aadstsBody("temporarily_unavailable", 90055, "slow down"), "Retry-After", "300")
		}
		return h.acq.issue(n, c.clientID, c.scope, nil), nil
	}
}

// TestThrottleHonouredWithoutCache: after a 429 with Retry-After 300 the
// proxy does not ask Entra again for that key before 300 s have passed,
// however often it is asked; callers get the wait left.
func TestThrottleHonouredWithoutCache(t *testing.T) {
	h := newHarness(t, nil)
	h.throttleOnce()
	_, err := h.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonThrottled || xe.RetryAfter != 300*time.Second {
		t.Fatalf("first answer: %v, want throttled for 300s", err)
	}
	for _, step := range []struct {
		advance time.Duration
		left    time.Duration
	}{
		{25 * time.Second, 275 * time.Second},
		{5 * time.Second, 270 * time.Second},
		{269 * time.Second, time.Second},
	} {
		h.clock.Advance(step.advance)
		for range 3 {
			_, err := h.token(defaultReq(vault))
			if !errors.As(err, &xe) || xe.Reason != ReasonThrottled || xe.RetryAfter != step.left {
				t.Fatalf("at +%v: %v (retry after %v), want throttled with %v left", h.clock.Now().Sub(t0), err, xe.RetryAfter, step.left)
			}
		}
		if got := h.acq.count(); got != 1 {
			t.Fatalf("at +%v: exchanges = %d, want 1", h.clock.Now().Sub(t0), got)
		}
	}
	h.clock.Advance(time.Second) // +300 s
	for range 3 {
		h.mustToken(defaultReq(vault))
	}
	if got := h.acq.count(); got != 2 {
		t.Errorf("at +300s: exchanges = %d, want exactly 2", got)
	}
}

// TestThrottleHonouredWithCache: while the throttle lasts, a cached token
// below the floor but inside the stale grace is served, without asking
// Entra; at Retry-After, one exchange renews it.
func TestThrottleHonouredWithCache(t *testing.T) {
	// Floor 20 min of a 1 h token: below it at 40 min, while 15 min are
	// still left when the throttle ends.
	h := newHarness(t, func(c *Config) { c.MinRemaining = 20 * time.Minute })
	first := h.mustToken(defaultReq(vault))
	h.clock.Advance(40*time.Minute + time.Second)
	h.throttleOnce()
	if tok := h.mustToken(defaultReq(vault)); tok.AccessToken != first.AccessToken {
		t.Fatal("throttled: the cached token was not served")
	}
	throttledAt := h.clock.Now()
	for _, at := range []time.Duration{25 * time.Second, 299 * time.Second} {
		h.clock.Advance(throttledAt.Add(at).Sub(h.clock.Now()))
		if tok := h.mustToken(defaultReq(vault)); tok.AccessToken != first.AccessToken {
			t.Fatalf("at +%v: the cached token was not served", at)
		}
		if got := h.acq.count(); got != 2 {
			t.Fatalf("at +%v: exchanges = %d, want 2", at, got)
		}
	}
	h.clock.Advance(time.Second) // +300 s
	if tok := h.mustToken(defaultReq(vault)); tok.AccessToken == first.AccessToken {
		t.Error("at +300s: still the old token")
	}
	if got := h.acq.count(); got != 3 {
		t.Errorf("at +300s: exchanges = %d, want exactly 3", got)
	}
	if got := h.counter(h.src.m.cacheRequests, resultStale); got != 3 {
		t.Errorf("stale answers = %v, want 3", got)
	}
}

// TestThrottleHonouredByRefresh: a background refresh answered with 429
// and Retry-After 300 is not retried before 300 s, although the usual retry
// after a failed refresh comes after 30 s.
func TestThrottleHonouredByRefresh(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	first := h.mustToken(defaultReq(vault))
	h.clock.Advance(30 * time.Minute)
	h.throttleOnce()
	h.src.round(ctx)
	if got := h.acq.count(); got != 2 {
		t.Fatalf("refresh: exchanges = %d, want 2", got)
	}
	if got := h.counter(h.src.m.refreshes, "failure"); got != 1 {
		t.Fatalf("refresh failures = %v, want 1", got)
	}
	throttledAt := h.clock.Now()
	for _, at := range []time.Duration{25 * time.Second, refreshRetryInterval, 299 * time.Second} {
		h.clock.Advance(throttledAt.Add(at).Sub(h.clock.Now()))
		h.src.round(ctx)
		if tok := h.mustToken(defaultReq(vault)); tok.AccessToken != first.AccessToken {
			t.Fatalf("at +%v: the cached token was not served", at)
		}
		if got := h.acq.count(); got != 2 {
			t.Fatalf("at +%v: exchanges = %d, want 2", at, got)
		}
	}
	h.clock.Advance(time.Second) // +300 s
	h.src.round(ctx)
	if got := h.acq.count(); got != 3 {
		t.Errorf("at +300s: exchanges = %d, want exactly 3", got)
	}
	if got := h.counter(h.src.m.refreshes, "success"); got != 1 {
		t.Errorf("refresh successes = %v, want 1", got)
	}
	if tok := h.mustToken(defaultReq(vault)); tok.AccessToken == first.AccessToken {
		t.Error("after the refresh: still the old token")
	}
}
