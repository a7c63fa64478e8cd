package exchange

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestScopeFor(t *testing.T) {
	cases := map[string]string{
		"https://management.azure.com/":           "https://management.azure.com//.default",
		"https://management.azure.com":            "https://management.azure.com/.default",
		"https://database.windows.net/":           "https://database.windows.net//.default",
		"https://vault.azure.net/.default":        "https://vault.azure.net/.default",
		"api://my-app":                            "api://my-app/.default",
		"":                                        "/.default",
		"https://x/.default/":                     "https://x/.default//.default",
		"00000003-0000-0000-c000-000000000000":    "00000003-0000-0000-c000-000000000000/.default",
		"https://storage.azure.com/.DEFAULT":      "https://storage.azure.com/.DEFAULT/.default",
		"https://graph.microsoft.com//.default":   "https://graph.microsoft.com//.default",
		"https://example.com/path with space/ä?q": "https://example.com/path with space/ä?q/.default",
	}
	for in, want := range cases {
		if got := scopeFor(in); got != want {
			t.Errorf("scopeFor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestColdThenWarm(t *testing.T) {
	h := newHarness(t, nil)
	first := h.mustToken(defaultReq(vault))
	if first.ClientID != clientA {
		t.Errorf("ClientID = %q, want %q", first.ClientID, clientA)
	}
	if want := t0.Add(time.Hour); !first.ExpiresOn.Equal(want) {
		t.Errorf("ExpiresOn = %v, want %v", first.ExpiresOn, want)
	}
	if want := t0.Add(-5 * time.Minute); !first.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %v, want %v (from nbf)", first.NotBefore, want)
	}
	if first.ExtExpiresIn != 0 {
		t.Errorf("ExtExpiresIn = %v, want 0", first.ExtExpiresIn)
	}
	h.clock.Advance(20 * time.Minute)
	for range 5 {
		tok := h.mustToken(defaultReq(vault))
		if tok.AccessToken != first.AccessToken {
			t.Fatal("warm request got a different token")
		}
	}
	if got := h.acq.callsFor(clientA, vaultSc); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
	if got := h.counter(h.src.m.cacheRequests, resultHit); got != 5 {
		t.Errorf("hits = %v, want 5", got)
	}
	if got := h.counter(h.src.m.cacheRequests, resultMiss); got != 1 {
		t.Errorf("misses = %v, want 1", got)
	}
	if got := h.counter(h.src.m.exchanges, "success"); got != 1 {
		t.Errorf("exchanges success = %v, want 1", got)
	}
	d, ok := h.src.SoonestExpiry()
	if !ok || d != 40*time.Minute {
		t.Errorf("SoonestExpiry = %v, %v; want 40m, true", d, ok)
	}
}

func TestExpiryFallsBackToMSAL(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{AccessToken: "opaque-token", ExpiresOn: t0.Add(90 * time.Minute)}, nil
	}
	tok := h.mustToken(defaultReq(vault))
	if !tok.ExpiresOn.Equal(t0.Add(90 * time.Minute)) {
		t.Errorf("ExpiresOn = %v, want MSAL's %v", tok.ExpiresOn, t0.Add(90*time.Minute))
	}
	if !tok.NotBefore.Equal(t0) {
		t.Errorf("NotBefore = %v, want fetch time %v", tok.NotBefore, t0)
	}
}

func TestDefaultIdentityMissing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DefaultClientID = "" })
	_, err := h.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonIdentityNotFound {
		t.Fatalf("err = %v, want ReasonIdentityNotFound", err)
	}
	if !strings.Contains(xe.Detail, "no default identity is configured") {
		t.Errorf("Detail = %q", xe.Detail)
	}
	if h.acq.count() != 0 {
		t.Errorf("exchanges = %d, want 0", h.acq.count())
	}
	// client_id still works.
	if tok := h.mustToken(Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault}); tok.ClientID != clientB {
		t.Errorf("ClientID = %q", tok.ClientID)
	}
}

