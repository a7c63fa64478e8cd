package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imds-proxy/imds-proxy/internal/golden"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

const (
	okQuery        = "?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
	bodyNoMetadata = `{"error":"invalid_request","error_description":"Required metadata header not specified"}`
	bodyIdentity   = `{"error":"invalid_request","error_description":"Invalid identity endpoint path; the token endpoint is /metadata/identity/oauth2/token"}`
	bodyBadTarget  = `{"error":"invalid_request","error_description":"Absolute-form request targets are not supported; send the request to the metadata address directly, not through an HTTP proxy"}`
	bodyBadPath    = `{"error":"invalid_request","error_description":"The request path is malformed or not canonical"}`
	bodyMethodGET  = `{"error":"method_not_allowed","error_description":"Only GET is supported"}`
	bodyXFF        = `{"error":"invalid_request","error_description":"Requests with an X-Forwarded-For header are not accepted"}`
	bodyAPIVersion = `{"error":"invalid_request","error_description":"api-version is missing or older than 2018-02-01"}`
	bodyResource   = `{"error":"invalid_request","error_description":"Required query variable 'resource' is missing"}`
	bodySelectors  = `{"error":"invalid_request","error_description":"Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"}`
	bodyNotFound   = `{"error":"not_found","error_description":"No such metadata endpoint; imds-proxy serves /metadata/identity/oauth2/token and /metadata/identity/info and forwards /metadata/{instance,versions,attested,scheduledevents,loadbalancer}"}`
	bodyBlocked    = `{"error":"forbidden","error_description":"Instance metadata is blocked by imds-proxy (--instance-metadata=block)"}`
	bodyLoop       = `{"error":"loop_detected","error_description":"imds-proxy received its own forwarded request: the iptables rules installed by proxy-init did not exempt the proxy's UID (a pod-level securityContext.runAsUser overrides the proxy image's UID 1501); remove the pod-level runAsUser or set runAsUser: 1501 on the proxy container"}`
	bodyTimeout    = `{"error":"service_unavailable","error_description":"The instance metadata service did not answer in time"}`
	bodyBadGateway = `{"error":"service_unavailable","error_description":"The instance metadata service could not be reached"}`
)

