package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/gobuild"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// The capability-free layout (docs/app-service.md): the proxy serves the
// App Service protocol on 127.0.0.1:8000/msi/token, and the apps are given
// IDENTITY_ENDPOINT and IDENTITY_HEADER instead of a redirect. The real SDK
// clients of TestClients run unchanged in a pod network namespace without
// one iptables rule, as an unprivileged UID, with only those two variables
// (and AZURE_CLIENT_ID where a scenario selects an identity through it).

// appServiceRoute is the label of the App Service endpoint's requests in
// the proxy's metrics.
const appServiceRoute = "app_service_token"

// appServiceEndpoint is the IDENTITY_ENDPOINT apps are given.
var appServiceEndpoint = "http://127.0.0.1:" + strconv.Itoa(podenv.DefaultProxyPort) + "/msi/token"

// newIdentityHeader returns a fresh random secret, as
// `openssl rand -hex 32` makes one for the Kubernetes Secret.
func newIdentityHeader(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// appServiceVars is what the app containers of the layout are given.
func appServiceVars(secret string) []string {
	return []string{"IDENTITY_ENDPOINT=" + appServiceEndpoint, "IDENTITY_HEADER=" + secret}
}

// startAppServicePod starts a pod whose proxy serves the App Service
// endpoint with secret; with redirect false, proxy-init never runs.
func startAppServicePod(t *testing.T, secret string, redirect bool) *podenv.Env {
	t.Helper()
	return podenvtest.Start(t, podenv.Options{
		ClientID: podIdentity.clientID,
		Apps: []entraemu.App{
			podenv.FederatedApp(podIdentity.clientID, podIdentity.objectID, podIdentity.resourceID),
			podenv.FederatedApp(otherIdentity.clientID, otherIdentity.objectID, otherIdentity.resourceID),
		},
		SkipInit: !redirect,
		ProxyEnv: []string{"IDENTITY_HEADER=" + secret},
	})
}

// checkNoRules asserts that the pod's network namespace holds no iptables
// rule at all, in either backend.
func checkNoRules(t *testing.T, env *podenv.Env) {
	t.Helper()
	for _, save := range []string{"iptables-nft-save", "iptables-legacy-save"} {
		out := podenvtest.Output(t, env.PodCommand(context.Background(), 0, nil, save))
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "-A") || strings.HasPrefix(line, "-I") || strings.Contains(line, "IMDS_PROXY") {
				t.Fatalf("%s in the pod shows a rule: %q\n%s", save, line, out)
			}
		}
	}
}