func TestClientIDIsCaseInsensitive(t *testing.T) {
	h := newHarness(t, nil)
	h.mustToken(Request{Identity: Selector{Kind: SelectClientID, Value: strings.ToUpper(clientB)}, Resource: vault})
	h.mustToken(Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault})
	if got := h.acq.callsFor(clientB, vaultSc); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
}

// TestFloor: with a 1 h token the floor is min(10 min, 30 min) = 10 min;
// with a 10 min token it is min(10 min, 5 min) = 5 min.
func TestFloor(t *testing.T) {
	cases := []struct {
		lifetime, advance time.Duration
		wantCalls         int
	}{
		{time.Hour, 50 * time.Minute, 1},             // exactly 10 min left: served
		{time.Hour, 50*time.Minute + time.Second, 2}, // below the floor: refetched
		{10 * time.Minute, 5 * time.Minute, 1},       // exactly lifetime/2 left
		{10 * time.Minute, 5*time.Minute + time.Second, 2},
		{24 * time.Hour, 23*time.Hour + 50*time.Minute, 1},
		{24 * time.Hour, 23*time.Hour + 51*time.Minute, 2},
	}
	for _, tc := range cases {
		h := newHarness(t, nil)
		h.acq.lifetime = tc.lifetime
		h.mustToken(defaultReq(vault))
		h.clock.Advance(tc.advance)
		tok := h.mustToken(defaultReq(vault))
		if got := h.acq.count(); got != tc.wantCalls {
			t.Errorf("lifetime %v, after %v: exchanges = %d, want %d", tc.lifetime, tc.advance, got, tc.wantCalls)
		}
		if tc.wantCalls == 2 && !tok.ExpiresOn.Equal(h.clock.Now().Add(tc.lifetime)) {
			t.Errorf("lifetime %v: refetched token expires %v", tc.lifetime, tok.ExpiresOn)
		}
	}
}

// TestFreshTokenAlwaysServed: a token that arrives with less than the
// floor left is still handed out, once per exchange.
func TestFreshTokenAlwaysServed(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.respond = func(n int, c call) (acquired, error) {
		now := h.clock.Now()
		return acquired{AccessToken: unsignedJWT(map[string]any{"exp": now.Add(3 * time.Minute).Unix()})}, nil
	}
	tok := h.mustToken(defaultReq(vault))
	if !tok.ExpiresOn.Equal(t0.Add(3 * time.Minute)) {
		t.Errorf("ExpiresOn = %v", tok.ExpiresOn)
	}
}

func TestStaleWhileFailing(t *testing.T) {
	h := newHarness(t, nil)
	first := h.mustToken(defaultReq(vault))
	failing := true
	var mu sync.Mutex
	h.acq.respond = func(n int, c call) (acquired, error) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return acquired{}, upstream(503, "Service Unavailable")
		}
		return h.acq.issue(n, c.clientID, c.scope, nil), nil
	}
	// 52 min in: below the floor, Entra fails, 8 min left > 5 min grace.
	h.clock.Advance(52 * time.Minute)
	tok, err := h.token(defaultReq(vault))
	if err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("got %v, want the cached token served stale", err)
	}
	if got := h.acq.count(); got != 2 {
		t.Fatalf("exchanges = %d, want 2", got)
	}
	// Within staleRetryInterval the stale token is served without asking.
	h.clock.Advance(staleRetryInterval - time.Second)
	if tok, err := h.token(defaultReq(vault)); err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("got %v, want stale token", err)
	}
	if got := h.acq.count(); got != 2 {
		t.Fatalf("exchanges = %d, want 2 (no retry inside %v)", got, staleRetryInterval)
	}
	if got := h.counter(h.src.m.cacheRequests, resultStale); got != 2 {
		t.Errorf("stale = %v, want 2", got)
	}
	// 55 min in: exactly 5 min left: no longer served.
	h.clock.Advance(3*time.Minute + time.Second)
	_, err = h.token(defaultReq(vault))
	if ReasonOf(err) != ReasonUnavailable {
		t.Fatalf("err = %v, want ReasonUnavailable", err)
	}
	// Entra recovers.
	mu.Lock()
	failing = false
	mu.Unlock()
	tok = h.mustToken(defaultReq(vault))
	if tok.AccessToken == first.AccessToken {
		t.Error("recovered request got the old token")
	}
	if got := h.acq.count(); got != 4 {
		t.Errorf("exchanges = %d, want 4", got)
	}
}

