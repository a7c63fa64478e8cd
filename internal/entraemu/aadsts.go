package entraemu

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// AADSTS codes the emulator answers with. Statuses and OAuth error names
// follow what Entra ID returns for each (see docs/imds.md and the
// issue threads cited there).
const (
	CodeTenantNotFound        = 90002   // Tenant not found; 400 invalid_tenant.
	CodeMissingParameter      = 900144  // Required body parameter missing; 400 invalid_request.
	CodeUnsupportedGrantType  = 70003   // Grant type not supported; 400 unsupported_grant_type.
	CodeInvalidScope          = 70011   // Scope is not a single "<resource>/.default"; 400 invalid_scope.
	CodeAppNotFound           = 700016  // Application not found in the tenant; 400 unauthorized_client.
	CodeMissingCredential     = 7000218 // Neither client_assertion nor client_secret; 401 invalid_client.
	CodeMalformedAssertion    = 50027   // Assertion is not a parseable JWT; 400 invalid_request.
	CodeNoFederation          = 70021   // No federated credential matches; 400 invalid_request.
	CodeIssuerMismatch        = 700211  // No federated credential for the assertion issuer; 401 invalid_client.
	CodeAudienceMismatch      = 700212  // No federated credential for the assertion audience; 401 invalid_client.
	CodeSubjectMismatch       = 700213  // No federated credential for the assertion subject; 401 invalid_client.
	CodeOIDCFetchFailed       = 90061   // Issuer discovery or JWKS could not be fetched; 400 invalid_request.
	CodeAssertionTimeRange    = 700024  // Assertion outside its validity window; 401 invalid_client.
	CodeBadSignature          = 700027  // Assertion signature validation failed; 401 invalid_client.
	CodeResourceNotFound      = 500011  // Resource principal not found in the tenant; 400 invalid_resource.
	CodeServerError           = 50000   // Used for injected 5xx faults; server_error or temporarily_unavailable.
	CodeThrottled             = 90055   // Used for injected 429 faults; temporarily_unavailable.
	CodeInjectedClientFailure = 90100   // Used for injected 4xx faults other than 429; invalid_request.
	CodeInvalidInstance       = 50049   // Instance discovery for an unusable authorization endpoint; 400 invalid_instance.
)

const (
	entraErrorURIPrefix        = "https://login.microsoftonline.com/error?code="
	entraTimestampLayout       = "2006-01-02 15:04:05Z"
	jsonContentType            = "application/json; charset=utf-8"
	clientAssertionTypeJWT     = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	defaultFederationAudience  = "api://AzureADTokenExchange"
	serviceAccountSubjectBegin = "system:serviceaccount:"
)

// aadError is one Entra ID error answer: HTTP status, OAuth error name,
// AADSTS code and the human text that follows "AADSTSnnnn: ".
type aadError struct {
	status  int
	oauth   string
	code    int
	message string
}

// Error renders the error like the first line of Entra's description.
func (e *aadError) Error() string {
	return fmt.Sprintf("AADSTS%d: %s", e.code, e.message)
}

// errorBody is the JSON shape of an Entra ID error answer.
type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri"`
}

// body renders the error as Entra does, with trace and correlation ids and a
// timestamp appended to the description.
func (e *aadError) body(now time.Time, traceID, correlationID string) errorBody {
	ts := now.UTC().Format(entraTimestampLayout)
	return errorBody{
		Error: e.oauth,
		ErrorDescription: fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			e.code, e.message, traceID, correlationID, ts),
		ErrorCodes:    []int{e.code},
		Timestamp:     ts,
		TraceID:       traceID,
		CorrelationID: correlationID,
		ErrorURI:      entraErrorURIPrefix + strconv.Itoa(e.code),
	}
}

// newUUID returns a random RFC 4122 version 4 UUID string.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// correlationID returns the caller's client-request-id when it sent one (as
// Entra echoes it), else a fresh UUID.
func correlationID(r *http.Request) string {
	if id := r.Header.Get("Client-Request-Id"); id != "" && len(id) <= 64 {
		return id
	}
	return newUUID()
}

// writeJSON writes v as compact JSON with an explicit Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", jsonContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeAADError answers an Entra-shaped error.
func writeAADError(w http.ResponseWriter, r *http.Request, now time.Time, e *aadError) {
	trace := newUUID()
	w.Header().Set("X-Ms-Request-Id", trace)
	writeJSON(w, e.status, e.body(now, trace, correlationID(r)))
}
