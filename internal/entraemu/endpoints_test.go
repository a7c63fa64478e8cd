package entraemu

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTenantDiscovery(t *testing.T) {
	e := start(t, nil)
	r := get(t, e, e.AuthorityHost()+testTenant+"/v2.0/.well-known/openid-configuration")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil {
		t.Fatal(err)
	}
	base := e.AuthorityHost() + testTenant
	for k, v := range map[string]string{
		"issuer":                 base + "/v2.0",
		"token_endpoint":         base + "/oauth2/v2.0/token",
		"authorization_endpoint": base + "/oauth2/v2.0/authorize",
		"jwks_uri":               base + "/discovery/v2.0/keys",
	} {
		if doc[k] != v {
			t.Errorf("%s = %v, want %s", k, doc[k], v)
		}
	}
	r = get(t, e, e.AuthorityHost()+"other-tenant/v2.0/.well-known/openid-configuration")
	if eb := decodeError(t, r.body); r.status != 400 || eb.Error != "invalid_tenant" || eb.ErrorCodes[0] != 90002 {
		t.Errorf("unknown tenant: %d %s", r.status, r.body)
	}
	if n := e.DiscoveryCalls(); n != 2 {
		t.Errorf("DiscoveryCalls = %d, want 2", n)
	}
	if n := e.TotalTokenCalls(); n != 0 {
		t.Errorf("discovery counted as token calls: %d", n)
	}
	// The token-signing JWKS verifies issued tokens.
	r = get(t, e, base+"/discovery/v2.0/keys")
	var set jwks
	if err := json.Unmarshal([]byte(r.body), &set); err != nil || len(set.Keys) != 1 || set.Keys[0].Kid != e.tokenKID {
		t.Errorf("token JWKS %s (%v)", r.body, err)
	}
}

func TestAuthorityHostForm(t *testing.T) {
	e := start(t, nil)
	if !strings.HasPrefix(e.AuthorityHost(), "https://localhost:") || !strings.HasSuffix(e.AuthorityHost(), "/") {
		t.Errorf("AuthorityHost %q", e.AuthorityHost())
	}
	if !strings.HasPrefix(e.IssuerURL(), "http://127.0.0.1:") || strings.HasSuffix(e.IssuerURL(), "/") {
		t.Errorf("IssuerURL %q", e.IssuerURL())
	}
	if e.Authority() != e.AuthorityHost()+testTenant || e.TokenEndpoint() != e.Authority()+"/oauth2/v2.0/token" {
		t.Errorf("Authority %q TokenEndpoint %q", e.Authority(), e.TokenEndpoint())
	}
	// The certificate covers 127.0.0.1 as well as the host name.
	u := strings.Replace(e.AuthorityHost(), "localhost", "127.0.0.1", 1)
	if r := get(t, e, u+testTenant+"/v2.0/.well-known/openid-configuration"); !strings.Contains(r.body, `"issuer":"`+u+testTenant+`/v2.0"`) {
		t.Errorf("discovery by IP: %s", r.body)
	}
	if !strings.Contains(string(e.CACertPEM()), "BEGIN CERTIFICATE") || e.CertPool() == nil {
		t.Error("no CA")
	}
	if got := hostPort("entra.test", 443, 443); got != "entra.test" {
		t.Errorf("hostPort default port = %q", got)
	}
	if got := hostPort("::1", 8443, 443); got != "[::1]:8443" {
		t.Errorf("hostPort IPv6 = %q", got)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Host: "a/b"}, {Host: "user@host"}, {Tenant: "a/b"}, {TokenPadding: -1}, {Addr: "256.0.0.1:0"},
	} {
		if e, err := Start(o); err == nil {
			e.Close()
			t.Errorf("Start(%+v) accepted", o)
		}
	}
}