// TestAppServiceClients: in a pod with no iptables rules, every SDK that
// reads IDENTITY_ENDPOINT gets the emulator's token for the default and a
// selected identity through /msi/token, twice in one process with one
// request; the clients that know only IMDS go to the node's IMDS instead
// (that is why they need the redirect layout); a missing or wrong secret
// is refused; and the secret reaches no line of the proxy's log.
func TestAppServiceClients(t *testing.T) {
	podenvtest.SkipUnlessRoot(t)
	root, err := gobuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	secret := newIdentityHeader(t)
	env := startAppServicePod(t, secret, false)
	checkNoRules(t, env)
	vars := appServiceVars(secret)
	as := func(sc clientScenario, extra ...string) clientScenario {
		sc.env = append(slices.Clone(vars), extra...)
		sc.route = appServiceRoute
		// No IMDS probe on this protocol.
		sc.probe400 = 0
		return sc
	}

	t.Run("Go", func(t *testing.T) {
		bin := buildGoClient(t)
		for _, sc := range []clientScenario{
			as(goScenario(bin, "azidentity/default", podIdentity, "azidentity", "-scope", "api://imds-e2e/as-go-azidentity-default/.default", "api://imds-e2e/as-go-azidentity-default")),
			as(goScenario(bin, "azidentity/client-id", otherIdentity, "azidentity", "-client-id", otherIdentity.clientID, "-scope", "https://database.windows.net//.default", "https://database.windows.net/")),
			as(goScenario(bin, "azidentity/object-id", podIdentity, "azidentity", "-object-id", podIdentity.objectID, "-scope", "api://imds-e2e/as-go-azidentity-object-id/.default", "api://imds-e2e/as-go-azidentity-object-id")),
			as(goScenario(bin, "dac/default", podIdentity, "dac", "-scope", "api://imds-e2e/as-go-dac-default/.default", "api://imds-e2e/as-go-dac-default")),
			// DefaultAzureCredential selects a managed identity through
			// AZURE_CLIENT_ID only; with no tenant and no token file its
			// environment and workload identity credentials stay out.
			as(goScenario(bin, "dac/AZURE_CLIENT_ID", otherIdentity, "dac", "-scope", "api://imds-e2e/as-go-dac-client-id/.default", "api://imds-e2e/as-go-dac-client-id"),
				"AZURE_CLIENT_ID="+otherIdentity.clientID),
			as(goScenario(bin, "msal/system-assigned", podIdentity, "msal", "-resource", "https://storage.azure.com/", "https://storage.azure.com/")),
			as(goScenario(bin, "msal/client-id", otherIdentity, "msal", "-client-id", otherIdentity.clientID, "-resource", "https://vault.azure.net", "https://vault.azure.net")),
			// MSAL Go sends the resource id as mi_res_id on this protocol.
			as(goScenario(bin, "msal/resource-id", otherIdentity, "msal", "-resource-id", otherIdentity.resourceID, "-resource", "api://imds-e2e/as-go-msal-resource-id", "api://imds-e2e/as-go-msal-resource-id")),
		} {
			t.Run(sc.name, func(t *testing.T) { runAppServiceScenario(t, env, sc) })
		}
	})

	t.Run("Node", func(t *testing.T) {
		node, script := nodeClient(t, root)
		for _, sc := range []clientScenario{
			as(nodeScenario(node, script, "identity/default", podIdentity, "identity", "--scope", "api://imds-e2e/as-node-identity-default/.default", "api://imds-e2e/as-node-identity-default")),
			as(nodeScenario(node, script, "identity/client-id", otherIdentity, "identity", "--client-id", otherIdentity.clientID, "--scope", "https://storage.azure.com/.default", "https://storage.azure.com")),
			as(nodeScenario(node, script, "dac/default", podIdentity, "dac", "--scope", "api://imds-e2e/as-node-dac-default/.default", "api://imds-e2e/as-node-dac-default")),
			as(nodeScenario(node, script, "dac/client-id", otherIdentity, "dac", "--client-id", otherIdentity.clientID, "--scope", "api://imds-e2e/as-node-dac-client-id/.default", "api://imds-e2e/as-node-dac-client-id")),
			as(nodeScenario(node, script, "msal/system-assigned", podIdentity, "msal", "--resource", "https://database.windows.net/", "https://database.windows.net/")),
			as(nodeScenario(node, script, "msal/client-id", otherIdentity, "msal", "--client-id", otherIdentity.clientID, "--resource", "api://imds-e2e/as-node-msal-client-id", "api://imds-e2e/as-node-msal-client-id")),
			as(nodeScenario(node, script, "msal/object-id", otherIdentity, "msal", "--object-id", otherIdentity.objectID, "--resource", "api://imds-e2e/as-node-msal-object-id", "api://imds-e2e/as-node-msal-object-id")),
		} {
			t.Run(sc.name, func(t *testing.T) { runAppServiceScenario(t, env, sc) })
		}
	})

	t.Run("Python", func(t *testing.T) {
		py, script := pythonClient(t, root)
		for _, sc := range []clientScenario{
			as(pythonScenario(py, script, "default", podIdentity, "api://imds-e2e/as-python-default/.default", "api://imds-e2e/as-python-default")),
			as(pythonScenario(py, script, "client-id", otherIdentity, "https://management.azure.com/.default", "https://management.azure.com", "--client-id", otherIdentity.clientID)),
			// azure-identity passes identity_config through verbatim:
			// App Service's mi_res_id.
			as(pythonScenario(py, script, "mi_res_id", otherIdentity, "api://imds-e2e/as-python-mi-res-id/.default", "api://imds-e2e/as-python-mi-res-id", "--mi-res-id", otherIdentity.resourceID)),
		} {
			t.Run(sc.name, func(t *testing.T) { runAppServiceScenario(t, env, sc) })
		}
	})

	t.Run("IMDS only", func(t *testing.T) { testIMDSOnlyClients(t, env, root, vars) })

	t.Run("refused", func(t *testing.T) {
		before := proxyRequests(t, env, appServiceRoute)
		query := "?api-version=2019-08-01&resource=https://vault.azure.net"
		missing := curlAppService(t, env, query)
		checkAppServiceError(t, missing, 401, "Required header X-IDENTITY-HEADER not specified")
		wrong := curlAppService(t, env, query, "X-IDENTITY-HEADER: "+newIdentityHeader(t))
		checkAppServiceError(t, wrong, 401, "X-IDENTITY-HEADER does not match the proxy's secret (IDENTITY_HEADER)")
		near := curlAppService(t, env, query, "X-IDENTITY-HEADER: "+secret[:len(secret)-1])
		checkAppServiceError(t, near, 401, "X-IDENTITY-HEADER does not match the proxy's secret (IDENTITY_HEADER)")
		checkProxyDelta(t, before, proxyRequests(t, env, appServiceRoute), map[string]int{"401": 3})
	})

	// Everything above, at --log-level=debug: the secret is nowhere.
	log, err := os.ReadFile(env.ProxyLog)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), secret) || strings.Contains(string(log), secret[:16]) {
		t.Error("the proxy log carries the App Service secret")
	}
	if !strings.Contains(string(log), `"appServiceEndpoint":"/msi/token, secret from IDENTITY_HEADER"`) {
		t.Errorf("the proxy's start-up line does not name the App Service endpoint:\n%s", log)
	}
}

