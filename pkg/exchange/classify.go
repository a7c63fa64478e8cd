package exchange

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// upstreamError is an Entra HTTP answer other than success, as the MSAL
// adapter hands it over: status, headers and body, before classification.
type upstreamError struct {
	Status int
	Header http.Header
	Body   []byte
	// Err is MSAL's error, for logs.
	Err error
}

func (e *upstreamError) Error() string { return fmt.Sprintf("entra answered HTTP %d", e.Status) }
func (e *upstreamError) Unwrap() error { return e.Err }

// entraError is the OAuth error body Entra sends: error, error_description
// and error_codes, among others
// (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
type entraError struct {
	Error       string
	Description string
	// Code is the first AADSTS number, 0 when none could be found.
	Code int
}

// maxErrorBody bounds how much of an error body is parsed or logged.
const maxErrorBody = 16 << 10

// aadstsInText finds an AADSTS code in free text, for bodies whose
// error_codes array is missing or malformed. The regular expressions of
// this file serve failures only: they are compiled on first use, not in
// every proxy's start-up.
var aadstsInText = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`AADSTS([0-9]{1,9})`) })

// parseEntraError decodes an Entra error body. It branches on error_codes,
// as Entra's documentation asks, and falls back to the AADSTS prefix of
// error_description (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
// ok is false when the body is not an OAuth error object at all (an HTML
// page from a gateway, say).
func parseEntraError(body []byte) (e entraError, ok bool) {
	if len(body) > maxErrorBody {
		body = body[:maxErrorBody]
	}
	var raw struct {
		Error       json.RawMessage `json:"error"`
		Description json.RawMessage `json:"error_description"`
		Codes       json.RawMessage `json:"error_codes"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return entraError{}, false
	}
	e.Error = jsonString(raw.Error)
	e.Description = jsonString(raw.Description)
	var codes []json.Number
	if json.Unmarshal(raw.Codes, &codes) == nil {
		for _, n := range codes {
			if v, err := strconv.ParseInt(n.String(), 10, 64); err == nil && v > 0 && v <= math.MaxInt32 {
				e.Code = int(v)
				break
			}
		}
	}
	if e.Code == 0 {
		if m := aadstsInText().FindStringSubmatch(e.Description); m != nil {
			if v, err := strconv.Atoi(m[1]); err == nil && v > 0 {
				e.Code = v
			}
		}
	}
	if e.Error == "" && e.Code == 0 {
		return entraError{}, false
	}
	return e, true
}

// codeClass is what an AADSTS code means to the proxy.
type codeClass int

const (
	classOther codeClass = iota
	classIdentityNotFound
	classNoFederation
	classInvalidResource
	classAssertionExpired
	classAssertionRejected
	classThrottled
	classTransient
)

// aadstsClass maps the AADSTS codes the proxy tells apart to what they mean
// for the client (docs/imds.md lists them with their sources).
func aadstsClass(code int) codeClass {
	switch code {
	case 700016: // application not found in the tenant
		return classIdentityNotFound
	case 70021, 700211, 700212, 700213, 7002137, 7002138: // no federated credential matches
		return classNoFederation
	case 500011, 50001, 70011, 700022, 28002: // resource principal / scope invalid
		return classInvalidResource
	case 700024: // assertion outside its validity window
		return classAssertionExpired
	case 700027, 50027, 90061, 90002: // bad signature, invalid JWT, issuer unreachable, tenant missing
		return classAssertionRejected
	case 50196, 90055: // loop detection, tenant throttling
		return classThrottled
	case 90024, 50033, 90006: // documented as transient
		return classTransient
	}
	return classOther
}

// classifyInput is what classify needs besides the error.
type classifyInput struct {
	clientID  string
	scope     string
	projected ProjectedToken
	now       time.Time
	timeout   time.Duration
}

// classify turns whatever the acquirer returned into the one *Error type
// pkg/imds maps to HTTP, in one place. Detail is built
// from our own words and the projected token's claims, never from the
// upstream body.
func classify(err error, in classifyInput) *Error {
	var out *Error
	if errors.As(err, &out) {
		return out
	}
	var up *upstreamError
	if errors.As(err, &up) {
		return classifyUpstream(up, in)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Reason: ReasonUnavailable, Detail: fmt.Sprintf("Entra ID did not answer within %s", in.timeout), Err: redactErr(err)}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Reason: ReasonUnavailable, Detail: "the token exchange was cancelled", Err: redactErr(err)}
	}
	return &Error{Reason: ReasonUnavailable, Detail: "Entra ID could not be reached or answered unexpectedly", Err: redactErr(err)}
}

func classifyUpstream(orig *upstreamError, in classifyInput) *Error {
	up := &upstreamError{Status: orig.Status, Header: orig.Header, Body: orig.Body, Err: redactErr(orig.Err)}
	ee, ok := parseEntraError(up.Body)
	code := ""
	if ok && ee.Code != 0 {
		code = "AADSTS" + strconv.Itoa(ee.Code)
	}
	if up.Status == http.StatusTooManyRequests {
		return &Error{Reason: ReasonThrottled, Code: code, Detail: "Entra ID is throttling token requests", RetryAfter: retryAfter(up.Header, in.now), Err: up}
	}
	if up.Status >= 500 || up.Status < 400 || !ok {
		d := fmt.Sprintf("Entra ID answered HTTP %d", up.Status)
		if !ok && up.Status >= 400 && up.Status < 500 {
			d += " with an unreadable body"
		}
		return &Error{Reason: ReasonUnavailable, Code: code, Detail: d, Err: up}
	}
	switch aadstsClass(ee.Code) {
	case classIdentityNotFound:
		return &Error{Reason: ReasonIdentityNotFound, Code: code,
			Detail: fmt.Sprintf("application %s was not found in the tenant", in.clientID), Err: up}
	case classNoFederation:
		return &Error{Reason: ReasonIdentityNotFound, Code: code,
			Detail: fmt.Sprintf("no federated credential of application %s matches %s", in.clientID, in.projected), Err: up}
	case classInvalidResource:
		return &Error{Reason: ReasonInvalidResource, Code: code,
			Detail: fmt.Sprintf("Entra ID rejected the scope %s", in.scope), Err: up}
	case classAssertionExpired:
		exp := "unknown"
		if !in.projected.Expiry.IsZero() {
			exp = in.projected.Expiry.UTC().Format(time.RFC3339)
		}
		return &Error{Reason: ReasonAssertionRejected, Code: code,
			Detail: fmt.Sprintf("the projected service account token is outside its validity window (exp %s)", exp), Err: up}
	case classThrottled:
		return &Error{Reason: ReasonThrottled, Code: code, Detail: "Entra ID is throttling token requests", RetryAfter: retryAfter(up.Header, in.now), Err: up}
	case classTransient:
		return &Error{Reason: ReasonUnavailable, Code: code, Detail: "Entra ID reported a transient failure", Err: up}
	}
	return &Error{Reason: ReasonAssertionRejected, Code: code,
		Detail: "Entra ID rejected the projected service account token (" + in.projected.String() + ")", Err: up}
}

// permanent reports whether a failure is remembered in the negative cache:
// unknown app, no matching federation, invalid resource.
func permanent(e *Error) bool {
	return e.Reason == ReasonIdentityNotFound || e.Reason == ReasonInvalidResource
}

// defaultRetryAfter is the wait after a throttling answer that carries no
// usable Retry-After.
const defaultRetryAfter = 5 * time.Second

// maxRetryAfter bounds a parsed Retry-After. Entra's waits are seconds to
// minutes and are honoured in full; only a value beyond a day, which can
// only be a broken header, is cut to a day. The bound keeps the arithmetic
// on the result (now + wait) far from time.Duration's limit, and keeps a
// broken header from shutting an identity out of Entra for good. Cutting
// the wait a client is told to 25 s is the HTTP layer's job, not this one.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads Retry-After, delay-seconds or an HTTP date (RFC 9110
// §10.2.3), relative to now: at least a second, at most maxRetryAfter,
// defaultRetryAfter when absent or malformed.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	d := defaultRetryAfter
	switch {
	case v == "":
	case isDigits(v):
		// Beyond int64 or maxRetryAfter: a day.
		d = maxRetryAfter
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n < int64(maxRetryAfter/time.Second) {
			d = time.Duration(n) * time.Second
		}
	default:
		if t, err := http.ParseTime(v); err == nil {
			d = min(t.Sub(now), maxRetryAfter) // Sub saturates instead of overflowing
		}
	}
	return max(d, time.Second)
}

// isDigits reports whether s is a non-empty run of ASCII digits, the
// delay-seconds form of Retry-After.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// jwtLike matches compact JWS/JWE strings.
var jwtLike = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*)*`)
})

