package imds

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

func TestTokenErrorReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		status     int
		body       string
		retryAfter string
	}{
		{"identity not found, bare",
			&exchange.Error{Reason: exchange.ReasonIdentityNotFound},
			400, `{"error":"invalid_request","error_description":"Identity not found"}`, ""},
		{"identity not found with AADSTS cause",
			&exchange.Error{Reason: exchange.ReasonIdentityNotFound, Code: "AADSTS70021", Detail: "no federated credential matches issuer=https://oidc/, subject=system:serviceaccount:ns:sa"},
			400, `{"error":"invalid_request","error_description":"Identity not found (AADSTS70021: no federated credential matches issuer=https://oidc/, subject=system:serviceaccount:ns:sa)"}`, ""},
		{"identity not found, no default identity",
			&exchange.Error{Reason: exchange.ReasonIdentityNotFound, Detail: "no default identity: AZURE_CLIENT_ID is not set; pass client_id"},
			400, `{"error":"invalid_request","error_description":"Identity not found (no default identity: AZURE_CLIENT_ID is not set; pass client_id)"}`, ""},
		{"wrapped identity not found",
			fmt.Errorf("exchange: %w", &exchange.Error{Reason: exchange.ReasonIdentityNotFound, Code: "AADSTS700016"}),
			400, `{"error":"invalid_request","error_description":"Identity not found (AADSTS700016)"}`, ""},
		{"invalid resource",
			&exchange.Error{Reason: exchange.ReasonInvalidResource, Code: "AADSTS500011", Detail: "resource principal not found"},
			400, `{"error":"invalid_resource","error_description":"The resource is not valid (AADSTS500011: resource principal not found)"}`, ""},
		{"assertion rejected",
			&exchange.Error{Reason: exchange.ReasonAssertionRejected, Code: "AADSTS700024", Detail: "assertion is not within its valid time range"},
			400, `{"error":"invalid_request","error_description":"Microsoft Entra ID rejected the pod's projected service account token (AADSTS700024: assertion is not within its valid time range)"}`, ""},
		{"throttled with retry-after",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 2500 * time.Millisecond},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later"}`, "3"},
		{"throttled retry-after capped at 25 s",
			&exchange.Error{Reason: exchange.ReasonThrottled, Code: "AADSTS50196", RetryAfter: 10 * time.Minute},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later (AADSTS50196); Microsoft Entra ID asked to wait 600 s"}`, "25"},
		{"throttled 300 s",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 300 * time.Second},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later; Microsoft Entra ID asked to wait 300 s"}`, "25"},
		{"throttled exactly 25 s",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 25 * time.Second},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later"}`, "25"},
		{"throttled just over 25 s",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: 25*time.Second + time.Nanosecond},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later; Microsoft Entra ID asked to wait 26 s"}`, "25"},
		{"throttled for the longest duration",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: math.MaxInt64},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later; Microsoft Entra ID asked to wait 9223372037 s"}`, "25"},
		{"throttled with a negative delay",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: math.MinInt64},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later"}`, "5"},
		{"throttled for a nanosecond",
			&exchange.Error{Reason: exchange.ReasonThrottled, RetryAfter: time.Nanosecond},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later"}`, "1"},
		{"throttled without delay",
			&exchange.Error{Reason: exchange.ReasonThrottled},
			429, `{"error":"too_many_requests","error_description":"Microsoft Entra ID is throttling token requests; retry later"}`, "5"},
		{"unavailable",
			&exchange.Error{Reason: exchange.ReasonUnavailable, Detail: "Entra answered 503", Err: errors.New("raw upstream body <html>")},
			503, `{"error":"service_unavailable","error_description":"Microsoft Entra ID is unavailable; retry later (Entra answered 503)"}`, ""},
		{"token file",
			&exchange.Error{Reason: exchange.ReasonTokenFile, Detail: "cannot read the projected service account token file /var/run/secrets/azure/tokens/azure-identity-token", Err: errors.New("open: no such file")},
			500, `{"error":"server_error","error_description":"cannot read the projected service account token file /var/run/secrets/azure/tokens/azure-identity-token"}`, ""},
		{"foreign error",
			errors.New("boom: secret internals"),
			503, `{"error":"service_unavailable","error_description":"The token service is unavailable; retry later"}`, ""},
		{"context canceled",
			context.Canceled,
			503, `{"error":"service_unavailable","error_description":"The token service is unavailable; retry later"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := tokenErrorReply(tt.err)
			w := httptest.NewRecorder()
			writeReply(w, &rep)
			if w.Code != tt.status || w.Body.String() != tt.body {
				t.Fatalf("got %d %s; want %d %s", w.Code, w.Body, tt.status, tt.body)
			}
			if got := w.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q; want %q", got, tt.retryAfter)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", got)
			}
			if got, want := w.Header().Get("Content-Length"), fmt.Sprint(len(tt.body)); got != want {
				t.Errorf("Content-Length = %q; want %q", got, want)
			}
		})
	}
}

// FuzzErrorReplies checks every error reply built from input a client or
// Entra controls: a token-source failure with arbitrary fields, and the
// query refusals that quote a parameter name. Each is the IMDS error shape
// (checkErrorBody) with a 4xx or 5xx status, and a throttled reply carries
// a Retry-After of 1 to 25 seconds.
func FuzzErrorReplies(f *testing.F) {
	f.Add(4, "AADSTS50196", "detail", int64(300e9), "Client_ID")
	f.Add(0, "", "", int64(0), "")
	f.Add(-1, "\xff\"", "\u2028<&>", int64(math.MinInt64), "a\"b\\\x00")
	f.Fuzz(func(t *testing.T, reason int, code, detail string, retryAfter int64, name string) {
		e := &exchange.Error{Reason: exchange.Reason(reason), Code: code, Detail: detail, RetryAfter: time.Duration(retryAfter)}
		rep := tokenErrorReply(e)
		if rep.status < 400 || rep.status > 599 {
			t.Fatalf("tokenErrorReply(%+v) status %d", e, rep.status)
		}
		checkErrorBody(t, rep.body)
		if rep.status == 429 && (rep.retryAfter < 1 || rep.retryAfter > 25) {
			t.Fatalf("tokenErrorReply(%+v) Retry-After %d", e, rep.retryAfter)
		}
		if rep.status != 429 && rep.retryAfter != 0 {
			t.Fatalf("tokenErrorReply(%+v) status %d with Retry-After %d", e, rep.status, rep.retryAfter)
		}
		for _, r := range []*reply{repeatedParamReply(name), miscasedParamReply(name, "client_id"), emptySelectorReply(name)} {
			if r.status != 400 {
				t.Fatalf("refusal quoting %q has status %d", name, r.status)
			}
			checkErrorBody(t, r.body)
		}
		if name != "" {
			r := newReply(400, name, code+detail+"x")
			checkErrorBody(t, r.body)
		}
	})
}