func TestRefreshAheadOnlyForServedEntries(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	h.mustToken(defaultReq(vault))                                                                  // A: fetched and handed out
	h.mustToken(Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault}) // B
	h.clock.Advance(29 * time.Minute)
	h.src.round(ctx)
	if got := h.acq.count(); got != 2 {
		t.Fatalf("before half-life: exchanges = %d, want 2", got)
	}
	h.clock.Advance(time.Minute) // half-life reached
	h.src.round(ctx)
	if got := h.acq.count(); got != 4 {
		t.Fatalf("at half-life: exchanges = %d, want 4 (both handed out since fetch)", got)
	}
	// A is used again after its refresh, B is not.
	h.mustToken(defaultReq(vault))
	h.clock.Advance(30 * time.Minute)
	h.src.round(ctx)
	if got, want := h.acq.callsFor(clientA, vaultSc), 3; got != want {
		t.Errorf("A exchanges = %d, want %d", got, want)
	}
	if got, want := h.acq.callsFor(clientB, vaultSc), 2; got != want {
		t.Errorf("B exchanges = %d, want %d (not served since its refresh)", got, want)
	}
	if got := h.counter(h.src.m.refreshes, "success"); got != 3 {
		t.Errorf("refreshes = %v, want 3", got)
	}
	// Warm after the refresh: no more exchanges.
	before := h.acq.count()
	h.mustToken(defaultReq(vault))
	if h.acq.count() != before {
		t.Error("warm request after refresh made an exchange")
	}
}

func TestRefreshFailureKeepsToken(t *testing.T) {
	h := newHarness(t, nil)
	first := h.mustToken(defaultReq(vault))
	h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, upstream(500, `{"error":"server_error"}`) }
	h.clock.Advance(31 * time.Minute)
	h.src.round(context.Background())
	if got := h.counter(h.src.m.refreshes, "failure"); got != 1 {
		t.Fatalf("refresh failures = %v, want 1", got)
	}
	tok := h.mustToken(defaultReq(vault))
	if tok.AccessToken != first.AccessToken {
		t.Error("refresh failure lost the cached token")
	}
	// The next attempt waits refreshRetryInterval.
	h.src.round(context.Background())
	if got := h.acq.count(); got != 2 {
		t.Errorf("exchanges = %d, want 2 (retry delayed)", got)
	}
	h.clock.Advance(refreshRetryInterval)
	h.src.round(context.Background())
	if got := h.acq.count(); got != 3 {
		t.Errorf("exchanges = %d, want 3", got)
	}
}

