package imds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imds-proxy/imds-proxy/internal/golden"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// testIdentityHeader is the App Service secret of the tests.
const testIdentityHeader = "3c8f2a6e9b1d4f7a0e5c2b8d6a4f1e9c3b7d5a2f8e6c4b1a9d7f5e3c1b8a6d4f"

// testCorrelationID replaces the random correlation id, so that bodies can
// be compared exactly.
const testCorrelationID = "00000000-0000-4000-8000-000000000000"

const asQuery = "?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net"

// asBody is the App Service error body for status and message with the
// test correlation id.
func asBody(status int, message string) string {
	b, _ := json.Marshal(message)
	return `{"statusCode":` + strconv.Itoa(status) + `,"message":` + string(b) + `,"correlationId":"` + testCorrelationID + `"}`
}

// newAppServiceServer is newTestServer with the App Service endpoint on
// and the fixed correlation id.
func newAppServiceServer(t *testing.T, upstream string, src TokenSource) (*Server, *prometheus.Registry) {
	t.Helper()
	cfg := testConfig(upstream)
	cfg.IdentityHeader = testIdentityHeader
	s, reg := newTestServer(t, cfg, src)
	s.correlationID = func() string { return testCorrelationID }
	return s, reg
}

func TestAppServiceEndpointValidation(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(http.ResponseWriter, *http.Request) {})
	src := &fakeSource{tok: testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")}
	s, _ := newAppServiceServer(t, upstream.URL, src)
	addr := hostOf(serve(t, s))

	const secret = "X-IDENTITY-HEADER: " + testIdentityHeader
	var (
		badPath    = asBody(400, "Invalid App Service endpoint path; the token endpoint is /msi/token")
		missing    = asBody(401, "Required header X-IDENTITY-HEADER not specified")
		wrong      = asBody(401, "X-IDENTITY-HEADER does not match the proxy's secret (IDENTITY_HEADER)")
		apiVersion = asBody(400, "api-version must be 2019-08-01")
		resource   = asBody(400, "Required query variable 'resource' is missing")
		selectors  = asBody(400, "Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)")
	)
	tests := []struct {
		name    string
		method  string
		target  string
		headers []string
		status  int
		body    string
		allow   string
	}{
		// Step 1: the path. Only /msi/token and /msi/token/ reach the
		// secret check; every other spelling is refused first.
		{"case", "GET", "/MSI/token/" + asQuery, []string{secret}, 400, badPath, ""},
		{"doubled slash", "GET", "/msi//token" + asQuery, []string{secret}, 400, badPath, ""},
		{"two trailing slashes", "GET", "/msi/token//" + asQuery, []string{secret}, 400, badPath, ""},
		{"encoded slash", "GET", "/msi%2Ftoken" + asQuery, []string{secret}, 400, badPath, ""},
		{"backslash", "GET", `/msi\token` + asQuery, []string{secret}, 400, badPath, ""},
		{"dot segment", "GET", "/msi/./token" + asQuery, []string{secret}, 400, badPath, ""},
		{"through metadata", "GET", "/metadata/../msi/token" + asQuery, []string{secret}, 400, badPath, ""},
		{"encoded letters", "GET", "/%6dsi/token" + asQuery, []string{secret}, 400, badPath, ""},
		{"other msi path", "GET", "/msi/info", []string{secret}, 400, badPath, ""},
		{"msi alone", "GET", "/msi", nil, 400, badPath, ""},
		{"path parameter", "GET", "/msi/token;x" + asQuery, []string{secret}, 400, badPath, ""},
		{"msi lookalike is not found", "GET", "/msix/token", []string{secret}, 404, bodyNotFound, ""},
		{"absolute form", "GET", "http://127.0.0.1:8000/msi/token" + asQuery, []string{secret}, 400, bodyBadTarget, ""},
		// Step 2: method.
		{"POST", "POST", "/msi/token" + asQuery, []string{secret, "Content-Length: 0"}, 405, asBody(405, "Only GET is supported"), "GET"},
		{"PUT without secret", "PUT", "/msi/token", []string{"Content-Length: 0"}, 405, asBody(405, "Only GET is supported"), "GET"},
		// Step 3: X-Forwarded-For.
		{"X-Forwarded-For", "GET", "/msi/token" + asQuery, []string{secret, "X-Forwarded-For: 10.0.0.1"}, 400,
			asBody(400, "Requests with an X-Forwarded-For header are not accepted"), ""},
		// Step 4: the secret.
		{"bare GET", "GET", "/msi/token", nil, 401, missing, ""},
		{"secret missing", "GET", "/msi/token" + asQuery, []string{"Metadata: true"}, 401, missing, ""},
		{"secret empty", "GET", "/msi/token" + asQuery, []string{"X-IDENTITY-HEADER:"}, 401, wrong, ""},
		{"secret wrong", "GET", "/msi/token" + asQuery, []string{"X-IDENTITY-HEADER: " + strings.Repeat("0", 64)}, 401, wrong, ""},
		{"secret prefix", "GET", "/msi/token" + asQuery, []string{"X-IDENTITY-HEADER: " + testIdentityHeader[:63]}, 401, wrong, ""},
		{"secret extended", "GET", "/msi/token" + asQuery, []string{"X-IDENTITY-HEADER: " + testIdentityHeader + "0"}, 401, wrong, ""},
		{"secret in another case", "GET", "/msi/token" + asQuery, []string{"X-IDENTITY-HEADER: " + strings.ToUpper(testIdentityHeader)}, 401, wrong, ""},
		{"secret twice", "GET", "/msi/token" + asQuery, []string{secret, secret}, 401, wrong, ""},
		{"secret in another header", "GET", "/msi/token" + asQuery, []string{"X-IDENTITY: " + testIdentityHeader}, 401, missing, ""},
		{"secret as Metadata", "GET", "/msi/token" + asQuery, []string{"Metadata: " + testIdentityHeader}, 401, missing, ""},
		{"secret before query", "GET", "/msi/token?resource=a&resource=b", nil, 401, missing, ""},
		// Step 5: the query, under the IMDS rules but for the api-version.
		{"api-version missing", "GET", "/msi/token?resource=r", []string{secret}, 400, apiVersion, ""},
		{"api-version of IMDS", "GET", "/msi/token?api-version=2018-02-01&resource=r", []string{secret}, 400, apiVersion, ""},
		{"api-version 2017", "GET", "/msi/token?api-version=2017-09-01&resource=r&clientid=c", []string{secret}, 400, apiVersion, ""},
		{"api-version later", "GET", "/msi/token?api-version=2019-08-02&resource=r", []string{secret}, 400, apiVersion, ""},
		{"repeated resource", "GET", "/msi/token" + asQuery + "&resource=x", []string{secret}, 400, asBody(400, "Query parameter 'resource' is repeated"), ""},
		{"miscased selector", "GET", "/msi/token" + asQuery + "&Principal_ID=b", []string{secret}, 400,
			asBody(400, "Query parameter 'Principal_ID' must be spelled 'principal_id' (parameter names are case-sensitive)"), ""},
		{"empty selector", "GET", "/msi/token" + asQuery + "&mi_res_id=", []string{secret}, 400,
			asBody(400, "Query parameter 'mi_res_id' has no value; omit it to ask for the default identity"), ""},
		{"malformed escape", "GET", "/msi/token" + asQuery + "&client_id=%zz", []string{secret}, 400, asBody(400, "The query string is malformed"), ""},
		// Steps 6 and 7.
		{"resource missing", "GET", "/msi/token?api-version=2019-08-01", []string{secret}, 400, resource, ""},
		{"two selectors", "GET", "/msi/token" + asQuery + "&client_id=a&principal_id=b", []string{secret}, 400, selectors, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rawRequest(t, addr, tt.method, tt.target, tt.headers...)
			assertJSONReply(t, got, tt.status, tt.body)
			if got.header.Get("Allow") != tt.allow {
				t.Errorf("Allow = %q; want %q", got.header.Get("Allow"), tt.allow)
			}
			if got.status == 401 && got.header.Get("Www-Authenticate") != "" {
				t.Errorf("WWW-Authenticate = %q: Azure Arc clients read that header as their own challenge", got.header.Get("Www-Authenticate"))
			}
		})
	}
	if n := upstream.count(); n != 0 {
		t.Errorf("upstream IMDS saw %d requests; want 0", n)
	}
	if n := len(src.calls()); n != 0 {
		t.Errorf("token source saw %d requests; want 0", n)
	}
}

