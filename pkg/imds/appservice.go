package imds

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
)

// The App Service managed-identity protocol, version 2019-08-01, which
// modern SDKs speak instead of IMDS when IDENTITY_ENDPOINT and
// IDENTITY_HEADER are set (docs/app-service.md). Serving it on the loopback
// listener lets a pod get tokens without the NET_ADMIN init container: the
// app is told where the proxy listens instead of having its traffic to
// 169.254.169.254 redirected.

// protocol is one of the two token protocols the proxy serves. It decides
// which api-version a token request may carry, the fields of the success
// reply and the shape of errors; everything else (the checks of the query,
// identity selection, the cache, the exchange and the mapping of failures
// to statuses) is shared.
type protocol int

const (
	// protocolIMDS is the Azure Instance Metadata Service protocol.
	protocolIMDS protocol = iota
	// protocolAppService is the App Service protocol, 2019-08-01.
	protocolAppService
)

// appServiceAPIVersion is the only api-version the App Service endpoint
// accepts. Every SDK that reads IDENTITY_ENDPOINT sends exactly this value
// (MSAL Go apps/managedidentity, msal-node AppService, MSAL Python and
// azure-identity app_service.py). The older 2017-09-01 version is another
// protocol (a "secret" header, "clientid", dates in expires_on) that those
// SDKs reach through MSI_ENDPOINT, never through IDENTITY_ENDPOINT.
const appServiceAPIVersion = "2019-08-01"

// acceptsAPIVersion reports whether v is an api-version of the protocol.
func (p protocol) acceptsAPIVersion(v string) bool {
	if p == protocolAppService {
		return v == appServiceAPIVersion
	}
	return validAPIVersion(v)
}

// badAPIVersion is the refusal of any other api-version.
func (p protocol) badAPIVersion() *reply {
	if p == protocolAppService {
		return &replyAppServiceAPIVersion
	}
	return &replyBadAPIVersion
}

// Bounds of IdentityHeader.
const (
	// MinIdentityHeaderLength is the shortest secret the App Service
	// endpoint accepts: 32 characters, e.g. `openssl rand -hex 16`
	// (128 bits). The secret is the endpoint's guard against requests
	// forged through a server-side request forgery bug of an app, which
	// cannot set headers; a short or guessable value would let a client
	// that can set headers but does not know the secret try values.
	MinIdentityHeaderLength = 32
	// MaxIdentityHeaderLength is the longest: a request head carrying it
	// must stay well inside the listener's header cap.
	MaxIdentityHeaderLength = 1024
)

// IdentityHeader is the shared secret of the App Service endpoint: the
// value of IDENTITY_HEADER, which apps send back in the X-IDENTITY-HEADER
// header. Its String and GoString methods hide the value, so a Config
// printed with %v, %+v or %#v, in a log line or a test failure, never shows
// it.
type IdentityHeader string

// String returns a placeholder, never the secret.
func (IdentityHeader) String() string { return "[redacted]" }

// GoString returns a placeholder, never the secret.
func (IdentityHeader) GoString() string { return `imds.IdentityHeader("[redacted]")` }

// CheckIdentityHeader reports why s cannot be the App Service endpoint's
// secret, or nil. It must be MinIdentityHeaderLength to
// MaxIdentityHeaderLength visible ASCII characters (0x21 to 0x7e): clients
// send it verbatim as a header value, in which spaces at either end would
// be trimmed and control characters are not allowed. The error never
// contains the value.
func CheckIdentityHeader(s string) error {
	switch {
	case len(s) < MinIdentityHeaderLength:
		return fmt.Errorf("is %d characters long; at least %d are required (e.g. openssl rand -hex 32)", len(s), MinIdentityHeaderLength)
	case len(s) > MaxIdentityHeaderLength:
		return fmt.Errorf("is %d characters long; at most %d are allowed", len(s), MaxIdentityHeaderLength)
	}
	for i := range len(s) {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("character %d is not visible ASCII (0x21 to 0x7e), which a header value needs", i+1)
		}
	}
	return nil
}

// identityHeaderKey is X-IDENTITY-HEADER as net/http keys it.
const identityHeaderKey = "X-Identity-Header"