// TestIdleEviction: a refreshed entry nobody asked for since is dropped
// once it has been idle for a whole lifetime, before it expires.
func TestIdleEviction(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.lifetime = time.Hour
	h.mustToken(defaultReq(vault))
	h.mustToken(defaultReq("https://storage.azure.com"))
	h.clock.Advance(30 * time.Minute)
	h.src.round(context.Background()) // both refreshed (handed out at fetch)
	if got := h.acq.count(); got != 4 {
		t.Fatalf("exchanges = %d, want 4", got)
	}
	h.clock.Advance(15 * time.Minute)
	h.mustToken(defaultReq("https://storage.azure.com")) // storage used again
	h.clock.Advance(15*time.Minute - time.Second)
	h.src.round(context.Background())
	if got := h.src.cacheLen(); got != 2 {
		t.Fatalf("entries = %d, want 2 (vault idle 1s short of its lifetime)", got)
	}
	h.clock.Advance(time.Second) // vault idle for exactly its lifetime, 30 min before expiry
	h.src.round(context.Background())
	if got := h.src.cacheLen(); got != 1 {
		t.Fatalf("entries = %d, want 1", got)
	}
	if got := h.counter(h.src.m.evictions, "idle"); got != 1 {
		t.Errorf("idle evictions = %v, want 1", got)
	}
	if got := h.counter(h.src.m.evictions, "expired"); got != 0 {
		t.Errorf("expired evictions = %v, want 0", got)
	}
}

func TestLRUCaps(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEntries = 3 })
	for i := range 5 {
		h.mustToken(defaultReq("https://r" + string(rune('0'+i))))
		if i == 2 {
			h.mustToken(defaultReq("https://r0")) // keep r0 recent
		}
	}
	if got := h.src.cacheLen(); got != 3 {
		t.Fatalf("entries = %d, want 3", got)
	}
	if got := h.counter(h.src.m.evictions, "lru"); got != 2 {
		t.Errorf("lru evictions = %v, want 2", got)
	}
	before := h.acq.count()
	h.mustToken(defaultReq("https://r0"))
	if h.acq.count() != before {
		t.Error("recently used r0 was evicted")
	}
	h.mustToken(defaultReq("https://r1"))
	if h.acq.count() != before+1 {
		t.Error("r1 should have been evicted")
	}
}

func TestSeenClientIDsCapped(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxIdentities = 2 })
	for _, id := range []string{"c1", "c2", "c3"} {
		h.mustToken(Request{Identity: Selector{Kind: SelectClientID, Value: id}, Resource: vault})
	}
	got := h.src.candidates()
	want := []string{clientA, "c2", "c3"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("candidates = %v, want %v", got, want)
	}
}

func TestNegativeCacheAndTokenFileChange(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{}, upstream(400, aadstsBody("invalid_request", 70021, "No matching federated identity record found for presented assertion."))
	}
	_, err := h.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonIdentityNotFound || xe.Code != "AADSTS70021" {
		t.Fatalf("err = %v, want IdentityNotFound AADSTS70021", err)
	}
	wantDetail := "no federated credential of application " + clientA +
		" matches issuer=https://issuer.example/cluster, subject=system:serviceaccount:default:app, audience=api://AzureADTokenExchange"
	if xe.Detail != wantDetail {
		t.Errorf("Detail = %q\nwant     %q", xe.Detail, wantDetail)
	}
	// Remembered: no second exchange inside NegativeTTL.
	h.clock.Advance(29 * time.Second)
	_, err = h.token(defaultReq(vault))
	if ReasonOf(err) != ReasonIdentityNotFound || h.acq.count() != 1 {
		t.Fatalf("err = %v, exchanges = %d; want cached failure, 1", err, h.acq.count())
	}
	if got := h.counter(h.src.m.cacheRequests, resultNegative); got != 1 {
		t.Errorf("negative = %v, want 1", got)
	}
	// Expired after NegativeTTL.
	h.clock.Advance(time.Second)
	_, _ = h.token(defaultReq(vault))
	if h.acq.count() != 2 {
		t.Fatalf("exchanges = %d, want 2 after the TTL", h.acq.count())
	}
	// A rotated token file clears it at once.
	writeSAToken(t, h.file, "system:serviceaccount:default:app", t0.Add(2*time.Hour))
	h.acq.respond = nil
	if _, err := h.token(defaultReq(vault)); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if h.acq.count() != 3 {
		t.Errorf("exchanges = %d, want 3", h.acq.count())
	}
}

