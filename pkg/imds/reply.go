package imds

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// contentTypeJSON is the content type of every IMDS reply, token or error.
// Real IMDS sends exactly this (captured in Azure/azure-sdk-for-js#11369),
// and Hadoop's ABFS/ADLS clients accept a token only with a JSON content
// type and a positive Content-Length (Azure/azure-data-lake-store-java#57).
const contentTypeJSON = "application/json; charset=utf-8"

// maxRetryAfter caps the Retry-After header of throttled replies:
// azidentity's IMDS retry policy gives up instead of waiting when
// Retry-After exceeds its 25 s MaxRetryDelay (azcore
// runtime/policy_retry.go). This is the only cap on Retry-After in the
// proxy, and it applies to the header sent to clients only: the token
// source itself waits as long as Entra asked before it asks again, and
// reports the time left in exchange.Error.RetryAfter.
const maxRetryAfter = 25 * time.Second

// defaultRetryAfter is sent on a throttled reply whose cause carried no
// usable delay.
const defaultRetryAfter = 5 * time.Second

// reply is a complete JSON answer: status, body and an optional
// Retry-After in seconds. An error reply also keeps its description, so
// that the App Service endpoint can render the same refusal in its own
// shape (appServiceErrorBody); body is the IMDS rendering.
type reply struct {
	status      int
	description string
	body        []byte
	retryAfter  int
	// allow is the Allow header of a 405 reply.
	allow string
	// close sends "Connection: close", so net/http closes the connection
	// after the reply.
	close bool
}

// errorBody renders the IMDS error shape {"error":..., "error_description":...}
// as compact JSON without a trailing newline, escaped by appendJSONString
// (as encoding/json escapes with HTML escaping off) and without reflection:
// the static replies below are rendered in every proxy's start-up.
func errorBody(code, description string) []byte {
	b := make([]byte, 0, len(`{"error":"","error_description":""}`)+len(code)+len(description))
	b = append(b, `{"error":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"error_description":`...)
	b = appendJSONString(b, description)
	return append(b, '}')
}

// newReply builds an error reply.
func newReply(status int, code, description string) reply {
	return reply{status: status, description: description, body: errorBody(code, description)}
}

