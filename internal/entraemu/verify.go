package entraemu

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// maxDocumentBytes bounds a fetched discovery document or JWKS.
const maxDocumentBytes = 1 << 20

// issuerKeys is the cached key set of one assertion issuer.
type issuerKeys struct {
	keys    map[string]*rsa.PublicKey // by kid
	fetched time.Time
}

// assertion holds the verified-for-shape claims of a client assertion.
type assertion struct {
	jwt       *parsedJWT
	issuer    string
	subject   string
	audiences []string
	notBefore time.Time
	hasNBF    bool
	expires   time.Time
	hasExp    bool
}

// parseAssertion parses a client assertion and extracts the claims Entra
// looks at. Any shape problem is an error wrapping errMalformed.
func parseAssertion(tok string) (*assertion, error) {
	p, err := parseJWT(tok)
	if err != nil {
		return nil, err
	}
	a := &assertion{jwt: p}
	var ok bool
	if a.issuer, ok, err = p.stringClaim("iss"); err != nil {
		return nil, err
	} else if !ok || a.issuer == "" {
		return nil, fmt.Errorf("%w: no \"iss\" claim", errMalformed)
	}
	if a.subject, _, err = p.stringClaim("sub"); err != nil {
		return nil, err
	}
	if a.audiences, err = p.audienceClaim(); err != nil {
		return nil, err
	}
	if a.notBefore, a.hasNBF, err = p.timeClaim("nbf"); err != nil {
		return nil, err
	}
	if a.expires, a.hasExp, err = p.timeClaim("exp"); err != nil {
		return nil, err
	}
	if _, _, err = p.timeClaim("iat"); err != nil {
		return nil, err
	}
	return a, nil
}