// The App Service endpoint refuses what would hold or tunnel a
// connection as every route does (checkFraming), in its own error shape,
// before the secret is even looked at, and closes the connection.
func TestAppServiceRefusesBodiesAndUpgrades(t *testing.T) {
	t.Parallel()
	src := &fakeSource{tok: testToken("pod-token")}
	s, _ := newAppServiceServer(t, "", src)
	addr := hostOf(serve(t, s))
	const secret = "X-IDENTITY-HEADER: " + testIdentityHeader
	var (
		body    = asBody(400, "Request bodies are not accepted; send no Content-Length or Transfer-Encoding")
		upgrade = asBody(400, "Protocol upgrades are not supported: imds-proxy opens no tunnels")
		connect = asBody(405, "CONNECT is not supported: imds-proxy opens no tunnels")
	)
	tests := []struct {
		name   string
		method string
		target string
		head   []string
		body   string
		status int
		want   string
		allow  string
	}{
		{"declared body never sent", "GET", "/msi/token" + asQuery, []string{secret, "Content-Length: 100"}, "", 400, body, ""},
		{"body sent", "GET", "/msi/token" + asQuery, []string{secret, "Content-Length: 5"}, "hello", 400, body, ""},
		{"chunked, nothing sent", "GET", "/msi/token/" + asQuery, []string{"Transfer-Encoding: chunked"}, "", 400, body, ""},
		{"disguised path with a body", "GET", "/MSI/token", []string{"Content-Length: 100"}, "", 400, body, ""},
		{"websocket", "GET", "/msi/token" + asQuery, []string{secret, "Connection: Upgrade", "Upgrade: websocket"}, "", 400, upgrade, ""},
		{"Connection token alone", "GET", "/msi/token" + asQuery, []string{secret, "Connection: keep-alive, upgrade"}, "", 400, upgrade, ""},
		{"CONNECT", "CONNECT", "/msi/token" + asQuery, []string{secret}, "", 405, connect, "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, addr)
			c.send(append([]string{tt.method + " " + tt.target + " HTTP/1.1", "Host: 127.0.0.1"}, tt.head...), tt.body)
			got := c.reply(tt.method, replyWait)
			assertClosingRefusal(t, c, got, tt.status, tt.want, tt.allow)
		})
	}
	t.Cleanup(func() {
		if n := len(src.calls()); n != 0 {
			t.Errorf("token source saw %d requests; want 0", n)
		}
	})
}

