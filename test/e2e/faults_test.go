package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// The fault matrix: every way Entra, the projected token file and the node's
// IMDS can fail, one environment per fault. For each, a request from the
// pod through the redirect gets an exact status and JSON body within a
// bounded time, the token cached before the fault keeps being served, and
// the proxy recovers once the fault is gone, without a restart.

const (
	// faultExchangeTimeout is the proxy's --exchange-timeout here: short,
	// so that rows where Entra never answers end quickly.
	faultExchangeTimeout = 4 * time.Second
	// faultPassthroughTimeout is the proxy's --passthrough-timeout here.
	faultPassthroughTimeout = 2 * time.Second
	// answerBound bounds the time to any answer under a fault: the longest
	// wait the proxy itself has (the exchange timeout) plus 5 s of slack
	// for a loaded machine. The failure it catches is a hang.
	answerBound = faultExchangeTimeout + 5*time.Second
	// instancePath is a passthrough request.
	instancePath = "/metadata/instance?api-version=2021-02-01"
)

// faultProxyArgs are the proxy options of every fault environment.
var faultProxyArgs = []string{
	"--exchange-timeout=" + faultExchangeTimeout.String(),
	"--passthrough-timeout=" + faultPassthroughTimeout.String(),
}

// errorJSON renders the proxy's error body for code and description.
func errorJSON(code, description string) string {
	b, err := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, description})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Bodies the proxy answers under faults.
var (
	entraUnreachable = errorJSON("service_unavailable",
		"Microsoft Entra ID is unavailable; retry later (Entra ID could not be reached or answered unexpectedly)")
	entraTimeout = errorJSON("service_unavailable",
		"Microsoft Entra ID is unavailable; retry later (Entra ID did not answer within "+faultExchangeTimeout.String()+")")
)

func entraStatus(status int, code string) string {
	cause := "Entra ID answered HTTP " + strconv.Itoa(status)
	if code != "" {
		cause = code + ": " + cause
	}
	return errorJSON("service_unavailable", "Microsoft Entra ID is unavailable; retry later ("+cause+")")
}

func tokenFileBody(env *podenv.Env) string {
	return errorJSON("server_error", "cannot read the projected service account token file "+env.TokenFile)
}

// faultRow is one fault of the matrix.
type faultRow struct {
	name string
	// inject applies the fault; clear removes it. Both run while the proxy
	// keeps running.
	inject, clear func(t *testing.T, env *podenv.Env)
	// path is the request made under the fault: default a token for
	// storage, which nothing cached.
	path string
	// status is the status line the request gets; body its exact body,
	// "" for a token reply. bodyFor, when set, gives the body instead.
	status, body string
	bodyFor      func(env *podenv.Env) string
	// retryAfter is the Retry-After header of the reply ("" for none).
	retryAfter string
	// calls is the emulator's count of token POSTs for the pod's identity
	// and the request's resource once the request is answered.
	calls int
	// bypassCalls is how many token POSTs a bypass_cache=true request for
	// the token cached before the fault makes under the fault, which must
	// then serve that cached token (the stale path); -1 skips the check.
	bypassCalls int
	// recoverAfter is how long after the faulted request the proxy may
	// still answer it from memory (Entra's Retry-After).
	recoverAfter time.Duration
	// clientMaxTime, when set, is the client's own timeout (curl
	// --max-time), and the fault outlasts it: the client gets no answer.
	clientMaxTime time.Duration
	// check, when set, runs after the faulted request.
	check func(t *testing.T, env *podenv.Env, r wireReply)
}

// faultResult is what one row measured, for the summary line.
type faultResult struct {
	name, status string
	elapsed      time.Duration
}

