// Package entraemu is a local stand-in for Microsoft Entra ID and for a
// Kubernetes service-account token issuer, close enough to the real services
// that MSAL Go, the Azure SDKs and the Azure CLI cannot tell the difference.
//
// One Emulator runs two listeners:
//
//   - a TLS listener with its own generated CA (CACertPEM, CertPool,
//     HTTPClient) serving the Entra tenant discovery document
//     (GET /{tenant}/v2.0/.well-known/openid-configuration), the token
//     endpoint (POST /{tenant}/oauth2/v2.0/token, client-credentials grant
//     with a JWT client assertion), the token-signing JWKS, MSAL's instance
//     discovery (GET /common/discovery/instance), and the few
//     Azure Resource Manager answers the Azure CLI needs after a managed
//     identity login (empty subscription and tenant listings, cloud
//     metadata);
//   - a plain HTTP listener acting as the cluster's OIDC issuer
//     (/.well-known/openid-configuration and /openid/v1/jwks, the
//     Kubernetes paths), whose key signs the service-account tokens that
//     MintServiceAccountToken returns, and which optionally also serves the
//     admin API (see AdminHandler) for out-of-process control.
//
// The token endpoint verifies each client assertion the way Entra does for a
// federated identity credential: it parses the JWT, finds the app by client
// id, fetches the assertion issuer's discovery document and JWKS (cached
// briefly; over HTTP for the emulator's own issuer, over HTTPS for external
// issuers such as a real kube-apiserver, verified against the CA bundle given
// to TrustIssuer), checks the RS256 signature, the validity window, and that
// one of the app's federated credentials matches issuer, audience and
// subject. Failures answer Entra-shaped AADSTS JSON bodies with Entra's HTTP
// statuses; success answers a signed JWT access token for the requested
// resource. Calls are counted per (client id, scope) and the newest token
// requests are logged (Requests); faults (latency, 5xx, 429 with
// Retry-After, garbage or HTML bodies, dropped connections) can be injected
// for the next N token requests, optionally of one client id and scope, or
// until cleared; the Entra listener can present an untrusted or misnamed
// certificate (SetTLSFault); the issuer key can be rotated
// (RotateIssuerKey). The most token requests handled at once (MaxInFlight)
// and the access tokens issued (IssuedTokens, for log scans) are kept.
//
// The package reads no environment variables and keeps no global state; each
// Emulator is independent and safe for concurrent use.
package entraemu
