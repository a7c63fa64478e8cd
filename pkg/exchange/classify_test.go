package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
)

func TestParseEntraError(t *testing.T) {
	cases := []struct {
		name     string
		body     string
		wantOK   bool
		wantCode int
		wantErr  string
	}{
		{"real 70021", aadstsBody("invalid_request", 70021, "No matching federated identity record found."), true, 70021, "invalid_request"},
		{"codes win over text", `{"error":"invalid_client","error_description":"AADSTS700016: x","error_codes":[700213]}`, true, 700213, "invalid_client"},
		{"text fallback", `{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range."}`, true, 700024, "invalid_client"},
		{"codes as numeric strings accepted", `{"error":"x","error_codes":["70021"],"error_description":"AADSTS500011: y"}`, true, 70021, "x"},
		{"codes as non-numeric strings", `{"error":"x","error_codes":["abc"],"error_description":"AADSTS500011: y"}`, true, 500011, "x"},
		{"codes not an array", `{"error":"x","error_codes":70021}`, true, 0, "x"},
		{"negative code skipped", `{"error":"x","error_codes":[-5,70011]}`, true, 70011, "x"},
		{"float code skipped", `{"error":"x","error_codes":[1.5e3,28002]}`, true, 28002, "x"},
		{"huge code skipped", `{"error":"x","error_codes":[99999999999999999999999]}`, true, 0, "x"},
		{"error not a string", `{"error":{"nested":true},"error_codes":[50001]}`, true, 50001, ""},
		{"description not a string", `{"error":"x","error_description":["AADSTS1"]}`, true, 0, "x"},
		{"AADSTS digits overflow", `{"error_description":"AADSTS99999999999999"}`, true, 999999999, ""},
		{"empty object", `{}`, false, 0, ""},
		{"null", `null`, false, 0, ""},
		{"array", `[1,2]`, false, 0, ""},
		{"html", `<html><body>502 Bad Gateway</body></html>`, false, 0, ""},
		{"empty", ``, false, 0, ""},
		{"truncated json", `{"error":"invalid_request","error_codes":[7002`, false, 0, ""},
		{"trailing garbage ignored", `{"error":"e","error_codes":[70021]}garbage`, true, 70021, "e"},
		{"huge padding", `{"error":"e","pad":"` + strings.Repeat("A", 2*maxErrorBody) + `"}`, false, 0, ""},
		{"nul bytes", "{\"error\":\"a\x00b\"}", false, 0, ""},
		{"unicode escapes", `{"error":"\u0069nvalid","error_description":"AADSTS\u0037\u0030\u0030\u0030\u0031\u0036: x"}`, true, 700016, "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseEntraError([]byte(tc.body))
			if ok != tc.wantOK || got.Code != tc.wantCode || got.Error != tc.wantErr {
				t.Errorf("parseEntraError = %+v, %v; want code %d error %q ok %v", got, ok, tc.wantCode, tc.wantErr, tc.wantOK)
			}
		})
	}
}

