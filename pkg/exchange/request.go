package exchange

import (
	"fmt"
	"time"
)

// SelectorKind says how an IMDS request names the identity it wants.
type SelectorKind int

const (
	// SelectDefault asks for the pod's own identity (AZURE_CLIENT_ID).
	SelectDefault SelectorKind = iota
	// SelectClientID names the identity by its application (client) id.
	SelectClientID
	// SelectObjectID names the identity by its service principal object id
	// (IMDS query parameter object_id, alias principal_id).
	SelectObjectID
	// SelectResourceID names the identity by its Azure resource id
	// (IMDS query parameter msi_res_id, alias mi_res_id).
	SelectResourceID
)

// String returns the IMDS query parameter name for the selector kind.
func (k SelectorKind) String() string {
	switch k {
	case SelectDefault:
		return "default"
	case SelectClientID:
		return "client_id"
	case SelectObjectID:
		return "object_id"
	case SelectResourceID:
		return "msi_res_id"
	default:
		return fmt.Sprintf("SelectorKind(%d)", int(k))
	}
}

// Selector identifies the managed identity a request asks for.
type Selector struct {
	Kind  SelectorKind
	Value string // empty for SelectDefault
}

// Request is one token request as the IMDS surface hands it over.
type Request struct {
	// Identity selects the identity to exchange as.
	Identity Selector
	// Resource is the IMDS resource parameter exactly as the client sent it.
	Resource string
	// ForceRefresh is set by bypass_cache=true: fetch a fresh token
	// (rate-limited per identity and resource).
	ForceRefresh bool
	// RefreshTokenSHA256 is msal-node's token_sha256_to_refresh: the hex
	// SHA-256 of a token the client considers bad. When it matches the cached
	// token, a fresh one is fetched (rate-limited like ForceRefresh).
	RefreshTokenSHA256 string
}

// Token is an access token ready to be served to an IMDS client.
type Token struct {
	AccessToken string
	// ClientID is the application id the token was issued to.
	ClientID string
	// ExpiresOn is the token's expiry (the JWT exp claim, else MSAL's ExpiresOn).
	ExpiresOn time.Time
	// NotBefore is the JWT nbf claim, else the time the token was obtained.
	NotBefore time.Time
	// ExtExpiresIn is Entra's ext_expires_in when known, else zero.
	ExtExpiresIn time.Duration
}
