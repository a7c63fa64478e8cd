package entraemu

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxFormBytes bounds a token request body.
const maxFormBytes = 1 << 20

// isOIDCScope reports whether s is one of the scopes MSAL appends to every
// request; they say nothing about the resource and are ignored.
func isOIDCScope(s string) bool {
	switch strings.ToLower(s) {
	case "openid", "offline_access", "profile", "email":
		return true
	}
	return false
}

// entraHandler routes the TLS listener.
func (e *Emulator) entraHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.handleDiscovery)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.handleToken)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.handleTokenKeys)
	mux.HandleFunc("GET /common/discovery/instance", e.handleInstanceDiscovery)
	mux.HandleFunc("GET /subscriptions", e.handleEmptyList)
	mux.HandleFunc("GET /tenants", e.handleEmptyList)
	mux.HandleFunc("GET /metadata/endpoints", e.handleCloudMetadata)
	mux.HandleFunc("/", e.handleUnknown)
	return e.logRequests("entra", mux)
}

// logRequests logs every request at V(1).
func (e *Emulator) logRequests(listener string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.log.V(1).Info("request", "listener", listener, "method", r.Method, "path", r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

// handleUnknown answers paths the emulator does not implement with an
// ARM-shaped 404, and logs them at info level so test authors can see what a
// client asked for.
func (e *Emulator) handleUnknown(w http.ResponseWriter, r *http.Request) {
	e.log.Info("unhandled request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery, "userAgent", r.UserAgent())
	writeJSON(w, http.StatusNotFound, map[string]any{
		"error": map[string]string{
			"code":    "NotFound",
			"message": fmt.Sprintf("The emulator does not implement %s %s.", r.Method, r.URL.Path),
		},
	})
}

// knownTenant reports whether the path's tenant segment is ours.
func (e *Emulator) knownTenant(t string) bool { return strings.EqualFold(t, e.tenant) }

// tenantNotFound builds the AADSTS90002 error for an unknown tenant.
func tenantNotFound(t string) *aadError {
	return &aadError{http.StatusBadRequest, "invalid_tenant", CodeTenantNotFound,
		fmt.Sprintf("Tenant '%s' not found. Check that the tenant id is right and that you are signing in to the right cloud.", t)}
}

// baseURL returns the scheme and host the client used, so discovery
// documents name the host the client reached (and MSAL's authority/issuer
// check passes); it falls back to the configured host.
func (e *Emulator) baseURL(r *http.Request) string {
	if h := r.Host; h != "" && len(h) <= 255 && !strings.ContainsAny(h, "/\\@?#% \t\"'<>") {
		return "https://" + h
	}
	return e.authorityBase
}

// handleDiscovery serves the tenant's OpenID configuration, as MSAL fetches
// before its first token request.
func (e *Emulator) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.discoveryCalls++
	e.mu.Unlock()
	t := r.PathValue("tenant")
	if !e.knownTenant(t) {
		writeAADError(w, r, e.now(), tenantNotFound(t))
		return
	}
	base := e.baseURL(r) + "/" + e.tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/v2.0",
		"request_uri_parameter_supported":       false,
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"claims_supported":                      []string{"sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"},
		"tenant_region_scope":                   "NA",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
	})
}

// handleInstanceDiscovery answers MSAL's instance discovery
// (GET /common/discovery/instance?api-version=1.1&authorization_endpoint=...),
// which MSAL sends to login.microsoftonline.com unless instance discovery is
// disabled. Serving it lets a client with the default authority host work
// when that name resolves to the emulator (see Options.ExtraHosts). The
// tenant discovery endpoint it returns is on the host and tenant of the
// authorization endpoint, as Entra's is.
func (e *Emulator) handleInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.instanceDiscoveryCalls++
	e.mu.Unlock()
	ae, err := url.Parse(r.URL.Query().Get("authorization_endpoint"))
	segs := []string{}
	if err == nil {
		segs = strings.Split(strings.Trim(ae.Path, "/"), "/")
	}
	if err != nil || ae.Scheme != "https" || ae.Host == "" || len(segs) == 0 || segs[0] == "" {
		writeAADError(w, r, e.now(), &aadError{http.StatusBadRequest, "invalid_instance", CodeInvalidInstance,
			"Unknown or invalid instance: the authorization_endpoint parameter is missing or not an https URL with a tenant."})
		return
	}
	host := ae.Host
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + host + "/" + segs[0] + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": host,
			"preferred_cache":   host,
			"aliases":           []string{host},
		}},
	})
}

