package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/gobuild"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
	"github.com/imds-proxy/imds-proxy/test/e2e/clients"
)

// The real SDK clients (docs/testbed.md), unchanged, run in the pod as an
// unprivileged UID without any AZURE_*, IDENTITY_* or MSI_* variable, so
// they find IMDS at 169.254.169.254 and cross the real proxy-init redirect.
// Each client gets a token twice in one process; the test asserts that the
// emulator issued it for the right identity and resource, that the proxy
// saw exactly the requests the client should send (one token request: the
// second token came from the client's own cache), and that Entra was asked
// once.
//
// Every scenario uses its own (identity, resource) pair, so the emulator's
// counter for that pair goes from 0 to exactly 1. The subtests run one
// after another: the proxy's request counters are read before and after
// each client.

// clientUID is the UID the client programs run as (an app container).
const clientUID = 1000

// clientIdentity is one identity of the emulated tenant, federated with the
// pod's service account.
type clientIdentity struct {
	name                           string
	clientID, objectID, resourceID string
}

var (
	// podIdentity is the pod's own identity (AZURE_CLIENT_ID of the
	// sidecar). Requests without a selector get it; object id and resource
	// id selectors resolve to it through the proxy's trial exchange.
	podIdentity = clientIdentity{
		name:       "pod identity",
		clientID:   podenv.DefaultClientID,
		objectID:   "6b0f4a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b",
		resourceID: "/subscriptions/3f2504e0-4f89-11d3-9a0c-0305e82c3301/resourcegroups/rg-e2e/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pod-identity",
	}
	// otherIdentity is a second identity federated with the same service
	// account, selected with client_id (the pod-identity multi-identity
	// pattern).
	otherIdentity = clientIdentity{
		name:       "other identity",
		clientID:   "a4c2e6f8-1b3d-4f5a-9c7e-2d4f6a8b0c1e",
		objectID:   "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6",
		resourceID: "/subscriptions/3f2504e0-4f89-11d3-9a0c-0305e82c3301/resourcegroups/rg-e2e/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other-identity",
	}
)

// clientScenario is one run of one client program.
type clientScenario struct {
	name string
	// argv is the command run in the pod (absolute program path first).
	argv []string
	// id is the identity the token must be for.
	id clientIdentity
	// resource is the resource the client asks IMDS for, which is the
	// token's aud; scope is what the proxy asks Entra for.
	resource, scope string
	// probe400 is the number of availability probes the client sends
	// before its token request (a token-path GET without Metadata, which
	// the proxy answers 400).
	probe400 int
	// expiresSlack is how far expires_on may be from the JWT exp: 0 for
	// clients that take expires_on verbatim.
	expiresSlack int64
	// env is added to the client's clean environment (the App Service
	// variables, for instance).
	env []string
	// route is the proxy's route the client's token request takes, the
	// label of its request counter; "" means "token", the IMDS endpoint.
	route string
}