// assertJSONReply checks status, the JSON headers and the exact body.
func assertJSONReply(t *testing.T, got rawResponse, status int, body string) {
	t.Helper()
	if got.status != status || got.body != body {
		t.Fatalf("reply = %d %s\nwant    %d %s", got.status, got.body, status, body)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if got.chunked || got.contentLength != int64(len(body)) {
		t.Errorf("chunked=%v Content-Length=%d; want %d, not chunked", got.chunked, got.contentLength, len(body))
	}
}

// assertClosingRefusal checks a refusal that ends the connection: the
// JSON reply (assertJSONReply) with the Allow header allow (none when
// empty), marked Connection: close, and c closed after it with nothing
// more sent.
func assertClosingRefusal(t *testing.T, c *rawConn, got rawResponse, status int, body, allow string) {
	t.Helper()
	assertJSONReply(t, got, status, body)
	if got.header.Get("Allow") != allow {
		t.Errorf("Allow = %q; want %q", got.header.Get("Allow"), allow)
	}
	if !got.close {
		t.Error("reply without Connection: close")
	}
	if closed, rest := c.closedWithin(5 * time.Second); !closed || rest != "" {
		t.Errorf("after the refusal: closed=%v, then %q", closed, rest)
	}
}

func TestTokenEndpointValidation(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "real IMDS") })
	src := &fakeSource{tok: testToken("eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln")}
	s, _ := newTestServer(t, testConfig(upstream.URL), src)
	addr := hostOf(serve(t, s))

	const md = "Metadata: true"
	tests := []struct {
		name    string
		method  string
		target  string
		headers []string
		status  int
		body    string
		allow   string
	}{
		// Step 1: the path, before anything else.
		{"backslashes", "GET", `/metadata/identity\oauth2\token` + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"backslashes trailing", "GET", `/metadata/identity\oauth2\token\` + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"encoded backslash", "GET", "/metadata/identity%5Coauth2%5Ctoken" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"encoded slash", "GET", "/metadata/identity/oauth2%2Ftoken" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"double-encoded slash", "GET", "/metadata/identity%252Foauth2%252Ftoken" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"doubled slashes", "GET", "/metadata//identity/oauth2/token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"leading doubled slash", "GET", "//metadata/identity/oauth2/token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"dot segment", "GET", "/metadata/./identity/oauth2/token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"dot-dot through instance", "GET", "/metadata/instance/../identity/oauth2/token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"encoded dot-dot through instance", "GET", "/metadata/instance/%2e%2e/identity/oauth2/token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"identity casing", "GET", "/metadata/Identity/oauth2/token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"token casing", "GET", "/metadata/identity/oauth2/Token" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"two trailing slashes", "GET", "/metadata/identity/oauth2/token//" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"other identity path", "GET", "/metadata/identity/oauth2/authorize" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"path parameter", "GET", "/metadata/identity/oauth2/token;x=y" + okQuery, []string{md}, 400, bodyIdentity, ""},
		{"disguised path wins over method", "POST", `/metadata/identity\oauth2\token`, nil, 400, bodyIdentity, ""},
		{"absolute form", "GET", "http://169.254.169.254/metadata/identity/oauth2/token" + okQuery, []string{md}, 400, bodyBadTarget, ""},
		{"absolute form to instance", "GET", "http://169.254.169.254/metadata/instance", []string{md}, 400, bodyBadTarget, ""},
		{"asterisk form", "OPTIONS", "*", []string{md}, 400, bodyBadTarget, ""},
		// Step 2: method.
		{"POST", "POST", "/metadata/identity/oauth2/token" + okQuery, []string{md, "Content-Length: 0"}, 405, bodyMethodGET, "GET"},
		{"DELETE without metadata", "DELETE", "/metadata/identity/oauth2/token", nil, 405, bodyMethodGET, "GET"},
		{"HEAD", "HEAD", "/metadata/identity/oauth2/token" + okQuery, []string{md}, 405, "", "GET"},
		// Step 3: X-Forwarded-For.
		{"X-Forwarded-For", "GET", "/metadata/identity/oauth2/token" + okQuery, []string{md, "X-Forwarded-For: 10.0.0.1"}, 400, bodyXFF, ""},
		{"X-Forwarded-For empty before metadata", "GET", "/metadata/identity/oauth2/token", []string{"X-Forwarded-For:"}, 400, bodyXFF, ""},
		// Step 4: Metadata header.
		{"bare availability probe", "GET", "/metadata/identity/oauth2/token", nil, 400, bodyNoMetadata, ""},
		{"metadata missing", "GET", "/metadata/identity/oauth2/token" + okQuery, nil, 400, bodyNoMetadata, ""},
		{"metadata True", "GET", "/metadata/identity/oauth2/token" + okQuery, []string{"Metadata: True"}, 400, bodyNoMetadata, ""},
		{"metadata false", "GET", "/metadata/identity/oauth2/token" + okQuery, []string{"Metadata: false"}, 400, bodyNoMetadata, ""},
		{"metadata twice", "GET", "/metadata/identity/oauth2/token" + okQuery, []string{md, md}, 400, bodyNoMetadata, ""},
		{"metadata before query", "GET", "/metadata/identity/oauth2/token?resource=a&resource=b", nil, 400, bodyNoMetadata, ""},
		// Step 5: query.
		{"api-version missing", "GET", "/metadata/identity/oauth2/token?resource=r", []string{md}, 400, bodyAPIVersion, ""},
		{"api-version old", "GET", "/metadata/identity/oauth2/token?api-version=2017-08-01&resource=r", []string{md}, 400, bodyAPIVersion, ""},
		{"repeated resource", "GET", "/metadata/identity/oauth2/token" + okQuery + "&resource=x", []string{md}, 400,
			`{"error":"invalid_request","error_description":"Query parameter 'resource' is repeated"}`, ""},
		{"miscased selector", "GET", "/metadata/identity/oauth2/token" + okQuery + "&Client_ID=b", []string{md}, 400,
			`{"error":"invalid_request","error_description":"Query parameter 'Client_ID' must be spelled 'client_id' (parameter names are case-sensitive)"}`, ""},
		{"selector repeated under case folding", "GET", "/metadata/identity/oauth2/token" + okQuery + "&object_id=a&OBJECT_ID=b", []string{md}, 400,
			`{"error":"invalid_request","error_description":"Query parameter 'OBJECT_ID' is repeated"}`, ""},
		{"empty selector", "GET", "/metadata/identity/oauth2/token" + okQuery + "&msi_res_id=", []string{md}, 400,
			`{"error":"invalid_request","error_description":"Query parameter 'msi_res_id' has no value; omit it to ask for the default identity"}`, ""},
		// Step 6 and 7.
		{"resource missing", "GET", "/metadata/identity/oauth2/token?api-version=2018-02-01", []string{md}, 400, bodyResource, ""},
		{"two selectors", "GET", "/metadata/identity/oauth2/token" + okQuery + "&client_id=a&mi_res_id=b", []string{md}, 400, bodySelectors, ""},
		// Everything else.
		{"not found", "GET", "/metadata/foo", []string{md}, 404, bodyNotFound, ""},
		{"root", "GET", "/", nil, 404, bodyNotFound, ""},
		{"non-canonical instance path", "GET", "/metadata/instance//compute", []string{md}, 400, bodyBadPath, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rawRequest(t, addr, tt.method, tt.target, tt.headers...)
			if tt.method == "HEAD" {
				if got.status != tt.status {
					t.Fatalf("status = %d; want %d", got.status, tt.status)
				}
			} else {
				assertJSONReply(t, got, tt.status, tt.body)
			}
			if got.header.Get("Allow") != tt.allow {
				t.Errorf("Allow = %q; want %q", got.header.Get("Allow"), tt.allow)
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

func TestGoServerRejectsInvalidEscapes(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(http.ResponseWriter, *http.Request) {})
	s, _ := newTestServer(t, testConfig(upstream.URL), &fakeSource{})
	got := rawRequest(t, hostOf(serve(t, s)), "GET", "/metadata/identity%zzoauth2/token", "Metadata: true")
	if got.status != 400 {
		t.Fatalf("status = %d; want 400", got.status)
	}
	if upstream.count() != 0 {
		t.Fatal("forwarded")
	}
}

func TestTokenSuccess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		target  string
		headers []string
		token   string
		golden  string
		want    exchange.Request
	}{
		{"default identity", "/metadata/identity/oauth2/token" + okQuery, nil, "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln", "token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net"}},
		{"trailing slash and METADATA casing", "/METADATA/identity/oauth2/token/" + okQuery, nil, "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln", "token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net"}},
		{"host header plays no part", "/metadata/identity/oauth2/token" + okQuery, []string{"Host: evil.example:8080"}, "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln", "token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net"}},
		{"large token not chunked", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id=c&xms_cc=cp1", nil, largeToken, "token_large.golden",
			exchange.Request{Resource: "https://management.azure.com/", Identity: exchange.Selector{Kind: exchange.SelectClientID, Value: "c"}}},
		{"msal-node extras", "/metadata/identity/oauth2/token" + okQuery + "&object_id=o&bypass_cache=true&token_sha256_to_refresh=ab12", []string{"Content-Type: application/x-www-form-urlencoded", "x-client-SKU: MSAL.JS"},
			"eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln", "token_basic.golden",
			exchange.Request{Resource: "https://vault.azure.net", Identity: exchange.Selector{Kind: exchange.SelectObjectID, Value: "o"}, ForceRefresh: true, RefreshTokenSHA256: "ab12"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &fakeSource{tok: testToken(tt.token)}
			s, _ := newTestServer(t, testConfig("http://127.0.0.1:1"), src)
			got := rawRequest(t, hostOf(serve(t, s)), "GET", tt.target, append([]string{"Metadata: true"}, tt.headers...)...)
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
			calls := src.calls()
			if len(calls) != 1 || !reflect.DeepEqual(calls[0], tt.want) {
				t.Errorf("token source calls = %+v; want [%+v]", calls, tt.want)
			}
		})
	}
}

func TestTokenSourceErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err        error
		status     int
		body       string
		retryAfter string
	}{
		{&exchange.Error{Reason: exchange.ReasonIdentityNotFound, Code: "AADSTS700016", Detail: "application not found in the tenant"}, 400,
			`{"error":"invalid_request","error_description":"Identity not found (AADSTS700016: application not found in the tenant)"}`, ""},
		{&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 7 * time.Second}, 429,
			`{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later"}`, "7"},
		// Entra's own Retry-After reaches clients capped at 25 s.
		{&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 300 * time.Second}, 429,
			`{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later; Microsoft Entra ID asked to wait 300 s"}`, "25"},
		{errors.New("x"), 503, `{"error":"service_unavailable","error_description":"The token service is unavailable; retry later"}`, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status, tt.retryAfter), func(t *testing.T) {
			t.Parallel()
			s, _ := newTestServer(t, testConfig(""), &fakeSource{err: tt.err})
			got := rawRequest(t, hostOf(serve(t, s)), "GET", "/metadata/identity/oauth2/token"+okQuery, "Metadata: true")
			assertJSONReply(t, got, tt.status, tt.body)
			if v := got.header.Get("Retry-After"); v != tt.retryAfter {
				t.Errorf("Retry-After = %q; want %q", v, tt.retryAfter)
			}
			// Azure CLI matches the status line text of a 400.
			if tt.status == 400 && got.statusLine != "400 Bad Request" {
				t.Errorf("status line = %q", got.statusLine)
			}
		})
	}
}

