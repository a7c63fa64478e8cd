package entraemu

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// externalIssuer is an https OIDC issuer outside the emulator, shaped like
// a kube-apiserver publishing its service-account issuer: discovery at the
// root, JWKS at /openid/v1/jwks, a self-signed serving certificate.
type externalIssuer struct {
	srv   *httptest.Server
	kid   string
	mu    sync.Mutex
	paths []string // requested paths, in order
}

func startExternalIssuer(t *testing.T) *externalIssuer {
	t.Helper()
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	key := ks[1] // any key the emulator does not sign with as an issuer
	x := &externalIssuer{}
	if x.kid, err = keyID(&key.PublicKey); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer":   x.srv.URL,
			"jwks_uri": x.srv.URL + "/openid/v1/jwks",
		})
	})
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		// kube-apiserver produces its JWKS only as application/jwk-set+json
		// and answers 406 to an Accept header that rules that out.
		if !acceptsJWKS(r.Header.Get("Accept")) {
			http.Error(w, "406: Not Acceptable\n\nAvailable representations: application/jwk-set+json", http.StatusNotAcceptable)
			return
		}
		b, _ := json.Marshal(jwks{Keys: []jwk{publicJWK(&key.PublicKey, x.kid)}})
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(b)
	})
	x.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.mu.Lock()
		x.paths = append(x.paths, r.URL.Path)
		x.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	// The untrusted fetches end in TLS handshake errors on purpose.
	x.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	x.srv.StartTLS()
	t.Cleanup(x.srv.Close)
	return x
}

// acceptsJWKS reports whether an Accept header admits
// application/jwk-set+json (no header admits anything).
func acceptsJWKS(accept string) bool {
	if accept == "" {
		return true
	}
	for _, r := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(r), ";")
		if mt == "*/*" || mt == "application/*" || mt == "application/jwk-set+json" {
			return true
		}
	}
	return false
}

// caPEM is the issuer's self-signed certificate in PEM form.
func (x *externalIssuer) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.srv.Certificate().Raw}))
}