// Static replies, rendered once. The validation steps before the token
// source answer with these, so a bare availability probe (azidentity and
// @azure/identity send GET with no query and no Metadata header and a 1 s
// timeout; docs/imds.md) costs no encoding work.
var (
	replyBadTarget = newReply(http.StatusBadRequest, "invalid_request",
		"Absolute-form request targets are not supported; send the request to the metadata address directly, not through an HTTP proxy")
	replyBadPath = newReply(http.StatusBadRequest, "invalid_request",
		"The request path is malformed or not canonical")
	replyIdentityPath = newReply(http.StatusBadRequest, "invalid_request",
		"Invalid identity endpoint path; the token endpoint is /metadata/identity/oauth2/token")
	replyMethodGET    = withAllow(newReply(http.StatusMethodNotAllowed, "method_not_allowed", "Only GET is supported"), http.MethodGet)
	replyMethodPOST   = withAllow(newReply(http.StatusMethodNotAllowed, "method_not_allowed", "Only POST is supported"), http.MethodPost)
	replyForwardedFor = newReply(http.StatusBadRequest, "invalid_request",
		"Requests with an X-Forwarded-For header are not accepted")
	// replyNoMetadata is byte-identical to real IMDS (88 bytes, captured in
	// Azure/azure-sdk-for-js#11369; the .NET Azure.Identity tests mock the
	// same body).
	replyNoMetadata     = newReply(http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
	replyMalformedQuery = newReply(http.StatusBadRequest, "invalid_request",
		"The query string is malformed")
	replyTooManyParams = newReply(http.StatusBadRequest, "invalid_request",
		"Too many query parameters")
	replyBadAPIVersion = newReply(http.StatusBadRequest, "invalid_request", "api-version is missing or older than 2018-02-01")
	// replyMissingResource is the text real IMDS answers (observed in
	// Azure/aad-pod-identity#450).
	replyMissingResource = newReply(http.StatusBadRequest, "invalid_request", "Required query variable 'resource' is missing")
	replyManySelectors   = newReply(http.StatusBadRequest, "invalid_request",
		"Specify at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)")
	replyNotFound = newReply(http.StatusNotFound, "not_found",
		"No such metadata endpoint; imds-proxy serves /metadata/identity/oauth2/token and /metadata/identity/info and forwards /metadata/{instance,versions,attested,scheduledevents,loadbalancer}")
	replyBlocked = newReply(http.StatusForbidden, "forbidden",
		"Instance metadata is blocked by imds-proxy (--instance-metadata=block)")
	replyUpstreamTimeout = newReply(http.StatusGatewayTimeout, "service_unavailable",
		"The instance metadata service did not answer in time")
	replyUpstreamUnreachable = newReply(http.StatusBadGateway, "service_unavailable",
		"The instance metadata service could not be reached")
	replyQuit = reply{status: http.StatusOK, body: []byte(`{"status":"shutting down"}`)}

	// The refusals of checkFraming close the connection.
	replyBody = closing(newReply(http.StatusBadRequest, "invalid_request",
		"Request bodies are not accepted; send no Content-Length or Transfer-Encoding"))
	replyConnect = closing(withAllow(newReply(http.StatusMethodNotAllowed, "method_not_allowed",
		"CONNECT is not supported: imds-proxy opens no tunnels"), http.MethodGet))
	replyConnectQuit = withAllow(replyConnect, http.MethodPost)
	replyUpgrade     = closing(newReply(http.StatusBadRequest, "invalid_request",
		"Protocol upgrades are not supported: imds-proxy opens no tunnels"))
	// replyUpstreamSwitched answers a passthrough request whose upstream
	// answered 101 Switching Protocols although nothing asked it to.
	replyUpstreamSwitched = newReply(http.StatusBadGateway, "service_unavailable",
		"The instance metadata service tried to switch protocols; imds-proxy opens no tunnels")
)

// withAllow returns r with the Allow header of a 405.
func withAllow(r reply, allow string) reply {
	r.allow = allow
	return r
}

// closing returns r with "Connection: close".
func closing(r reply) reply {
	r.close = true
	return r
}

// loopReply explains a request that carries our own hop marker: the
// proxy's passthrough request to 169.254.169.254 was redirected back to
// the proxy, which happens when a pod-level runAsUser overrides the UID of
// the proxy image, exemptUID, that the init container's iptables rules
// exempt (https://github.com/Azure/azure-workload-identity/issues/1009).
func loopReply(exemptUID int) reply {
	uid := strconv.Itoa(exemptUID)
	return newReply(http.StatusLoopDetected, "loop_detected",
		"imds-proxy received its own forwarded request: the iptables rules installed by proxy-init did not exempt the proxy's UID "+
			"(a pod-level securityContext.runAsUser overrides the proxy image's UID "+uid+"); "+
			"remove the pod-level runAsUser or set runAsUser: "+uid+" on the proxy container")
}

// repeatedParamReply refuses a query that names a parameter twice, or two
// names that differ only in case.
func repeatedParamReply(name string) *reply {
	r := newReply(http.StatusBadRequest, "invalid_request", "Query parameter '"+shortName(name)+"' is repeated")
	return &r
}

// miscasedParamReply refuses a parameter whose name equals the known
// parameter known only under case folding.
func miscasedParamReply(name, known string) *reply {
	r := newReply(http.StatusBadRequest, "invalid_request",
		"Query parameter '"+shortName(name)+"' must be spelled '"+known+"' (parameter names are case-sensitive)")
	return &r
}

// emptySelectorReply refuses an identity selector without a value.
func emptySelectorReply(name string) *reply {
	r := newReply(http.StatusBadRequest, "invalid_request",
		"Query parameter '"+name+"' has no value; omit it to ask for the default identity")
	return &r
}

// shortName cuts a client-supplied parameter name to 64 bytes for an error
// description.
func shortName(name string) string {
	const maxName = 64
	if len(name) > maxName {
		return name[:maxName] + "..."
	}
	return name
}

// tokenErrorReply maps a token-source failure to its IMDS reply
// (docs/imds.md, "Errors").
// It is the only place where a failure becomes a status code. Permanent
// failures are 4xx so that clients do not retry them: azidentity, MSAL and
// go-autorest retry 5xx up to six times.
func tokenErrorReply(err error) reply {
	var e *exchange.Error
	if !errors.As(err, &e) {
		return newReply(http.StatusServiceUnavailable, "service_unavailable",
			"The token service is unavailable; retry later")
	}
	switch e.Reason {
	case exchange.ReasonIdentityNotFound:
		// Azure CLI (MSAL Python era) falls back from client id to object
		// id when the description contains "Identity not found"; the
		// msrestazure era matches the status line "400 Bad Request". Both
		// must hold (docs/imds.md).
		return newReply(http.StatusBadRequest, "invalid_request", "Identity not found"+cause(e))
	case exchange.ReasonInvalidResource:
		return newReply(http.StatusBadRequest, "invalid_resource", "The resource is not valid"+cause(e))
	case exchange.ReasonAssertionRejected:
		return newReply(http.StatusBadRequest, "invalid_request",
			"Microsoft Entra ID rejected the pod's projected service account token"+cause(e))
	case exchange.ReasonThrottled:
		desc := "Microsoft Entra ID is throttling token requests; retry later" + cause(e)
		if e.RetryAfter > maxRetryAfter {
			// The header says 25 s at most; say how long Entra asked
			// for, so that a client answered 429 again in 25 s knows
			// why.
			desc += "; Microsoft Entra ID asked to wait " + strconv.FormatInt(ceilSeconds(e.RetryAfter), 10) + " s"
		}
		r := newReply(http.StatusTooManyRequests, "too_many_requests", desc)
		r.retryAfter = retryAfterSeconds(e.RetryAfter)
		return r
	case exchange.ReasonTokenFile:
		desc := e.Detail
		if desc == "" {
			desc = "cannot read the projected service account token file"
		}
		return newReply(http.StatusInternalServerError, "server_error", desc)
	default:
		return newReply(http.StatusServiceUnavailable, "service_unavailable",
			"Microsoft Entra ID is unavailable; retry later"+cause(e))
	}
}

// cause renders the client-safe part of an exchange error as
// " (AADSTS70021: detail)", " (AADSTS70021)", " (detail)" or "".
func cause(e *exchange.Error) string {
	switch {
	case e.Code != "" && e.Detail != "":
		return " (" + e.Code + ": " + e.Detail + ")"
	case e.Code != "":
		return " (" + e.Code + ")"
	case e.Detail != "":
		return " (" + e.Detail + ")"
	default:
		return ""
	}
}

// retryAfterSeconds is the Retry-After header for a throttled reply whose
// cause asked to wait d: d rounded up to whole seconds, at most
// maxRetryAfter, and defaultRetryAfter when d is not positive.
func retryAfterSeconds(d time.Duration) int {
	if d <= 0 {
		d = defaultRetryAfter
	}
	return int(ceilSeconds(min(d, maxRetryAfter)))
}

// ceilSeconds rounds a positive d up to whole seconds, without overflow
// for the largest durations.
func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// writeReply sends r with an explicit Content-Length, so it is never
// chunked, and returns the status code it wrote.
func writeReply(w http.ResponseWriter, r *reply) int {
	h := w.Header()
	h["Content-Type"] = []string{contentTypeJSON}
	h["Content-Length"] = []string{strconv.Itoa(len(r.body))}
	if r.retryAfter > 0 {
		h["Retry-After"] = []string{strconv.Itoa(r.retryAfter)}
	}
	if r.allow != "" {
		h["Allow"] = []string{r.allow}
	}
	if r.close {
		h["Connection"] = []string{"close"}
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
	return r.status
}