func TestIdentityInfo(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, testConfig(""), &fakeSource{})
	addr := hostOf(serve(t, s))
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/identity/info?api-version=2018-02-01", "Metadata: true"),
		200, `{"tenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47"}`)
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/identity/info"), 400, bodyNoMetadata)
	assertJSONReply(t, rawRequest(t, addr, "PUT", "/metadata/identity/info", "Metadata: true", "Content-Length: 0"), 405, bodyMethodGET)
	assertJSONReply(t, rawRequest(t, addr, "GET", `/metadata\identity\info`, "Metadata: true"), 400, bodyIdentity)
}

func TestPassthrough(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "dropped")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Up-Other", "kept")
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, `{"path":"`+r.URL.Path+`"}`)
	})
	s, _ := newTestServer(t, testConfig(upstream.URL), &fakeSource{})
	addr := hostOf(serve(t, s))

	for _, target := range []string{
		"/metadata/instance/compute/azEnvironment?api-version=2021-02-01&format=text",
		"/metadata/versions",
		"/metadata/attested/document?api-version=2020-09-01&nonce=1",
		"/metadata/scheduledevents?api-version=2020-07-01",
		"/metadata/loadbalancer?api-version=2020-10-01",
		"/Metadata/instance",
	} {
		t.Run(target, func(t *testing.T) {
			got := rawRequest(t, addr, "GET", target, "Host: evil.example", "Metadata: true", "Connection: X-Down-Hop", "X-Down-Hop: dropped",
				"Keep-Alive: timeout=5", "Te: deflate", "Proxy-Authorization: Basic c2VjcmV0", "X-Other: kept", "User-Agent: app/1")
			path, query, _ := strings.Cut(target, "?")
			if got.status != http.StatusTeapot || got.body != `{"path":"`+path+`"}` {
				t.Fatalf("reply = %d %s", got.status, got.body)
			}
			if got.header.Get("X-Up-Other") != "kept" || got.header.Get("X-Up-Hop") != "" || got.header.Get("Keep-Alive") != "" {
				t.Errorf("response headers not filtered: %v", got.header)
			}
			in := upstream.last()
			// The outbound Host is the upstream's, whatever the client sent.
			if in.Host != hostOf(upstream.Server) {
				t.Errorf("upstream Host = %q", in.Host)
			}
			if in.URL.Path != path || in.URL.RawQuery != query {
				t.Errorf("upstream got %s?%s", in.URL.Path, in.URL.RawQuery)
			}
			want := http.Header{
				"Metadata":         {"true"},
				"X-Imds-Proxy-Hop": {"1"},
				"X-Other":          {"kept"},
				"User-Agent":       {"app/1"},
				"Accept-Encoding":  nil,
			}
			for k, v := range want {
				if v != nil && !reflect.DeepEqual(in.Header[k], v) {
					t.Errorf("upstream header %s = %q; want %q", k, in.Header[k], v)
				}
			}
			for _, k := range []string{"X-Down-Hop", "Keep-Alive", "Te", "Proxy-Authorization", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
				if v, ok := in.Header[k]; ok {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
		})
	}

	before := upstream.count()
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/instance"), 400, bodyNoMetadata)
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/instance", "Metadata: true", "X-Forwarded-For: 1.2.3.4"), 400, bodyXFF)
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/instance", "Metadata: true", "X-Imds-Proxy-Hop: 1"), 508, bodyLoop)
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/instancex", "Metadata: true"), 404, bodyNotFound)
	assertJSONReply(t, rawRequest(t, addr, "GET", "/metadata/instance/./compute", "Metadata: true"), 400, bodyBadPath)
	assertJSONReply(t, rawRequest(t, addr, "GET", "/healthz/../metadata/instance", "Metadata: true"), 400, bodyBadPath)
	if n := upstream.count(); n != before {
		t.Errorf("upstream saw %d more requests; want 0", n-before)
	}
}

// TestPassthroughLoopGuard forwards to the proxy itself, which is what
// happens when the init rules do not exempt the proxy's UID: the looped
// request is answered 508 and the loop ends after one hop.
func TestPassthroughLoopGuard(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, reg := newTestServer(t, testConfig("http://"+ln.Addr().String()), &fakeSource{})
	hs := httptest.NewUnstartedServer(s.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	got := rawRequest(t, hostOf(hs), "GET", "/metadata/instance?api-version=2021-02-01", "Metadata: true")
	assertJSONReply(t, got, 508, bodyLoop)
	if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues("passthrough", "508")); n != 2 {
		t.Errorf("passthrough 508 count = %v; want 2 (the looped request and the outer reply)", n)
	}
	_ = reg
}

// The loop reply names the UID proxy-init was configured to exempt.
func TestPassthroughLoopNamesExemptUID(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(http.ResponseWriter, *http.Request) {})
	for _, tt := range []struct {
		uid  int
		body string
	}{
		{0, bodyLoop},
		{1501, bodyLoop},
		{2000, strings.ReplaceAll(bodyLoop, "1501", "2000")},
	} {
		cfg := testConfig(upstream.URL)
		cfg.ExemptUID = tt.uid
		s, _ := newTestServer(t, cfg, &fakeSource{})
		got := rawRequest(t, hostOf(serve(t, s)), "GET", "/metadata/instance", "Metadata: true", HopHeader+": 1")
		assertJSONReply(t, got, 508, tt.body)
	}
	if n := upstream.count(); n != 0 {
		t.Errorf("upstream saw %d requests; want 0", n)
	}
}