// runAppServiceScenario is runClientScenario for a client given the App
// Service variables in a pod without the redirect: nothing of it may
// reach IMDS, not even an availability probe.
func runAppServiceScenario(t *testing.T, env *podenv.Env, sc clientScenario) {
	t.Helper()
	seen := len(env.IMDSRequests())
	runClientScenario(t, env, sc)
	for _, r := range env.IMDSRequests()[seen:] {
		t.Errorf("the client sent %s %s to the node's IMDS", r.Method, r.RequestURI)
	}
}

// testIMDSOnlyClients shows why go-autorest adal and the Azure CLI 2.45
// (msrestazure) still need the redirect layout: given the App Service
// variables, they ignore them and ask IMDS at 169.254.169.254, which
// without the redirect is the node's own (the harness's fake real IMDS,
// which has no token for them). The proxy sees none of their requests.
func testIMDSOnlyClients(t *testing.T, env *podenv.Env, root string, vars []string) {
	// runUntil runs a client that is not going to get a token, for at
	// most d (these clients retry the node's 404 with back-off), and
	// returns the requests of it the node's IMDS saw.
	runUntil := func(t *testing.T, d time.Duration, userAgent string, extra []string, argv ...string) []podenv.IMDSRequest {
		t.Helper()
		seen := len(env.IMDSRequests())
		beforeAS, beforeIMDS := proxyRequests(t, env, appServiceRoute), proxyTokenRequests(t, env)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		out, err := env.PodCommand(ctx, clientUID, append(slices.Clone(vars), extra...), argv...).CombinedOutput()
		if err == nil {
			t.Fatalf("%s got a token it could only have had from the proxy:\n%s", argv[0], out)
		}
		checkProxyDelta(t, beforeAS, proxyRequests(t, env, appServiceRoute), map[string]int{})
		checkProxyDelta(t, beforeIMDS, proxyTokenRequests(t, env), map[string]int{})
		var reqs []podenv.IMDSRequest
		for _, r := range env.IMDSRequests()[seen:] {
			if strings.HasPrefix(r.RequestURI, "/metadata/identity/oauth2/token?") && strings.Contains(r.Header.Get("User-Agent"), userAgent) {
				reqs = append(reqs, r)
			}
		}
		if len(reqs) == 0 {
			t.Fatalf("the node's IMDS saw no token request from %s (User-Agent %q); %s said:\n%s", argv[0], userAgent, argv[0], out)
		}
		t.Logf("%s asked the node's IMDS %d times: %s", argv[0], len(reqs), reqs[0].RequestURI)
		return reqs
	}

	t.Run("go-autorest adal", func(t *testing.T) {
		bin := buildGoClient(t)
		runUntil(t, 30*time.Second, "go-autorest/adal", nil, bin, "adal", "-timeout", "5s", "-resource", "api://imds-e2e/as-adal")
	})
	t.Run("Azure CLI 2.45", func(t *testing.T) {
		az, err := exec.LookPath("az")
		if err != nil {
			t.Fatal("az is not installed (install the Debian package azure-cli: hack/install-deps.sh)")
		}
		azNoTelemetry(t, env)
		reqs := runUntil(t, 20*time.Second, "msrest_azure", nil, az, "login", "--identity", "--allow-no-subscriptions", "--only-show-errors")
		if h := reqs[0].Header; h.Get("X-Identity-Header") != "" || h.Get("Metadata") != "true" {
			t.Errorf("az sent X-IDENTITY-HEADER %q, Metadata %q: want an IMDS request", h.Get("X-Identity-Header"), h.Get("Metadata"))
		}
	})
}

