package entraemu

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
)

// newMSAL builds an MSAL Go confidential client for clientID against the
// emulator, with an assertion callback that mints a fresh service-account
// token each time and counts its calls.
func newMSAL(t *testing.T, e *Emulator, clientID string, calls *atomic.Int32) confidential.Client {
	t.Helper()
	cred := confidential.NewCredFromAssertionCallback(func(ctx context.Context, o confidential.AssertionRequestOptions) (string, error) {
		calls.Add(1)
		if o.ClientID != clientID {
			return "", errors.New("callback got client id " + o.ClientID)
		}
		if o.TokenEndpoint != e.TokenEndpoint() {
			return "", errors.New("callback got token endpoint " + o.TokenEndpoint)
		}
		return e.MintServiceAccountToken("default", "workload", 0)
	})
	c, err := confidential.New(e.AuthorityHost()+testTenant, clientID, cred,
		confidential.WithInstanceDiscovery(false),
		confidential.WithHTTPClient(e.HTTPClient()))
	if err != nil {
		t.Fatalf("confidential.New: %v", err)
	}
	return c
}

func TestMSALConfidentialGetsVerifiedToken(t *testing.T) {
	e := start(t, nil)
	var cb atomic.Int32
	c := newMSAL(t, e, testClientID, &cb)
	ctx := context.Background()

	res, err := c.AcquireTokenByCredential(ctx, []string{vaultScope})
	if err != nil {
		t.Fatalf("AcquireTokenByCredential: %v", err)
	}
	claims, err := e.VerifyAccessToken(res.AccessToken)
	if err != nil {
		t.Fatalf("VerifyAccessToken: %v", err)
	}
	want := map[string]string{
		"aud": "https://vault.azure.net", "iss": "https://sts.windows.net/" + testTenant + "/",
		"appid": testClientID, "azp": testClientID, "tid": testTenant, "oid": testObjectID,
		"sub": testObjectID, "xms_mirid": testMIRID,
	}
	got := map[string]string{
		"aud": claims.Audience, "iss": claims.Issuer, "appid": claims.AppID, "azp": claims.AuthorizedParty,
		"tid": claims.TenantID, "oid": claims.ObjectID, "sub": claims.Subject, "xms_mirid": claims.ResourceID,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("claim %s = %q, want %q", k, got[k], v)
		}
	}
	if d := claims.ExpiresAt.Sub(claims.IssuedAt); d.Hours() != 1 {
		t.Errorf("token lifetime %v, want 1h", d)
	}
	if n := e.TokenCalls(testClientID, vaultScope); n != 1 {
		t.Errorf("TokenCalls = %d, want 1", n)
	}
	if n := e.DiscoveryCalls(); n != 1 {
		t.Errorf("DiscoveryCalls = %d, want 1", n)
	}
	if n := e.IssuerFetches(); n != 1 {
		t.Errorf("IssuerFetches = %d, want 1 (JWKS fetched over HTTP)", n)
	}

	// MSAL serves the second call from its own cache: no new POST.
	if _, err := c.AcquireTokenByCredential(ctx, []string{vaultScope}); err != nil {
		t.Fatal(err)
	}
	if n := e.TotalTokenCalls(); n != 1 {
		t.Errorf("TotalTokenCalls after a cached call = %d, want 1", n)
	}

	// The trailing-slash resource keeps its slash in "aud"; the JWKS comes
	// from the cache.
	res, err = c.AcquireTokenByCredential(ctx, []string{"https://database.windows.net//.default"})
	if err != nil {
		t.Fatal(err)
	}
	claims, err = e.VerifyAccessToken(res.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Audience != "https://database.windows.net/" {
		t.Errorf("aud = %q, want https://database.windows.net/", claims.Audience)
	}
	if n := e.TokenCalls(testClientID, "https://database.windows.net//.default"); n != 1 {
		t.Errorf("TokenCalls(database) = %d, want 1", n)
	}
	if n := e.IssuerFetches(); n != 1 {
		t.Errorf("IssuerFetches = %d, want 1 (cached)", n)
	}
	if n := cb.Load(); n != 2 {
		t.Errorf("assertion callback ran %d times, want 2", n)
	}
}