func TestClients(t *testing.T) {
	podenvtest.SkipUnlessRoot(t)
	root, err := gobuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := podenvtest.Start(t, podenv.Options{
		ClientID: podIdentity.clientID,
		Apps: []entraemu.App{
			podenv.FederatedApp(podIdentity.clientID, podIdentity.objectID, podIdentity.resourceID),
			podenv.FederatedApp(otherIdentity.clientID, otherIdentity.objectID, otherIdentity.resourceID),
		},
	})

	t.Run("Go", func(t *testing.T) {
		bin := buildGoClient(t)
		for _, sc := range []clientScenario{
			goScenario(bin, "azidentity/default", podIdentity, "azidentity", "-scope", "https://graph.microsoft.com/.default", "https://graph.microsoft.com"),
			goScenario(bin, "azidentity/client-id", otherIdentity, "azidentity", "-client-id", otherIdentity.clientID, "-scope", "https://database.windows.net//.default", "https://database.windows.net/"),
			goScenario(bin, "azidentity/object-id", podIdentity, "azidentity", "-object-id", podIdentity.objectID, "-scope", "api://imds-e2e/go-azidentity-object-id/.default", "api://imds-e2e/go-azidentity-object-id"),
			goScenario(bin, "azidentity/resource-id", podIdentity, "azidentity", "-resource-id", podIdentity.resourceID, "-scope", "api://imds-e2e/go-azidentity-resource-id/.default", "api://imds-e2e/go-azidentity-resource-id"),
			goScenario(bin, "msal/system-assigned", podIdentity, "msal", "-resource", "https://storage.azure.com/", "https://storage.azure.com/"),
			goScenario(bin, "msal/client-id", otherIdentity, "msal", "-client-id", otherIdentity.clientID, "-resource", "https://vault.azure.net", "https://vault.azure.net"),
			goScenario(bin, "adal/default", podIdentity, "adal", "-resource", "api://imds-e2e/go-adal-default", "api://imds-e2e/go-adal-default"),
			goScenario(bin, "adal/client-id", otherIdentity, "adal", "-client-id", otherIdentity.clientID, "-resource", "api://imds-e2e/go-adal-client-id", "api://imds-e2e/go-adal-client-id"),
			// adal selects by resource id with mi_res_id, not msi_res_id.
			goScenario(bin, "adal/mi_res_id", podIdentity, "adal", "-resource-id", podIdentity.resourceID, "-resource", "api://imds-e2e/go-adal-mi-res-id", "api://imds-e2e/go-adal-mi-res-id"),
		} {
			t.Run(sc.name, func(t *testing.T) { runClientScenario(t, env, sc) })
		}
	})

	t.Run("Node", func(t *testing.T) {
		node, script := nodeClient(t, root)
		for _, sc := range []clientScenario{
			nodeScenario(node, script, "identity/default", podIdentity, "identity", "--scope", "api://imds-e2e/node-identity-default/.default", "api://imds-e2e/node-identity-default"),
			nodeScenario(node, script, "identity/client-id", otherIdentity, "identity", "--client-id", otherIdentity.clientID, "--scope", "https://storage.azure.com/.default", "https://storage.azure.com"),
			nodeScenario(node, script, "identity/object-id", podIdentity, "identity", "--object-id", podIdentity.objectID, "--scope", "api://imds-e2e/node-identity-object-id/.default", "api://imds-e2e/node-identity-object-id"),
			// msal-node caches under the resource the reply echoes: a
			// trailing slash must come back unchanged for the cache to hit.
			nodeScenario(node, script, "msal/system-assigned", podIdentity, "msal", "--resource", "https://database.windows.net/", "https://database.windows.net/"),
			nodeScenario(node, script, "msal/client-id", otherIdentity, "msal", "--client-id", otherIdentity.clientID, "--resource", "api://imds-e2e/node-msal-client-id", "api://imds-e2e/node-msal-client-id"),
			nodeScenario(node, script, "msal/resource-id", podIdentity, "msal", "--resource-id", podIdentity.resourceID, "--resource", "api://imds-e2e/node-msal-resource-id", "api://imds-e2e/node-msal-resource-id"),
		} {
			t.Run(sc.name, func(t *testing.T) { runClientScenario(t, env, sc) })
		}
	})

	t.Run("Python", func(t *testing.T) {
		py, script := pythonClient(t, root)
		// One process per scenario: azure-identity 1.13.0b2 gives up on
		// managed identity for the life of the process after any 400.
		for _, sc := range []clientScenario{
			pythonScenario(py, script, "default", podIdentity, "api://imds-e2e/python-default/.default", "api://imds-e2e/python-default"),
			pythonScenario(py, script, "client-id", otherIdentity, "https://management.azure.com/.default", "https://management.azure.com", "--client-id", otherIdentity.clientID),
			pythonScenario(py, script, "object-id", podIdentity, "api://imds-e2e/python-object-id/.default", "api://imds-e2e/python-object-id", "--object-id", podIdentity.objectID),
			pythonScenario(py, script, "msi_res_id", podIdentity, "api://imds-e2e/python-msi-res-id/.default", "api://imds-e2e/python-msi-res-id", "--msi-res-id", podIdentity.resourceID),
		} {
			t.Run(sc.name, func(t *testing.T) { runClientScenario(t, env, sc) })
		}
	})

	t.Run("AzureCLI", func(t *testing.T) { testAzureCLI(t, env) })
}