func TestPassthroughTimeoutAndUnreachable(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	cfg := testConfig(slow.URL)
	// A short timeout stands in for the 5 s default; nothing is asserted
	// about elapsed time.
	cfg.PassthroughTimeout = 20 * time.Millisecond
	s, _ := newTestServer(t, cfg, &fakeSource{})
	assertJSONReply(t, rawRequest(t, hostOf(serve(t, s)), "GET", "/metadata/instance", "Metadata: true"), 504, bodyTimeout)

	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	s2, _ := newTestServer(t, testConfig(deadURL), &fakeSource{})
	assertJSONReply(t, rawRequest(t, hostOf(serve(t, s2)), "GET", "/metadata/versions", "Metadata: true"), 502, bodyBadGateway)
}

func TestInstanceMetadataBlock(t *testing.T) {
	t.Parallel()
	upstream := newUpstream(t, func(http.ResponseWriter, *http.Request) {})
	cfg := testConfig(upstream.URL)
	cfg.InstanceMetadata = InstanceMetadataBlock
	s, _ := newTestServer(t, cfg, &fakeSource{})
	addr := hostOf(serve(t, s))
	for _, target := range []string{"/metadata/instance", "/metadata/instance/compute?api-version=2021-02-01", "/metadata/versions", "/metadata/attested/document"} {
		assertJSONReply(t, rawRequest(t, addr, "GET", target, "Metadata: true"), 403, bodyBlocked)
	}
	if upstream.count() != 0 {
		t.Fatalf("upstream saw %d requests", upstream.count())
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, testConfig(""), &fakeSource{tok: testToken("tok")})
	addr := hostOf(serve(t, s))
	for _, p := range []string{"/readyz", "/healthz"} {
		got := rawRequest(t, addr, "GET", p)
		if got.status != 200 || got.body != "ok\n" || got.header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s = %d %q %v", p, got.status, got.body, got.header)
		}
	}
	rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token")
	rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token"+okQuery, "Metadata: true")

	got := rawRequest(t, addr, "GET", "/metrics")
	if got.status != 200 {
		t.Fatalf("/metrics = %d", got.status)
	}
	for _, want := range []string{
		`imds_proxy_http_requests_total{code="200",route="readyz"} 1`,
		`imds_proxy_http_requests_total{code="200",route="healthz"} 1`,
		`imds_proxy_http_requests_total{code="400",route="token"} 1`,
		`imds_proxy_http_requests_total{code="200",route="token"} 1`,
		`imds_proxy_http_request_duration_seconds_count{route="token"} 2`,
		`imds_proxy_build_info{go_version="go`,
	} {
		if !strings.Contains(got.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(got.body, "vault") || strings.Contains(got.body, "client_id") {
		t.Error("/metrics carries a resource or client id")
	}

	// The separate metrics listener serves /metrics only.
	mh := httptest.NewServer(s.MetricsHandler())
	t.Cleanup(mh.Close)
	if got := rawRequest(t, hostOf(mh), "GET", "/metrics"); got.status != 200 || !strings.Contains(got.body, "imds_proxy_build_info") {
		t.Errorf("metrics listener /metrics = %d", got.status)
	}
	assertJSONReply(t, rawRequest(t, hostOf(mh), "GET", "/metadata/identity/oauth2/token"+okQuery, "Metadata: true"), 404, bodyNotFound)
	assertJSONReply(t, rawRequest(t, hostOf(mh), "POST", "/quitquitquit", "Metadata: true"), 404, bodyNotFound)
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{}, `TenantID "": is required`},
		{Config{TenantID: "t", InstanceMetadata: "allow"}, `InstanceMetadata "allow": must be "passthrough" or "block"`},
		{Config{TenantID: "t", Upstream: "ftp://x"}, `Upstream "ftp://x": scheme must be http or https`},
		{Config{TenantID: "t", Upstream: "http://"}, `Upstream "http://": host is missing`},
		{Config{TenantID: "t", Upstream: "http://x/metadata"}, `Upstream "http://x/metadata": must be scheme://host[:port] without path, query or credentials`},
		{Config{TenantID: "t", DrainTimeout: -time.Second, ShutdownDelay: -1}, "ShutdownDelay \"-1ns\": must not be negative\nDrainTimeout \"-1s\": must not be negative"},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg, &fakeSource{}, testLogger(t), prometheus.NewRegistry())
		if err == nil || err.Error() != tt.want {
			t.Errorf("New(%+v) error = %v; want %s", tt.cfg, err, tt.want)
		}
	}
	if _, err := New(Config{TenantID: "t"}, nil, testLogger(t), prometheus.NewRegistry()); err == nil || err.Error() != "token source is required" {
		t.Errorf("nil source: %v", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{TenantID: "t"}, &fakeSource{}, testLogger(t), reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{TenantID: "t"}, &fakeSource{}, testLogger(t), reg); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
}