// TestFaultMatrix runs every fault named by the hardening issue (and a few
// close relatives) against its own pod: Entra refusing connections, slower
// than the client's and the exchange timeout, 5xx, 429 with Retry-After
// (within and beyond what clients are told), garbage and HTML bodies, a
// dropped connection, TLS certificate mismatches; the projected token file
// missing, empty, garbage, expired and rotated; the node's IMDS down and
// slow for passthrough. The proxy runs with --exchange-timeout=4s and
// --passthrough-timeout=2s; curl's own timeout is 60 s unless the row says.
func TestFaultMatrix(t *testing.T) {
	t.Parallel()
	var expiredExp string // RFC 3339 exp of the expired token (row "token file expired")
	var rotatedJTI string // jti of the rotated token (row "token file rotated")
	rows := []faultRow{
		{
			name:   "Entra refuses connections",
			inject: refuse(podenv.NodeAddr, podenv.EntraPort, true), clear: refuse(podenv.NodeAddr, podenv.EntraPort, false),
			status: "HTTP/1.1 503 Service Unavailable", body: entraUnreachable, calls: 0, bypassCalls: 0,
		},
		{
			name:   "Entra slower than the exchange timeout",
			inject: emuFault(entraemu.Fault{Latency: time.Minute}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable", body: entraTimeout, calls: 1, bypassCalls: 1,
		},
		{
			// The client gives up after 1 s; the exchange goes on, detached
			// from it, and fills the cache: the next request is served
			// from it without a second Entra call.
			name:   "Entra slower than the client's timeout",
			inject: emuFault(entraemu.Fault{Latency: 2500 * time.Millisecond}), clear: emuFault(entraemu.Fault{}),
			clientMaxTime: time.Second, calls: 1, bypassCalls: -1, recoverAfter: 2500 * time.Millisecond,
		},
		{
			name:   "Entra 500",
			inject: emuFault(entraemu.Fault{Status: 500}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable", body: entraStatus(500, "AADSTS50000"), calls: 1, bypassCalls: 1,
		},
		{
			// Entra's Retry-After on a 503 is not passed on: the proxy's
			// 503 means "retry", and clients back off on their own.
			name:   "Entra 503 with Retry-After",
			inject: emuFault(entraemu.Fault{Status: 503, RetryAfter: 10 * time.Second}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable", body: entraStatus(503, "AADSTS50000"), calls: 1, bypassCalls: 1,
		},
		{
			name:   "Entra 429 with Retry-After 3 s",
			inject: emuFault(entraemu.Fault{Status: 429, RetryAfter: 3 * time.Second}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 429 Too Many Requests", retryAfter: "3",
			body: errorJSON("too_many_requests",
				"Microsoft Entra ID is throttling token requests; retry later (AADSTS90055: Entra ID is throttling token requests)"),
			calls: 1, bypassCalls: 1, recoverAfter: 3 * time.Second,
			check: wantNoAskWhileThrottled(0),
		},
		{
			// Clients are told 25 s at most; the proxy itself waits the
			// whole 32 s before asking Entra again for this key.
			name:   "Entra 429 with Retry-After beyond the clients' cap",
			inject: emuFault(entraemu.Fault{Status: 429, RetryAfter: 32 * time.Second}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 429 Too Many Requests", retryAfter: "25",
			body: errorJSON("too_many_requests",
				"Microsoft Entra ID is throttling token requests; retry later (AADSTS90055: Entra ID is throttling token requests); Microsoft Entra ID asked to wait 32 s"),
			calls: 1, bypassCalls: 1, recoverAfter: 32 * time.Second,
			check: wantNoAskWhileThrottled(26 * time.Second),
		},
		{
			name:   "Entra garbage body (200)",
			inject: emuFault(entraemu.Fault{Body: entraemu.FaultBodyGarbage}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable", body: entraUnreachable, calls: 1, bypassCalls: 1,
		},
		{
			name:   "Entra HTML error page (502)",
			inject: emuFault(entraemu.Fault{Status: 502, Body: entraemu.FaultBodyHTML}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable", body: entraStatus(502, ""), calls: 1, bypassCalls: 1,
		},
		{
			name:   "Entra HTML page with a 400 status",
			inject: emuFault(entraemu.Fault{Status: 400, Body: entraemu.FaultBodyHTML}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable",
			body:   errorJSON("service_unavailable", "Microsoft Entra ID is unavailable; retry later (Entra ID answered HTTP 400 with an unreadable body)"),
			calls:  1, bypassCalls: 1,
		},
		{
			name:   "Entra drops the connection",
			inject: emuFault(entraemu.Fault{DropConnection: true}), clear: emuFault(entraemu.Fault{}),
			status: "HTTP/1.1 503 Service Unavailable", body: entraUnreachable, calls: 1, bypassCalls: 1,
		},
		{
			name:   "Entra certificate from an untrusted CA",
			inject: tlsFault(entraemu.TLSFaultUntrustedCA), clear: tlsFault(entraemu.TLSFaultNone),
			status: "HTTP/1.1 503 Service Unavailable", body: entraUnreachable, calls: 0, bypassCalls: 0,
		},
		{
			name:   "Entra certificate for another name",
			inject: tlsFault(entraemu.TLSFaultWrongName), clear: tlsFault(entraemu.TLSFaultNone),
			status: "HTTP/1.1 503 Service Unavailable", body: entraUnreachable, calls: 0, bypassCalls: 0,
		},
		{
			name: "token file missing",
			inject: func(t *testing.T, env *podenv.Env) {
				if err := os.Remove(env.TokenFile); err != nil {
					t.Fatal(err)
				}
			},
			clear:  freshToken,
			status: "HTTP/1.1 500 Internal Server Error", bodyFor: tokenFileBody, calls: 0, bypassCalls: 0,
		},
		{
			name:   "token file empty",
			inject: writeToken(""), clear: freshToken,
			status: "HTTP/1.1 500 Internal Server Error", bodyFor: tokenFileBody, calls: 0, bypassCalls: 0,
		},
		{
			// Not a JWT: Entra refuses it (AADSTS50027), a 400 clients do
			// not retry; nothing about the token can be shown.
			name:   "token file garbage",
			inject: writeToken("this is not a service account token\n"), clear: freshToken,
			status: "HTTP/1.1 400 Bad Request",
			body: errorJSON("invalid_request", "Microsoft Entra ID rejected the pod's projected service account token "+
				"(AADSTS50027: Entra ID rejected the projected service account token (issuer=(none), subject=(none), audience=(none)))"),
			calls: 1, bypassCalls: 1,
		},
		{
			// Expired (kubelet stopped rotating it): AADSTS700024, the
			// file re-read and the exchange tried once more, then 400.
			name: "token file expired",
			inject: func(t *testing.T, env *podenv.Env) {
				tok := mintToken(t, env, -time.Hour)
				expiredExp = jwtExp(t, tok).UTC().Format(time.RFC3339)
				if err := env.WriteToken(tok); err != nil {
					t.Fatal(err)
				}
			},
			clear:  freshToken,
			status: "HTTP/1.1 400 Bad Request",
			bodyFor: func(*podenv.Env) string {
				return errorJSON("invalid_request", "Microsoft Entra ID rejected the pod's projected service account token "+
					"(AADSTS700024: the projected service account token is outside its validity window (exp "+expiredExp+"))")
			},
			calls: 2, bypassCalls: 2,
		},
		{
			// Rotation is not a fault: the next exchange sends the new
			// token, read without a restart.
			name: "token file rotated",
			inject: func(t *testing.T, env *podenv.Env) {
				tok := mintToken(t, env, time.Hour)
				rotatedJTI = jwtClaim(t, tok, "jti")
				if err := env.WriteToken(tok); err != nil {
					t.Fatal(err)
				}
			},
			clear:  func(*testing.T, *podenv.Env) {},
			status: "HTTP/1.1 200 OK", calls: 1, bypassCalls: -1,
			check: func(t *testing.T, env *podenv.Env, _ wireReply) {
				reqs, err := env.Requests(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if last := reqs[len(reqs)-1]; last.Scope != scopeOf(storage) || last.AssertionID != rotatedJTI {
					t.Errorf("the exchange after rotation sent assertion %q for %q, want the rotated token's jti %q", last.AssertionID, last.Scope, rotatedJTI)
				}
			},
		},
		{
			name:   "node IMDS refuses connections",
			inject: refuse(podenv.MetadataAddr, 80, true), clear: refuse(podenv.MetadataAddr, 80, false),
			path: instancePath, status: "HTTP/1.1 502 Bad Gateway",
			body:  errorJSON("service_unavailable", "The instance metadata service could not be reached"),
			calls: -1, bypassCalls: -1,
		},
		{
			name:   "node IMDS slower than the passthrough timeout",
			inject: imdsLatency(time.Minute), clear: imdsLatency(0),
			path: instancePath, status: "HTTP/1.1 504 Gateway Timeout",
			body:  errorJSON("service_unavailable", "The instance metadata service did not answer in time"),
			calls: -1, bypassCalls: -1,
		},
	}

	var mu sync.Mutex
	var results []faultResult
	t.Cleanup(func() {
		sort.Slice(results, func(i, j int) bool { return results[i].name < results[j].name })
		var b strings.Builder
		for _, r := range results {
			fmt.Fprintf(&b, "\n  %-52s %-36s %6.2f s", r.name, r.status, r.elapsed.Seconds())
		}
		t.Logf("time to answer under each fault (bound %s):%s", answerBound, b.String())
	})
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			res := runFaultRow(t, row)
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
		})
	}
}

// runFaultRow runs one row in a pod of its own.
func runFaultRow(t *testing.T, row faultRow) faultResult {
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, ProxyArgs: faultProxyArgs})
	pod := func(res string) wantToken {
		return wantToken{Resource: res, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}
	}
	pid, err := env.ProxyPID()
	if err != nil {
		t.Fatal(err)
	}
	// A token cached before the fault.
	cached := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod(vault))
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)

	path := row.path
	if path == "" {
		path = tokenPath(storage)
	}
	isToken := strings.HasPrefix(path, "/metadata/identity/oauth2/token")
	row.inject(t, env)
	cleared := false
	t.Cleanup(func() {
		if !cleared {
			row.clear(t, env)
		}
	})

	res := faultResult{name: row.name}
	start := time.Now()
	var r wireReply
	if row.clientMaxTime > 0 {
		res.status = timeoutRequest(t, env, path, row.clientMaxTime)
	} else {
		r = curlIMDS(t, env, path)
		res.status = r.StatusLine
	}
	res.elapsed = time.Since(start)
	faultedAt := time.Now()
	if res.elapsed > answerBound {
		t.Errorf("answered after %s, want within %s", res.elapsed.Round(time.Millisecond), answerBound)
	}
	var faultedToken string
	if row.clientMaxTime == 0 {
		if r.StatusLine != row.status {
			t.Errorf("status line = %q, want %q (body %s)", r.StatusLine, row.status, r.Body)
		}
		want := row.body
		if row.bodyFor != nil {
			want = row.bodyFor(env)
		}
		switch {
		case want != "":
			checkJSONWire(t, r)
			if r.Body != want {
				t.Errorf("body =\n  %s\nwant\n  %s", r.Body, want)
			}
		case isToken:
			faultedToken = checkToken(t, r, pod(storage))
		}
		if got := r.Header.Get("Retry-After"); got != row.retryAfter {
			t.Errorf("Retry-After = %q, want %q", got, row.retryAfter)
		}
	}
	if isToken && row.calls >= 0 {
		wantCalls(t, env, podenv.DefaultClientID, storage, row.calls)
	}
	if row.check != nil {
		row.check(t, env, r)
	}

	// The token cached before the fault is still served, without asking
	// Entra, and also when the client insists on a fresh one: the forced
	// exchange fails, and the cached token is served (it is far from
	// its expiry).
	if got := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod(vault)); got != cached {
		t.Error("the token cached before the fault was not served during it")
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	if row.bypassCalls >= 0 {
		if got := checkToken(t, curlIMDS(t, env, tokenPath(vault, "bypass_cache", "true")), pod(vault)); got != cached {
			t.Error("bypass_cache under the fault: want the cached token, served while Entra fails")
		}
		wantCalls(t, env, podenv.DefaultClientID, vault, 1+row.bypassCalls)
	}

	// Recovery, with the same proxy process.
	row.clear(t, env)
	cleared = true
	if wait := time.Until(faultedAt.Add(row.recoverAfter)); wait > 0 {
		time.Sleep(wait + 200*time.Millisecond)
	}
	switch {
	case !isToken:
		r := curlIMDS(t, env, path)
		if r.StatusLine != "HTTP/1.1 200 OK" || r.Body != podenv.InstanceMetadataBody {
			t.Errorf("after recovery: %q %s, want 200 and the node's body", r.StatusLine, r.Body)
		}
	case faultedToken != "" || row.clientMaxTime > 0:
		// The faulted request's exchange succeeded: its token is cached.
		got := checkToken(t, curlIMDS(t, env, path), pod(storage))
		if faultedToken != "" && got != faultedToken {
			t.Error("after the fault: want the token the faulted request got, from the cache")
		}
		wantCalls(t, env, podenv.DefaultClientID, storage, row.calls)
	default:
		checkToken(t, curlIMDS(t, env, path), pod(storage))
		wantCalls(t, env, podenv.DefaultClientID, storage, row.calls+1)
	}
	if now, err := env.ProxyPID(); err != nil || now != pid {
		t.Errorf("the proxy is not the process it was (pid %d, now %d, %v)", pid, now, err)
	}
	return res
}

// timeoutRequest runs curl with a short --max-time and asserts that it gave
// up (exit status 28) without an answer. It returns a description for the
// summary.
func timeoutRequest(t *testing.T, env *podenv.Env, path string, maxTime time.Duration) string {
	t.Helper()
	argv := []string{"curl", "-sS", "-i", "--max-time", strconv.FormatFloat(maxTime.Seconds(), 'f', -1, 64), "-H", "Metadata: true", imdsBase + path}
	var out strings.Builder
	cmd := env.PodCommand(context.Background(), appUID, nil, argv...)
	cmd.Stdout = &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 28 {
		t.Errorf("curl --max-time %s: %v (output %q), want exit status 28: the client gives up first", maxTime, err, out.String())
	}
	if out.Len() != 0 {
		t.Errorf("the client got %q before its timeout, want nothing", out.String())
	}
	return "client timed out after " + maxTime.String()
}

// wantNoAskWhileThrottled checks, after a 429 whose Retry-After the proxy
// honours, that asking again (after waiting `after`) is answered 429 from
// memory, with the time left in Retry-After, and without a token POST.
func wantNoAskWhileThrottled(after time.Duration) func(*testing.T, *podenv.Env, wireReply) {
	return func(t *testing.T, env *podenv.Env, _ wireReply) {
		time.Sleep(after)
		r := curlIMDS(t, env, tokenPath(storage))
		checkError(t, r, "HTTP/1.1 429 Too Many Requests", "too_many_requests", "Microsoft Entra ID is throttling token requests")
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 25 {
			t.Errorf("Retry-After while throttled = %q, want 1..25 s", r.Header.Get("Retry-After"))
		}
		wantCalls(t, env, podenv.DefaultClientID, storage, 1)
	}
}

func emuFault(f entraemu.Fault) func(*testing.T, *podenv.Env) {
	return func(t *testing.T, env *podenv.Env) { podenvtest.SetFault(t, env, f) }
}

func tlsFault(f entraemu.TLSFault) func(*testing.T, *podenv.Env) {
	return func(t *testing.T, env *podenv.Env) {
		if err := env.SetTLSFault(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
}

func refuse(addr string, port int, on bool) func(*testing.T, *podenv.Env) {
	return func(t *testing.T, env *podenv.Env) {
		if err := env.RefuseConnections(context.Background(), addr, port, on); err != nil {
			t.Fatal(err)
		}
	}
}

func imdsLatency(d time.Duration) func(*testing.T, *podenv.Env) {
	return func(t *testing.T, env *podenv.Env) {
		if err := env.SetIMDSLatency(d); err != nil {
			t.Fatal(err)
		}
	}
}

func writeToken(content string) func(*testing.T, *podenv.Env) {
	return func(t *testing.T, env *podenv.Env) {
		if err := env.WriteToken(content); err != nil {
			t.Fatal(err)
		}
	}
}

// freshToken writes a new valid projected token, as kubelet's next
// rotation would.
func freshToken(t *testing.T, env *podenv.Env) {
	if err := env.MintAndWriteToken(context.Background(), podenv.Namespace, podenv.ServiceAccount, time.Hour); err != nil {
		t.Fatal(err)
	}
}

func mintToken(t *testing.T, env *podenv.Env, lifetime time.Duration) string {
	t.Helper()
	tok, err := env.MintToken(context.Background(), podenv.Namespace, podenv.ServiceAccount, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func jwtClaim(t *testing.T, tok, name string) string {
	t.Helper()
	claims, err := podenv.DecodeClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	switch v := claims[name].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	t.Fatalf("token has no claim %s", name)
	return ""
}

func jwtExp(t *testing.T, tok string) time.Time {
	t.Helper()
	n, err := strconv.ParseInt(jwtClaim(t, tok, "exp"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(n, 0)
}

// TestFaultStaleGrace: past its refresh point, a cached token is still
// served while Entra fails, until --stale-grace before its expiry, and not
// after. Tokens live 30 s here, so the floor is 15 s (half the lifetime)
// and the grace 5 s.
func TestFaultStaleGrace(t *testing.T) {
	t.Parallel()
	const lifetime, grace = 30 * time.Second, 5 * time.Second
	env := podenvtest.Start(t, podenv.Options{
		ClientID:      podenv.DefaultClientID,
		TokenLifetime: lifetime,
		ProxyArgs:     append([]string{"--stale-grace=" + grace.String()}, faultProxyArgs...),
	})
	pod := wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}
	r := curlIMDS(t, env, tokenPath(vault))
	cached := checkToken(t, r, pod)
	expiresOn := replyExpiresOn(t, r)
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)

	podenvtest.SetFault(t, env, entraemu.Fault{Status: http.StatusServiceUnavailable})
	// At half its lifetime the proxy refreshes the token it handed out, in
	// the background; Entra fails, and the old token stays.
	deadline := time.Now().Add(lifetime)
	for podenvtest.Calls(t, env, podenv.DefaultClientID, scopeOf(vault)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no background refresh within the token's lifetime")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Below the floor now, inside the grace: served from the cache, and
	// the failure a moment ago spares Entra another call.
	r = curlIMDS(t, env, tokenPath(vault))
	if got := checkToken(t, r, pod); got != cached {
		t.Error("past the floor while Entra fails: want the cached token")
	}
	if left, err := strconv.Atoi(replyField(t, r, "expires_in")); err != nil || time.Duration(left)*time.Second > lifetime/2 || time.Duration(left)*time.Second <= grace {
		t.Errorf("stale token expires_in = %s, want between the grace (%s) and the floor (%s)", replyField(t, r, "expires_in"), grace, lifetime/2)
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 2)

	// Inside the last 5 s it is no longer handed out: the request asks
	// Entra, which fails, and gets the failure.
	time.Sleep(time.Until(expiresOn.Add(-grace + 500*time.Millisecond)))
	r = curlIMDS(t, env, tokenPath(vault))
	checkError(t, r, "HTTP/1.1 503 Service Unavailable", "service_unavailable", "Microsoft Entra ID is unavailable")
	wantCalls(t, env, podenv.DefaultClientID, vault, 3)

	podenvtest.SetFault(t, env, entraemu.Fault{})
	if got := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod); got == cached {
		t.Error("after recovery: want a new token")
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 4)
}

func replyField(t *testing.T, r wireReply, name string) string {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatal(err)
	}
	return body[name]
}

func replyExpiresOn(t *testing.T, r wireReply) time.Time {
	t.Helper()
	n, err := strconv.ParseInt(replyField(t, r, "expires_on"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(n, 0)
}