// Without a secret the endpoint is off: 404 for every request to it,
// whatever the request carries, and nothing reaches the token source.
func TestAppServiceOff(t *testing.T) {
	t.Parallel()
	src := &fakeSource{tok: testToken("tok")}
	s, reg := newTestServer(t, testConfig(""), src)
	s.correlationID = func() string { return testCorrelationID }
	addr := hostOf(serve(t, s))
	off := asBody(404, "The App Service managed identity endpoint is off: give the proxy the secret in IDENTITY_HEADER or --identity-header-file")
	for _, headers := range [][]string{nil, {"X-IDENTITY-HEADER: " + testIdentityHeader}, {"X-IDENTITY-HEADER:"}} {
		assertJSONReply(t, rawRequest(t, addr, "GET", "/msi/token"+asQuery, headers...), 404, off)
		assertJSONReply(t, rawRequest(t, addr, "GET", "/msi/token/", headers...), 404, off)
	}
	assertJSONReply(t, rawRequest(t, addr, "GET", "/MSI/token"+asQuery), 400, asBody(400, "Invalid App Service endpoint path; the token endpoint is /msi/token"))
	if n := len(src.calls()); n != 0 {
		t.Errorf("token source saw %d requests; want 0", n)
	}
	if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues("app_service_token", "404")); n != 6 {
		t.Errorf("app_service_token 404 count = %v; want 6", n)
	}
	_ = reg
}