func TestQuitQuitQuit(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, testConfig(""), &fakeSource{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	// The context never ends: only /quitquitquit stops the server.
	go func() { done <- s.Serve(context.Background(), ln) }()
	addr := ln.Addr().String()

	assertJSONReply(t, rawRequest(t, addr, "GET", "/quitquitquit", "Metadata: true"), 405,
		`{"error":"method_not_allowed","error_description":"Only POST is supported"}`)
	assertJSONReply(t, rawRequest(t, addr, "POST", "/quitquitquit", "Content-Length: 0"), 400, bodyNoMetadata)
	select {
	case <-s.Quit():
		t.Fatal("quit without the Metadata header")
	default:
	}
	assertJSONReply(t, rawRequest(t, addr, "POST", "/quitquitquit", "Metadata: true", "Content-Length: 0"), 200, `{"status":"shutting down"}`)
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	<-s.Quit()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("still accepting connections after quit")
	}
}

func TestShutdownDelayThenDrain(t *testing.T) {
	t.Parallel()
	afterCalled := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	cfg := testConfig("")
	cfg.ShutdownDelay = 42 * time.Second
	cfg.After = func(d time.Duration) <-chan time.Time { afterCalled <- d; return fire }
	src := &fakeSource{tok: testToken("tok"), entered: make(chan struct{}, 1), release: make(chan struct{})}
	s, _ := newTestServer(t, cfg, src)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	cancel() // SIGTERM
	if d := <-afterCalled; d != 42*time.Second {
		t.Fatalf("shutdown delay = %v", d)
	}
	// During the delay, new requests are still served...
	if got := rawRequest(t, addr, "GET", "/readyz"); got.status != 200 {
		t.Fatalf("readyz during the delay = %d", got.status)
	}
	// ...including a token request that is still in flight when the
	// delay ends.
	var wg sync.WaitGroup
	var inflight rawResponse
	wg.Add(1)
	go func() {
		defer wg.Done()
		inflight = rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token"+okQuery, "Metadata: true")
	}()
	<-src.entered
	close(fire) // the delay is over: stop accepting, drain
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v before the in-flight request finished", err)
	default:
	}
	close(src.release)
	wg.Wait()
	if inflight.status != 200 {
		t.Fatalf("in-flight request = %d %s", inflight.status, inflight.body)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("still accepting connections after the drain")
	}
}

