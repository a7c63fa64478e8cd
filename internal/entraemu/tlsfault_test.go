package entraemu

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTLSFault: each TLS fault makes a client that trusts the emulator's CA
// fail its next request with the certificate error of that fault, even on
// a client holding a keep-alive connection made before the fault; clearing
// the fault makes the same client work again.
func TestTLSFault(t *testing.T) {
	e := start(t, nil)
	c := e.HTTPClient() // trusts the published CA; keeps connections alive
	discovery := e.Authority() + "/v2.0/.well-known/openid-configuration"
	fetch := func() error {
		resp, err := c.Get(discovery)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("discovery answered %d", resp.StatusCode)
		}
		return nil
	}
	if err := fetch(); err != nil {
		t.Fatalf("before any fault: %v", err)
	}
	for _, tc := range []struct {
		fault TLSFault
		want  func(error) bool
		what  string
	}{
		{TLSFaultUntrustedCA, func(err error) bool {
			var ua x509.UnknownAuthorityError
			return errors.As(err, &ua)
		}, "x509.UnknownAuthorityError"},
		{TLSFaultWrongName, func(err error) bool {
			var he x509.HostnameError
			return errors.As(err, &he) && he.Host == "localhost"
		}, "x509.HostnameError for localhost"},
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			if err := e.SetTLSFault(tc.fault); err != nil {
				t.Fatal(err)
			}
			if got := e.CurrentTLSFault(); got != tc.fault {
				t.Errorf("CurrentTLSFault = %q, want %q", got, tc.fault)
			}
			if err := fetch(); err == nil || !tc.want(err) {
				t.Errorf("request under %q: error %v, want %s", tc.fault, err, tc.what)
			}
			if err := e.SetTLSFault(TLSFaultNone); err != nil {
				t.Fatal(err)
			}
			if err := fetch(); err != nil {
				t.Errorf("after clearing %q: %v", tc.fault, err)
			}
		})
	}
	if err := e.SetTLSFault("expired"); err == nil || !strings.Contains(err.Error(), `"expired"`) {
		t.Errorf("unknown TLS fault: error %v, want one naming it", err)
	}
}

func TestAdminTLSFault(t *testing.T) {
	e := start(t, func(o *Options) { o.EnableAdmin = true })
	if r := admin(t, e, "POST", "/admin/tls", `{"certificate":"wrong-name"}`); r.status != 200 || r.body != `{"certificate":"wrong-name"}` {
		t.Fatalf("set TLS fault: %d %s", r.status, r.body)
	}
	if got := e.CurrentTLSFault(); got != TLSFaultWrongName {
		t.Errorf("CurrentTLSFault = %q after the admin call", got)
	}
	if r := admin(t, e, "POST", "/admin/tls", `{"certificate":"self-signed"}`); r.status != 400 || !strings.Contains(r.body, "self-signed") {
		t.Errorf("invalid TLS fault: %d %s, want 400 naming it", r.status, r.body)
	}
	if r := admin(t, e, "POST", "/admin/tls", `{}`); r.status != 200 || r.body != `{"certificate":""}` {
		t.Errorf("clear TLS fault: %d %s", r.status, r.body)
	}
	if r := admin(t, e, "GET", "/admin/tls", ""); r.status != 200 || r.body != `{"certificate":""}` {
		t.Errorf("get TLS fault: %d %s", r.status, r.body)
	}
}

// TestMaxInFlightAndIssuedTokens: concurrent token requests held by
// injected latency are counted at their peak, the count restarts with
// ResetCounts, and every issued token is listed, through the admin API too.
func TestMaxInFlightAndIssuedTokens(t *testing.T) {
	e := start(t, func(o *Options) { o.EnableAdmin = true })
	assertion := saToken(t, e)
	e.SetFault(Fault{Latency: 300 * time.Millisecond})
	const n = 5
	bodies := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies[i] = post(t, e, testTenant, tokenForm(testClientID, assertion, vaultScope)).body
		}()
	}
	wg.Wait()
	e.SetFault(Fault{})
	if got := e.MaxInFlight(); got != n {
		t.Errorf("MaxInFlight = %d, want %d", got, n)
	}
	var want []string
	for _, b := range bodies {
		var tr tokenResponse
		if err := json.Unmarshal([]byte(b), &tr); err != nil || tr.AccessToken == "" {
			t.Fatalf("token answer %q: %v", b, err)
		}
		want = append(want, tr.AccessToken)
	}
	tokens, dropped := e.IssuedTokens()
	if dropped != 0 || len(tokens) != n {
		t.Fatalf("IssuedTokens = %d tokens, %d dropped; want %d, 0", len(tokens), dropped, n)
	}
	for _, w := range want {
		if !slices.Contains(tokens, w) {
			t.Errorf("issued token %.20s... missing from IssuedTokens", w)
		}
	}
	r := admin(t, e, "GET", "/admin/calls", "")
	if !strings.Contains(r.body, `"max_in_flight":5`) {
		t.Errorf("admin calls: %s, want max_in_flight 5", r.body)
	}
	var list IssuedTokenList
	if r := admin(t, e, "GET", "/admin/issued-tokens", ""); json.Unmarshal([]byte(r.body), &list) != nil || len(list.Tokens) != n || list.Dropped != 0 {
		t.Errorf("admin issued-tokens: %d tokens, %d dropped", len(list.Tokens), list.Dropped)
	}
	e.ResetCounts()
	if got := e.MaxInFlight(); got != 0 {
		t.Errorf("MaxInFlight after ResetCounts = %d, want 0", got)
	}
	if tokens, _ := e.IssuedTokens(); len(tokens) != n {
		t.Errorf("ResetCounts dropped issued tokens: %d left", len(tokens))
	}
}
