package entraemu

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	otherClientID = "44444444-4444-4444-4444-444444444444" // registered without federations
	farClientID   = "55555555-5555-5555-5555-555555555555" // federated with an unreachable issuer
	aliasClientID = "66666666-6666-6666-6666-666666666666" // federated with the issuer under another host name
	cid           = "c0ffee00-0000-4000-8000-000000000001"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// startFixed starts an emulator on the fixed clock with the extra apps the
// error cases need.
func startFixed(t *testing.T) *Emulator {
	t.Helper()
	e := start(t, func(o *Options) {
		o.Now = func() time.Time { return fixedNow }
		o.InvalidResources = []string{"https://unknown.example"}
		o.Apps = append(o.Apps,
			App{ClientID: otherClientID, ObjectID: "o4"},
			App{ClientID: farClientID, Federations: []Federation{{Issuer: "http://127.0.0.1:1", Subject: testSubject}}})
	})
	port := strings.TrimPrefix(e.IssuerURL(), "http://127.0.0.1")
	e.AddApp(App{ClientID: aliasClientID, Federations: []Federation{{Issuer: "http://localhost" + port, Subject: testSubject}}})
	return e
}

// mint mints a token with spec on e, failing the test on error.
func mint(t *testing.T, e *Emulator, spec TokenSpec) string {
	t.Helper()
	if spec.Subject == "" && spec.Namespace == "" {
		spec.Namespace, spec.ServiceAccount = "default", "workload"
	}
	tok, err := e.MintToken(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tamper replaces the claims segment of tok, keeping header and signature.
func tamper(tok string, claims map[string]any) string {
	parts := strings.Split(tok, ".")
	b, _ := json.Marshal(claims)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
}

func TestTokenEndpointErrors(t *testing.T) {
	e := startFixed(t)
	good := saToken(t, e)
	port := strings.TrimPrefix(e.IssuerURL(), "http://127.0.0.1")
	noneAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		strings.Split(good, ".")[1] + "."
	ts := "2026-11-24 03:30:00Z"

	cases := []struct {
		name     string
		tenant   string
		form     url.Values
		status   int
		oauth    string
		code     int
		message  string // exact text between "AADSTSnnn: " and " Trace ID:"; "" skips
		contains string
	}{
		{name: "unknown tenant", tenant: "not-our-tenant", form: tokenForm(testClientID, good, vaultScope),
			status: 400, oauth: "invalid_tenant", code: 90002, contains: "Tenant 'not-our-tenant' not found"},
		{name: "unknown app", form: tokenForm("99999999-9999-9999-9999-999999999999", good, vaultScope),
			status: 400, oauth: "unauthorized_client", code: 700016, contains: "'99999999-9999-9999-9999-999999999999' was not found in the directory '" + testTenant + "'"},
		{name: "app without federation", form: tokenForm(otherClientID, good, vaultScope),
			status: 400, oauth: "invalid_request", code: 70021,
			message: "No matching federated identity record found for presented assertion. Assertion Issuer: '" + e.IssuerURL() +
				"'. Assertion Subject: 'system:serviceaccount:default:workload'. Assertion Audience: 'api://AzureADTokenExchange'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"},
		{name: "issuer mismatch", form: tokenForm(testClientID, mint(t, e, TokenSpec{Issuer: "https://oidc.example/x/"}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700211, contains: "assertion issuer 'https://oidc.example/x/'"},
		{name: "audience mismatch", form: tokenForm(testClientID, mint(t, e, TokenSpec{Audiences: []string{"api://Other", "x"}}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700212, contains: "assertion audience 'api://Other, x'"},
		{name: "subject mismatch", form: tokenForm(testClientID, mint(t, e, TokenSpec{Namespace: "default", ServiceAccount: "other"}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700213, contains: "assertion subject 'system:serviceaccount:default:other'"},
		{name: "subject case differs", form: tokenForm(testClientID, mint(t, e, TokenSpec{Subject: "system:serviceaccount:default:Workload"}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700213},
		{name: "expired", form: tokenForm(testClientID, mint(t, e, TokenSpec{IssuedAt: fixedNow.Add(-2 * time.Hour), Lifetime: time.Hour}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700024,
			message: "Client assertion is not within its valid time range. Current time: 2026-11-24T03:30:00.0000000Z, assertion valid from 2026-11-24T01:30:00.0000000Z, expiry time of assertion 2026-11-24T02:30:00.0000000Z."},
		{name: "expires exactly now", form: tokenForm(testClientID, mint(t, e, TokenSpec{IssuedAt: fixedNow.Add(-time.Hour), Lifetime: time.Hour}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700024},
		{name: "not yet valid", form: tokenForm(testClientID, mint(t, e, TokenSpec{IssuedAt: fixedNow.Add(time.Minute)}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700024, contains: "assertion valid from 2026-11-24T03:31:00.0000000Z"},
		{name: "no exp", form: tokenForm(testClientID, tamper(good, map[string]any{"iss": e.IssuerURL(), "sub": testSubject, "aud": "api://AzureADTokenExchange"}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700027},
		{name: "tampered claims", form: tokenForm(testClientID, tamper(good, map[string]any{"iss": e.IssuerURL(), "sub": testSubject, "aud": "api://AzureADTokenExchange", "exp": fixedNow.Add(time.Hour).Unix()}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700027, message: "Client assertion failed signature validation."},
		{name: "unknown kid", form: tokenForm(testClientID, mint(t, e, TokenSpec{KeyID: "rotated-away"}), vaultScope),
			status: 401, oauth: "invalid_client", code: 700027, contains: "kid 'rotated-away'"},
		{name: "alg none", form: tokenForm(testClientID, noneAlg, vaultScope),
			status: 401, oauth: "invalid_client", code: 700027, contains: "algorithm 'none'"},
		{name: "malformed assertion", form: tokenForm(testClientID, "not.a.jwt", vaultScope),
			status: 400, oauth: "invalid_request", code: 50027},
		{name: "issuer unreachable", form: tokenForm(farClientID, mint(t, e, TokenSpec{Issuer: "http://127.0.0.1:1"}), vaultScope),
			status: 400, oauth: "invalid_request", code: 90061, contains: "Request to External OIDC endpoint failed"},
		{name: "issuer discovery names another issuer", form: tokenForm(aliasClientID, mint(t, e, TokenSpec{Issuer: "http://localhost" + port}), vaultScope),
			status: 400, oauth: "invalid_request", code: 90061, contains: "names issuer \"" + e.IssuerURL() + "\""},
		{name: "invalid resource", form: tokenForm(testClientID, good, "https://unknown.example/.default"),
			status: 400, oauth: "invalid_resource", code: 500011, contains: "resource principal named https://unknown.example was not found in the tenant named " + testTenant},
		{name: "two resources", form: tokenForm(testClientID, good, vaultScope+" https://management.azure.com/.default"),
			status: 400, oauth: "invalid_scope", code: 70011},
		{name: "scope without .default", form: tokenForm(testClientID, good, "https://vault.azure.net/user_impersonation"),
			status: 400, oauth: "invalid_scope", code: 70011},
		{name: "only OIDC scopes", form: tokenForm(testClientID, good, ""),
			status: 400, oauth: "invalid_scope", code: 70011},
		{name: "no assertion", form: func() url.Values { f := tokenForm(testClientID, good, vaultScope); f.Del("client_assertion"); return f }(),
			status: 401, oauth: "invalid_client", code: 7000218},
		{name: "wrong assertion type", form: func() url.Values {
			f := tokenForm(testClientID, good, vaultScope)
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f
		}(), status: 401, oauth: "invalid_client", code: 7000218},
		{name: "password grant", form: func() url.Values {
			f := tokenForm(testClientID, good, vaultScope)
			f.Set("grant_type", "password")
			return f
		}(),
			status: 400, oauth: "unsupported_grant_type", code: 70003},
		{name: "no client id", form: func() url.Values { f := tokenForm(testClientID, good, vaultScope); f.Del("client_id"); return f }(),
			status: 400, oauth: "invalid_request", code: 900144, message: "The request body must contain the following parameter: 'client_id'."},
		{name: "no scope", form: func() url.Values { f := tokenForm(testClientID, good, vaultScope); f.Del("scope"); return f }(),
			status: 400, oauth: "invalid_request", code: 900144, message: "The request body must contain the following parameter: 'scope'."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := tc.tenant
			if tenant == "" {
				tenant = testTenant
			}
			r := post(t, e, tenant, tc.form)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			eb := decodeError(t, r.body)
			if eb.Error != tc.oauth || len(eb.ErrorCodes) != 1 || eb.ErrorCodes[0] != tc.code {
				t.Errorf("error %q codes %v, want %q [%d]", eb.Error, eb.ErrorCodes, tc.oauth, tc.code)
			}
			if !uuidRE.MatchString(eb.TraceID) || r.header.Get("X-Ms-Request-Id") != eb.TraceID {
				t.Errorf("trace id %q, header %q", eb.TraceID, r.header.Get("X-Ms-Request-Id"))
			}
			if eb.CorrelationID != cid || eb.Timestamp != ts || eb.ErrorURI != fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", tc.code) {
				t.Errorf("correlation %q timestamp %q uri %q", eb.CorrelationID, eb.Timestamp, eb.ErrorURI)
			}
			prefix := fmt.Sprintf("AADSTS%d: ", tc.code)
			suffix := fmt.Sprintf(" Trace ID: %s Correlation ID: %s Timestamp: %s", eb.TraceID, cid, ts)
			if !strings.HasPrefix(eb.ErrorDescription, prefix) || !strings.HasSuffix(eb.ErrorDescription, suffix) {
				t.Fatalf("description %q lacks %q ... %q", eb.ErrorDescription, prefix, suffix)
			}
			msg := strings.TrimSuffix(strings.TrimPrefix(eb.ErrorDescription, prefix), suffix)
			if tc.message != "" && msg != tc.message {
				t.Errorf("message\n got %q\nwant %q", msg, tc.message)
			}
			if !strings.Contains(msg, tc.contains) {
				t.Errorf("message %q does not contain %q", msg, tc.contains)
			}
		})
	}
	// Every POST was counted, by client and resource scope.
	if n := e.TotalTokenCalls(); n != len(cases) {
		t.Errorf("TotalTokenCalls = %d, want %d", n, len(cases))
	}
	if n := e.TokenCalls(otherClientID, vaultScope); n != 1 {
		t.Errorf("TokenCalls(other) = %d, want 1", n)
	}
	if n := e.TokenCalls(testClientID, "https://unknown.example/.default"); n != 1 {
		t.Errorf("TokenCalls(unknown resource) = %d, want 1", n)
	}
}

func TestTokenSuccessBody(t *testing.T) {
	e := startFixed(t)
	r := post(t, e, strings.ToUpper(testTenant), tokenForm(strings.ToUpper(testClientID), saToken(t, e), "https://management.azure.com/.default"))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 4 || string(raw["token_type"]) != `"Bearer"` || string(raw["expires_in"]) != "3599" || string(raw["ext_expires_in"]) != "3599" {
		t.Errorf("body %s", r.body)
	}
	if r.header.Get("Content-Type") != "application/json; charset=utf-8" || r.header.Get("Client-Request-Id") != cid {
		t.Errorf("headers %v", r.header)
	}
	var tok string
	if err := json.Unmarshal(raw["access_token"], &tok); err != nil {
		t.Fatal(err)
	}
	c, err := e.VerifyAccessToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Audience != "https://management.azure.com" || c.AppID != strings.ToUpper(testClientID) || !c.IssuedAt.Equal(fixedNow) ||
		!c.NotBefore.Equal(fixedNow) || !c.ExpiresAt.Equal(fixedNow.Add(time.Hour)) || c.KeyID == "" {
		t.Errorf("claims %+v", c)
	}
	if n := e.TokenCalls(testClientID, "https://management.azure.com/.default"); n != 1 {
		t.Errorf("TokenCalls with other case = %d, want 1", n)
	}
	// Two tokens differ.
	r2 := post(t, e, testTenant, tokenForm(testClientID, saToken(t, e), "https://management.azure.com/.default"))
	var b2 tokenResponse
	if err := json.Unmarshal([]byte(r2.body), &b2); err != nil {
		t.Fatal(err)
	}
	c2, err := e.VerifyAccessToken(b2.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if b2.AccessToken == tok || c2.UniqueTokenID == c.UniqueTokenID || c2.JWTID == c.JWTID {
		t.Error("two tokens share a value")
	}
	// A token with a bad signature is rejected.
	parts := strings.Split(tok, ".")
	if _, err := e.VerifyAccessToken(parts[0] + "." + parts[1] + "." + strings.Split(b2.AccessToken, ".")[2]); err == nil {
		t.Error("VerifyAccessToken accepted a foreign signature")
	}
}

func TestTokenLifetimeAndTime(t *testing.T) {
	now := fixedNow
	var mu sync.Mutex
	e := start(t, func(o *Options) {
		o.TokenLifetime = 90 * time.Second
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	r := post(t, e, testTenant, tokenForm(testClientID, saToken(t, e), vaultScope))
	var b tokenResponse
	if err := json.Unmarshal([]byte(r.body), &b); err != nil || b.ExpiresIn != 89 {
		t.Fatalf("body %s (%v)", r.body, err)
	}
	c, err := e.VerifyAccessToken(b.AccessToken)
	if err != nil || !c.ExpiresAt.Equal(fixedNow.Add(90*time.Second)) {
		t.Fatalf("claims %+v, %v", c, err)
	}
	mu.Lock()
	now = now.Add(90 * time.Second)
	mu.Unlock()
	if _, err := e.VerifyAccessToken(b.AccessToken); err == nil {
		t.Error("VerifyAccessToken accepted an expired token")
	}
}

func TestConcurrentCounts(t *testing.T) {
	e := start(t, nil)
	assertion := saToken(t, e)
	scopes := []string{vaultScope, "https://storage.azure.com/.default"}
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, e, testTenant, tokenForm(testClientID, assertion, scopes[i%2]))
			if r.status != http.StatusOK {
				errs <- r.body
			}
		}()
	}
	wg.Wait()
	close(errs)
	for b := range errs {
		t.Errorf("failed: %s", b)
	}
	if a, b, n := e.TokenCalls(testClientID, scopes[0]), e.TokenCalls(testClientID, scopes[1]), e.TotalTokenCalls(); a != 20 || b != 20 || n != 40 {
		t.Errorf("counts %d, %d, total %d; want 20, 20, 40", a, b, n)
	}
	if n := e.IssuerFetches(); n != 1 {
		t.Errorf("IssuerFetches = %d, want 1", n)
	}
	e.ResetCounts()
	if e.TotalTokenCalls() != 0 || e.TokenCalls(testClientID, scopes[0]) != 0 || len(e.Calls()) != 0 {
		t.Error("ResetCounts left counts")
	}
}

func TestUnknownKeyIDRefetchesJWKS(t *testing.T) {
	e := start(t, nil)
	if r := post(t, e, testTenant, tokenForm(testClientID, saToken(t, e), vaultScope)); r.status != 200 {
		t.Fatal(r.body)
	}
	if r := post(t, e, testTenant, tokenForm(testClientID, mint(t, e, TokenSpec{KeyID: "new-key"}), vaultScope)); r.status != 401 {
		t.Fatal(r.body)
	}
	if n := e.IssuerFetches(); n != 2 {
		t.Errorf("IssuerFetches = %d, want 2 (an unknown kid refetches)", n)
	}
}

func TestRuntimeAppChanges(t *testing.T) {
	e := start(t, nil)
	tok := saToken(t, e)
	e.RemoveFederations(testClientID)
	if r := post(t, e, testTenant, tokenForm(testClientID, tok, vaultScope)); r.status != 400 || decodeError(t, r.body).ErrorCodes[0] != 70021 {
		t.Fatalf("after RemoveFederations: %d %s", r.status, r.body)
	}
	e.AddApp(App{ClientID: testClientID, Federations: []Federation{{Subject: testSubject}}})
	if r := post(t, e, testTenant, tokenForm(testClientID, tok, vaultScope)); r.status != 200 {
		t.Fatalf("after AddApp: %d %s", r.status, r.body)
	}
	a, ok := e.App(testClientID)
	if !ok || a.ObjectID != derivedObjectID(testClientID) || a.Federations[0].Issuer != e.IssuerURL() || a.Federations[0].Audience != "api://AzureADTokenExchange" {
		t.Errorf("app defaults not applied: %+v", a)
	}
	e.RemoveApp(testClientID)
	if r := post(t, e, testTenant, tokenForm(testClientID, tok, vaultScope)); r.status != 400 || decodeError(t, r.body).ErrorCodes[0] != 700016 {
		t.Fatalf("after RemoveApp: %d %s", r.status, r.body)
	}
	if err := e.AddAppErr(App{}); err == nil {
		t.Error("AddAppErr accepted an app without client id")
	}
}

func TestHostileTokenRequests(t *testing.T) {
	e := start(t, nil)
	send := func(ctype, body string) reply {
		req, err := http.NewRequest(http.MethodPost, e.TokenEndpoint(), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ctype)
		return do(t, e.HTTPClient(), req)
	}
	cases := []struct {
		name, ctype, body string
		status, code      int
	}{
		{"JSON body", "application/json", `{"grant_type":"client_credentials"}`, 400, 900144},
		{"body over 1 MB", "application/x-www-form-urlencoded", "grant_type=" + strings.Repeat("a", 2<<20), 400, 900144},
		{"bad percent-encoding", "application/x-www-form-urlencoded", "grant_type=%zz&client_id=x", 400, 900144},
		{"empty body", "application/x-www-form-urlencoded", "", 400, 900144},
		{"NUL in client id", "application/x-www-form-urlencoded", "grant_type=client_credentials&scope=https://x/.default&client_id=%00", 400, 700016},
		{"client id with path syntax", "application/x-www-form-urlencoded", "grant_type=client_credentials&scope=https://x/.default&client_id=../../admin", 400, 700016},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := send(tc.ctype, tc.body)
			if eb := decodeError(t, r.body); r.status != tc.status || eb.ErrorCodes[0] != tc.code {
				t.Errorf("%d %s; want %d AADSTS%d", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if n := e.TotalTokenCalls(); n != len(cases) {
		t.Errorf("TotalTokenCalls = %d, want %d", n, len(cases))
	}
}

func TestRequestLog(t *testing.T) {
	e := start(t, func(o *Options) {
		o.Now = func() time.Time { return fixedNow }
		o.Apps = append(o.Apps, App{ClientID: otherClientID})
	})
	tok := saToken(t, e)
	p, err := parseJWT(tok)
	if err != nil {
		t.Fatal(err)
	}
	jti, _, _ := p.stringClaim("jti")
	post(t, e, testTenant, tokenForm(testClientID, tok, vaultScope))
	post(t, e, testTenant, tokenForm(otherClientID, tok, vaultScope))
	e.SetFault(Fault{Status: 503, Count: 1})
	post(t, e, testTenant, tokenForm(testClientID, "garbage", vaultScope))
	want := []TokenRequest{
		{Time: fixedNow, ClientID: testClientID, Scope: vaultScope, AssertionIssuer: e.IssuerURL(), AssertionSubject: testSubject, AssertionID: jti, Status: 200},
		{Time: fixedNow, ClientID: otherClientID, Scope: vaultScope, AssertionIssuer: e.IssuerURL(), AssertionSubject: testSubject, AssertionID: jti, Status: 400, ErrorCode: 70021},
		{Time: fixedNow, ClientID: testClientID, Scope: vaultScope, Status: 503, Fault: true},
	}
	got := e.Requests()
	if len(got) != len(want) {
		t.Fatalf("got %d requests: %+v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	for i := range maxRequestLog + 5 {
		e.recordRequest(TokenRequest{Status: i})
	}
	if got := e.Requests(); len(got) != maxRequestLog || got[0].Status != 5 || got[maxRequestLog-1].Status != maxRequestLog+4 {
		t.Errorf("ring holds %d, first %d", len(got), got[0].Status)
	}
	e.ResetCounts()
	if len(e.Requests()) != 0 {
		t.Error("ResetCounts kept the request log")
	}
}

func TestIssuerKeyRotation(t *testing.T) {
	e := start(t, func(o *Options) { o.EnableAdmin = true })
	before := saToken(t, e)
	if r := post(t, e, testTenant, tokenForm(testClientID, before, vaultScope)); r.status != 200 {
		t.Fatal(r.body)
	}
	r := admin(t, e, "POST", "/admin/issuer/rotate-key", "")
	var rot struct{ Kid string }
	if err := json.Unmarshal([]byte(r.body), &rot); err != nil || r.status != 200 || rot.Kid == "" {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	after := saToken(t, e)
	p, err := parseJWT(after)
	if err != nil || p.header.Kid != rot.Kid {
		t.Fatalf("new token kid %q, want %q (%v)", p.header.Kid, rot.Kid, err)
	}
	for name, tok := range map[string]string{"new key": after, "old key": before} {
		if r := post(t, e, testTenant, tokenForm(testClientID, tok, vaultScope)); r.status != 200 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if n := e.IssuerFetches(); n != 2 {
		t.Errorf("IssuerFetches = %d, want 2 (the new kid refetches once)", n)
	}
	r = get(t, e, e.IssuerURL()+"/openid/v1/jwks")
	if strings.Count(r.body, `"kid"`) != 2 {
		t.Errorf("JWKS after rotation: %s", r.body)
	}
}