// TestLogsNeverCarrySecrets runs every kind of request at the most verbose
// level and checks that no access token, Authorization header or token
// hash reaches the log.
func TestLogsNeverCarrySecrets(t *testing.T) {
	t.Parallel()
	const (
		access = "eyJSECRETACCESSTOKEN.payload.sig"
		auth   = "Bearer SECRETAUTHORIZATION"
		hash   = "SECRETSHA256"
	)
	var mu sync.Mutex
	var lines []string
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		lines = append(lines, prefix+" "+args)
		mu.Unlock()
	}, funcr.Options{Verbosity: 10})
	upstream := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "{}") })
	cfg := testConfig(upstream.URL)
	cfg.ProbeDiagnostics = func() []any { return []any{"issuer", "https://oidc.example/"} }

	for _, src := range []*fakeSource{
		{tok: testToken(access)},
		{err: &exchange.Error{Reason: exchange.ReasonIdentityNotFound, Code: "AADSTS70021", Detail: "no match"}},
		{err: &exchange.Error{Reason: exchange.ReasonUnavailable, Err: errors.New("dial tcp: refused")}},
	} {
		reg := prometheus.NewRegistry()
		s, err := New(cfg, src, logger, reg)
		if err != nil {
			t.Fatal(err)
		}
		addr := hostOf(serve(t, s))
		h := []string{"Metadata: true", "Authorization: " + auth}
		rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token"+okQuery+"&token_sha256_to_refresh="+hash, h...)
		rawRequest(t, addr, "GET", "/metadata/identity/oauth2/token"+okQuery+"&token_sha256_to_refresh="+hash, append(h, ProbeHeader+": warmup")...)
		rawRequest(t, addr, "GET", "/metadata/instance?x="+hash, h...)
		rawRequest(t, addr, "GET", "/metadata/instance", append(h, HopHeader+": 1")...)
		rawRequest(t, addr, "GET", `/metadata/identity\oauth2\token`+okQuery, h...)
	}
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(lines, "\n")
	for _, secret := range []string{"SECRETACCESSTOKEN", "SECRETAUTHORIZATION", "SECRETSHA256"} {
		if strings.Contains(all, secret) {
			t.Errorf("log carries %s:\n%s", secret, all)
		}
	}
	for _, want := range []string{`"route"="token"`, "warm-up token obtained", "warm-up token request from --probe failed", `"issuer"="https://oidc.example/"`, "token request refused", "passthrough loop detected"} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %s:\n%s", want, all)
		}
	}
}

// The loopback server bounds request heads and idle connections, and sets
// no per-request read or write deadline (see newHTTPServer).
func TestNewHTTPServerTimeouts(t *testing.T) {
	t.Parallel()
	s, _ := newTestServer(t, testConfig(""), &fakeSource{})
	srv := s.newHTTPServer(s.Handler())
	if srv.ReadHeaderTimeout != 5*time.Second || srv.IdleTimeout != 90*time.Second || srv.MaxHeaderBytes != 16<<10 {
		t.Errorf("ReadHeaderTimeout %v, IdleTimeout %v, MaxHeaderBytes %d", srv.ReadHeaderTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	if srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		t.Errorf("ReadTimeout %v, WriteTimeout %v; want none", srv.ReadTimeout, srv.WriteTimeout)
	}
	if !srv.DisableGeneralOptionsHandler {
		t.Error("net/http answers OPTIONS * itself")
	}
}
