package entraemu

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	e := start(t, nil)
	assertion := saToken(t, e)
	cases := []struct {
		name       string
		fault      Fault
		status     int
		retryAfter string
		ctype      string
		oauth      string // JSON bodies: error
		code       int    // JSON bodies: AADSTS code
		body       string // non-JSON bodies: exact body
	}{
		{name: "500", fault: Fault{Status: 500}, status: 500, ctype: jsonContentType, oauth: "server_error", code: 50000},
		{name: "503 with retry-after", fault: Fault{Status: 503, RetryAfter: 2 * time.Second}, status: 503, retryAfter: "2",
			ctype: jsonContentType, oauth: "temporarily_unavailable", code: 50000},
		{name: "429 rounds retry-after up", fault: Fault{Status: 429, RetryAfter: 6500 * time.Millisecond}, status: 429, retryAfter: "7",
			ctype: jsonContentType, oauth: "temporarily_unavailable", code: 90055},
		{name: "injected 400", fault: Fault{Status: 400}, status: 400, ctype: jsonContentType, oauth: "invalid_request", code: 90100},
		{name: "502 html", fault: Fault{Status: 502, Body: FaultBodyHTML}, status: 502, ctype: "text/html; charset=utf-8",
			body: "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><p>The service is unavailable.</p></body></html>\n"},
		{name: "200 garbage", fault: Fault{Body: FaultBodyGarbage}, status: 200, ctype: "application/octet-stream", body: "\x00\xffnot json{{{\x1b[31m"},
		{name: "short latency then normal answer", fault: Fault{Latency: time.Millisecond}, status: 200, ctype: jsonContentType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.SetFault(tc.fault)
			defer e.SetFault(Fault{})
			r := post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope))
			if r.status != tc.status || r.header.Get("Retry-After") != tc.retryAfter || r.header.Get("Content-Type") != tc.ctype {
				t.Fatalf("status %d Retry-After %q Content-Type %q; want %d %q %q; body %q",
					r.status, r.header.Get("Retry-After"), r.header.Get("Content-Type"), tc.status, tc.retryAfter, tc.ctype, r.body)
			}
			switch {
			case tc.code != 0:
				eb := decodeError(t, r.body)
				if eb.Error != tc.oauth || eb.ErrorCodes[0] != tc.code {
					t.Errorf("error %q %v, want %q %d", eb.Error, eb.ErrorCodes, tc.oauth, tc.code)
				}
			case tc.body != "":
				if r.body != tc.body {
					t.Errorf("body %q, want %q", r.body, tc.body)
				}
			default:
				var b tokenResponse
				if err := json.Unmarshal([]byte(r.body), &b); err != nil || b.AccessToken == "" {
					t.Errorf("body %q: %v", r.body, err)
				}
			}
		})
	}
	if n := e.TokenCalls(testClientID, vaultScope); n != len(cases) {
		t.Errorf("faulted requests counted %d, want %d", n, len(cases))
	}
}

func TestFaultDropConnection(t *testing.T) {
	e := start(t, nil)
	e.SetFault(Fault{DropConnection: true, Count: 1})
	req, err := http.NewRequest(http.MethodPost, e.TokenEndpoint(), strings.NewReader(tokenForm(testClientID, saToken(t, e), vaultScope).Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c := e.HTTPClient()
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped connection answered %d", resp.StatusCode)
	}
	if r := post(t, e, testTenant, tokenForm(testClientID, saToken(t, e), vaultScope)); r.status != 200 {
		t.Fatalf("after a one-shot drop: %d %s", r.status, r.body)
	}
	if n := e.TotalTokenCalls(); n != 2 {
		t.Errorf("TotalTokenCalls = %d, want 2", n)
	}
}

func TestFaultCount(t *testing.T) {
	e := start(t, nil)
	assertion := saToken(t, e)
	e.SetFault(Fault{Status: 503, Count: 2})
	var got []int
	for range 3 {
		got = append(got, post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)).status)
	}
	if got[0] != 503 || got[1] != 503 || got[2] != 200 {
		t.Errorf("statuses %v, want [503 503 200]", got)
	}
	if f := e.CurrentFault(); !f.IsZero() {
		t.Errorf("fault still set: %+v", f)
	}
	// Discovery is never faulted.
	e.SetFault(Fault{Status: 500})
	if r := get(t, e, e.Authority()+"/v2.0/.well-known/openid-configuration"); r.status != 200 {
		t.Errorf("discovery under a token fault: %d", r.status)
	}
}

