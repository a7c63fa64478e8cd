package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLogsNeverContainSecrets drives every logging path (success,
// refresh, stale, permanent and transient failures, an upstream body that
// echoes the assertion and a token, token rotation, resolution) through a
// JSON slog handler at the most verbose level, and checks that no access
// token, assertion or signature appears.
func TestLogsNeverContainSecrets(t *testing.T) {
	h := newHarness(t, nil)
	var buf logBuffer
	h.setLogger(logr.FromSlogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.Level(-10)})).WithName("exchange"))

	assertion, err := h.src.tf.read()
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{assertion}
	var mu sync.Mutex
	issued := func(a acquired) acquired {
		mu.Lock()
		defer mu.Unlock()
		secrets = append(secrets, a.AccessToken)
		return a
	}
	step := 0
	h.acq.respond = func(n int, c call) (acquired, error) {
		switch step {
		case 1: // Entra echoes the assertion and a token in its error text.
			return acquired{}, upstream(400, fmt.Sprintf(`{"error":"invalid_request","error_description":"AADSTS70021: presented %s and %s","error_codes":[70021]}`, assertion, secrets[1]))
		case 2:
			return acquired{}, &upstreamError{Status: 503, Body: []byte("upstream " + assertion), Err: fmt.Errorf("http call error: %s", assertion)}
		case 3:
			return acquired{}, fmt.Errorf("dial tcp: lookup failed while sending client_assertion=%s", assertion)
		}
		return issued(h.acq.issue(n, c.clientID, c.scope, map[string]any{"oid": "o-" + c.clientID})), nil
	}
	ctx := context.Background()
	h.mustToken(defaultReq(vault))
	h.mustToken(defaultReq(vault))
	h.clock.Advance(31 * time.Minute)
	h.src.round(ctx)
	h.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: "o-" + clientA}, Resource: vault})
	step = 1
	_, _ = h.token(Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault})
	step = 2
	h.clock.Advance(25 * time.Minute) // below the floor: stale path
	_, _ = h.token(defaultReq(vault))
	step = 3
	_, _ = h.token(defaultReq("https://other"))
	h.src.round(ctx)
	writeSAToken(t, h.file, "system:serviceaccount:default:rotated", t0.Add(3*time.Hour))
	_, _ = h.token(Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault})

	logs := buf.String()
	if !strings.Contains(logs, "AADSTS70021") || !strings.Contains(logs, "exchanged token") || !strings.Contains(logs, "[REDACTED]") {
		t.Fatalf("expected log lines missing:\n%s", logs)
	}
	for i, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("line %d is not JSON: %s", i, line)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range secrets {
		parts := strings.Split(s, ".")
		for _, needle := range []string{s, parts[1]} {
			if strings.Contains(logs, needle) {
				t.Fatalf("a secret appeared in the log:\n%s", logs)
			}
		}
	}
	if strings.Contains(strings.ToLower(logs), "authorization") {
		t.Error("an Authorization header value reached the log")
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, nil)
	// Nothing cached: the soonest-expiry gauge is absent, the rest zero.
	if n, err := testutil.GatherAndCount(h.reg, "imds_proxy_token_soonest_expiry_seconds"); err != nil || n != 0 {
		t.Fatalf("soonest expiry series = %d, %v; want 0", n, err)
	}
	h.mustToken(defaultReq(vault))
	h.acq.lifetime = 2 * time.Hour
	h.mustToken(defaultReq("https://storage.azure.com"))
	h.mustToken(defaultReq(vault))
	h.clock.Advance(15 * time.Minute)
	want := `
# HELP imds_proxy_token_cache_entries Tokens currently cached.
# TYPE imds_proxy_token_cache_entries gauge
imds_proxy_token_cache_entries 2
# HELP imds_proxy_token_soonest_expiry_seconds Seconds until the soonest-expiring cached token expires (absent while the cache is empty).
# TYPE imds_proxy_token_soonest_expiry_seconds gauge
imds_proxy_token_soonest_expiry_seconds 2700
# HELP imds_proxy_token_cache_requests_total Token requests by how the cache answered them: hit, miss, forced, stale, negative.
# TYPE imds_proxy_token_cache_requests_total counter
imds_proxy_token_cache_requests_total{result="forced"} 0
imds_proxy_token_cache_requests_total{result="hit"} 1
imds_proxy_token_cache_requests_total{result="miss"} 2
imds_proxy_token_cache_requests_total{result="negative"} 0
imds_proxy_token_cache_requests_total{result="stale"} 0
# HELP imds_proxy_exchanges_total Entra token exchanges by outcome: success or the failure reason.
# TYPE imds_proxy_exchanges_total counter
imds_proxy_exchanges_total{outcome="assertion_rejected"} 0
imds_proxy_exchanges_total{outcome="identity_not_found"} 0
imds_proxy_exchanges_total{outcome="invalid_resource"} 0
imds_proxy_exchanges_total{outcome="success"} 2
imds_proxy_exchanges_total{outcome="throttled"} 0
imds_proxy_exchanges_total{outcome="token_file"} 0
imds_proxy_exchanges_total{outcome="unavailable"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"imds_proxy_token_cache_entries", "imds_proxy_token_soonest_expiry_seconds",
		"imds_proxy_token_cache_requests_total", "imds_proxy_exchanges_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(h.reg, "imds_proxy_exchange_duration_seconds"); err != nil || n != 1 {
		t.Errorf("latency histogram series = %d, %v", n, err)
	}
	// Every series name carries the prefix and no label names an identity
	// or resource.
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"result": true, "cause": true, "outcome": true}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "imds_proxy_") {
			t.Errorf("metric %s lacks the imds_proxy_ prefix", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("metric %s has label %s", mf.GetName(), l.GetName())
				}
			}
		}
	}
	if problems, err := testutil.GatherAndLint(h.reg); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestNewRequiresRegistererAndRejectsDoubleRegistration(t *testing.T) {
	cfg := Config{TenantID: "t", TokenFile: "/f"}
	if _, err := New(cfg, Deps{}); err == nil {
		t.Error("New without a Registerer succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(cfg, Deps{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, Deps{Registerer: reg}); err == nil {
		t.Error("second New on the same registry succeeded")
	}
	if _, err := New(Config{TenantID: "t", TokenFile: "/f", AuthorityHost: "http://insecure/"}, Deps{Registerer: prometheus.NewRegistry()}); err == nil {
		t.Error("http authority accepted")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.src.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// BenchmarkTokenWarm measures the cache-hit path.
func BenchmarkTokenWarm(b *testing.B) {
	h := newHarness(b, nil)
	ctx := context.Background()
	req := defaultReq(vault)
	if _, err := h.src.Token(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.src.Token(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	if h.acq.count() != 1 {
		b.Fatalf("exchanges = %d, want 1", h.acq.count())
	}
}

// BenchmarkTokenWarmParallel measures the hit path under contention.
func BenchmarkTokenWarmParallel(b *testing.B) {
	h := newHarness(b, nil)
	ctx := context.Background()
	req := defaultReq(vault)
	if _, err := h.src.Token(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.src.Token(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestErrorsNeverContainSecrets: the error handed to pkg/imds (which logs
// err.Error()) carries no token either, even when MSAL's own error text
// holds a whole reply body.
func TestErrorsNeverContainSecrets(t *testing.T) {
	h := newHarness(t, nil)
	jwt := unsignedJWT(map[string]any{"sub": "leak"})
	failures := []error{
		fmt.Errorf(`json decode error: expires_in is ""` + "\n" + `json message bytes were: {"access_token":"opaque-SECRET","expires_in":""}`),
		&upstreamError{Status: 400, Body: []byte(`{"error":"invalid_request","error_codes":[70021],"x":"` + jwt + `"}`), Err: errors.New("reply was: " + jwt)},
		&upstreamError{Status: 502, Body: []byte("<html>" + jwt), Err: errors.New("client_assertion=" + jwt)},
		fmt.Errorf("post failed with client_assertion=opaque-SECRET: %w", context.DeadlineExceeded),
	}
	for i, f := range failures {
		h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, f }
		_, err := h.token(defaultReq(fmt.Sprintf("https://r%d", i)))
		if err == nil {
			t.Fatalf("case %d: no error", i)
		}
		text := err.Error() + fmt.Sprintf(" %+v %v", err, errors.Unwrap(err))
		if strings.Contains(text, "opaque-SECRET") || strings.Contains(text, jwt) || strings.Contains(text, strings.Split(jwt, ".")[1]) {
			t.Errorf("case %d: error text carries a secret: %s", i, text)
		}
	}
	if !errors.Is(func() error {
		h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, failures[3] }
		_, err := h.token(defaultReq("https://deadline"))
		return err
	}(), context.DeadlineExceeded) {
		t.Error("errors.Is(DeadlineExceeded) lost by redaction")
	}
	logs := h.logs.String()
	if strings.Contains(logs, "opaque-SECRET") || strings.Contains(logs, strings.Split(jwt, ".")[1]) {
		t.Errorf("log carries a secret:\n%s", logs)
	}
}

// TestRunReturnsDuringRefresh: cancelling Run's context aborts an
// in-flight refresh instead of waiting for ExchangeTimeout.
func TestRunReturnsDuringRefresh(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ExchangeTimeout = time.Hour })
	h.mustToken(defaultReq(vault))
	h.acq.block = make(chan struct{}) // the refresh never gets an answer
	h.clock.Advance(31 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.src.Run(ctx) }()
	for h.acq.count() < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	// The old token is still there.
	if h.src.cacheLen() != 1 {
		t.Error("cache lost its entry")
	}
}