// azNoTelemetry writes the Azure CLI's configuration for the client UID:
// no telemetry upload (a detached process at exit) and no survey.
func azNoTelemetry(t *testing.T, env *podenv.Env) {
	t.Helper()
	home, err := env.Home(clientUID)
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := filepath.Join(home, ".azure")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config"), []byte("[core]\ncollect_telemetry = no\nsurvey_message = no\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cfgDir, filepath.Join(cfgDir, "config")} {
		if err := os.Chown(p, clientUID, clientUID); err != nil {
			t.Fatal(err)
		}
	}
}

// curlAppService sends GET IDENTITY_ENDPOINT+query from inside the pod as
// the app UID, with headers, and parses what came back.
func curlAppService(t *testing.T, env *podenv.Env, query string, headers ...string) wireReply {
	t.Helper()
	argv := []string{"curl", "-sS", "-i", "--max-time", "60"}
	for _, h := range headers {
		argv = append(argv, "-H", h)
	}
	out := podenvtest.Output(t, env.PodCommand(context.Background(), appUID, nil, append(argv, appServiceEndpoint+query)...))
	return parseWire(t, out)
}

// checkAppServiceError asserts an App Service error answer: the JSON wire
// shape, exactly statusCode (the HTTP status), message and a UUID
// correlationId.
func checkAppServiceError(t *testing.T, r wireReply, status int, message string) {
	t.Helper()
	if r.Code != status {
		t.Errorf("status %d, want %d: %s", r.Code, status, r.Body)
	}
	checkJSONWire(t, r)
	var body map[string]any
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.Body, err)
	}
	if keys := sortedKeys(body); !slices.Equal(keys, []string{"correlationId", "message", "statusCode"}) {
		t.Errorf("error body keys %v, want [correlationId message statusCode]: %s", keys, r.Body)
	}
	if body["statusCode"] != float64(status) || body["message"] != message {
		t.Errorf("error body %s, want statusCode %d and message %q", r.Body, status, message)
	}
	if id, _ := body["correlationId"].(string); len(id) != 36 || strings.Count(id, "-") != 4 {
		t.Errorf("correlationId %q is not a UUID", id)
	}
}