func TestFaultLatencyEndsWithClientOrClose(t *testing.T) {
	e := start(t, nil)
	e.SetFault(Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.TokenEndpoint(), strings.NewReader(tokenForm(testClientID, saToken(t, e), vaultScope).Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := e.HTTPClient().Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if resp != nil {
			resp.Body.Close()
		}
		t.Fatalf("err %v, want a deadline error", err)
	}
	// Close must not wait for the injected hour.
	e.Close()
}

func TestFaultValidation(t *testing.T) {
	e := start(t, nil)
	for _, f := range []Fault{{Latency: -1}, {Status: 99}, {Status: 600}, {Body: "xml"}, {Status: 200}, {Status: 302}, {Count: -1}, {RetryAfter: -time.Second}} {
		if err := e.SetFaultErr(f); err == nil {
			t.Errorf("SetFaultErr(%+v) accepted", f)
		}
	}
	if f := e.CurrentFault(); !f.IsZero() {
		t.Errorf("invalid fault applied: %+v", f)
	}
}

func TestFaultJSON(t *testing.T) {
	cases := []struct {
		in      string
		want    Fault
		wantErr bool
	}{
		{in: `{}`, want: Fault{}},
		{in: `{"latency":"1.5s","status":429,"retry_after":"3s","count":2}`, want: Fault{Latency: 1500 * time.Millisecond, Status: 429, RetryAfter: 3 * time.Second, Count: 2}},
		{in: `{"latency":250000000}`, want: Fault{Latency: 250 * time.Millisecond}},
		{in: `{"body":"html","status":502}`, want: Fault{Status: 502, Body: "html"}},
		{in: `{"drop_connection":true}`, want: Fault{DropConnection: true}},
		{in: `{"status":500,"client_id":"c","scope":"s/.default"}`, want: Fault{Status: 500, ClientID: "c", Scope: "s/.default"}},
		{in: `{"latency":"soon"}`, wantErr: true},
		{in: `{"latency":1.5}`, wantErr: true},
		{in: `{"latency":true}`, wantErr: true},
		{in: `{"status":"500"}`, wantErr: true},
		{in: `[]`, wantErr: true},
		{in: `{"latency":"9999999999999999999h"}`, wantErr: true},
		{in: `{`, wantErr: true},
	}
	for _, tc := range cases {
		var f Fault
		err := json.Unmarshal([]byte(tc.in), &f)
		if (err != nil) != tc.wantErr || (!tc.wantErr && f != tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", tc.in, f, err, tc.want, tc.wantErr)
		}
	}
	b, err := json.Marshal(Fault{Latency: time.Second, Status: 429, RetryAfter: 2 * time.Second, Count: 1})
	if err != nil || string(b) != `{"latency":"1s","status":429,"retry_after":"2s","count":1}` {
		t.Errorf("Marshal = %s, %v", b, err)
	}
}

func FuzzFaultJSON(f *testing.F) {
	f.Add(`{"latency":"1s","status":503,"retry_after":"2s","body":"html","drop_connection":true,"count":3}`)
	f.Add(`{"latency":-5}`)
	f.Fuzz(func(t *testing.T, in string) {
		var x Fault
		if json.Unmarshal([]byte(in), &x) != nil {
			return
		}
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		var y Fault
		if err := json.Unmarshal(b, &y); err != nil || x != y {
			t.Fatalf("round trip %+v -> %s -> %+v (%v)", x, b, y, err)
		}
		_ = x.validate()
	})
}

func TestFaultLimitedToClientAndScope(t *testing.T) {
	e := start(t, func(o *Options) {
		o.Apps = append(o.Apps, App{ClientID: otherClientID, Federations: []Federation{{Subject: testSubject}}})
	})
	assertion := saToken(t, e)
	e.SetFault(Fault{Status: 500, Count: 1, ClientID: strings.ToUpper(testClientID), Scope: vaultScope})
	statuses := []int{
		post(t, e, testTenant, tokenForm(otherClientID, assertion, vaultScope)).status,
		post(t, e, testTenant, tokenForm(testClientID, assertion, "https://storage.azure.com/.default")).status,
		post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)).status,
		post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)).status,
	}
	if statuses[0] != 200 || statuses[1] != 200 || statuses[2] != 500 || statuses[3] != 200 {
		t.Errorf("statuses %v, want [200 200 500 200]", statuses)
	}
}
