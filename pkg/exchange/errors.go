package exchange

import (
	"errors"
	"fmt"
	"time"
)

// Reason classifies why a token could not be produced. pkg/imds maps each
// reason to one HTTP status and IMDS error body, in one place.
type Reason int

const (
	// ReasonUnavailable: Entra answered 5xx, timed out, or could not be
	// reached; worth retrying (503 service_unavailable).
	ReasonUnavailable Reason = iota
	// ReasonIdentityNotFound: the application or its federated credential does
	// not exist (AADSTS700016, 70021, 700211-700213), no identity matched an
	// object or resource id, or no default identity is configured
	// (400 invalid_request "Identity not found").
	ReasonIdentityNotFound
	// ReasonInvalidResource: Entra rejected the resource/scope (AADSTS500011,
	// 50001, 70011, 700022, 28002) (400 invalid_resource).
	ReasonInvalidResource
	// ReasonAssertionRejected: the projected token was refused even after a
	// re-read (AADSTS700024 expired, 700027 bad signature, ...) (400).
	ReasonAssertionRejected
	// ReasonThrottled: Entra throttled us (429 with Retry-After).
	ReasonThrottled
	// ReasonTokenFile: the projected service-account token file is missing
	// or unreadable (500 server_error naming the path).
	ReasonTokenFile
)

// String names the reason for logs and metric labels.
func (r Reason) String() string {
	switch r {
	case ReasonUnavailable:
		return "unavailable"
	case ReasonIdentityNotFound:
		return "identity_not_found"
	case ReasonInvalidResource:
		return "invalid_resource"
	case ReasonAssertionRejected:
		return "assertion_rejected"
	case ReasonThrottled:
		return "throttled"
	case ReasonTokenFile:
		return "token_file"
	default:
		return fmt.Sprintf("Reason(%d)", int(r))
	}
}

// Error is the only error type the token source returns to its callers.
type Error struct {
	Reason Reason
	// Code is the AADSTS code Entra answered with, e.g. "AADSTS70021", or "".
	Code string
	// Detail is a short, client-safe explanation (never a token or raw
	// upstream body), e.g. "no federated credential matches issuer=..., subject=...".
	Detail string
	// RetryAfter is set for ReasonThrottled: the time left until the proxy
	// asks Entra again for this identity and resource, which is Entra's own
	// Retry-After, not capped. Telling a client to wait that long is not
	// always wise (azidentity gives up on waits over 25 s): capping the
	// header it gets is the HTTP layer's job.
	RetryAfter time.Duration
	// Err is the underlying error, for logs only.
	Err error
}

func (e *Error) Error() string {
	msg := e.Reason.String()
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason carried by err, or ReasonUnavailable when err
// is not an *Error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonUnavailable
}
