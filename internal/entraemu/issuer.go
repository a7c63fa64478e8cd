package entraemu

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// issuerHandler routes the plain-HTTP cluster issuer listener, with the
// admin API under /admin/ when enabled.
func (e *Emulator) issuerHandler(admin bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", e.handleIssuerDiscovery)
	mux.HandleFunc("GET /openid/v1/jwks", e.handleIssuerJWKS)
	if admin {
		mux.Handle("/admin/", e.AdminHandler())
	}
	mux.HandleFunc("/", e.handleUnknown)
	return e.logRequests("issuer", mux)
}

// handleIssuerDiscovery serves the issuer's OIDC discovery document in the
// shape kube-apiserver serves it.
func (e *Emulator) handleIssuerDiscovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                e.issuerURL,
		"jwks_uri":                              e.issuerURL + "/openid/v1/jwks",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

// handleIssuerJWKS serves the issuer's public key.
func (e *Emulator) handleIssuerJWKS(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	keys := append([]jwk{publicJWK(&e.issuerKey.PublicKey, e.issuerKID)}, e.retiredKeys...)
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, jwks{Keys: keys})
}

// RotateIssuerKey replaces the issuer's signing key with a fresh RSA 2048
// key, as a cluster rotating its service-account key does. The JWKS keeps
// publishing the previous key, so tokens minted before still verify; tokens
// minted after carry the new kid, which makes the token endpoint refetch the
// JWKS. It returns the new kid.
func (e *Emulator) RotateIssuerKey() (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	kid, err := keyID(&k.PublicKey)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retiredKeys = []jwk{publicJWK(&e.issuerKey.PublicKey, e.issuerKID)}
	e.issuerKey, e.issuerKID = k, kid
	return kid, nil
}

// TokenSpec describes a token for MintToken. Zero fields take the defaults
// of a projected service-account token.
type TokenSpec struct {
	// Namespace and ServiceAccount make the subject
	// "system:serviceaccount:<Namespace>:<ServiceAccount>".
	Namespace      string
	ServiceAccount string
	// Subject overrides the subject.
	Subject string
	// Audiences defaults to ["api://AzureADTokenExchange"].
	Audiences []string
	// Issuer defaults to IssuerURL.
	Issuer string
	// IssuedAt defaults to the emulator clock's now; nbf equals it.
	IssuedAt time.Time
	// Lifetime defaults to one hour; exp is IssuedAt+Lifetime.
	Lifetime time.Duration
	// KeyID overrides the kid header (to test unknown keys).
	KeyID string
}

// saClaims are the claims of a projected service-account token, in the
// shape kube-apiserver issues them.
type saClaims struct {
	Aud  []string  `json:"aud"`
	Exp  int64     `json:"exp"`
	Iat  int64     `json:"iat"`
	Iss  string    `json:"iss"`
	JTI  string    `json:"jti"`
	Kube *saDetail `json:"kubernetes.io,omitempty"`
	Nbf  int64     `json:"nbf"`
	Sub  string    `json:"sub"`
}

// saDetail is the "kubernetes.io" claim.
type saDetail struct {
	Namespace      string    `json:"namespace"`
	ServiceAccount saAccount `json:"serviceaccount"`
}

// saAccount names the service account inside the "kubernetes.io" claim.
type saAccount struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// MintServiceAccountToken returns an RS256 JWT like a projected
// service-account token: iss=IssuerURL,
// sub=system:serviceaccount:<namespace>:<serviceAccount>,
// aud=[api://AzureADTokenExchange], iat=nbf=now, exp=now+lifetime (one hour
// when lifetime is 0), signed with the issuer key (kid in the header).
func (e *Emulator) MintServiceAccountToken(namespace, serviceAccount string, lifetime time.Duration) (string, error) {
	if namespace == "" || serviceAccount == "" {
		return "", errors.New("namespace and service account must not be empty")
	}
	return e.MintToken(TokenSpec{Namespace: namespace, ServiceAccount: serviceAccount, Lifetime: lifetime})
}

// MintToken returns a token signed by the issuer key, shaped by spec.
func (e *Emulator) MintToken(spec TokenSpec) (string, error) {
	sub := spec.Subject
	var detail *saDetail
	if sub == "" {
		if spec.Namespace == "" || spec.ServiceAccount == "" || strings.Contains(spec.Namespace, ":") {
			return "", fmt.Errorf("token needs a subject or a namespace and service account (got %q, %q)", spec.Namespace, spec.ServiceAccount)
		}
		sub = serviceAccountSubjectBegin + spec.Namespace + ":" + spec.ServiceAccount
		detail = &saDetail{Namespace: spec.Namespace, ServiceAccount: saAccount{Name: spec.ServiceAccount, UID: derivedObjectID(sub)}}
	}
	aud := spec.Audiences
	if len(aud) == 0 {
		aud = []string{defaultFederationAudience}
	}
	iss := spec.Issuer
	if iss == "" {
		iss = e.issuerURL
	}
	iat := spec.IssuedAt
	if iat.IsZero() {
		iat = e.now()
	}
	lifetime := spec.Lifetime
	if lifetime == 0 {
		lifetime = time.Hour
	}
	e.mu.Lock()
	key, kid := e.issuerKey, e.issuerKID
	e.mu.Unlock()
	if spec.KeyID != "" {
		kid = spec.KeyID
	}
	return signRS256(key, kid, nil, saClaims{
		Aud:  aud,
		Exp:  iat.Add(lifetime).Unix(),
		Iat:  iat.Unix(),
		Iss:  iss,
		JTI:  newUUID(),
		Kube: detail,
		Nbf:  iat.Unix(),
		Sub:  sub,
	})
}