// buildGoClient compiles test/e2e/clients/goclient, once per test binary,
// into podenvtest's shared binary directory (world-readable, since the
// client runs as clientUID; removed by TestMain).
func buildGoClient(t *testing.T) string {
	t.Helper()
	goClientOnce.Do(func() {
		dir := podenvtest.BinDir(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := gobuild.Build(ctx, dir, "./test/e2e/clients/goclient"); err != nil {
			goClientOnce.err = err
			return
		}
		goClientOnce.bin = filepath.Join(dir, "goclient")
	})
	if goClientOnce.err != nil {
		t.Fatal(goClientOnce.err)
	}
	return goClientOnce.bin
}

var goClientOnce struct {
	sync.Once
	bin string
	err error
}

// goScenario builds a Go client scenario. args are the program's
// arguments followed by one more: the resource the client sends to IMDS,
// which is the token's aud.
func goScenario(bin, name string, id clientIdentity, args ...string) clientScenario {
	resource := args[len(args)-1]
	args = args[:len(args)-1]
	return clientScenario{
		name:     name,
		argv:     append([]string{bin}, args...),
		id:       id,
		resource: resource,
		scope:    scopeOf(resource),
	}
}

// nodeClient returns node and the script. A missing one fails the test:
// hack/install-deps.sh, which every make target that runs this suite runs
// first, installs them, so a skip would only hide a broken install.
func nodeClient(t *testing.T, root string) (node, script string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed (hack/install-deps.sh installs it)")
	}
	dir := filepath.Join(root, "test", "e2e", "clients", "node")
	for _, pkg := range []string{"@azure/identity", "@azure/msal-node"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed in %s (run hack/install-deps.sh, which runs npm ci there)", pkg, dir)
		}
	}
	return node, filepath.Join(dir, "get-token.mjs")
}

// nodeScenario is goScenario for the Node script.
func nodeScenario(node, script, name string, id clientIdentity, args ...string) clientScenario {
	resource := args[len(args)-1]
	args = args[:len(args)-1]
	return clientScenario{
		name:     name,
		argv:     append([]string{node, script}, args...),
		id:       id,
		resource: resource,
		scope:    scopeOf(resource),
		// msal-node turns expires_on into a lifetime from its own clock
		// and back.
		expiresSlack: 2,
	}
}

// pythonClient returns Debian's python3 (not a pyenv shim on PATH: the
// Debian package installs into its dist-packages) and the script; a
// missing python3-azure fails the test, as in nodeClient.
func pythonClient(t *testing.T, root string) (py, script string) {
	t.Helper()
	py = "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import azure.identity").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import azure.identity (install the Debian package python3-azure: hack/install-deps.sh): %v\n%s", py, err, out)
	}
	return py, filepath.Join(root, "test", "e2e", "clients", "python", "get_token.py")
}

func pythonScenario(py, script, name string, id clientIdentity, scope, resource string, args ...string) clientScenario {
	return clientScenario{
		name:     name,
		argv:     append(append([]string{py, script}, args...), scope),
		id:       id,
		resource: resource,
		scope:    scopeOf(resource),
		// Its first call probes with the full token query but without
		// Metadata; the proxy's 400 tells it IMDS is there.
		probe400: 1,
	}
}