func FuzzParseEntraError(f *testing.F) {
	f.Add([]byte(aadstsBody("invalid_request", 70021, "x")))
	f.Add([]byte(`{"error_codes":["1",2,-3,4.5],"error_description":"AADSTS"}`))
	f.Add([]byte(`<html>`))
	f.Add([]byte(`{"error":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, ok := parseEntraError(body)
		if !ok && (e.Code != 0 || e.Error != "" || e.Description != "") {
			t.Fatalf("not ok but fields set: %+v", e)
		}
		if e.Code < 0 {
			t.Fatalf("negative code %d", e.Code)
		}
		// classification never panics and always yields a reason.
		xe := classify(&upstreamError{Status: 400, Body: body}, classifyInput{now: t0})
		if xe == nil || xe.Reason > ReasonTokenFile {
			t.Fatalf("classify = %v", xe)
		}
		if strings.Contains(xe.Detail, string(body)) && len(body) > 40 {
			t.Fatalf("Detail echoes the upstream body: %q", xe.Detail)
		}
	})
}

func TestClassify(t *testing.T) {
	in := classifyInput{
		clientID: clientA,
		scope:    vaultSc,
		projected: ProjectedToken{Issuer: "https://oidc.example/x", Subject: "system:serviceaccount:ns:sa",
			Audience: []string{"api://AzureADTokenExchange"}, Expiry: t0.Add(-time.Minute)},
		now:     t0,
		timeout: 15 * time.Second,
	}
	fed := "no federated credential of application " + clientA + " matches issuer=https://oidc.example/x, subject=system:serviceaccount:ns:sa, audience=api://AzureADTokenExchange"
	cases := []struct {
		name       string
		err        error
		reason     Reason
		code       string
		detail     string
		retryAfter time.Duration
	}{
		{"app not found", upstream(400, aadstsBody("unauthorized_client", 700016, "Application not found")), ReasonIdentityNotFound, "AADSTS700016",
			"application " + clientA + " was not found in the tenant", 0},
		{"no federation 70021", upstream(400, aadstsBody("invalid_request", 70021, "none")), ReasonIdentityNotFound, "AADSTS70021", fed, 0},
		{"issuer 700211", upstream(401, aadstsBody("invalid_client", 700211, "none")), ReasonIdentityNotFound, "AADSTS700211", fed, 0},
		{"audience 700212", upstream(401, aadstsBody("invalid_client", 700212, "none")), ReasonIdentityNotFound, "AADSTS700212", fed, 0},
		{"subject 700213", upstream(401, aadstsBody("invalid_client", 700213, "none")), ReasonIdentityNotFound, "AADSTS700213", fed, 0},
		{"resource 500011", upstream(400, aadstsBody("invalid_resource", 500011, "x")), ReasonInvalidResource, "AADSTS500011", "Entra ID rejected the scope " + vaultSc, 0},
		{"resource 50001", upstream(400, aadstsBody("invalid_resource", 50001, "x")), ReasonInvalidResource, "AADSTS50001", "Entra ID rejected the scope " + vaultSc, 0},
		{"scope 70011", upstream(400, aadstsBody("invalid_scope", 70011, "x")), ReasonInvalidResource, "AADSTS70011", "Entra ID rejected the scope " + vaultSc, 0},
		{"scope 700022", upstream(400, aadstsBody("invalid_scope", 700022, "x")), ReasonInvalidResource, "AADSTS700022", "Entra ID rejected the scope " + vaultSc, 0},
		{"scope 28002", upstream(400, aadstsBody("invalid_scope", 28002, "x")), ReasonInvalidResource, "AADSTS28002", "Entra ID rejected the scope " + vaultSc, 0},
		{"expired 700024", upstream(401, aadstsBody("invalid_client", 700024, "x")), ReasonAssertionRejected, "AADSTS700024",
			"the projected service account token is outside its validity window (exp 2026-11-24T02:59:00Z)", 0},
		{"signature 700027", upstream(401, aadstsBody("invalid_client", 700027, "x")), ReasonAssertionRejected, "AADSTS700027",
			"Entra ID rejected the projected service account token (issuer=https://oidc.example/x, subject=system:serviceaccount:ns:sa, audience=api://AzureADTokenExchange)", 0},
		{"unknown 4xx code", upstream(400, aadstsBody("invalid_request", 12345, "x")), ReasonAssertionRejected, "AADSTS12345",
			"Entra ID rejected the projected service account token (issuer=https://oidc.example/x, subject=system:serviceaccount:ns:sa, audience=api://AzureADTokenExchange)", 0},
		{"429 seconds", upstream(429, aadstsBody("temporarily_unavailable", 90055, "x"), "Retry-After", "7"), ReasonThrottled, "AADSTS90055", "Entra ID is throttling token requests", 7 * time.Second},
		{"429 long", upstream(429, "", "Retry-After", "3600"), ReasonThrottled, "", "Entra ID is throttling token requests", time.Hour},
		{"429 date", upstream(429, "", "Retry-After", t0.Add(12*time.Second).Format(http.TimeFormat)), ReasonThrottled, "", "Entra ID is throttling token requests", 12 * time.Second},
		{"429 no header", upstream(429, "{}"), ReasonThrottled, "", "Entra ID is throttling token requests", 5 * time.Second},
		{"429 garbage header", upstream(429, "", "Retry-After", "soon"), ReasonThrottled, "", "Entra ID is throttling token requests", 5 * time.Second},
		{"429 negative", upstream(429, "", "Retry-After", "-3"), ReasonThrottled, "", "Entra ID is throttling token requests", 5 * time.Second},
		{"429 zero", upstream(429, "", "Retry-After", "0"), ReasonThrottled, "", "Entra ID is throttling token requests", time.Second},
		{"429 past date", upstream(429, "", "Retry-After", t0.Add(-time.Hour).Format(http.TimeFormat)), ReasonThrottled, "", "Entra ID is throttling token requests", time.Second},
		{"loop detection 400", upstream(400, aadstsBody("invalid_request", 50196, "x"), "Retry-After", "2"), ReasonThrottled, "AADSTS50196", "Entra ID is throttling token requests", 2 * time.Second},
		{"transient 400", upstream(400, aadstsBody("temporarily_unavailable", 90024, "x")), ReasonUnavailable, "AADSTS90024", "Entra ID reported a transient failure", 0},
		{"503 json", upstream(503, aadstsBody("temporarily_unavailable", 50000, "x")), ReasonUnavailable, "AADSTS50000", "Entra ID answered HTTP 503", 0},
		{"500 html", upstream(500, "<html>oops</html>"), ReasonUnavailable, "", "Entra ID answered HTTP 500", 0},
		{"400 html", upstream(400, "<html>bad</html>"), ReasonUnavailable, "", "Entra ID answered HTTP 400 with an unreadable body", 0},
		{"400 empty", upstream(400, ""), ReasonUnavailable, "", "Entra ID answered HTTP 400 with an unreadable body", 0},
		{"302", upstream(302, `{"error":"x","error_codes":[70021]}`), ReasonUnavailable, "AADSTS70021", "Entra ID answered HTTP 302", 0},
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), ReasonUnavailable, "", "Entra ID did not answer within 15s", 0},
		{"cancelled", context.Canceled, ReasonUnavailable, "", "the token exchange was cancelled", 0},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, ReasonUnavailable, "", "Entra ID could not be reached or answered unexpectedly", 0},
		{"eof", io.ErrUnexpectedEOF, ReasonUnavailable, "", "Entra ID could not be reached or answered unexpectedly", 0},
		{"token file", tokenFileError("/var/run/secrets/x", errors.New("permission denied")), ReasonTokenFile, "",
			"cannot read the projected service account token file /var/run/secrets/x", 0},
		{"wrapped token file", fmt.Errorf("msal: %w", tokenFileError("/f", errors.New("gone"))), ReasonTokenFile, "",
			"cannot read the projected service account token file /f", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.err, in)
			if got.Reason != tc.reason || got.Code != tc.code || got.Detail != tc.detail || got.RetryAfter != tc.retryAfter {
				t.Errorf("classify =\n  %v %q %q %v\nwant\n  %v %q %q %v", got.Reason, got.Code, got.Detail, got.RetryAfter,
					tc.reason, tc.code, tc.detail, tc.retryAfter)
			}
			if got.Err == nil {
				t.Error("Err (for logs) is nil")
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	want := map[Reason]bool{ReasonIdentityNotFound: true, ReasonInvalidResource: true}
	for r := ReasonUnavailable; r <= ReasonTokenFile; r++ {
		if got := permanent(&Error{Reason: r}); got != want[r] {
			t.Errorf("permanent(%v) = %v", r, got)
		}
	}
}

// TestFromMSALError: CallErr becomes an upstreamError with status, headers
// and body, and without the request (whose form carries the assertion).
func TestFromMSALError(t *testing.T) {
	assertion := unsignedJWT(map[string]any{"sub": "secret-subject"})
	req, _ := http.NewRequest(http.MethodPost, "https://login.example/t/oauth2/v2.0/token", strings.NewReader("client_assertion="+assertion))
	resp := &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"3"}}, Body: io.NopCloser(strings.NewReader(`{"error":"x"}`))}
	ce := msalerrors.CallErr{Req: req, Resp: resp, Err: fmt.Errorf("http call error: reply status code was 429:\n{\"error\":\"x\",\"echo\":%q}", assertion)}
	got := fromMSALError(fmt.Errorf("wrapped: %w", ce))
	var up *upstreamError
	if !errors.As(got, &up) {
		t.Fatalf("got %T", got)
	}
	if up.Status != 429 || up.Header.Get("Retry-After") != "3" || string(up.Body) != `{"error":"x"}` {
		t.Errorf("upstream = %d %v %q", up.Status, up.Header, up.Body)
	}
	if strings.Contains(fmt.Sprint(up.Err), assertion) {
		t.Error("the assertion survived in the error text")
	}
	plain := fmt.Errorf("dial tcp: refused: %w", context.DeadlineExceeded)
	if got := fromMSALError(plain); got.Error() != plain.Error() || !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("non-CallErr error = %v", got)
	}
	decode := fmt.Errorf(`json decode error: bad\njson message bytes were: {"access_token":"opaque-secret","expires_in":""}`)
	if got := fromMSALError(decode).Error(); strings.Contains(got, "opaque-secret") {
		t.Errorf("decode error keeps the token: %s", got)
	}
	tf := tokenFileError("/f", errors.New("gone"))
	if got := fromMSALError(fmt.Errorf("x: %w", tf)); got != tf { //nolint:errorlint // the very value, not a wrapper of it
		t.Errorf("token file error = %v", got)
	}
}

func TestRedact(t *testing.T) {
	jwt := unsignedJWT(map[string]any{"a": 1})
	cases := map[string]string{
		"token " + jwt + " end":                     "token [REDACTED] end",
		`{"x":"` + jwt + `"}`:                       `{"x":"[REDACTED]"}`,
		"no token here":                             "no token here",
		"eyJ alone is fine":                         "eyJ alone is fine",
		"two-part eyJhbGc.eyJzd":                    "two-part [REDACTED]",
		`{"access_token":"opaque","expires_in":""}`: `{"access_token":"[REDACTED]","expires_in":""}`,
		`{"ACCESS_TOKEN" : "x y"}`:                  `{"ACCESS_TOKEN" : "[REDACTED]"}`,
		"client_assertion=abc.def&client_id=1":      "client_assertion=[REDACTED]&client_id=1",
		"grant=x&refresh_token=zzz":                 "grant=x&refresh_token=[REDACTED]",
		`"client_secret":"s3cr3t"`:                  `"client_secret":"[REDACTED]"`,
	}
	for in, want := range cases {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("x", maxErrorBody+10)
	if got := redact(long); len(got) != maxErrorBody+len("...(truncated)") {
		t.Errorf("redact did not bound the length: %d", len(got))
	}
}

func TestRetryAfter(t *testing.T) {
	cases := map[string]time.Duration{
		"":                                defaultRetryAfter,
		"7":                               7 * time.Second,
		" 7 ":                             7 * time.Second,
		"25":                              25 * time.Second,
		"26":                              26 * time.Second, // no 25 s cap here: Entra's wait is honoured
		"300":                             5 * time.Minute,
		"86399":                           86399 * time.Second,
		"86400":                           24 * time.Hour,
		"86401":                           24 * time.Hour,
		"0":                               time.Second,
		"000300":                          5 * time.Minute,
		"-1":                              defaultRetryAfter,
		"+5":                              defaultRetryAfter,
		"5 s":                             defaultRetryAfter,
		"9223372036854775807":             24 * time.Hour,
		"9223372036854775808":             24 * time.Hour,
		"99999999999999999999999":         24 * time.Hour,
		"1.5":                             defaultRetryAfter,
		"1e9":                             defaultRetryAfter,
		"0x10":                            defaultRetryAfter,
		"Tue, 24 Nov 2026 03:00:10 GMT":   10 * time.Second,
		"Tue, 24 Nov 2026 03:05:00 GMT":   5 * time.Minute,
		"Tuesday, 24-Nov-26 03:01:00 GMT": time.Minute,
		"Tue, 24 Nov 2026 02:00:00 GMT":   time.Second,
		"Fri, 31 Dec 9999 23:59:59 GMT":   24 * time.Hour,
		"Mon, 01 Jan 0001 00:00:00 GMT":   time.Second,
		"Tuesday":                         defaultRetryAfter,
		"\x00\xff":                        defaultRetryAfter,
		"٣٠٠":                             defaultRetryAfter, // Arabic-Indic digits are not DIGIT
	}
	for v, want := range cases {
		h := http.Header{}
		if v != "" {
			h["Retry-After"] = []string{v}
		}
		if got := retryAfter(h, t0); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"7", "-1", "Tue, 24 Nov 2026 03:00:10 GMT", "1e9", "", "99999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := retryAfter(http.Header{"Retry-After": {v}}, t0)
		if got < time.Second || got > maxRetryAfter {
			t.Fatalf("retryAfter(%q) = %v out of [1s, %v]", v, got, maxRetryAfter)
		}
		// delay-seconds below the bound are honoured exactly.
		if d := strings.TrimSpace(v); isDigits(d) {
			if n, err := strconv.ParseUint(d, 10, 64); err == nil && n < 86400 {
				if want := max(time.Duration(n)*time.Second, time.Second); got != want {
					t.Fatalf("retryAfter(%q) = %v, want %v", v, got, want)
				}
			}
		}
	})
}