func TestAppServiceTokenSuccess(t *testing.T) {
	t.Parallel()
	const jwt = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln"
	secret := "X-IDENTITY-HEADER: " + testIdentityHeader
	tests := []struct {
		name    string
		target  string
		headers []string
		token   string
		golden  string
		want    exchange.Request
	}{
		{"default identity (MSAL Go)", "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net", nil, jwt,
			"appservice_token_basic.golden", exchange.Request{Resource: "https://vault.azure.net"}},
		{"trailing slash and Metadata (MSAL Python)", "/msi/token/" + asQuery, []string{"Metadata: true"}, jwt,
			"appservice_token_basic.golden", exchange.Request{Resource: "https://vault.azure.net"}},
		{"client_id", "/msi/token" + asQuery + "&client_id=c", nil, jwt, "appservice_token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectClientID, Value: "c"}}},
		{"principal_id", "/msi/token" + asQuery + "&principal_id=p", nil, jwt, "appservice_token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectObjectID, Value: "p"}}},
		{"object_id (MSAL Go, msal-node, MSAL Python)", "/msi/token" + asQuery + "&object_id=o", nil, jwt, "appservice_token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectObjectID, Value: "o"}}},
		{"mi_res_id", "/msi/token" + asQuery + "&mi_res_id=%2Fsubscriptions%2Fs%2Fx", nil, jwt, "appservice_token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectResourceID, Value: "/subscriptions/s/x"}}},
		{"msi_res_id (azure-identity passes identity_config through)", "/msi/token" + asQuery + "&msi_res_id=%2Fsubscriptions%2Fs%2Fx", nil, jwt,
			"appservice_token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectResourceID, Value: "/subscriptions/s/x"}}},
		{"msal-node extras", "/msi/token" + asQuery + "&token_sha256_to_refresh=ab12&xms_cc=cp1", []string{"Content-Type: application/x-www-form-urlencoded"}, jwt,
			"appservice_token_basic.golden", exchange.Request{Resource: "https://vault.azure.net", RefreshTokenSHA256: "ab12"}},
		{"large token not chunked", "/msi/token?resource=https://management.azure.com/&api-version=2019-08-01", nil, largeToken,
			"appservice_token_large.golden", exchange.Request{Resource: "https://management.azure.com/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &fakeSource{tok: testToken(tt.token)}
			s, _ := newAppServiceServer(t, "", src)
			got := rawRequest(t, hostOf(serve(t, s)), "GET", tt.target, append([]string{secret}, tt.headers...)...)
			if got.status != 200 {
				t.Fatalf("status = %d %s", got.status, got.body)
			}
			golden.Check(t, tt.golden, got.body)
			if ct := got.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got.chunked || got.contentLength != int64(len(got.body)) {
				t.Errorf("chunked=%v Content-Length=%d body=%d bytes", got.chunked, got.contentLength, len(got.body))
			}
			if calls := src.calls(); len(calls) != 1 || !reflect.DeepEqual(calls[0], tt.want) {
				t.Errorf("token source calls = %+v; want [%+v]", calls, tt.want)
			}
		})
	}
}

// Both protocols ask the one token source the same question: a token the
// IMDS endpoint fetched is the one the App Service endpoint hands out.
func TestAppServiceAndIMDSShareTheTokenSource(t *testing.T) {
	t.Parallel()
	src := &fakeSource{tok: testToken("tok")}
	s, _ := newAppServiceServer(t, "", src)
	addr := hostOf(serve(t, s))
	imds := rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token"+okQuery+"&client_id=c", "Metadata: true")
	as := rawRequest(t, addr, "GET", "/msi/token"+asQuery+"&client_id=c", "X-IDENTITY-HEADER: "+testIdentityHeader)
	if imds.status != 200 || as.status != 200 {
		t.Fatalf("statuses %d %s, %d %s", imds.status, imds.body, as.status, as.body)
	}
	calls := src.calls()
	if len(calls) != 2 || calls[0] != calls[1] {
		t.Errorf("token source requests %+v; want the same request twice", calls)
	}
}

// Every failure of the token source gets the status the IMDS endpoint
// gives it (tokenErrorReply), in the App Service shape, with the same
// description as message, and the same Retry-After.
func TestAppServiceTokenSourceErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		&exchange.Error{Reason: exchange.ReasonIdentityNotFound, Code: "AADSTS700016", Detail: "application not found in the tenant"},
		&exchange.Error{Reason: exchange.ReasonInvalidResource, Code: "AADSTS500011", Detail: "resource principal not found"},
		&exchange.Error{Reason: exchange.ReasonAssertionRejected, Code: "AADSTS700024"},
		&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 7 * time.Second},
		&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 300 * time.Second},
		&exchange.Error{Reason: exchange.ReasonTokenFile, Detail: "cannot read the projected service account token file /t"},
		&exchange.Error{Reason: exchange.ReasonUnavailable, Detail: "timeout"},
		errors.New("x"),
	} {
		t.Run(err.Error(), func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			cfg := testConfig("")
			cfg.IdentityHeader = testIdentityHeader
			s, err2 := New(cfg, &fakeSource{err: err}, funcr.New(logs.write, funcr.Options{Verbosity: 2}), prometheus.NewRegistry())
			if err2 != nil {
				t.Fatal(err2)
			}
			s.correlationID = func() string { return testCorrelationID }
			addr := hostOf(serve(t, s))
			want := tokenErrorReply(err)
			got := rawRequest(t, addr, "GET", "/msi/token"+asQuery, "X-IDENTITY-HEADER: "+testIdentityHeader)
			assertJSONReply(t, got, want.status, asBody(want.status, want.description))
			wantRetry := ""
			if want.retryAfter > 0 {
				wantRetry = strconv.Itoa(want.retryAfter)
			}
			if v := got.header.Get("Retry-After"); v != wantRetry {
				t.Errorf("Retry-After = %q; want %q", v, wantRetry)
			}
			imds := rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token"+okQuery, "Metadata: true")
			if imds.status != got.status || imds.header.Get("Retry-After") != got.header.Get("Retry-After") {
				t.Errorf("IMDS answers %d (Retry-After %q), App Service %d (%q)", imds.status, imds.header.Get("Retry-After"), got.status, got.header.Get("Retry-After"))
			}
			// The log line of the failure names the correlation id the
			// client got.
			if !strings.Contains(logs.String(), `"correlationID"="`+testCorrelationID+`"`) {
				t.Errorf("log lacks the correlation id:\n%s", logs.String())
			}
		})
	}
}