func TestTransientFailuresAreNotRemembered(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{}, upstream(503, "upstream connect error")
	}
	for range 3 {
		if _, err := h.token(defaultReq(vault)); ReasonOf(err) != ReasonUnavailable {
			t.Fatalf("err = %v", err)
		}
	}
	if h.acq.count() != 3 {
		t.Errorf("exchanges = %d, want 3", h.acq.count())
	}
}

func TestExpiredAssertionRetriedOnce(t *testing.T) {
	for _, succeedSecond := range []bool{true, false} {
		h := newHarness(t, nil)
		h.acq.respond = func(n int, c call) (acquired, error) {
			if n == 1 || !succeedSecond {
				return acquired{}, upstream(401, aadstsBody("invalid_client", 700024, "Client assertion is not within its valid time range."))
			}
			return h.acq.issue(n, c.clientID, c.scope, nil), nil
		}
		_, err := h.token(defaultReq(vault))
		if succeedSecond && err != nil {
			t.Errorf("retry should have succeeded: %v", err)
		}
		if !succeedSecond {
			var xe *Error
			if !errors.As(err, &xe) || xe.Reason != ReasonAssertionRejected || xe.Code != "AADSTS700024" {
				t.Errorf("err = %v, want AssertionRejected AADSTS700024", err)
			}
		}
		if h.acq.count() != 2 {
			t.Errorf("exchanges = %d, want 2", h.acq.count())
		}
	}
}

func TestTokenFileMissing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TokenFile = "/nonexistent/token" })
	h.acq.assertion = h.src.tf.read
	_, err := h.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonTokenFile {
		t.Fatalf("err = %v, want ReasonTokenFile", err)
	}
	if !strings.Contains(xe.Detail, "/nonexistent/token") {
		t.Errorf("Detail %q does not name the path", xe.Detail)
	}
}

// TestSingleflightDetached: concurrent misses share one exchange, and a
// caller that gives up does not fail the others.
func TestSingleflightDetached(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.block = make(chan struct{})
	impatient, cancel := context.WithCancel(context.Background())
	impatientErr := make(chan error, 1)
	go func() {
		_, err := h.src.Token(impatient, defaultReq(vault))
		impatientErr <- err
	}()
	// Wait until the impatient caller's exchange is in flight.
	for h.acq.count() == 0 {
		time.Sleep(time.Millisecond)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	toks := make([]Token, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = h.src.Token(context.Background(), defaultReq(vault))
		}()
	}
	cancel()
	// The impatient caller returns while the exchange is still blocked.
	err := <-impatientErr
	if ReasonOf(err) != ReasonUnavailable || !errors.Is(err, context.Canceled) {
		t.Errorf("impatient caller: %v", err)
	}
	close(h.acq.block)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if toks[i].AccessToken != toks[0].AccessToken {
			t.Fatalf("caller %d got a different token: %q vs %q (exchanges %d)", i, toks[i].AccessToken, toks[0].AccessToken, h.acq.count())
		}
	}
	if got := h.acq.count(); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
}

func TestForceRefreshRateLimit(t *testing.T) {
	h := newHarness(t, nil)
	first := h.mustToken(defaultReq(vault))
	forced := Request{Resource: vault, ForceRefresh: true}
	second := h.mustToken(forced)
	if second.AccessToken == first.AccessToken || h.acq.count() != 2 {
		t.Fatalf("bypass_cache did not fetch: exchanges = %d", h.acq.count())
	}
	h.clock.Advance(DefaultForceRefreshInterval - time.Second)
	third := h.mustToken(forced)
	if third.AccessToken != second.AccessToken || h.acq.count() != 2 {
		t.Fatalf("rate limit not applied: exchanges = %d", h.acq.count())
	}
	h.clock.Advance(time.Second)
	fourth := h.mustToken(forced)
	if fourth.AccessToken == second.AccessToken || h.acq.count() != 3 {
		t.Fatalf("forced fetch after the interval: exchanges = %d", h.acq.count())
	}
	if got := h.counter(h.src.m.cacheRequests, resultForced); got != 2 {
		t.Errorf("forced = %v, want 2", got)
	}
}

