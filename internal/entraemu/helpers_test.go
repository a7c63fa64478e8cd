package entraemu

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// Test fixtures shared by every test in the package.
const (
	testTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClientID = "11111111-1111-1111-1111-111111111111"
	testObjectID = "22222222-2222-2222-2222-222222222222"
	testMIRID    = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
	testSubject  = "system:serviceaccount:default:workload"
	vaultScope   = "https://vault.azure.net/.default"
)

// testKeys generates the two RSA keys once per test binary: key generation
// under -race is slow, and the tests do not depend on fresh keys.
var testKeys = sync.OnceValues(func() ([2]*rsa.PrivateKey, error) {
	var ks [2]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return ks, err
		}
		ks[i] = k
	}
	return ks, nil
})

// fixedNow is the emulator clock in tests that compare timestamps exactly.
var fixedNow = time.Date(2026, 11, 24, 3, 30, 0, 0, time.UTC)

// start starts an emulator with the default test app, test keys and a test
// logger, and closes it when the test ends. mutate adjusts the options.
func start(t testing.TB, mutate func(*Options)) *Emulator {
	t.Helper()
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Tenant:    testTenant,
		IssuerKey: ks[0],
		TokenKey:  ks[1],
		Logger:    testr.NewWithInterface(t, testr.Options{}),
		Apps: []App{{
			ClientID:    testClientID,
			ObjectID:    testObjectID,
			ResourceID:  testMIRID,
			Federations: []Federation{{Subject: testSubject}},
		}},
	}
	if mutate != nil {
		mutate(&o)
	}
	e, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// saToken mints the default test service-account token.
func saToken(t testing.TB, e *Emulator) string {
	t.Helper()
	tok, err := e.MintServiceAccountToken("default", "workload", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenForm is the form MSAL Go posts for an assertion.
func tokenForm(clientID, assertion, scope string) url.Values {
	return url.Values{
		"client_assertion":      {assertion},
		"client_assertion_type": {clientAssertionTypeJWT},
		"client_id":             {clientID},
		"client_info":           {"1"},
		"grant_type":            {"client_credentials"},
		"scope":                 {scope + " openid offline_access profile"},
	}
}

// reply is a decoded HTTP answer.
type reply struct {
	status int
	header http.Header
	body   string
}

// post sends a token request to the emulator's token endpoint of tenant.
func post(t testing.TB, e *Emulator, tenant string, form url.Values) reply {
	t.Helper()
	u := e.AuthorityHost() + tenant + "/oauth2/v2.0/token"
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Client-Request-Id", "c0ffee00-0000-4000-8000-000000000001")
	return do(t, e.HTTPClient(), req)
}

// get sends a GET to a URL with the emulator's client.
func get(t testing.TB, e *Emulator, u string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, e.HTTPClient(), req)
}

// do runs a request and reads the whole answer.
func do(t testing.TB, c *http.Client, req *http.Request) reply {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// decodeError decodes an Entra error body, failing on unknown fields.
func decodeError(t testing.TB, body string) errorBody {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var eb errorBody
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return eb
}