func TestIssuerEndpointsAndServiceAccountToken(t *testing.T) {
	e := start(t, func(o *Options) { o.Now = func() time.Time { return fixedNow } })
	r := get(t, e, e.IssuerURL()+"/.well-known/openid-configuration")
	want := fmt.Sprintf(`{"id_token_signing_alg_values_supported":["RS256"],"issuer":"%s","jwks_uri":"%s/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"]}`,
		e.IssuerURL(), e.IssuerURL())
	if r.status != 200 || r.body != want {
		t.Errorf("issuer discovery %d\n got %s\nwant %s", r.status, r.body, want)
	}
	r = get(t, e, e.IssuerURL()+"/openid/v1/jwks")
	var set jwks
	if err := json.Unmarshal([]byte(r.body), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("issuer JWKS %s (%v)", r.body, err)
	}
	k := set.Keys[0]
	pub, err := k.rsaKey()
	if err != nil || k.Alg != "RS256" || k.Use != "sig" {
		t.Fatalf("key %+v: %v", k, err)
	}

	tok, err := e.MintServiceAccountToken("apps", "reader", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseJWT(tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.header.Kid != k.Kid || p.header.Alg != "RS256" || p.verifyRS256(pub) != nil {
		t.Errorf("token header %+v does not verify with the published key", p.header)
	}
	var c struct {
		Aud  []string `json:"aud"`
		Exp  int64    `json:"exp"`
		Iat  int64    `json:"iat"`
		Nbf  int64    `json:"nbf"`
		Iss  string   `json:"iss"`
		Sub  string   `json:"sub"`
		JTI  string   `json:"jti"`
		Kube struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	b, _ := json.Marshal(p.claims)
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Aud) != 1 || c.Aud[0] != "api://AzureADTokenExchange" || c.Iss != e.IssuerURL() || c.Sub != "system:serviceaccount:apps:reader" ||
		c.Iat != fixedNow.Unix() || c.Nbf != c.Iat || c.Exp != c.Iat+7200 || c.JTI == "" || c.Kube.Namespace != "apps" || c.Kube.ServiceAccount.Name != "reader" {
		t.Errorf("claims %+v", c)
	}
	for _, bad := range [][2]string{{"", "sa"}, {"ns", ""}, {"a:b", "sa"}} {
		if _, err := e.MintServiceAccountToken(bad[0], bad[1], 0); err == nil {
			t.Errorf("MintServiceAccountToken(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestIssuerHostOption(t *testing.T) {
	e := start(t, func(o *Options) { o.Host = "localhost"; o.IssuerHost = "localhost" })
	if !strings.HasPrefix(e.IssuerURL(), "http://localhost:") {
		t.Fatalf("IssuerURL %q", e.IssuerURL())
	}
	// The federation defaults to the issuer URL, so the default token works.
	if r := post(t, e, testTenant, tokenForm(testClientID, saToken(t, e), vaultScope)); r.status != 200 {
		t.Errorf("token with a host-named issuer: %d %s", r.status, r.body)
	}
}

func TestResourceManagerListings(t *testing.T) {
	e := start(t, nil)
	for _, p := range []string{"subscriptions?api-version=2022-12-01", "tenants?api-version=2022-12-01"} {
		r := get(t, e, e.AuthorityHost()+p)
		if r.status != 200 || r.body != `{"value":[]}` || r.header.Get("Content-Type") != jsonContentType {
			t.Errorf("%s: %d %q", p, r.status, r.body)
		}
	}
	r := get(t, e, e.AuthorityHost()+"metadata/endpoints?api-version=2015-01-01")
	var old struct {
		Authentication struct {
			LoginEndpoint string   `json:"loginEndpoint"`
			Audiences     []string `json:"audiences"`
		} `json:"authentication"`
	}
	if err := json.Unmarshal([]byte(r.body), &old); err != nil || old.Authentication.LoginEndpoint != e.AuthorityHost() || len(old.Authentication.Audiences) == 0 {
		t.Errorf("metadata 2015: %s (%v)", r.body, err)
	}
	r = get(t, e, e.AuthorityHost()+"metadata/endpoints?api-version=2022-09-01")
	var clouds []map[string]any
	if err := json.Unmarshal([]byte(r.body), &clouds); err != nil || len(clouds) != 1 || clouds[0]["resourceManager"] != e.AuthorityHost() {
		t.Errorf("metadata 2022: %s (%v)", r.body, err)
	}
	r = get(t, e, e.AuthorityHost()+"providers/Microsoft.Whatever?api-version=1")
	if r.status != 404 || !strings.Contains(r.body, `"code":"NotFound"`) {
		t.Errorf("unknown path: %d %s", r.status, r.body)
	}
}

// admin sends an admin request to the issuer listener.
func admin(t *testing.T, e *Emulator, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, e.IssuerURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return do(t, &http.Client{}, req)
}

func TestAdminAPI(t *testing.T) {
	e := start(t, func(o *Options) { o.EnableAdmin = true })
	assertion := saToken(t, e)

	if r := admin(t, e, "POST", "/admin/fault", `{"status":503,"retry_after":"3s","count":1}`); r.status != 200 ||
		r.body != `{"status":503,"retry_after":"3s","count":1}` {
		t.Fatalf("set fault: %d %s", r.status, r.body)
	}
	if r := post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)); r.status != 503 || r.header.Get("Retry-After") != "3" {
		t.Errorf("faulted: %d %v", r.status, r.header)
	}
	if r := post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)); r.status != 200 {
		t.Errorf("after count: %d", r.status)
	}
	if r := admin(t, e, "GET", "/admin/fault", ""); r.body != `{}` {
		t.Errorf("fault after count: %s", r.body)
	}
	if r := admin(t, e, "POST", "/admin/fault", `{"status":"x"}`); r.status != 400 {
		t.Errorf("bad fault JSON: %d", r.status)
	}
	if r := admin(t, e, "POST", "/admin/fault", `{"body":"xml"}`); r.status != 400 {
		t.Errorf("invalid fault: %d", r.status)
	}
	admin(t, e, "POST", "/admin/fault", `{"status":500}`)
	if r := admin(t, e, "DELETE", "/admin/fault", ""); r.status != 200 || r.body != `{}` {
		t.Errorf("clear fault: %d %s", r.status, r.body)
	}

	q := url.Values{"client_id": {testClientID}, "scope": {vaultScope}}
	r := admin(t, e, "GET", "/admin/calls?"+q.Encode(), "")
	var calls struct {
		ClientID   string      `json:"client_id"`
		Scope      string      `json:"scope"`
		Calls      int         `json:"calls"`
		Total      int         `json:"total"`
		Discovery  int         `json:"discovery"`
		ByIdentity []CallCount `json:"by_identity"`
	}
	if err := json.Unmarshal([]byte(r.body), &calls); err != nil || calls.Calls != 2 || calls.Total != 2 || calls.Scope != vaultScope ||
		len(calls.ByIdentity) != 1 || calls.ByIdentity[0] != (CallCount{testClientID, vaultScope, 2}) {
		t.Errorf("calls: %s (%v)", r.body, err)
	}
	if r := admin(t, e, "GET", "/admin/requests", ""); r.status != 200 || strings.Count(r.body, `"client_id":"`+testClientID+`"`) != 2 || !strings.Contains(r.body, `"status":503`) {
		t.Errorf("requests: %d %s", r.status, r.body)
	}
	if r := admin(t, e, "POST", "/admin/calls/reset", ""); r.status != 200 || e.TotalTokenCalls() != 0 {
		t.Errorf("reset: %d %s", r.status, r.body)
	}

	r = admin(t, e, "POST", "/admin/token?namespace=team&sa=api&lifetime=30m", "")
	if r.status != 200 || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("mint: %d %s", r.status, r.body)
	}
	teamToken := r.body
	p, err := parseJWT(teamToken)
	if err != nil || p.claims["sub"] != "system:serviceaccount:team:api" {
		t.Fatalf("minted %v: %v", p, err)
	}
	if r := admin(t, e, "POST", "/admin/token?namespace=team&sa=api&lifetime=soon", ""); r.status != 400 {
		t.Errorf("bad lifetime: %d", r.status)
	}
	if r := admin(t, e, "POST", "/admin/token", ""); r.status != 400 {
		t.Errorf("no subject: %d", r.status)
	}

	const teamID = "77777777-7777-7777-7777-777777777777"
	r = admin(t, e, "POST", "/admin/apps", `{"client_id":"`+teamID+`","object_id":"o7","federations":[{"subject":"system:serviceaccount:team:api"}]}`)
	want := `{"client_id":"` + teamID + `","object_id":"o7","resource_id":"","federations":[{"issuer":"` + e.IssuerURL() + `","subject":"system:serviceaccount:team:api","audience":"api://AzureADTokenExchange"}]}`
	if r.status != 200 || r.body != want {
		t.Fatalf("add app: %d\n got %s\nwant %s", r.status, r.body, want)
	}
	if r := post(t, e, testTenant, tokenForm(teamID, teamToken, vaultScope)); r.status != 200 {
		t.Errorf("new app: %d %s", r.status, r.body)
	}
	if r := admin(t, e, "POST", "/admin/apps", `{"object_id":"x"}`); r.status != 400 {
		t.Errorf("app without id: %d", r.status)
	}
	if r := admin(t, e, "GET", "/admin/apps", ""); !strings.Contains(r.body, teamID) || !strings.Contains(r.body, testClientID) {
		t.Errorf("list apps: %s", r.body)
	}
	if r := admin(t, e, "DELETE", "/admin/apps/"+teamID+"/federations", ""); r.status != 200 || !strings.Contains(r.body, `"federations":[]`) {
		t.Errorf("remove federations: %d %s", r.status, r.body)
	}
	if r := post(t, e, testTenant, tokenForm(teamID, teamToken, vaultScope)); decodeError(t, r.body).ErrorCodes[0] != 70021 {
		t.Errorf("after removing federations: %s", r.body)
	}
	if r := admin(t, e, "DELETE", "/admin/apps/"+teamID, ""); r.status != 200 {
		t.Errorf("remove app: %d", r.status)
	}
	if r := admin(t, e, "DELETE", "/admin/apps/"+teamID, ""); r.status != 404 {
		t.Errorf("remove missing app: %d", r.status)
	}
	if r := admin(t, e, "POST", "/admin/invalid-resources?resource=https://vault.azure.net&invalid=true", ""); r.status != 200 {
		t.Errorf("invalid resource: %d", r.status)
	}
	if r := post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)); decodeError(t, r.body).ErrorCodes[0] != 500011 {
		t.Errorf("after marking invalid: %s", r.body)
	}
	if r := admin(t, e, "POST", "/admin/invalid-resources?resource=x", ""); r.status != 400 {
		t.Errorf("invalid-resources without flag: %d", r.status)
	}
	r = admin(t, e, "GET", "/admin/info", "")
	var info Info
	if err := json.Unmarshal([]byte(r.body), &info); err != nil || info.AuthorityHost != e.AuthorityHost() || info.IssuerURL != e.IssuerURL() ||
		info.Tenant != testTenant || info.CACertPEM != string(e.CACertPEM()) {
		t.Errorf("info: %s (%v)", r.body, err)
	}
	if r := admin(t, e, "GET", "/admin/nope", ""); r.status != 404 {
		t.Errorf("unknown admin route: %d", r.status)
	}
}

func TestAdminDisabledByDefault(t *testing.T) {
	e := start(t, nil)
	if r := admin(t, e, "GET", "/admin/info", ""); r.status != 404 || strings.Contains(r.body, "authority_host") {
		t.Errorf("admin served without EnableAdmin: %d %s", r.status, r.body)
	}
}
