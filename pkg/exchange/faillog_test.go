package exchange

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// failureLine is what the tests read of a "token exchange failed" line.
type failureLine struct {
	ClientID   string `json:"clientID"`
	Scope      string `json:"scope"`
	Reason     string `json:"reason"`
	Code       string `json:"code"`
	Suppressed int    `json:"suppressed"`
}

// captureFailures sends the harness's log to a JSON buffer and returns a
// function that reads the failure lines logged so far.
func (h *harness) captureFailures() func() []failureLine {
	buf := &logBuffer{}
	h.setLogger(logr.FromSlogHandler(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.Level(-10)})))
	return func() []failureLine {
		var out []failureLine
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var l struct {
				Msg string `json:"msg"`
				failureLine
			}
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				h.t.Fatalf("log line is not JSON: %s", line)
			}
			if l.Msg == "token exchange failed" {
				out = append(out, l.failureLine)
			}
		}
		return out
	}
}

// TestRepeatedFailuresLoggedOncePerInterval: with Entra down and nothing
// cached, 100 failing requests in one interval log one line; the first
// failure of the next interval logs the count of those folded in.
func TestRepeatedFailuresLoggedOncePerInterval(t *testing.T) {
	h := newHarness(t, nil)
	lines := h.captureFailures()
	h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, upstream(503, "down") }
	for range 100 {
		if _, err := h.token(defaultReq(vault)); ReasonOf(err) != ReasonUnavailable {
			t.Fatalf("err = %v", err)
		}
		h.clock.Advance(failureLogInterval / 200)
	}
	if got := h.acq.count(); got != 100 {
		t.Fatalf("exchanges = %d, want 100 (transient failures are not remembered)", got)
	}
	want := failureLine{ClientID: clientA, Scope: vaultSc, Reason: "unavailable", Suppressed: 0}
	if got := lines(); len(got) != 1 || got[0] != want {
		t.Fatalf("lines after 100 failures = %+v, want exactly [%+v]", got, want)
	}

	h.clock.Advance(failureLogInterval / 2) // the interval is over
	_, _ = h.token(defaultReq(vault))
	_, _ = h.token(defaultReq(vault))
	want.Suppressed = 99
	got := lines()
	if len(got) != 2 || got[1] != want {
		t.Fatalf("lines in the next interval = %+v, want a second line %+v", got, want)
	}
}

// TestFailureLogKeysAndKinds: folding is per identity and scope, and a
// different failure of the same key is logged at once.
func TestFailureLogKeysAndKinds(t *testing.T) {
	h := newHarness(t, nil)
	lines := h.captureFailures()
	fail := upstream(503, "down")
	h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, fail }
	_, _ = h.token(defaultReq(vault))
	_, _ = h.token(defaultReq(vault))
	_, _ = h.token(defaultReq("https://storage.azure.com")) // another scope
	_, _ = h.token(Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault})
	fail = upstream(429, aadstsBody("temporarily_unavailable", 90055, "slow down"), "Retry-After", "1")
	_, _ = h.token(defaultReq(vault)) // another kind of failure: logged
	want := []failureLine{
		{ClientID: clientA, Scope: vaultSc, Reason: "unavailable"},
		{ClientID: clientA, Scope: "https://storage.azure.com/.default", Reason: "unavailable"},
		{ClientID: clientB, Scope: vaultSc, Reason: "unavailable"},
		{ClientID: clientA, Scope: vaultSc, Reason: "throttled", Code: "AADSTS90055", Suppressed: 1},
	}
	got := lines()
	if len(got) != len(want) {
		t.Fatalf("lines = %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestFailureLogBounded: the keys remembered for folding are capped.
func TestFailureLogBounded(t *testing.T) {
	l := newFailureLog(logr.Discard(), time.Minute, 3)
	xerr := &Error{Reason: ReasonUnavailable}
	for i := range 10 {
		l.failed(cacheKey{clientID: "c", scope: string(rune('a' + i))}, xerr, t0)
		if n := len(l.keys); n > 3 {
			t.Fatalf("after %d keys: %d remembered, want <= 3", i+1, n)
		}
	}
	// Keys whose interval is over go first.
	l = newFailureLog(logr.Discard(), time.Minute, 2)
	l.failed(cacheKey{scope: "old"}, xerr, t0)
	l.failed(cacheKey{scope: "recent"}, xerr, t0.Add(50*time.Second))
	l.failed(cacheKey{scope: "new"}, xerr, t0.Add(time.Minute))
	if _, ok := l.keys[cacheKey{scope: "recent"}]; !ok || len(l.keys) != 2 {
		t.Errorf("keys = %v, want recent and new", l.keys)
	}
}