// handleTokenKeys serves the JWKS of the access-token signing key.
func (e *Emulator) handleTokenKeys(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	if !e.knownTenant(t) {
		writeAADError(w, r, e.now(), tenantNotFound(t))
		return
	}
	writeJSON(w, http.StatusOK, jwks{Keys: []jwk{publicJWK(&e.tokenKey.PublicKey, e.tokenKID)}})
}

// tokenResponse is Entra's v2 client-credentials success body.
type tokenResponse struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	ExtExpiresIn int64  `json:"ext_expires_in"`
	AccessToken  string `json:"access_token"`
}

// resourceScope extracts the one resource scope from a scope parameter,
// ignoring the OIDC scopes. The second result is the key used for call
// counting even when the scope is invalid.
func resourceScope(scope string) (string, string, *aadError) {
	var res []string
	for _, s := range strings.Fields(scope) {
		if !isOIDCScope(s) {
			res = append(res, s)
		}
	}
	key := strings.Join(res, " ")
	if strings.TrimSpace(scope) == "" {
		return "", key, &aadError{http.StatusBadRequest, "invalid_request", CodeMissingParameter,
			"The request body must contain the following parameter: 'scope'."}
	}
	if len(res) != 1 || !strings.HasSuffix(res[0], "/.default") || len(res[0]) == len("/.default") {
		return "", key, &aadError{http.StatusBadRequest, "invalid_scope", CodeInvalidScope,
			fmt.Sprintf("The provided value for the input parameter 'scope' is not valid. The scope %s is not valid: a client credential request takes exactly one scope of the form <resource>/.default.", scope)}
	}
	return res[0], key, nil
}