func TestRefreshTokenSHA256(t *testing.T) {
	h := newHarness(t, nil)
	first := h.mustToken(defaultReq(vault))
	sum := sha256.Sum256([]byte(first.AccessToken))
	// A hash of some other token: served from the cache.
	other := sha256.Sum256([]byte("other"))
	if tok := h.mustToken(Request{Resource: vault, RefreshTokenSHA256: hex.EncodeToString(other[:])}); tok.AccessToken != first.AccessToken {
		t.Fatal("non-matching hash forced a refresh")
	}
	for _, bad := range []string{"zz", strings.Repeat("g", 64), hex.EncodeToString(sum[:31])} {
		h.mustToken(Request{Resource: vault, RefreshTokenSHA256: bad})
	}
	if h.acq.count() != 1 {
		t.Fatalf("exchanges = %d, want 1", h.acq.count())
	}
	// Upper-case hex of the cached token: refreshed.
	tok := h.mustToken(Request{Resource: vault, RefreshTokenSHA256: strings.ToUpper(hex.EncodeToString(sum[:]))})
	if tok.AccessToken == first.AccessToken || h.acq.count() != 2 {
		t.Fatalf("matching hash did not refresh: exchanges = %d", h.acq.count())
	}
}

func TestResolveByConfiguredIdentity(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Identities = []Identity{{ClientID: clientB, ObjectID: "OID-B", ResourceID: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b"}}
	})
	tok := h.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: "oid-b"}, Resource: vault})
	if tok.ClientID != clientB {
		t.Errorf("ClientID = %q", tok.ClientID)
	}
	tok = h.mustToken(Request{Identity: Selector{Kind: SelectResourceID, Value: "/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/b"}, Resource: vault})
	if tok.ClientID != clientB || h.acq.count() != 1 {
		t.Errorf("ClientID = %q, exchanges = %d", tok.ClientID, h.acq.count())
	}
	if got := h.counter(h.src.m.resolutions, "configured"); got != 2 {
		t.Errorf("configured resolutions = %v", got)
	}
}

func TestResolveByTrialExchange(t *testing.T) {
	mirid := "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b"
	h := newHarness(t, func(c *Config) { c.Identities = []Identity{{ClientID: clientB}} })
	h.acq.respond = func(n int, c call) (acquired, error) {
		extra := map[string]any{"oid": "oid-" + c.clientID[:1]}
		if c.clientID == clientB {
			extra["xms_mirid"] = mirid
		}
		return h.acq.issue(n, c.clientID, c.scope, extra), nil
	}
	tok := h.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: "OID-2"}, Resource: vault})
	if tok.ClientID != clientB {
		t.Fatalf("ClientID = %q, want %q", tok.ClientID, clientB)
	}
	// Tried A (default) then B, one exchange each.
	if h.acq.count() != 2 {
		t.Fatalf("exchanges = %d, want 2", h.acq.count())
	}
	// Now learnt: object id and resource id resolve without more exchanges.
	if tok := h.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: "oid-2"}, Resource: vault}); tok.ClientID != clientB {
		t.Errorf("ClientID = %q", tok.ClientID)
	}
	if tok := h.mustToken(Request{Identity: Selector{Kind: SelectResourceID, Value: strings.ToUpper(mirid)}, Resource: vault}); tok.ClientID != clientB {
		t.Errorf("ClientID = %q", tok.ClientID)
	}
	if h.acq.count() != 2 {
		t.Errorf("exchanges = %d, want 2", h.acq.count())
	}
	// Unknown object id: the trials hit the cache, then Identity not found.
	_, err := h.token(Request{Identity: Selector{Kind: SelectObjectID, Value: "nobody"}, Resource: vault})
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonIdentityNotFound || xe.Detail != "no configured or known identity has object_id nobody" {
		t.Fatalf("err = %v", err)
	}
	if h.acq.count() != 2 {
		t.Errorf("exchanges = %d, want 2", h.acq.count())
	}
}