// syncBuffer collects funcr output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) write(prefix, args string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(prefix + " " + args + "\n")
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The secret reaches no log line, at the most verbose level, whether a
// request carries it, a wrong value or a near miss, and whether the
// exchange succeeds or fails.
func TestAppServiceSecretNeverLogged(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	cfg := testConfig("")
	cfg.IdentityHeader = testIdentityHeader
	src := &fakeSource{tok: testToken("tok")}
	s, err := New(cfg, src, funcr.New(logs.write, funcr.Options{Verbosity: 10}), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	addr := hostOf(serve(t, s))
	for _, h := range []string{testIdentityHeader, testIdentityHeader[:40], testIdentityHeader + "x"} {
		rawRequest(t, addr, "GET", "/msi/token"+asQuery, "X-IDENTITY-HEADER: "+h)
		rawRequest(t, addr, "GET", "/msi/token?api-version=x&resource=r", "X-IDENTITY-HEADER: "+h)
		rawRequest(t, addr, "POST", "/msi/token", "X-IDENTITY-HEADER: "+h, "Content-Length: 3")
	}
	src.err = &exchange.Error{Reason: exchange.ReasonIdentityNotFound, Code: "AADSTS700016"}
	rawRequest(t, addr, "GET", "/msi/token"+asQuery+"&client_id=x", "X-IDENTITY-HEADER: "+testIdentityHeader)
	out := logs.String()
	if !strings.Contains(out, `"route"="app_service_token"`) {
		t.Fatalf("no request was logged; the test would prove nothing:\n%s", out)
	}
	if strings.Contains(out, testIdentityHeader[:16]) {
		t.Errorf("a log line carries the secret:\n%s", out)
	}
}

// The secret never shows when a Config, or an error about it, is printed.
func TestIdentityHeaderNeverPrinted(t *testing.T) {
	t.Parallel()
	cfg := Config{TenantID: "t", IdentityHeader: testIdentityHeader}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		for _, v := range []any{cfg, &cfg, cfg.IdentityHeader} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, testIdentityHeader[:16]) || strings.Contains(out, fmt.Sprintf("%x", testIdentityHeader[:16])) {
				t.Errorf("fmt.Sprintf(%q, %T) shows the secret: %s", verb, v, out)
			}
		}
	}
	short := Config{TenantID: "t", IdentityHeader: "0123456789"}
	if err := short.Validate(); err == nil || strings.Contains(err.Error(), "0123456789") {
		t.Errorf("Validate() = %v; want an error without the value", err)
	}
}

