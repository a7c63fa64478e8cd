package exchange

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

const (
	emuTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	emuOIDA   = "aaaaaaaa-0000-0000-0000-00000000000a"
	emuOIDB   = "bbbbbbbb-0000-0000-0000-00000000000b"
	emuMIRIDB = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-b"
)

// emuEnv is the real MSAL client against the in-process Entra emulator.
type emuEnv struct {
	t     *testing.T
	emu   *entraemu.Emulator
	clock *fakeClock
	src   *Source
	reg   *prometheus.Registry
	logs  *logBuffer
	file  string
	// secrets are every token seen, for the redaction check.
	mu      sync.Mutex
	secrets []string
}

func newEmuEnv(t *testing.T, mutate ...func(*Config)) *emuEnv {
	t.Helper()
	clock := newFakeClock()
	emu, err := entraemu.Start(entraemu.Options{
		Tenant:        emuTenant,
		TokenLifetime: time.Hour,
		Now:           clock.Now,
		Apps: []entraemu.App{
			{ClientID: clientA, ObjectID: emuOIDA, Federations: []entraemu.Federation{{Subject: "system:serviceaccount:default:app"}}},
			{ClientID: clientB, ObjectID: emuOIDB, ResourceID: emuMIRIDB, Federations: []entraemu.Federation{{Subject: "system:serviceaccount:default:other"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	env := &emuEnv{t: t, emu: emu, clock: clock, reg: prometheus.NewRegistry(), logs: &logBuffer{},
		file: filepath.Join(t.TempDir(), "azure-identity-token")}
	env.rotate("app")
	cfg := Config{
		TenantID:        emuTenant,
		AuthorityHost:   emu.AuthorityHost(),
		TokenFile:       env.file,
		DefaultClientID: clientA,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	src, err := New(cfg, Deps{Logger: env.logs.logger(), Registerer: env.reg, HTTPClient: emu.HTTPClient(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	env.src = src
	return env
}

// rotate writes a fresh projected token for service account sa, as kubelet
// does, valid for 24 h from the fake clock.
func (env *emuEnv) rotate(sa string) {
	env.t.Helper()
	tok, err := env.emu.MintServiceAccountToken("default", sa, 24*time.Hour)
	if err != nil {
		env.t.Fatal(err)
	}
	env.remember(tok)
	// Kubelet swaps a symlink; a rename is the same atomic replacement.
	tmp := env.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
		env.t.Fatal(err)
	}
	if err := os.Rename(tmp, env.file); err != nil {
		env.t.Fatal(err)
	}
}

func (env *emuEnv) remember(tok string) {
	env.mu.Lock()
	defer env.mu.Unlock()
	env.secrets = append(env.secrets, tok)
}

func (env *emuEnv) token(req Request) (Token, error) {
	tok, err := env.src.Token(context.Background(), req)
	if err == nil {
		env.remember(tok.AccessToken)
	}
	return tok, err
}

func (env *emuEnv) mustToken(req Request) Token {
	env.t.Helper()
	tok, err := env.token(req)
	if err != nil {
		env.t.Fatalf("Token(%+v): %v", req, err)
	}
	return tok
}

func (env *emuEnv) calls(clientID, scope string) int { return env.emu.TokenCalls(clientID, scope) }

// TestMSALIntegration drives the real MSAL confidential client through the
// whole life of a cached token and counts the token POSTs Entra sees.
func TestMSALIntegration(t *testing.T) {
	env := newEmuEnv(t)
	ctx := context.Background()

	// 200 concurrent cold requests for one identity and resource: 1 POST.
	const n = 200
	var wg sync.WaitGroup
	toks := make([]Token, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			toks[i], errs[i] = env.src.Token(ctx, defaultReq(vault))
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if toks[i].AccessToken != toks[0].AccessToken {
			t.Fatalf("request %d got a different token", i)
		}
	}
	cold := toks[0]
	env.remember(cold.AccessToken)
	if got := env.calls(clientA, vaultSc); got != 1 {
		t.Fatalf("cold: token POSTs = %d, want 1", got)
	}
	if got := env.emu.DiscoveryCalls(); got != 1 {
		t.Errorf("cold: discovery GETs = %d, want 1", got)
	}
	claims, err := env.emu.VerifyAccessToken(cold.AccessToken)
	if err != nil {
		t.Fatalf("emulator does not recognise the token: %v", err)
	}
	if claims.AppID != clientA || claims.ObjectID != emuOIDA {
		t.Errorf("token claims appid=%q oid=%q", claims.AppID, claims.ObjectID)
	}
	if want := t0.Add(time.Hour); !cold.ExpiresOn.Equal(want) {
		t.Errorf("ExpiresOn = %v, want %v (JWT exp)", cold.ExpiresOn, want)
	}
	if cold.ClientID != clientA {
		t.Errorf("ClientID = %q", cold.ClientID)
	}

	// Warm requests: no POST.
	env.clock.Advance(10 * time.Minute)
	for range 50 {
		if tok := env.mustToken(defaultReq(vault)); tok.AccessToken != cold.AccessToken {
			t.Fatal("warm request got a different token")
		}
	}
	if got := env.emu.TotalTokenCalls(); got != 1 {
		t.Fatalf("warm: token POSTs = %d, want 1", got)
	}

	// Half the lifetime passed: one refresh-ahead POST.
	env.clock.Advance(20 * time.Minute)
	env.src.round(ctx)
	if got := env.calls(clientA, vaultSc); got != 2 {
		t.Fatalf("refresh-ahead: token POSTs = %d, want 2", got)
	}
	refreshed := env.mustToken(defaultReq(vault))
	if refreshed.AccessToken == cold.AccessToken || !refreshed.ExpiresOn.Equal(t0.Add(90*time.Minute)) {
		t.Fatalf("after refresh: expires %v, same token %v", refreshed.ExpiresOn, refreshed.AccessToken == cold.AccessToken)
	}
	env.src.round(ctx) // not yet due again
	if got := env.calls(clientA, vaultSc); got != 2 {
		t.Fatalf("second tick: token POSTs = %d, want 2", got)
	}

	// Entra fails: the cached token is served while more than 5 min are
	// left, then recovers.
	env.emu.SetFault(entraemu.Fault{Status: 503})
	env.clock.Advance(30 * time.Minute) // refreshed token at half-life: refresh fails
	env.src.round(ctx)
	if got := env.calls(clientA, vaultSc); got != 3 {
		t.Fatalf("failed refresh: token POSTs = %d, want 3", got)
	}
	env.clock.Advance(21 * time.Minute) // 9 min left: below the floor
	if tok := env.mustToken(defaultReq(vault)); tok.AccessToken != refreshed.AccessToken {
		t.Fatal("Entra failing: did not serve the cached token")
	}
	if got := env.calls(clientA, vaultSc); got != 4 {
		t.Fatalf("stale: token POSTs = %d, want 4 (one foreground attempt)", got)
	}
	env.emu.SetFault(entraemu.Fault{})
	env.clock.Advance(staleRetryInterval)
	recovered := env.mustToken(defaultReq(vault))
	if recovered.AccessToken == refreshed.AccessToken {
		t.Fatal("after recovery: still the old token")
	}
	if got := env.calls(clientA, vaultSc); got != 5 {
		t.Fatalf("recovered: token POSTs = %d, want 5", got)
	}
	if got := testutil.ToFloat64(env.src.m.cacheRequests.WithLabelValues(resultStale)); got != 1 {
		t.Errorf("stale serves = %v, want 1", got)
	}
	if got := testutil.ToFloat64(env.src.m.exchanges.WithLabelValues("unavailable")); got != 2 {
		t.Errorf("unavailable exchanges = %v, want 2", got)
	}

	// Unknown client id: Identity not found with the AADSTS code.
	_, err = env.token(Request{Identity: Selector{Kind: SelectClientID, Value: "99999999-9999-9999-9999-999999999999"}, Resource: vault})
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonIdentityNotFound || xe.Code != "AADSTS700016" {
		t.Fatalf("unknown client id: %v", err)
	}

	// Client B is federated with another service account: no match...
	reqB := Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault}
	_, err = env.token(reqB)
	if !errors.As(err, &xe) || xe.Reason != ReasonIdentityNotFound || !strings.HasPrefix(xe.Code, "AADSTS70021") {
		t.Fatalf("unfederated client id: %v", err)
	}
	if !strings.Contains(xe.Detail, "subject=system:serviceaccount:default:app") || !strings.Contains(xe.Detail, "issuer="+env.emu.IssuerURL()) {
		t.Errorf("Detail = %q", xe.Detail)
	}
	postsB := env.calls(clientB, vaultSc)
	if _, err := env.token(reqB); ReasonOf(err) != ReasonIdentityNotFound || env.calls(clientB, vaultSc) != postsB {
		t.Fatalf("negative cache: %v, POSTs %d -> %d", err, postsB, env.calls(clientB, vaultSc))
	}
	// ...until the token file rotates to that account: picked up without a
	// restart, the negative entry cleared.
	env.rotate("other")
	tokB := env.mustToken(reqB)
	if tokB.ClientID != clientB || env.calls(clientB, vaultSc) != postsB+1 {
		t.Fatalf("after rotation: client %q, POSTs %d", tokB.ClientID, env.calls(clientB, vaultSc))
	}

	// object_id and msi_res_id resolve from the claims of issued tokens.
	if tok := env.mustToken(Request{Identity: Selector{Kind: SelectObjectID, Value: strings.ToUpper(emuOIDB)}, Resource: vault}); tok.ClientID != clientB {
		t.Errorf("object_id resolved to %q", tok.ClientID)
	}
	if tok := env.mustToken(Request{Identity: Selector{Kind: SelectResourceID, Value: strings.ToLower(emuMIRIDB)}, Resource: vault}); tok.ClientID != clientB {
		t.Errorf("msi_res_id resolved to %q", tok.ClientID)
	}
	if got := env.calls(clientB, vaultSc); got != postsB+1 {
		t.Errorf("resolution made POSTs: %d, want %d", got, postsB+1)
	}

	// One discovery per MSAL client (A, the unknown one, B); no instance
	// discovery (it would have failed: no route to the public cloud).
	if got := env.emu.DiscoveryCalls(); got != 3 {
		t.Errorf("discovery GETs = %d, want 3", got)
	}

	// Nothing secret reached the log.
	logs := env.logs.String()
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, s := range env.secrets {
		if strings.Contains(logs, s) {
			t.Fatalf("a token appeared in the log")
		}
		if sig := s[strings.LastIndexByte(s, '.')+1:]; strings.Contains(logs, sig) {
			t.Fatalf("a token signature appeared in the log")
		}
	}
	if !strings.Contains(logs, "AADSTS700016") {
		t.Error("the log lacks the AADSTS code of the failure")
	}
}

// TestMSALIntegrationInvalidResourceAndThrottle covers the remaining
// classification paths through real MSAL errors.
func TestMSALIntegrationInvalidResourceAndThrottle(t *testing.T) {
	env := newEmuEnv(t)
	env.emu.SetInvalidResource("https://nope.example", true)
	_, err := env.token(defaultReq("https://nope.example"))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonInvalidResource || xe.Code != "AADSTS500011" {
		t.Fatalf("invalid resource: %v", err)
	}
	env.emu.SetFault(entraemu.Fault{Status: 429, RetryAfter: 90 * time.Second, Count: 1})
	_, err = env.token(defaultReq(vault))
	if !errors.As(err, &xe) || xe.Reason != ReasonThrottled || xe.RetryAfter != 90*time.Second {
		t.Fatalf("throttled: %v (retry after %v)", err, xe.RetryAfter)
	}
	// The throttle is remembered for its whole Retry-After: no POST
	// meanwhile, and the wait left is passed on.
	env.clock.Advance(89 * time.Second)
	_, err = env.token(defaultReq(vault))
	if !errors.As(err, &xe) || xe.Reason != ReasonThrottled || xe.RetryAfter != time.Second || env.emu.TotalTokenCalls() != 2 {
		t.Fatalf("remembered throttle: %v, POSTs %d", err, env.emu.TotalTokenCalls())
	}
	env.clock.Advance(time.Second)
	env.emu.SetFault(entraemu.Fault{Status: 200, Body: entraemu.FaultBodyGarbage, Count: 1})
	_, err = env.token(defaultReq(vault))
	if ReasonOf(err) != ReasonUnavailable {
		t.Fatalf("garbage body: %v", err)
	}
	env.emu.SetFault(entraemu.Fault{Status: 400, Body: entraemu.FaultBodyHTML, Count: 1})
	_, err = env.token(defaultReq(vault))
	if ReasonOf(err) != ReasonUnavailable {
		t.Fatalf("HTML 400: %v", err)
	}
	env.emu.SetFault(entraemu.Fault{DropConnection: true, Count: 1})
	_, err = env.token(defaultReq(vault))
	if ReasonOf(err) != ReasonUnavailable {
		t.Fatalf("dropped connection: %v", err)
	}
	if _, err := env.token(defaultReq(vault)); err != nil {
		t.Fatalf("after faults: %v", err)
	}
	if got := env.calls(clientA, vaultSc); got != 5 {
		t.Errorf("token POSTs = %d, want 5", got)
	}
}

// TestMSALTokenFileMissing: the assertion callback's error reaches the
// caller as ReasonTokenFile naming the path.
func TestMSALTokenFileMissing(t *testing.T) {
	env := newEmuEnv(t)
	if err := os.Remove(env.file); err != nil {
		t.Fatal(err)
	}
	_, err := env.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonTokenFile || !strings.Contains(xe.Detail, env.file) {
		t.Fatalf("err = %v", err)
	}
	if got := env.emu.TotalTokenCalls(); got != 0 {
		t.Errorf("token POSTs = %d, want 0", got)
	}
}

// TestMSALClientLRU: with room for one MSAL client, alternating identities
// rebuild clients, and each new client repeats tenant discovery once.
func TestMSALClientLRU(t *testing.T) {
	env := newEmuEnv(t, func(c *Config) { c.MaxIdentities = 1 })
	env.rotate("app")
	env.emu.AddApp(entraemu.App{ClientID: clientB, Federations: []entraemu.Federation{{Subject: "system:serviceaccount:default:app"}}})
	reqB := Request{Identity: Selector{Kind: SelectClientID, Value: clientB}, Resource: vault}
	env.mustToken(defaultReq(vault))
	env.mustToken(defaultReq("https://storage.azure.com")) // same client: no discovery
	if got := env.emu.DiscoveryCalls(); got != 1 {
		t.Fatalf("discovery GETs = %d, want 1", got)
	}
	env.mustToken(reqB)                                      // evicts A's client
	env.mustToken(defaultReq("https://graph.microsoft.com")) // A again: new client
	if got := env.emu.DiscoveryCalls(); got != 3 {
		t.Errorf("discovery GETs = %d, want 3", got)
	}
	if got := env.emu.TotalTokenCalls(); got != 4 {
		t.Errorf("token POSTs = %d, want 4", got)
	}
}

// rotatingTransport rotates the token file after the first token POST, the
// way kubelet may replace an expired projected token between two attempts.
type rotatingTransport struct {
	base   http.RoundTripper
	once   sync.Once
	rotate func()
}

func (rt *rotatingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(r)
	if strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") {
		rt.once.Do(rt.rotate)
	}
	return resp, err
}

// TestMSALExpiredAssertionRetry: AADSTS700024 makes one more attempt with a
// re-read token file; if the file is still expired, the answer is
// ReasonAssertionRejected.
func TestMSALExpiredAssertionRetry(t *testing.T) {
	for _, rotated := range []bool{true, false} {
		t.Run(fmt.Sprintf("rotated=%v", rotated), func(t *testing.T) {
			env := newEmuEnv(t)
			expired, err := env.emu.MintToken(entraemu.TokenSpec{Namespace: "default", ServiceAccount: "app",
				IssuedAt: env.clock.Now().Add(-2 * time.Hour), Lifetime: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(env.file, []byte(expired), 0o600); err != nil {
				t.Fatal(err)
			}
			hc := env.emu.HTTPClient()
			hc.Transport = &rotatingTransport{base: hc.Transport, rotate: func() {
				if rotated {
					env.rotate("app")
				}
			}}
			src, err := New(Config{TenantID: emuTenant, AuthorityHost: env.emu.AuthorityHost(), TokenFile: env.file, DefaultClientID: clientA},
				Deps{Registerer: prometheus.NewRegistry(), HTTPClient: hc, Clock: env.clock})
			if err != nil {
				t.Fatal(err)
			}
			_, err = src.Token(context.Background(), defaultReq(vault))
			if rotated && err != nil {
				t.Fatalf("retry with the rotated file failed: %v", err)
			}
			var xe *Error
			if !rotated && (!errors.As(err, &xe) || xe.Reason != ReasonAssertionRejected || xe.Code != "AADSTS700024") {
				t.Fatalf("err = %v, want AssertionRejected AADSTS700024", err)
			}
			if got := env.calls(clientA, vaultSc); got != 2 {
				t.Errorf("token POSTs = %d, want 2", got)
			}
		})
	}
}

// TestMSALExchangeTimeout: an Entra that does not answer within
// ExchangeTimeout is ReasonUnavailable, and the next request tries again.
// The timeout is generous: the second attempt is a real TLS exchange,
// which a loaded machine may take hundreds of milliseconds to finish.
func TestMSALExchangeTimeout(t *testing.T) {
	env := newEmuEnv(t, func(c *Config) { c.ExchangeTimeout = 3 * time.Second })
	env.emu.SetFault(entraemu.Fault{Latency: time.Minute, Count: 1})
	_, err := env.token(defaultReq(vault))
	var xe *Error
	if !errors.As(err, &xe) || xe.Reason != ReasonUnavailable || xe.Detail != "Entra ID did not answer within 3s" {
		t.Fatalf("err = %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(DeadlineExceeded) = false for %v", err)
	}
	if _, err := env.token(defaultReq(vault)); err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	if got := env.calls(clientA, vaultSc); got != 2 {
		t.Errorf("token POSTs = %d, want 2", got)
	}
}

// Prewarm builds the default identity's client and runs tenant discovery
// without a token POST; the first token request then reuses that discovery.
func TestMSALPrewarm(t *testing.T) {
	env := newEmuEnv(t)
	ctx := context.Background()
	if err := env.src.Prewarm(ctx); err != nil {
		t.Fatalf("Prewarm: %v", err)
	}
	if got := env.emu.DiscoveryCalls(); got != 1 {
		t.Errorf("after Prewarm: discovery GETs = %d, want 1", got)
	}
	if got := env.emu.TotalTokenCalls(); got != 0 {
		t.Errorf("after Prewarm: token POSTs = %d, want 0", got)
	}
	env.remember(env.mustToken(defaultReq(vault)).AccessToken)
	if got := env.emu.DiscoveryCalls(); got != 1 {
		t.Errorf("after the first token: discovery GETs = %d, want 1", got)
	}
	if got := env.emu.TotalTokenCalls(); got != 1 {
		t.Errorf("after the first token: token POSTs = %d, want 1", got)
	}
}

func TestMSALPrewarmNoDefaultIdentity(t *testing.T) {
	env := newEmuEnv(t, func(c *Config) { c.DefaultClientID = "" })
	if err := env.src.Prewarm(context.Background()); err != nil {
		t.Fatalf("Prewarm: %v", err)
	}
	if got := env.emu.DiscoveryCalls(); got != 0 {
		t.Errorf("discovery GETs = %d, want 0", got)
	}
}

func TestMSALPrewarmUnreachable(t *testing.T) {
	env := newEmuEnv(t)
	env.emu.Close()
	if err := env.src.Prewarm(context.Background()); err == nil {
		t.Fatal("Prewarm against a closed authority succeeded")
	}
}

// New builds the default identity's MSAL client, the one its first
// exchange and the prewarm use, and no client for anyone else; without a
// default identity it keeps none.
func TestMSALClientBuiltAtNew(t *testing.T) {
	for _, tt := range []struct {
		name, defaultID string
		want            []string
	}{
		{"default identity", " " + strings.ToUpper(clientA) + " ", []string{clientA}},
		{"no default identity", "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newEmuEnv(t, func(c *Config) { c.DefaultClientID = tt.defaultID })
			a := env.src.ex.acq.(*msalAcquirer)
			var got []string
			for el := a.lru.Front(); el != nil; el = el.Next() {
				got = append(got, el.Value.(*msalClient).clientID)
			}
			if !slices.Equal(got, tt.want) || len(a.clients) != len(tt.want) {
				t.Fatalf("clients after New = %v (map %d), want %v", got, len(a.clients), tt.want)
			}
			if n := env.emu.DiscoveryCalls() + env.emu.TotalTokenCalls(); n != 0 {
				t.Errorf("New made %d requests to Entra, want 0", n)
			}
		})
	}
}