// verifyAssertion checks a client assertion against app's federated
// credentials the way Entra does, in Entra's order: shape, a credential for
// the issuer, signature against the issuer's JWKS, validity window,
// audience, subject. It returns the AADSTS error to answer, or nil.
func (e *Emulator) verifyAssertion(ctx context.Context, app App, tok string, now time.Time) *aadError {
	a, err := parseAssertion(tok)
	if err != nil {
		return &aadError{http.StatusBadRequest, "invalid_request", CodeMalformedAssertion,
			fmt.Sprintf("JWT token is invalid or malformed (%v).", err)}
	}
	aud := strings.Join(a.audiences, ", ")
	if len(app.Federations) == 0 {
		return &aadError{http.StatusBadRequest, "invalid_request", CodeNoFederation,
			fmt.Sprintf("No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", a.issuer, a.subject, aud)}
	}
	var byIssuer []Federation
	for _, f := range app.Federations {
		if f.Issuer == a.issuer {
			byIssuer = append(byIssuer, f)
		}
	}
	if len(byIssuer) == 0 {
		return &aadError{http.StatusUnauthorized, "invalid_client", CodeIssuerMismatch,
			fmt.Sprintf("No matching federated identity record found for presented assertion issuer '%s'. Check the issuer of your federated identity credential against the assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", a.issuer)}
	}
	if a.jwt.header.Alg != "RS256" {
		return &aadError{http.StatusUnauthorized, "invalid_client", CodeBadSignature,
			fmt.Sprintf("Client assertion failed signature validation: algorithm '%s' is not supported.", a.jwt.header.Alg)}
	}
	key, ferr := e.assertionKey(ctx, a.issuer, a.jwt.header.Kid)
	if ferr != nil {
		if errors.Is(ferr, errUnknownKID) {
			return &aadError{http.StatusUnauthorized, "invalid_client", CodeBadSignature,
				fmt.Sprintf("Client assertion failed signature validation: no key with kid '%s' in the issuer's JWKS.", a.jwt.header.Kid)}
		}
		e.log.Info("issuer key fetch failed", "issuer", a.issuer, "error", ferr.Error())
		return &aadError{http.StatusBadRequest, "invalid_request", CodeOIDCFetchFailed,
			fmt.Sprintf("Request to External OIDC endpoint failed: %v.", ferr)}
	}
	if err := a.jwt.verifyRS256(key); err != nil {
		return &aadError{http.StatusUnauthorized, "invalid_client", CodeBadSignature,
			"Client assertion failed signature validation."}
	}
	const layout = "2006-01-02T15:04:05.0000000Z"
	validFrom := time.Unix(0, 0).UTC()
	if a.hasNBF {
		validFrom = a.notBefore
	}
	if !a.hasExp || !now.Before(a.expires) || now.Before(validFrom) {
		expiry := "none"
		if a.hasExp {
			expiry = a.expires.UTC().Format(layout)
		}
		return &aadError{http.StatusUnauthorized, "invalid_client", CodeAssertionTimeRange,
			fmt.Sprintf("Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.",
				now.UTC().Format(layout), validFrom.UTC().Format(layout), expiry)}
	}
	var byAudience []Federation
	for _, f := range byIssuer {
		if slices.Contains(a.audiences, f.Audience) {
			byAudience = append(byAudience, f)
		}
	}
	if len(byAudience) == 0 {
		return &aadError{http.StatusUnauthorized, "invalid_client", CodeAudienceMismatch,
			fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'. Check the audience of your federated identity credential against the assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", aud)}
	}
	for _, f := range byAudience {
		if f.Subject == a.subject {
			return nil
		}
	}
	return &aadError{http.StatusUnauthorized, "invalid_client", CodeSubjectMismatch,
		fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", a.subject)}
}

// errUnknownKID means the issuer's JWKS, even freshly fetched, has no key
// with the assertion's kid.
var errUnknownKID = errors.New("unknown key id")

// assertionKey returns the issuer's public key with that kid, from the cache
// when it is fresh and knows the kid, else from a new fetch of the issuer's
// discovery document and JWKS (one fetch at a time per issuer).
func (e *Emulator) assertionKey(ctx context.Context, issuer, kid string) (*rsa.PublicKey, error) {
	e.mu.Lock()
	c := e.keyCache[issuer]
	e.mu.Unlock()
	if c != nil && time.Since(c.fetched) < e.keyTTL {
		if k := lookupKID(c.keys, kid); k != nil {
			return k, nil
		}
	}
	v, err, _ := e.keyFetch.Do(issuer, func() (any, error) {
		keys, err := e.fetchIssuerKeys(context.WithoutCancel(ctx), issuer)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		e.keyCache[issuer] = &issuerKeys{keys: keys, fetched: time.Now()}
		e.mu.Unlock()
		return keys, nil
	})
	if err != nil {
		return nil, err
	}
	if k := lookupKID(v.(map[string]*rsa.PublicKey), kid); k != nil {
		return k, nil
	}
	return nil, errUnknownKID
}

// lookupKID finds a key by kid; with no kid, a set of exactly one key
// answers with that key.
func lookupKID(keys map[string]*rsa.PublicKey, kid string) *rsa.PublicKey {
	if kid == "" {
		if len(keys) == 1 {
			for _, k := range keys {
				return k
			}
		}
		return nil
	}
	return keys[kid]
}

// fetchIssuerKeys fetches <issuer>/.well-known/openid-configuration, checks
// its issuer, then fetches its jwks_uri and returns the usable RSA keys. A
// trusted issuer's documents are fetched with its own CA bundle
// (TrustIssuer).
func (e *Emulator) fetchIssuerKeys(ctx context.Context, issuer string) (map[string]*rsa.PublicKey, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("issuer %q is not an http(s) URL", issuer)
	}
	client := e.fetchClientFor(issuer)
	e.mu.Lock()
	e.issuerFetches++
	e.mu.Unlock()
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	discovery := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	if err := getJSON(ctx, client, discovery, "application/json", &doc); err != nil {
		return nil, err
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("discovery document at %s names issuer %q, want %q", discovery, doc.Issuer, issuer)
	}
	ju, err := url.Parse(doc.JWKSURI)
	if err != nil || (ju.Scheme != "https" && ju.Scheme != "http") || ju.Host == "" {
		return nil, fmt.Errorf("discovery document at %s has no usable jwks_uri", discovery)
	}
	var set jwks
	// kube-apiserver serves its JWKS only as application/jwk-set+json and
	// answers 406 to "Accept: application/json" alone
	// (k8s.io/kubernetes pkg/routes/openidmetadata.go).
	if err := getJSON(ctx, client, doc.JWKSURI, "application/jwk-set+json, application/json", &set); err != nil {
		return nil, err
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.rsaKey()
		if err != nil {
			e.log.V(1).Info("skipping JWKS key", "issuer", issuer, "reason", err.Error())
			continue
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS at %s holds no usable RSA signing key", doc.JWKSURI)
	}
	return keys, nil
}

// getJSON GETs a URL with client, asking for the accept media types, and
// decodes a JSON body of bounded size.
func getJSON(ctx context.Context, client *http.Client, u, accept string, dst any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("GET %s: document larger than %d bytes", u, maxDocumentBytes)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}