func TestResolveTransientFailureIsNotNotFound(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, upstream(503, "") }
	_, err := h.token(Request{Identity: Selector{Kind: SelectObjectID, Value: "x"}, Resource: vault})
	if ReasonOf(err) != ReasonUnavailable {
		t.Errorf("err = %v, want ReasonUnavailable", err)
	}
}

// TestTrialTokensAreNotRefreshed: identities tried in vain while resolving
// an object id are not marked in use, so only the match is refreshed.
func TestTrialTokensAreNotRefreshed(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Identities = []Identity{{ClientID: clientB}} })
	h.acq.respond = func(n int, c call) (acquired, error) {
		return h.acq.issue(n, c.clientID, c.scope, map[string]any{"oid": "oid-" + c.clientID[:1]}), nil
	}
	if tok := h.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: "oid-2"}, Resource: vault}); tok.ClientID != clientB {
		t.Fatalf("ClientID = %q", tok.ClientID)
	}
	h.clock.Advance(30 * time.Minute)
	h.src.round(context.Background())
	if a, b := h.acq.callsFor(clientA, vaultSc), h.acq.callsFor(clientB, vaultSc); a != 1 || b != 2 {
		t.Errorf("exchanges A=%d B=%d, want 1 and 2", a, b)
	}
	// The unused trial entry goes after a lifetime.
	h.clock.Advance(30 * time.Minute)
	h.src.round(context.Background())
	h.src.cache.mu.Lock()
	_, hasA := h.src.cache.entries[cacheKey{"tenant-1", clientA, vaultSc}]
	h.src.cache.mu.Unlock()
	if hasA {
		t.Error("trial entry of A not evicted")
	}
}

func TestStaleServedOnTokenFileErrorButNotOnPermanentFailure(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		wantStale bool
	}{
		{"token file", tokenFileError("/f", errors.New("gone")), true},
		{"throttled", upstream(429, "", "Retry-After", "3"), true},
		{"assertion rejected", upstream(401, aadstsBody("invalid_client", 700027, "bad sig")), true},
		{"app deleted", upstream(400, aadstsBody("unauthorized_client", 700016, "gone")), false},
		{"resource invalid", upstream(400, aadstsBody("invalid_resource", 500011, "gone")), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			first := h.mustToken(defaultReq(vault))
			h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, tc.err }
			h.clock.Advance(52 * time.Minute)
			tok, err := h.token(defaultReq(vault))
			if tc.wantStale {
				if err != nil || tok.AccessToken != first.AccessToken {
					t.Fatalf("want stale token, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("permanent failure answered with the stale token")
			}
			if want := classify(tc.err, classifyInput{}).Reason; ReasonOf(err) != want {
				t.Errorf("reason = %v, want %v", ReasonOf(err), want)
			}
		})
	}
}

func TestExpiredEntriesEvicted(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.lifetime = 20 * time.Minute
	h.mustToken(defaultReq(vault))
	h.clock.Advance(15 * time.Minute)
	// 5 min left: below the floor min(10m, 20m/2), so Entra is asked; it
	// fails, and 5 min left is not more than the stale grace.
	h.acq.respond = func(n int, c call) (acquired, error) { return acquired{}, upstream(503, "") }
	if _, err := h.token(defaultReq(vault)); ReasonOf(err) != ReasonUnavailable {
		t.Fatalf("err = %v", err)
	}
	h.clock.Advance(5 * time.Minute)
	h.src.round(context.Background())
	if n := h.src.cacheLen(); n != 0 {
		t.Errorf("entries = %d, want 0", n)
	}
	if got := h.counter(h.src.m.evictions, "expired"); got != 1 {
		t.Errorf("expired evictions = %v, want 1", got)
	}
	if _, ok := h.src.SoonestExpiry(); ok {
		t.Error("SoonestExpiry reports a token after eviction")
	}
}

