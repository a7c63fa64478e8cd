package imds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
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

// errorBody renders exactly what encoding/json renders with HTML escaping
// off, for the texts error replies carry: plain text, quotes, backslashes,
// <&>, line and paragraph separators, newlines and tabs, invalid UTF-8.
func TestErrorBody(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ code, description, want string }{
		{"invalid_request", "Required metadata header not specified",
			`{"error":"invalid_request","error_description":"Required metadata header not specified"}`},
		{"invalid_resource", `The resource is not valid (AADSTS500011: "a\\b" <&>)`,
			`{"error":"invalid_resource","error_description":"The resource is not valid (AADSTS500011: \"a\\\\b\" <&>)"}`},
		{"x", "line\nnext\ttab\u2028\u2029\xff", `{"error":"x","error_description":"line\nnext\ttab\u2028\u2029\ufffd"}`},
		{"", "", `{"error":"","error_description":""}`},
	} {
		got := string(errorBody(tt.code, tt.description))
		if got != tt.want {
			t.Errorf("errorBody(%q, %q) = %s\nwant %s", tt.code, tt.description, got, tt.want)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}{tt.code, tt.description})
		if std := strings.TrimSuffix(b.String(), "\n"); got != std {
			t.Errorf("errorBody(%q, %q) = %s; encoding/json says %s", tt.code, tt.description, got, std)
		}
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

// Every error reply keeps the code and description its IMDS body says, so
// that the App Service endpoint, which renders only the description, says
// exactly what the IMDS endpoint says.
func TestRepliesKeepCodeAndDescription(t *testing.T) {
	t.Parallel()
	for name, r := range map[string]*reply{
		"BadTarget": &replyBadTarget, "BadPath": &replyBadPath, "IdentityPath": &replyIdentityPath,
		"MethodGET": &replyMethodGET, "MethodPOST": &replyMethodPOST, "ForwardedFor": &replyForwardedFor,
		"NoMetadata": &replyNoMetadata, "MalformedQuery": &replyMalformedQuery, "TooManyParams": &replyTooManyParams,
		"BadAPIVersion": &replyBadAPIVersion, "MissingResource": &replyMissingResource, "ManySelectors": &replyManySelectors,
		"NotFound": &replyNotFound, "Blocked": &replyBlocked, "UpstreamTimeout": &replyUpstreamTimeout,
		"UpstreamUnreachable": &replyUpstreamUnreachable, "Body": &replyBody, "Connect": &replyConnect,
		"ConnectQuit": &replyConnectQuit, "Upgrade": &replyUpgrade, "UpstreamSwitched": &replyUpstreamSwitched,
		"AppServiceOff": &replyAppServiceOff, "AppServicePath": &replyAppServicePath, "AppServiceAPIVersion": &replyAppServiceAPIVersion,
		"IdentityHeaderMissing": &replyIdentityHeaderMissing, "IdentityHeaderWrong": &replyIdentityHeaderWrong,
	} {
		var b struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		err := json.Unmarshal(r.body, &b)
		if err != nil || b.Error == "" || r.description == "" || b.Description != r.description ||
			string(r.body) != string(errorBody(b.Error, r.description)) {
			t.Errorf("reply%s: description %q, body %s (%v)", name, r.description, r.body, err)
		}
		if r.status < 400 {
			t.Errorf("reply%s: status %d", name, r.status)
		}
	}
	// The two bodies real IMDS answers byte for byte.
	if got := string(replyNoMetadata.body); got != `{"error":"invalid_request","error_description":"Required metadata header not specified"}` || len(got) != 88 {
		t.Errorf("replyNoMetadata = %s", got)
	}
	if got := string(replyMissingResource.body); got != `{"error":"invalid_request","error_description":"Required query variable 'resource' is missing"}` {
		t.Errorf("replyMissingResource = %s", got)
	}
}

func TestAppServiceErrorBody(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		rep  reply
		id   string
		want string
	}{
		{replyIdentityHeaderWrong, "id", `{"statusCode":401,"message":"X-IDENTITY-HEADER does not match the proxy's secret (IDENTITY_HEADER)","correlationId":"id"}`},
		{newReply(400, "invalid_request", "Identity not found (AADSTS70021: \"quoted\" \\ \u2028 <&>)"), "",
			`{"statusCode":400,"message":"Identity not found (AADSTS70021: \"quoted\" \\ \u2028 <&>)","correlationId":""}`},
		{newReply(503, "x", "a\nb\x00"), "c", `{"statusCode":503,"message":"a\nb\u0000","correlationId":"c"}`},
	} {
		if got := string(appServiceErrorBody(nil, &tt.rep, tt.id)); got != tt.want {
			t.Errorf("appServiceErrorBody = %s\nwant %s", got, tt.want)
		}
	}
}