func TestMSALSeesAADSTSErrors(t *testing.T) {
	e := start(t, nil)
	var cb atomic.Int32
	c := newMSAL(t, e, "33333333-3333-3333-3333-333333333333", &cb)
	_, err := c.AcquireTokenByCredential(context.Background(), []string{vaultScope})
	var ce msalerrors.CallErr
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a CallErr", err)
	}
	if ce.Resp.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Errorf("got status %d, error %v; want 400 with AADSTS700016", ce.Resp.StatusCode, err)
	}
}

func TestMSALLargePaddedToken(t *testing.T) {
	e := start(t, func(o *Options) { o.TokenPadding = 6000 })
	var cb atomic.Int32
	res, err := newMSAL(t, e, testClientID, &cb).AcquireTokenByCredential(context.Background(), []string{vaultScope})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AccessToken) <= 8000 {
		t.Errorf("padded token is %d bytes, want more than 8000", len(res.AccessToken))
	}
	if _, err := e.VerifyAccessToken(res.AccessToken); err != nil {
		t.Error(err)
	}
}

// TestMSALDefaultAuthorityWithInstanceDiscovery runs MSAL with instance
// discovery on and the public-cloud authority host, with every connection
// dialled to the emulator (as a hosts entry would do in a network
// namespace): instance discovery, tenant discovery and the token request all
// reach the emulator, whose certificate covers the extra host name.
func TestMSALDefaultAuthorityWithInstanceDiscovery(t *testing.T) {
	e := start(t, func(o *Options) { o.ExtraHosts = []string{"login.microsoftonline.com"} })
	u, err := url.Parse(e.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", u.Port())
	hc := e.HTTPClient()
	tr := hc.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	defer hc.CloseIdleConnections()
	cred := confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
		return e.MintServiceAccountToken("default", "workload", 0)
	})
	c, err := confidential.New("https://login.microsoftonline.com/"+testTenant, testClientID, cred, confidential.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.AcquireTokenByCredential(context.Background(), []string{vaultScope})
	if err != nil {
		t.Fatalf("AcquireTokenByCredential: %v", err)
	}
	if claims, err := e.VerifyAccessToken(res.AccessToken); err != nil || claims.AppID != testClientID {
		t.Fatalf("claims %+v, %v", claims, err)
	}
	if i, d, n := e.InstanceDiscoveryCalls(), e.DiscoveryCalls(), e.TotalTokenCalls(); i < 1 || d != 1 || n != 1 {
		t.Errorf("instance discovery %d, tenant discovery %d, token calls %d; want >=1, 1, 1", i, d, n)
	}
}

func TestInstanceDiscoveryErrors(t *testing.T) {
	e := start(t, nil)
	for _, q := range []string{"", "?authorization_endpoint=http://x/t/oauth2/v2.0/authorize", "?authorization_endpoint=https://x/", "?authorization_endpoint=%zz"} {
		r := get(t, e, e.AuthorityHost()+"common/discovery/instance"+q)
		if eb := decodeError(t, r.body); r.status != 400 || eb.Error != "invalid_instance" || eb.ErrorCodes[0] != CodeInvalidInstance {
			t.Errorf("%q: %d %s", q, r.status, r.body)
		}
	}
	r := get(t, e, e.AuthorityHost()+"common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.example/t9/oauth2/v2.0/authorize")
	want := `{"api-version":"1.1","metadata":[{"aliases":["login.example"],"preferred_cache":"login.example","preferred_network":"login.example"}],"tenant_discovery_endpoint":"https://login.example/t9/v2.0/.well-known/openid-configuration"}`
	if r.status != 200 || r.body != want {
		t.Errorf("instance discovery\n got %d %s\nwant %s", r.status, r.body, want)
	}
}