func TestNegativeCacheBounded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEntries = 3 })
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{}, upstream(400, aadstsBody("invalid_resource", 500011, "no"))
	}
	for i := range 3 {
		_, _ = h.token(defaultReq(fmt.Sprintf("https://bad%d", i)))
	}
	h.clock.Advance(DefaultNegativeTTL)        // all three expired
	_, _ = h.token(defaultReq("https://bad3")) // purges the expired ones
	h.src.cache.mu.Lock()
	n := len(h.src.cache.negative)
	h.src.cache.mu.Unlock()
	if n != 1 {
		t.Fatalf("negative entries = %d, want 1", n)
	}
	for i := 4; i < 7; i++ {
		_, _ = h.token(defaultReq(fmt.Sprintf("https://bad%d", i)))
	}
	h.src.cache.mu.Lock()
	n = len(h.src.cache.negative)
	h.src.cache.mu.Unlock()
	if n > 3 {
		t.Errorf("negative entries = %d, want <= 3", n)
	}
}

func TestResolutionsBounded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEntries = 2 })
	h.acq.respond = func(n int, c call) (acquired, error) {
		return h.acq.issue(n, c.clientID, c.scope, map[string]any{"oid": "oid-" + c.clientID}), nil
	}
	for _, id := range []string{"c1", "c2", "c3"} {
		h.mustToken(Request{Identity: Selector{Kind: SelectClientID, Value: id}, Resource: vault})
	}
	h.src.ids.mu.Lock()
	n := len(h.src.ids.resolved)
	h.src.ids.mu.Unlock()
	if n > 2 {
		t.Errorf("resolutions = %d, want <= 2", n)
	}
	// A forgotten resolution is found again by trial (c3 is the newest seen).
	if tok := h.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: "OID-C1"}, Resource: vault}); tok.ClientID != "c1" {
		t.Errorf("ClientID = %q", tok.ClientID)
	}
}

// TestThrottleRemembered: after a 429, the key is not asked again until
// Retry-After has passed; the cached token is served meanwhile if it can
// be, else the remaining wait is passed on.
func TestThrottleRemembered(t *testing.T) {
	h := newHarness(t, nil)
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{}, upstream(429, aadstsBody("temporarily_unavailable", 90055, "slow down"), "Retry-After", "20")
	}
	_, err := h.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonThrottled || xe.RetryAfter != 20*time.Second {
		t.Fatalf("err = %v", err)
	}
	h.clock.Advance(7 * time.Second)
	_, err = h.token(defaultReq(vault))
	if !errors.As(err, &xe) || xe.Reason != ReasonThrottled || xe.RetryAfter != 13*time.Second {
		t.Fatalf("remembered: %v (retry after %v)", err, xe.RetryAfter)
	}
	if h.acq.count() != 1 {
		t.Fatalf("exchanges = %d, want 1", h.acq.count())
	}
	h.clock.Advance(13 * time.Second)
	h.acq.respond = nil
	first := h.mustToken(defaultReq(vault))
	if h.acq.count() != 2 {
		t.Fatalf("exchanges = %d, want 2", h.acq.count())
	}
	// With a token cached: a throttled refresh leaves it served.
	h.acq.respond = func(n int, c call) (acquired, error) {
		return acquired{}, upstream(429, "", "Retry-After", "25")
	}
	h.clock.Advance(52 * time.Minute)
	for range 3 {
		if tok := h.mustToken(defaultReq(vault)); tok.AccessToken != first.AccessToken {
			t.Fatal("throttled: cached token not served")
		}
	}
	if h.acq.count() != 3 {
		t.Errorf("exchanges = %d, want 3", h.acq.count())
	}
}