// token signs a service-account token as this issuer would.
func (x *externalIssuer) token(t *testing.T, subject string) string {
	t.Helper()
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := signRS256(ks[1], x.kid, nil, saClaims{
		Aud: []string{defaultFederationAudience}, Exp: now.Add(time.Hour).Unix(), Iat: now.Unix(),
		Iss: x.srv.URL, JTI: newUUID(), Nbf: now.Unix(), Sub: subject,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (x *externalIssuer) requested() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.paths...)
}

// TestTrustedIssuer: an assertion from an external https issuer verifies
// against the JWKS fetched from it only once its CA is trusted; untrusted
// or trusted with the wrong CA, the fetch fails with AADSTS90061, and the
// federation checks after the signature keep their order and codes.
func TestTrustedIssuer(t *testing.T) {
	x := startExternalIssuer(t)
	e := start(t, func(o *Options) {
		o.Apps = append(o.Apps, App{ClientID: otherClientID, Federations: []Federation{{Issuer: x.srv.URL, Subject: testSubject}}})
	})
	good := x.token(t, testSubject)

	r := post(t, e, testTenant, tokenForm(otherClientID, good, vaultScope))
	eb := decodeError(t, r.body)
	if r.status != 400 || eb.ErrorCodes[0] != CodeOIDCFetchFailed || !strings.Contains(eb.ErrorDescription, "certificate signed by unknown authority") {
		t.Fatalf("untrusted CA: %d %s, want 400 AADSTS90061 naming the unknown authority", r.status, r.body)
	}

	if err := e.TrustIssuer(TrustedIssuer{Issuer: x.srv.URL, CACertPEM: string(e.CACertPEM())}); err != nil {
		t.Fatal(err)
	}
	r = post(t, e, testTenant, tokenForm(otherClientID, good, vaultScope))
	if r.status != 400 || decodeError(t, r.body).ErrorCodes[0] != CodeOIDCFetchFailed {
		t.Fatalf("trusted with another CA: %d %s, want 400 AADSTS90061", r.status, r.body)
	}

	if err := e.TrustIssuer(TrustedIssuer{Issuer: x.srv.URL, CACertPEM: x.caPEM()}); err != nil {
		t.Fatal(err)
	}
	fetchesBefore := e.IssuerFetches()
	for range 2 {
		if r := post(t, e, testTenant, tokenForm(otherClientID, good, vaultScope)); r.status != 200 {
			t.Fatalf("trusted issuer: %d %s", r.status, r.body)
		}
	}
	if n := e.IssuerFetches() - fetchesBefore; n != 1 {
		t.Errorf("issuer fetched %d times for two assertions, want 1 (keys cached)", n)
	}
	want := []string{"/.well-known/openid-configuration", "/openid/v1/jwks"}
	if got := x.requested(); len(got) < 2 || !slices.Equal(got[len(got)-2:], want) {
		t.Errorf("issuer requests %q, want to end with %q", got, want)
	}

	r = post(t, e, testTenant, tokenForm(otherClientID, x.token(t, "system:serviceaccount:default:other"), vaultScope))
	if r.status != 401 || decodeError(t, r.body).ErrorCodes[0] != CodeSubjectMismatch {
		t.Errorf("wrong subject from the trusted issuer: %d %s, want 401 AADSTS700213", r.status, r.body)
	}
	// The emulator's own issuer is untouched.
	if r := post(t, e, testTenant, tokenForm(testClientID, saToken(t, e), vaultScope)); r.status != 200 {
		t.Errorf("own issuer after trusting another: %d %s", r.status, r.body)
	}
}

func TestTrustIssuerRejects(t *testing.T) {
	x := startExternalIssuer(t)
	e := start(t, nil)
	ca := x.caPEM()
	cases := []struct {
		name string
		t    TrustedIssuer
		want string
	}{
		{"plain http", TrustedIssuer{Issuer: "http://kube.example", CACertPEM: ca}, "not an https URL"},
		{"no host", TrustedIssuer{Issuer: "https://", CACertPEM: ca}, "not an https URL"},
		{"user info", TrustedIssuer{Issuer: "https://u:p@kube.example", CACertPEM: ca}, "not an https URL"},
		{"query", TrustedIssuer{Issuer: "https://kube.example/?x=1", CACertPEM: ca}, "not an https URL"},
		{"not a URL", TrustedIssuer{Issuer: "https://kube example/%zz", CACertPEM: ca}, "not an https URL"},
		{"empty bundle", TrustedIssuer{Issuer: "https://kube.example"}, "no PEM certificate"},
		{"garbage bundle", TrustedIssuer{Issuer: "https://kube.example", CACertPEM: "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"}, "no PEM certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.TrustIssuer(tc.t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("TrustIssuer(%+v) = %v, want an error containing %q", tc.t, err, tc.want)
			}
		})
	}
	if _, err := Start(Options{TrustedIssuers: []TrustedIssuer{cases[0].t}}); err == nil {
		t.Error("Start accepted a plain-http trusted issuer")
	}
}

func TestAdminTrustedIssuers(t *testing.T) {
	x := startExternalIssuer(t)
	e := start(t, func(o *Options) { o.EnableAdmin = true })
	postJSON := func(v any) reply {
		b, _ := json.Marshal(v)
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.IssuerURL()+"/admin/trusted-issuers", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return do(t, http.DefaultClient, req)
	}
	if r := postJSON(TrustedIssuer{Issuer: x.srv.URL, CACertPEM: x.caPEM()}); r.status != 200 || r.body != `{"issuer":"`+x.srv.URL+`"}` {
		t.Errorf("trust: %d %s", r.status, r.body)
	}
	if r := postJSON(map[string]string{"issuer": "http://kube.example", "ca_cert_pem": x.caPEM()}); r.status != 400 || !strings.Contains(r.body, "not an https URL") {
		t.Errorf("plain http: %d %s, want 400", r.status, r.body)
	}
	e.AddApp(App{ClientID: otherClientID, Federations: []Federation{{Issuer: x.srv.URL, Subject: testSubject}}})
	if r := post(t, e, testTenant, tokenForm(otherClientID, x.token(t, testSubject), vaultScope)); r.status != 200 {
		t.Errorf("issuer trusted through the admin API: %d %s", r.status, r.body)
	}
}