// handleToken is the token endpoint: count, apply faults, validate the
// request, verify the client assertion, issue an access token. It keeps
// the number of requests in flight (MaxInFlight) until it returns,
// injected latency included.
func (e *Emulator) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	formErr := r.ParseForm()
	clientID := r.PostForm.Get("client_id")
	scope, countKey, scopeErr := resourceScope(r.PostForm.Get("scope"))

	e.mu.Lock()
	e.totalCalls++
	e.inFlight++
	e.maxInFlight = max(e.maxInFlight, e.inFlight)
	defer func() {
		e.mu.Lock()
		e.inFlight--
		e.mu.Unlock()
	}()
	if formErr == nil {
		e.calls[callKey{strings.ToLower(clientID), countKey}]++
	}
	fault, faulted := e.takeFaultLocked(clientID, countKey)
	e.mu.Unlock()

	rec := TokenRequest{Time: e.now(), ClientID: clientID, Scope: countKey, Fault: faulted}
	if a, err := parseAssertion(r.PostForm.Get("client_assertion")); err == nil {
		rec.AssertionIssuer, rec.AssertionSubject = a.issuer, a.subject
		rec.AssertionID, _, _ = a.jwt.stringClaim("jti")
	}
	if faulted {
		if done, status := e.applyFault(w, r, fault); done {
			rec.Status = status
			e.recordRequest(rec)
			return
		}
	}
	now := e.now()
	tenant := r.PathValue("tenant")
	fail := func(err *aadError) {
		e.log.Info("token request failed", "clientID", clientID, "scope", countKey, "status", err.status, "error", err.Error())
		rec.Status, rec.ErrorCode = err.status, err.code
		e.recordRequest(rec)
		writeAADError(w, r, now, err)
	}
	switch {
	case !e.knownTenant(tenant):
		fail(tenantNotFound(tenant))
		return
	case formErr != nil:
		fail(&aadError{http.StatusBadRequest, "invalid_request", CodeMissingParameter,
			"The request body must contain the following parameter: 'grant_type'."})
		return
	}
	form := r.PostForm
	for _, p := range []string{"grant_type", "client_id"} {
		if form.Get(p) == "" {
			fail(&aadError{http.StatusBadRequest, "invalid_request", CodeMissingParameter,
				fmt.Sprintf("The request body must contain the following parameter: '%s'.", p)})
			return
		}
	}
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		fail(&aadError{http.StatusBadRequest, "unsupported_grant_type", CodeUnsupportedGrantType,
			fmt.Sprintf("The provided value for the 'grant_type' parameter is not supported by this emulator: '%s'.", gt)})
		return
	}
	if scopeErr != nil {
		fail(scopeErr)
		return
	}
	app, ok := e.App(clientID)
	if !ok {
		fail(&aadError{http.StatusBadRequest, "unauthorized_client", CodeAppNotFound,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", clientID, e.tenant)})
		return
	}
	if form.Get("client_assertion") == "" || form.Get("client_assertion_type") != clientAssertionTypeJWT {
		fail(&aadError{http.StatusUnauthorized, "invalid_client", CodeMissingCredential,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'."})
		return
	}
	if err := e.verifyAssertion(r.Context(), app, form.Get("client_assertion"), now); err != nil {
		fail(err)
		return
	}
	resource := strings.TrimSuffix(scope, "/.default")
	e.mu.Lock()
	invalid := e.invalidResources[resource]
	e.mu.Unlock()
	if invalid {
		fail(&aadError{http.StatusBadRequest, "invalid_resource", CodeResourceNotFound,
			fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", resource, e.tenant)})
		return
	}
	tok, err := e.issueAccessToken(app, resource, now)
	if err != nil {
		e.log.Error(err, "signing access token")
		fail(&aadError{http.StatusInternalServerError, "server_error", CodeServerError, "The emulator could not sign a token."})
		return
	}
	e.log.V(1).Info("token issued", "clientID", clientID, "resource", resource)
	rec.Status = http.StatusOK
	e.recordRequest(rec)
	e.recordIssued(tok)
	expiresIn := int64(e.lifetime/time.Second) - 1
	if expiresIn < 1 {
		expiresIn = 1
	}
	w.Header().Set("X-Ms-Request-Id", newUUID())
	if id := r.Header.Get("Client-Request-Id"); id != "" && len(id) <= 64 {
		w.Header().Set("Client-Request-Id", id)
	}
	writeJSON(w, http.StatusOK, tokenResponse{TokenType: "Bearer", ExpiresIn: expiresIn, ExtExpiresIn: expiresIn, AccessToken: tok})
}

// accessClaims are the claims of an issued access token, in the order Entra
// v1 tokens list them.
type accessClaims struct {
	Aud      string `json:"aud"`
	Iss      string `json:"iss"`
	Iat      int64  `json:"iat"`
	Nbf      int64  `json:"nbf"`
	Exp      int64  `json:"exp"`
	AIO      string `json:"aio"`
	AppID    string `json:"appid"`
	AppIDACR string `json:"appidacr"`
	Azp      string `json:"azp"`
	IDP      string `json:"idp"`
	IDTyp    string `json:"idtyp"`
	OID      string `json:"oid"`
	RH       string `json:"rh"`
	Sub      string `json:"sub"`
	TID      string `json:"tid"`
	UTI      string `json:"uti"`
	JTI      string `json:"jti"`
	Ver      string `json:"ver"`
	MIRID    string `json:"xms_mirid,omitempty"`
	Padding  string `json:"xms_emu_padding,omitempty"`
}

// issueAccessToken signs an access token for app and resource.
func (e *Emulator) issueAccessToken(app App, resource string, now time.Time) (string, error) {
	exp := now.Add(e.lifetime)
	uti := randomB64(16)
	c := accessClaims{
		Aud:      resource,
		Iss:      e.AccessTokenIssuer(),
		Iat:      now.Unix(),
		Nbf:      now.Unix(),
		Exp:      exp.Unix(),
		AIO:      randomB64(24),
		AppID:    app.ClientID,
		AppIDACR: "2",
		Azp:      app.ClientID,
		IDP:      e.AccessTokenIssuer(),
		IDTyp:    "app",
		OID:      app.ObjectID,
		RH:       "0." + randomB64(18) + ".",
		Sub:      app.ObjectID,
		TID:      e.tenant,
		UTI:      uti,
		JTI:      newUUID(),
		Ver:      "1.0",
		MIRID:    app.ResourceID,
	}
	if e.padding > 0 {
		c.Padding = strings.Repeat("p", e.padding)
	}
	return signRS256(e.tokenKey, e.tokenKID, map[string]string{"x5t": e.tokenKID}, c)
}

// randomB64 returns n random bytes, base64url-encoded.
func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