// secretField matches the value of a token-carrying field in JSON
// ("access_token":"...") or form encoding (client_assertion=...), for
// tokens that are not JWTs.
var secretField = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?i)("(?:access_token|refresh_token|id_token|client_assertion|client_secret)"\s*:\s*")[^"]*(")|((?:access_token|refresh_token|id_token|client_assertion|client_secret)=)[^&\s"]*`)
})

// redact removes tokens from text bound for a log or an error message and
// bounds its length. MSAL puts whole reply bodies into its errors (MSAL Go
// v1.10.1 comm.go: "json decode error ... json message bytes were: ..."),
// and a 200 reply it cannot decode carries an access token.
func redact(s string) string {
	if len(s) > maxErrorBody {
		s = s[:maxErrorBody] + "...(truncated)"
	}
	s = secretField().ReplaceAllString(s, "${1}${3}[REDACTED]${2}")
	return jwtLike().ReplaceAllString(s, "[REDACTED]")
}

// redactedError carries the redacted text of an error. It unwraps only to
// the context error inside, if any, so errors.Is keeps working for
// cancellation and deadlines while the original text is gone.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// redactErr returns err with its text redacted; nil stays nil.
func redactErr(err error) error {
	if err == nil {
		return nil
	}
	// Only err itself: a wrapper around a redacted error has text of its
	// own that still needs redacting.
	if r, ok := err.(*redactedError); ok { //nolint:errorlint // err itself, above
		return r
	}
	var cause error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		cause = context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		cause = context.Canceled
	}
	return &redactedError{msg: redact(err.Error()), cause: cause}
}