// appServiceSecret holds the digest of the configured IdentityHeader.
// Requests are checked by comparing the SHA-256 of the header they carry
// with it in constant time: the time taken depends neither on how much of
// the secret a guess gets right nor on the secret's length.
type appServiceSecret struct {
	on     bool
	digest [sha256.Size]byte
}

func newAppServiceSecret(h IdentityHeader) appServiceSecret {
	if h == "" {
		return appServiceSecret{}
	}
	return appServiceSecret{on: true, digest: sha256.Sum256([]byte(h))}
}

// check refuses a request whose X-IDENTITY-HEADER is missing (401), given
// more than once or different from the secret (401), or returns nil.
func (s *appServiceSecret) check(h http.Header) *reply {
	v, ok := h[identityHeaderKey]
	if !ok {
		return &replyIdentityHeaderMissing
	}
	if len(v) != 1 {
		return &replyIdentityHeaderWrong
	}
	got := sha256.Sum256([]byte(v[0]))
	if subtle.ConstantTimeCompare(got[:], s.digest[:]) != 1 {
		return &replyIdentityHeaderWrong
	}
	return nil
}

// checkAppServiceRequest applies the checks of the App Service token
// endpoint before its query, in this order: method GET, no
// X-Forwarded-For, the secret. The Metadata header plays no part: MSAL Go
// does not send it on this protocol (apps/managedidentity
// createAppServiceAuthRequest), MSAL Python does.
func checkAppServiceRequest(r *http.Request, secret *appServiceSecret) *reply {
	if rep := checkMethodAndForwarding(r, http.MethodGet); rep != nil {
		return rep
	}
	return secret.check(r.Header)
}

// Refusals that only the App Service endpoint sends. The client sees the
// status and the description; the code shapes only the IMDS rendering.
var (
	replyAppServiceOff = newReply(http.StatusNotFound, "not_found",
		"The App Service managed identity endpoint is off: give the proxy the secret in IDENTITY_HEADER or --identity-header-file")
	replyAppServicePath = newReply(http.StatusBadRequest, "invalid_request",
		"Invalid App Service endpoint path; the token endpoint is /msi/token")
	replyAppServiceAPIVersion = newReply(http.StatusBadRequest, "invalid_request",
		"api-version must be "+appServiceAPIVersion)
	replyIdentityHeaderMissing = newReply(http.StatusUnauthorized, "unauthorized",
		"Required header X-IDENTITY-HEADER not specified")
	replyIdentityHeaderWrong = newReply(http.StatusUnauthorized, "unauthorized",
		"X-IDENTITY-HEADER does not match the proxy's secret (IDENTITY_HEADER)")
)

// appServiceErrorBody renders rep in the App Service error shape,
// {"statusCode":400,"message":"...","correlationId":"..."}, compact and
// without a trailing newline. msal-node reads message (and correlationId),
// MSAL Python statusCode and message (msal-node ManagedIdentitySources
// BaseManagedIdentitySource.getServerTokenResponse; MSAL Python
// managed_identity.py _obtain_token_on_app_service); the shape is the one
// the real service answers (dotnet/SqlClient#815 shows one). It never has
// an error or error_description key, which IMDS clients would read.
func appServiceErrorBody(b []byte, rep *reply, correlationID string) []byte {
	b = append(b, `{"statusCode":`...)
	b = strconv.AppendInt(b, int64(rep.status), 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, rep.description)
	b = append(b, `,"correlationId":`...)
	b = appendJSONString(b, correlationID)
	return append(b, '}')
}

// writeAppServiceError sends rep in the App Service error shape with the
// given correlation id, and the headers of rep (Retry-After, Allow,
// Connection: close), and returns the status it wrote.
func writeAppServiceError(w http.ResponseWriter, rep *reply, correlationID string) int {
	r := *rep
	r.body = appServiceErrorBody(make([]byte, 0, 96+len(rep.description)), rep, correlationID)
	return writeReply(w, &r)
}

// newCorrelationID returns a random version 4 UUID, the form of the real
// service's correlationId. It identifies one refusal in the proxy's log
// and in the client's error.
func newCorrelationID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24 and later)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