func TestCheckIdentityHeader(t *testing.T) {
	t.Parallel()
	ok := strings.Repeat("x", 32)
	tests := []struct {
		in   string
		want string
	}{
		{ok, ""},
		{testIdentityHeader, ""},
		{"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~", ""},
		{"", "is 0 characters long; at least 32 are required (e.g. openssl rand -hex 32)"},
		{ok[:31], "is 31 characters long; at least 32 are required (e.g. openssl rand -hex 32)"},
		{strings.Repeat("x", 1025), "is 1025 characters long; at most 1024 are allowed"},
		{" " + ok, "character 1 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{ok + "\t", "character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{ok + "\r\n", "character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{ok + "\x00", "character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{ok + "\x7f", "character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{ok + "\xff", "character 33 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
		{"ü" + ok, "character 1 is not visible ASCII (0x21 to 0x7e), which a header value needs"},
	}
	for _, tt := range tests {
		err := CheckIdentityHeader(tt.in)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("CheckIdentityHeader(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewCorrelationID(t *testing.T) {
	t.Parallel()
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := newCorrelationID()
		if !uuid.MatchString(id) {
			t.Fatalf("newCorrelationID() = %q; want a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("newCorrelationID() repeated %q", id)
		}
		seen[id] = true
	}
}

// The real server's correlation ids are random, and a refusal rendered
// twice gets two of them.
func TestAppServiceErrorsCarryFreshCorrelationIDs(t *testing.T) {
	t.Parallel()
	cfg := testConfig("")
	cfg.IdentityHeader = testIdentityHeader
	s, _ := newTestServer(t, cfg, &fakeSource{})
	addr := hostOf(serve(t, s))
	ids := map[string]bool{}
	for range 3 {
		got := rawRequest(t, addr, "GET", "/msi/token")
		var body struct {
			StatusCode    int    `json:"statusCode"`
			Message       string `json:"message"`
			CorrelationID string `json:"correlationId"`
		}
		if err := json.Unmarshal([]byte(got.body), &body); err != nil || body.StatusCode != 401 || body.CorrelationID == "" {
			t.Fatalf("reply %d %s (%v)", got.status, got.body, err)
		}
		ids[body.CorrelationID] = true
	}
	if len(ids) != 3 {
		t.Errorf("correlation ids %v; want 3 distinct", ids)
	}
}

func TestAppServiceMetrics(t *testing.T) {
	t.Parallel()
	s, _ := newAppServiceServer(t, "", &fakeSource{tok: testToken("tok")})
	addr := hostOf(serve(t, s))
	rawRequest(t, addr, "GET", "/msi/token"+asQuery, "X-IDENTITY-HEADER: "+testIdentityHeader)
	rawRequest(t, addr, "GET", "/msi/token"+asQuery)
	rawRequest(t, addr, "GET", "/msi/token"+asQuery, "X-IDENTITY-HEADER: nope")
	rawRequest(t, addr, "GET", "/MSI/token"+asQuery)
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"app_service_token", "200", 1},
		{"app_service_token", "401", 2},
		{"app_service_other", "400", 1},
		{"token", "200", 0},
	} {
		if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues(c.route, c.code)); n != c.want {
			t.Errorf("requests{route=%s,code=%s} = %v; want %v", c.route, c.code, n, c.want)
		}
	}
}

// FuzzAppServiceRequest sends arbitrary requests to the App Service
// endpoint and checks what the proxy promises about each answer:
//
//   - a token only for a request that carried the secret, exactly once,
//     on the one path spelling allowed, with the App Service api-version;
//   - the token source asked for exactly the identity the query names:
//     none when no parameter name folds to a selector;
//   - every answer is compact JSON in the App Service shape: a success
//     with exactly its fields, all strings; a refusal with exactly
//     statusCode (the HTTP status), a non-empty message and correlationId.
func FuzzAppServiceRequest(f *testing.F) {
	f.Add("/msi/token", "api-version=2019-08-01&resource=https://vault.azure.net", testIdentityHeader, "GET")
	f.Add("/msi/token/", "api-version=2019-08-01&resource=r&principal_id=p", testIdentityHeader, "GET")
	f.Add("/msi/token", "api-version=2019-08-01&resource=r&Client_Id=c", testIdentityHeader, "GET")
	f.Add("/msi/token", "api-version=2019-08-01&resource=r&client_id=", testIdentityHeader, "GET")
	f.Add("/MSI/token", "api-version=2019-08-01&resource=r", testIdentityHeader, "GET")
	f.Add("/msi/token", "api-version=2019-08-01&resource=r", testIdentityHeader[:63], "GET")
	f.Add("/msi/token", "api-version=2019-08-01&resource=r", "", "DELETE")
	f.Add("/msi/%74oken", "api-version=2019-08-01&resource=r&mi_res_id=%2Fsubscriptions", testIdentityHeader, "GET")
	f.Fuzz(func(t *testing.T, path, query, header, method string) {
		target := path
		if query != "" {
			target += "?" + query
		}
		// What net/http hands the handler: the target as sent, the URL
		// parsed from it. Inputs net/http would refuse are skipped.
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: method, RequestURI: target, URL: u, Header: http.Header{}, Body: http.NoBody,
			Host: "127.0.0.1:8000", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		if header != "" {
			req.Header["X-Identity-Header"] = []string{header}
		}
		src := &fakeSource{tok: testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")}
		s, err := New(Config{TenantID: "t", IdentityHeader: testIdentityHeader, Now: func() time.Time { return fixedNow }},
			src, logr.Discard(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		body := w.Body.Bytes()
		var compact bytes.Buffer
		if err := json.Compact(&compact, body); err != nil || !bytes.Equal(compact.Bytes(), body) {
			t.Fatalf("%s %q: reply %q is not compact JSON", method, target, body)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s %q: reply %q is not a JSON object", method, target, body)
		}
		route := classify(target)
		calls := src.calls()
		if w.Code == http.StatusOK {
			if route != routeAppServiceToken || method != http.MethodGet || header != testIdentityHeader {
				t.Fatalf("%s %q with header %q got a token (route %v)", method, target, header, route)
			}
			keys := slices.Sorted(maps.Keys(m))
			if want := []string{"access_token", "client_id", "expires_in", "expires_on", "not_before", "resource", "token_type"}; !slices.Equal(keys, want) {
				t.Fatalf("token reply keys %v; want %v", keys, want)
			}
			for k, v := range m {
				if _, ok := v.(string); !ok {
					t.Fatalf("token reply %s is %T; want a string", k, v)
				}
			}
			if len(calls) != 1 {
				t.Fatalf("%d token source calls for one token", len(calls))
			}
			q, _ := referenceQuery(req.URL.RawQuery)
			var named []queryParam
			for _, p := range q {
				for _, sel := range selectorParams {
					if referenceFolds(p.name, sel.name) {
						named = append(named, p)
					}
				}
			}
			want := exchange.Selector{}
			if len(named) == 1 {
				want = exchange.Selector{Kind: referenceKind(named[0].name), Value: named[0].value}
			}
			if len(named) > 1 || calls[0].Identity != want {
				t.Fatalf("%q named %v; the token source was asked for %+v", target, named, calls[0].Identity)
			}
			return
		}
		if len(calls) != 0 {
			t.Fatalf("%s %q: refused with %d after asking the token source", method, target, w.Code)
		}
		if !route.appService() {
			return // another route's own shape, checked by its own tests
		}
		if len(m) != 3 {
			t.Fatalf("error reply %s; want exactly statusCode, message and correlationId", body)
		}
		if code, ok := m["statusCode"].(float64); !ok || int(code) != w.Code {
			t.Fatalf("error reply %s for status %d", body, w.Code)
		}
		if msg, ok := m["message"].(string); !ok || msg == "" {
			t.Fatalf("error reply %s has no message", body)
		}
		if id, ok := m["correlationId"].(string); !ok || len(id) != 36 {
			t.Fatalf("error reply %s has no correlationId", body)
		}
	})
}
