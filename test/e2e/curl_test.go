package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

const vault = "https://vault.azure.net"

// TestCurlWire checks the token endpoint byte by byte with curl as an app
// UID through the real redirect: the success answer, its reuse from the
// cache, and the validation answers that never reach Entra.
func TestCurlWire(t *testing.T) {
	t.Parallel()
	// Tokens over 4 KB: a Go server chunks such replies unless it sets
	// Content-Length, which Hadoop's ABFS client rejects.
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, TokenPadding: 6000})
	pod := wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}

	r := curlIMDS(t, env, tokenPath(vault))
	first := checkToken(t, r, pod)
	if len(r.Body) <= 6000 {
		t.Errorf("token reply is %d bytes, want over 6000 (padded token)", len(r.Body))
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	second := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod)
	if second != first {
		t.Errorf("second request got another access token; want the cached one")
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)

	// The resource is echoed verbatim and /.default appended verbatim.
	sql := "https://database.windows.net/"
	checkToken(t, curlIMDS(t, env, tokenPath(sql)), wantToken{Resource: sql, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	wantCalls(t, env, podenv.DefaultClientID, sql, 1)

	// The client id named explicitly is the same identity and cache entry.
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "client_id", podenv.DefaultClientID)), pod)
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)

	t.Run("missing Metadata header", func(t *testing.T) {
		r := curlAs(t, env, appUID, tokenPath(vault))
		if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != `{"error":"invalid_request","error_description":"Required metadata header not specified"}` {
			t.Errorf("got %q %q", r.StatusLine, r.Body)
		}
		checkJSONWire(t, r)
	})
	t.Run("bare probe", func(t *testing.T) {
		// What DefaultAzureCredential sends first: no query, no Metadata.
		r := curlAs(t, env, appUID, "/metadata/identity/oauth2/token")
		if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != `{"error":"invalid_request","error_description":"Required metadata header not specified"}` {
			t.Errorf("got %q %q", r.StatusLine, r.Body)
		}
	})
	t.Run("api-version", func(t *testing.T) {
		for _, path := range []string{
			"/metadata/identity/oauth2/token?resource=" + vault,
			"/metadata/identity/oauth2/token?api-version=2017-09-01&resource=" + vault,
		} {
			r := curlIMDS(t, env, path)
			if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != `{"error":"invalid_request","error_description":"api-version is missing or older than 2018-02-01"}` {
				t.Errorf("%s: got %q %q", path, r.StatusLine, r.Body)
			}
		}
	})
	t.Run("resource missing", func(t *testing.T) {
		r := curlIMDS(t, env, "/metadata/identity/oauth2/token?api-version=2018-02-01")
		if r.StatusLine != "HTTP/1.1 400 Bad Request" || r.Body != `{"error":"invalid_request","error_description":"Required query variable 'resource' is missing"}` {
			t.Errorf("got %q %q", r.StatusLine, r.Body)
		}
	})
	t.Run("disguised identity paths", func(t *testing.T) {
		// Each normalises to an identity path but is not the canonical token
		// path: 400, never forwarded to the node's IMDS (CVE-2022-23551).
		for _, p := range []string{
			"/metadata/identity/oauth2/token/../../identity/oauth2/token",
			"/metadata//identity/oauth2/token",
			"/metadata/identity%2Foauth2%2Ftoken",
			"/metadata/Identity/oauth2/token",
			"/metadata/identity/oauth2\\token",
			"/metadata/identity/oauth2/tokens",
			"/metadata/instance/../identity/oauth2/token",
		} {
			r := curlIMDS(t, env, p+"?api-version=2018-02-01&resource="+vault)
			if r.Code != 400 {
				t.Errorf("%s: status %q, want 400 (body %s)", p, r.StatusLine, r.Body)
				continue
			}
			checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "")
		}
		if got := env.IMDSRequests(); len(got) != 0 {
			t.Errorf("the node's IMDS received %d requests, want none: %+v", len(got), got)
		}
	})
	t.Run("X-Forwarded-For", func(t *testing.T) {
		r := curlAs(t, env, appUID, tokenPath(vault), "Metadata: true", "X-Forwarded-For: 169.254.99.7")
		checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "")
	})
	t.Run("several selectors", func(t *testing.T) {
		r := curlIMDS(t, env, tokenPath(vault, "client_id", podenv.DefaultClientID, "object_id", "d0d0d0d0-aaaa-4bbb-8ccc-ddddeeeeffff"))
		checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "")
	})
	t.Run("identity info", func(t *testing.T) {
		r := curlIMDS(t, env, "/metadata/identity/info?api-version=2018-02-01")
		if r.StatusLine != "HTTP/1.1 200 OK" || r.Body != `{"tenantId":"`+env.Tenant+`"}` {
			t.Errorf("got %q %q", r.StatusLine, r.Body)
		}
		checkJSONWire(t, r)
	})
	t.Run("unknown path", func(t *testing.T) {
		r := curlIMDS(t, env, "/metadata/nothing-here")
		checkError(t, r, "HTTP/1.1 404 Not Found", "not_found", "")
	})
	t.Run("POST", func(t *testing.T) {
		out := podenvtest.Output(t, env.PodCommand(t.Context(), appUID, nil,
			append([]string{"curl", "-X", "POST"}, curlArgs(tokenPath(vault), "Metadata: true")[1:]...)...))
		r := parseWire(t, out)
		checkError(t, r, "HTTP/1.1 405 Method Not Allowed", "method_not_allowed", "")
	})
	// Nothing above reached Entra beyond the two exchanges, or the node.
	wantTotalCalls(t, env, 2)
	if got := env.IMDSRequests(); len(got) != 0 {
		t.Errorf("the node's IMDS received %d requests, want none: %+v", len(got), got)
	}

	// The proxy's debug log holds neither the access tokens nor the
	// projected service-account token (the assertion).
	log, err := os.ReadFile(env.ProxyLog)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := os.ReadFile(env.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{"access token": first, "service-account token": string(sa)} {
		if strings.Contains(string(log), secret) || strings.Contains(string(log), strings.Split(secret, ".")[2]) {
			t.Errorf("the proxy log contains the %s (or its signature)", name)
		}
	}
}