// appServiceTokenKeys are the keys of an App Service success body.
var appServiceTokenKeys = []string{"access_token", "client_id", "expires_in", "expires_on", "not_before", "resource", "token_type"}

// checkAppServiceToken asserts a 200 App Service token answer: the JSON
// wire shape, exactly its keys, all strings, and the emulator's token for
// the identity and resource, expiring when expires_on says. It returns the
// access token.
func checkAppServiceToken(t *testing.T, env *podenv.Env, r wireReply, id clientIdentity, resource string) string {
	t.Helper()
	if r.StatusLine != "HTTP/1.1 200 OK" {
		t.Fatalf("status line %q, want HTTP/1.1 200 OK: %s", r.StatusLine, r.Body)
	}
	checkJSONWire(t, r)
	var body map[string]string
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("token body: %v (every value must be a string)", err)
	}
	if keys := slices.Sorted(maps.Keys(body)); !slices.Equal(keys, appServiceTokenKeys) {
		t.Errorf("token body keys %v, want %v", keys, appServiceTokenKeys)
	}
	if body["resource"] != resource || body["client_id"] != id.clientID || body["token_type"] != "Bearer" {
		t.Errorf("token body resource %q client_id %q token_type %q", body["resource"], body["client_id"], body["token_type"])
	}
	claims, err := podenv.DecodeClaims(body["access_token"])
	if err != nil {
		t.Fatal(err)
	}
	checkClaims(t, env, claims, id, resource)
	if exp, _ := claimInt(claims, "exp"); strconv.FormatInt(exp, 10) != body["expires_on"] {
		t.Errorf("expires_on %q, token exp %d", body["expires_on"], exp)
	}
	return body["access_token"]
}

// TestAppServiceBesideRedirect: in the redirect layout the App Service
// endpoint can be on too, so one pod can hold apps of both kinds. The IMDS
// path keeps working through the redirect, both endpoints hand out the one
// cached token (one Entra call), an SDK given the App Service variables
// and an IMDS-only one get their tokens side by side, and the node's IMDS
// sees no token request.
func TestAppServiceBesideRedirect(t *testing.T) {
	podenvtest.SkipUnlessRoot(t)
	secret := newIdentityHeader(t)
	env := startAppServicePod(t, secret, true)
	const resource = "https://vault.azure.net"

	viaIMDS := curlIMDS(t, env, tokenPath(resource))
	imdsToken := checkToken(t, viaIMDS, wantToken{Resource: resource, ClientID: podIdentity.clientID, Tenant: env.Tenant})
	viaAS := curlAppService(t, env, "?api-version=2019-08-01&resource="+resource, "X-IDENTITY-HEADER: "+secret)
	if asToken := checkAppServiceToken(t, env, viaAS, podIdentity, resource); asToken != imdsToken {
		t.Error("the two endpoints handed out different tokens: they do not share the cache")
	}
	wantCalls(t, env, podIdentity.clientID, resource, 1)

	bin := buildGoClient(t)
	msal := goScenario(bin, "msal beside the redirect", otherIdentity, "msal", "-client-id", otherIdentity.clientID,
		"-resource", "api://imds-e2e/beside-msal", "api://imds-e2e/beside-msal")
	msal.env, msal.route = appServiceVars(secret), appServiceRoute
	runClientScenario(t, env, msal)
	runClientScenario(t, env, goScenario(bin, "adal through the redirect", otherIdentity, "adal", "-client-id", otherIdentity.clientID,
		"-resource", "api://imds-e2e/beside-adal", "api://imds-e2e/beside-adal"))

	for _, r := range env.IMDSRequests() {
		if strings.Contains(r.RequestURI, "/identity/") {
			t.Errorf("the node's IMDS saw %s: the redirect let it through", r.RequestURI)
		}
	}
}