// runClientScenario runs one client program in the pod and checks what it
// printed against the emulator's and the proxy's counters.
func runClientScenario(t *testing.T, env *podenv.Env, sc clientScenario) {
	if n := podenvtest.Calls(t, env, sc.id.clientID, sc.scope); n != 0 {
		t.Fatalf("emulator already counted %d token calls for %s %q before the client ran", n, sc.id.clientID, sc.scope)
	}
	route := sc.route
	if route == "" {
		route = "token"
	}
	before := proxyRequests(t, env, route)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := podenvtest.Output(t, env.PodCommand(ctx, clientUID, sc.env, sc.argv...))
	after := proxyRequests(t, env, route)

	res, err := clients.ParseResult(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: token sha256 %s, %d bytes, aud %v, appid %v", res.Client, res.TokenSHA256, res.TokenLen, res.Claims["aud"], res.Claims["appid"])
	checkClaims(t, env, res.Claims, sc.id, sc.resource)
	if res.Calls != 2 {
		t.Errorf("client made %d get-token calls, want 2", res.Calls)
	}
	if !res.SameToken {
		t.Errorf("the second get-token returned a different token: the client's cache was not used")
	}
	if res.FromCache != nil && !*res.FromCache {
		t.Errorf("the library says the second token did not come from its cache")
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(res.TokenSHA256) {
		t.Errorf("token_sha256 %q is not a SHA-256", res.TokenSHA256)
	}
	if exp, ok := claimInt(res.Claims, "exp"); ok {
		if d := res.ExpiresOn - exp; d < -sc.expiresSlack || d > sc.expiresSlack {
			t.Errorf("the client's expiry %d is %d s from the token's exp %d (allowed %d)", res.ExpiresOn, d, exp, sc.expiresSlack)
		}
	}
	if n := podenvtest.Calls(t, env, sc.id.clientID, sc.scope); n != 1 {
		t.Errorf("emulator token calls for %s %q = %d, want 1", sc.id.clientID, sc.scope, n)
	}
	want := map[string]int{"200": 1}
	if sc.probe400 > 0 {
		want["400"] = sc.probe400
	}
	checkProxyDelta(t, before, after, want)
}

// checkClaims verifies the claims of a token the emulator issued for id and
// resource.
func checkClaims(t *testing.T, env *podenv.Env, claims map[string]any, id clientIdentity, resource string) {
	t.Helper()
	for _, c := range []struct{ name, want string }{
		{"aud", resource},
		{"appid", id.clientID},
		{"oid", id.objectID},
		{"xms_mirid", id.resourceID},
		{"tid", env.Tenant},
		{"iss", "https://sts.windows.net/" + env.Tenant + "/"},
	} {
		if got, _ := claims[c.name].(string); got != c.want {
			t.Errorf("token claim %s = %q, want %q (the %s)", c.name, got, c.want, id.name)
		}
	}
	exp, ok := claimInt(claims, "exp")
	if !ok {
		t.Fatalf("token has no numeric exp claim: %v", claims)
	}
	// The emulator issues one-hour tokens; the proxy serves fresh ones.
	if left := time.Until(time.Unix(exp, 0)); left < 50*time.Minute || left > 61*time.Minute {
		t.Errorf("token expires in %v, want about 1h", left)
	}
}

// claimInt reads a numeric claim decoded as float64 or json.Number.
func claimInt(claims map[string]any, name string) (int64, bool) {
	switch v := claims[name].(type) {
	case float64:
		return int64(v), true
	case json.Number:
		n, err := v.Int64()
		return n, err == nil
	}
	return 0, false
}

// metricLine matches one sample of the proxy's request counter.
var metricLine = regexp.MustCompile(`^imds_proxy_http_requests_total\{([^}]*)\} ([0-9.e+]+)$`)

// proxyTokenRequests reads the proxy's /metrics from inside the pod and
// returns its token-route request counts by status code.
func proxyTokenRequests(t *testing.T, env *podenv.Env) map[string]int {
	t.Helper()
	return proxyRequests(t, env, "token")
}

// proxyRequests reads the proxy's /metrics from inside the pod and returns
// the request counts of one route by status code.
func proxyRequests(t *testing.T, env *podenv.Env, route string) map[string]int {
	t.Helper()
	url := "http://127.0.0.1:" + strconv.Itoa(env.ProxyPort) + "/metrics"
	out := podenvtest.Output(t, env.PodCommand(context.Background(), clientUID, nil, "curl", "-sS", "--fail", "--max-time", "10", url))
	counts := map[string]int{}
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		found = true
		labels := map[string]string{}
		for _, kv := range strings.Split(m[1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		if labels["route"] != route {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("bad metric sample %q", sc.Text())
		}
		counts[labels["code"]] += int(v)
	}
	if !found {
		// The counter appears once the proxy has answered anything; the
		// readiness poll guarantees that.
		t.Fatalf("the proxy's /metrics has no imds_proxy_http_requests_total samples:\n%s", out)
	}
	return counts
}

// checkProxyDelta compares the requests of one route the proxy answered
// between two readings with want (status code -> count); other codes must
// not appear.
func checkProxyDelta(t *testing.T, before, after, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for code, n := range after {
		if d := n - before[code]; d != 0 {
			got[code] = d
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests the proxy answered during the client run, by status = %v, want %v", got, want)
	}
}

// azTokenOutput is what `az account get-access-token` prints.
type azTokenOutput struct {
	AccessToken  string `json:"accessToken"`
	ExpiresOn    string `json:"expiresOn"`
	Subscription string `json:"subscription"`
	Tenant       string `json:"tenant"`
	TokenType    string `json:"tokenType"`
}

// azAccount is one entry `az login` prints.
type azAccount struct {
	EnvironmentName string `json:"environmentName"`
	TenantID        string `json:"tenantId"`
	IsDefault       bool   `json:"isDefault"`
	User            struct {
		Name                 string `json:"name"`
		Type                 string `json:"type"`
		AssignedIdentityInfo string `json:"assignedIdentityInfo"`
	} `json:"user"`
}

// testAzureCLI drives Debian's azure-cli 2.45 through a custom cloud whose
// Resource Manager and Active Directory endpoints are the emulator (it
// answers the subscription listing with an empty list). That CLI gets every
// token from IMDS through msrestazure, with no cache of its own across
// processes: each `az account get-access-token` asks IMDS again, so the
// second one is served from the proxy's cache (no second Entra call).
func testAzureCLI(t *testing.T, env *podenv.Env) {
	az, err := exec.LookPath("az")
	if err != nil {
		t.Fatal("az is not installed (install the Debian package azure-cli: hack/install-deps.sh)")
	}
	azNoTelemetry(t, env)
	// requests trusts the emulator's CA through REQUESTS_CA_BUNDLE; the
	// emulator's host name resolves through the pod's /etc/netns hosts.
	azEnv := []string{"REQUESTS_CA_BUNDLE=" + env.CAFile}
	arm := "https://" + podenv.EntraHost + "/"
	// The token resource az login asks for (the cloud's Active Directory
	// resource id).
	const loginResource = "https://management.core.windows.net/"
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		out := podenvtest.Output(t, env.PodCommand(ctx, clientUID, azEnv, append([]string{az}, append(args, "--only-show-errors")...)...))
		t.Logf("az %s: %v", strings.Join(args[:min(2, len(args))], " "), time.Since(start).Round(time.Millisecond))
		return out
	}

	// All four endpoints the CLI requires are given, so register reads no
	// metadata document.
	run("cloud", "register", "-n", "Emulator",
		"--endpoint-resource-manager", arm,
		"--endpoint-active-directory", arm,
		"--endpoint-active-directory-resource-id", loginResource,
		"--endpoint-active-directory-graph-resource-id", "https://graph.windows.net/")
	run("cloud", "set", "-n", "Emulator")

	// login runs `az login --identity` with args and checks the account it
	// records (info is how the CLI names the identity: MSI, MSIClient-<id>,
	// MSIObject-<id> or MSIResource-<id>) and the requests it made.
	login := func(t *testing.T, id clientIdentity, info string, want map[string]int, args ...string) {
		t.Helper()
		before := proxyTokenRequests(t, env)
		out := run(append([]string{"login", "--identity", "--allow-no-subscriptions"}, args...)...)
		after := proxyTokenRequests(t, env)
		var accounts []azAccount
		if err := json.Unmarshal([]byte(out), &accounts); err != nil {
			t.Fatalf("az login output: %v\n%s", err, out)
		}
		if len(accounts) != 1 {
			t.Fatalf("az login listed %d accounts, want the one tenant-level account:\n%s", len(accounts), out)
		}
		a := accounts[0]
		wantUser := "systemAssignedIdentity"
		if len(args) > 0 {
			wantUser = "userAssignedIdentity"
		}
		if a.EnvironmentName != "Emulator" || a.TenantID != env.Tenant || !a.IsDefault || a.User.Name != wantUser || a.User.Type != "servicePrincipal" || a.User.AssignedIdentityInfo != info {
			t.Errorf("az login account = %+v, want the Emulator cloud, tenant %s, default, %s, servicePrincipal, %s", a, env.Tenant, wantUser, info)
		}
		if n := podenvtest.Calls(t, env, id.clientID, scopeOf(loginResource)); n != 1 {
			t.Errorf("emulator token calls for %s %q = %d, want 1", id.clientID, scopeOf(loginResource), n)
		}
		checkProxyDelta(t, before, after, want)
	}

	// getToken runs `az account get-access-token` n times for resource and
	// checks every token; all n must be the one token Entra issued once.
	getToken := func(t *testing.T, id clientIdentity, resource string, n int) {
		t.Helper()
		if n := podenvtest.Calls(t, env, id.clientID, scopeOf(resource)); n != 0 {
			t.Fatalf("emulator already counted %d token calls for %s %q", n, id.clientID, scopeOf(resource))
		}
		before := proxyTokenRequests(t, env)
		var sums []string
		for range n {
			out := run("account", "get-access-token", "--resource", resource)
			var tok azTokenOutput
			if err := json.Unmarshal([]byte(out), &tok); err != nil {
				t.Fatalf("az account get-access-token output is not JSON: %v", err)
			}
			if tok.TokenType != "Bearer" || tok.Tenant != env.Tenant {
				t.Errorf("az token type %q, tenant %q; want Bearer, %s", tok.TokenType, tok.Tenant, env.Tenant)
			}
			claims, err := podenv.DecodeClaims(tok.AccessToken)
			if err != nil {
				t.Fatalf("az access token: %v", err)
			}
			checkClaims(t, env, claims, id, resource)
			sum := sha256.Sum256([]byte(tok.AccessToken))
			sums = append(sums, hex.EncodeToString(sum[:]))
		}
		after := proxyTokenRequests(t, env)
		t.Logf("az tokens for %s: sha256 %s", resource, strings.Join(sums, ", "))
		for _, sum := range sums[1:] {
			if sum != sums[0] {
				t.Errorf("the az processes got different tokens: the proxy did not serve the later ones from its cache")
			}
		}
		if n := podenvtest.Calls(t, env, id.clientID, scopeOf(resource)); n != 1 {
			t.Errorf("emulator token calls for %s %q = %d, want 1", id.clientID, scopeOf(resource), n)
		}
		// One IMDS request per az process: this CLI keeps no token cache.
		checkProxyDelta(t, before, after, map[string]int{"200": n})
	}

	t.Run("system-assigned", func(t *testing.T) {
		// One IMDS request: the same credential object then lists the
		// subscriptions on the emulator's Resource Manager.
		login(t, podIdentity, "MSI", map[string]int{"200": 1})
		getToken(t, podIdentity, "https://vault.azure.net", 2)
	})
	t.Run("user-assigned-object-id", func(t *testing.T) {
		// `-u <object id>`: the CLI first tries it as client_id, which must
		// fail with 400 Bad Request for it to retry as object_id.
		login(t, podIdentity, "MSIObject-"+podIdentity.objectID, map[string]int{"400": 1, "200": 1}, "-u", podIdentity.objectID)
		// Each az run is slow (seconds): the cache was shown above.
		getToken(t, podIdentity, "api://imds-e2e/az-object-id", 1)
	})
	t.Run("user-assigned-resource-id", func(t *testing.T) {
		// A resource id is sent as msi_res_id. The login token for the pod
		// identity is already in the proxy's cache: no Entra call.
		login(t, podIdentity, "MSIResource-"+podIdentity.resourceID, map[string]int{"200": 1}, "-u", podIdentity.resourceID)
		getToken(t, podIdentity, "api://imds-e2e/az-resource-id", 1)
	})
}
