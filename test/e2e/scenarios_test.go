package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// Identities of the multi-identity scenarios, all federated with the pod's
// service account unless a test says otherwise.
const (
	appB       = "2c4e6a80-1b3d-4f5a-8c7e-9d0f1a2b3c4d"
	appBObject = "b0b0b0b0-1111-4222-8333-444455556666"
	appBMIRID  = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-b"
	appC       = "3d5f7b91-2c4e-4a6b-9d8f-0e1a2b3c4d5e"
	defaultOID = "d0d0d0d0-aaaa-4bbb-8ccc-ddddeeeeffff"
	unknownApp = "99999999-9999-4999-8999-999999999999"
	storage    = "https://storage.azure.com/"
	// unknownResource is registered as unknown to the tenant (AADSTS500011).
	unknownResource = "https://unknown.resource.example"
)

// TestAppInitContainer: on a cluster with native sidecars the proxy starts
// first, then azwi-proxy-init installs the rules, then the app's own init
// containers run; on older clusters the app's init containers run right
// after azwi-proxy-init while the proxy is not up yet. Either way an app
// init container gets the pod's token through 169.254.169.254.
func TestAppInitContainer(t *testing.T) {
	t.Parallel()
	t.Run("native sidecar started before the rules", func(t *testing.T) {
		t.Parallel()
		env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, SkipInit: true})
		if err := env.RunInit(context.Background(), "--check"); err == nil {
			t.Errorf("proxy-init --check passed before proxy-init ran")
		}
		// A restarted init container runs again: same rules, still in place.
		for range 2 {
			if err := env.RunInit(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if err := env.RunInit(context.Background(), "--check"); err != nil {
			t.Error(err)
		}
		checkToken(t, curlIMDS(t, env, tokenPath(vault)), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
		wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	})
	t.Run("app init container started before the proxy", func(t *testing.T) {
		t.Parallel()
		env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, DeferProxy: true})
		// The app init container starts right after proxy-init; until the
		// proxy listens, its connections are refused and curl retries.
		argv := append([]string{"curl", "--retry", "30", "--retry-connrefused", "--retry-delay", "1"}, curlArgs(tokenPath(vault), "Metadata: true")[1:]...)
		cmd := env.PodCommand(context.Background(), appUID, nil, argv...)
		var out, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := env.StartProxy(context.Background()); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("app init container: %v\n%s", err, stderr.String())
		}
		checkToken(t, parseWire(t, out.String()), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
		wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	})
}

// TestNoDefaultClientID: a service account without the client-id
// annotation gives the pod no AZURE_CLIENT_ID. Requests naming a client id
// work; requests without one get 400 Identity not found without an Entra
// call.
func TestNoDefaultClientID(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{Apps: []entraemu.App{podenv.FederatedApp(appB, "", "")}})
	r := curlIMDS(t, env, tokenPath(vault))
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "Identity not found")
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "client_id", appB)), wantToken{Resource: vault, ClientID: appB, Tenant: env.Tenant})
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "client_id", appB)), wantToken{Resource: vault, ClientID: appB, Tenant: env.Tenant})
	wantCalls(t, env, appB, vault, 1)
	wantTotalCalls(t, env, 1)
}

// TestUnknownIdentity: a client id Entra does not know, and one without a
// federation for the pod's service account, both answer 400 Identity not
// found (the status line the Azure CLI falls back on); the negative cache
// keeps a repeat from reaching Entra.
func TestUnknownIdentity(t *testing.T) {
	t.Parallel()
	unfederated := entraemu.App{ClientID: appC}
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, Apps: []entraemu.App{unfederated}, InvalidResources: []string{unknownResource}})
	for _, id := range []string{unknownApp, appC} {
		for range 2 {
			r := curlIMDS(t, env, tokenPath(vault, "client_id", id))
			checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "Identity not found")
		}
		wantCalls(t, env, id, vault, 1)
	}
	r := curlIMDS(t, env, tokenPath(vault, "client_id", unknownApp))
	if d := r.Body; !strings.Contains(d, "AADSTS700016") {
		t.Errorf("unknown app: description should name AADSTS700016: %s", d)
	}
	r = curlIMDS(t, env, tokenPath(vault, "client_id", appC))
	if d := r.Body; !strings.Contains(d, "AADSTS70021") {
		t.Errorf("unfederated app: description should name AADSTS70021: %s", d)
	}
	// A resource the tenant does not know is a permanent failure too: 400
	// invalid_resource, remembered.
	for range 2 {
		r := curlIMDS(t, env, tokenPath(unknownResource))
		checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_resource", "")
		if !strings.Contains(r.Body, "AADSTS500011") {
			t.Errorf("invalid resource: description should name AADSTS500011: %s", r.Body)
		}
	}
	wantCalls(t, env, podenv.DefaultClientID, unknownResource, 1)
	// The pod's own identity is unaffected.
	checkToken(t, curlIMDS(t, env, tokenPath(vault)), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	wantTotalCalls(t, env, 4)
}

// TestObjectAndResourceIDSelection: object_id (principal_id) and
// msi_res_id (mi_res_id) select an identity, configured with --identity or
// resolved by a trial exchange of the pod's identity.
func TestObjectAndResourceIDSelection(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{
		ClientID: podenv.DefaultClientID,
		Apps: []entraemu.App{
			podenv.FederatedApp(podenv.DefaultClientID, defaultOID, ""),
			podenv.FederatedApp(appB, appBObject, appBMIRID),
		},
		ProxyArgs: []string{"--identity=" + appB + "," + appBObject + "," + appBMIRID},
	})
	b := wantToken{Resource: vault, ClientID: appB, Tenant: env.Tenant, ObjectID: appBObject}
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "object_id", appBObject)), b)
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "principal_id", strings.ToUpper(appBObject))), b)
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "msi_res_id", appBMIRID)), b)
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "mi_res_id", strings.ToLower(appBMIRID))), b)
	wantCalls(t, env, appB, vault, 1)

	// The pod's identity is found by its object id through a trial exchange
	// (its token's oid), which also fills the cache.
	def := wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant, ObjectID: defaultOID}
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "object_id", defaultOID)), def)
	checkToken(t, curlIMDS(t, env, tokenPath(vault)), def)
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)

	r := curlIMDS(t, env, tokenPath(vault, "object_id", "00000000-dead-4bee-8f00-000000000000"))
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "Identity not found")
	r = curlIMDS(t, env, tokenPath(vault, "object_id", appBObject, "client_id", appB))
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "")
	wantCalls(t, env, appB, vault, 1)
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
}

// TestEntraFailureAndRecovery: while Entra answers 503 (or drops the
// connection), a request the cache cannot serve gets 503
// service_unavailable; a cached token keeps being served, also to
// bypass_cache, whose forced fetch is tried once and then rate-limited;
// once Entra recovers, the next miss is exchanged again.
func TestEntraFailureAndRecovery(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
	pod := func(res string) wantToken {
		return wantToken{Resource: res, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}
	}
	cached := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod(vault))
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)

	podenvtest.SetFault(t, env, entraemu.Fault{Status: http.StatusServiceUnavailable})
	r := curlIMDS(t, env, tokenPath(storage))
	checkError(t, r, "HTTP/1.1 503 Service Unavailable", "service_unavailable", "")
	// MSAL's confidential client does not retry: one call, one failure.
	wantCalls(t, env, podenv.DefaultClientID, storage, 1)
	if got := checkToken(t, curlIMDS(t, env, tokenPath(vault)), pod(vault)); got != cached {
		t.Errorf("cached token not served while Entra fails")
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	// bypass_cache tries Entra, fails, and still gets the cached token; a
	// second one within --force-refresh-interval (30 s) is rate-limited and
	// does not reach Entra.
	for range 2 {
		if got := checkToken(t, curlIMDS(t, env, tokenPath(vault, "bypass_cache", "true")), pod(vault)); got != cached {
			t.Errorf("bypass_cache while Entra fails: want the cached token")
		}
		wantCalls(t, env, podenv.DefaultClientID, vault, 2)
	}

	// A dropped connection is a failure of the same kind.
	const graph = "https://graph.microsoft.com/"
	podenvtest.SetFault(t, env, entraemu.Fault{DropConnection: true})
	r = curlIMDS(t, env, tokenPath(graph))
	checkError(t, r, "HTTP/1.1 503 Service Unavailable", "service_unavailable", "")
	wantCalls(t, env, podenv.DefaultClientID, graph, 1)

	podenvtest.SetFault(t, env, entraemu.Fault{})
	checkToken(t, curlIMDS(t, env, tokenPath(storage)), pod(storage))
	wantCalls(t, env, podenv.DefaultClientID, storage, 2)
	checkToken(t, curlIMDS(t, env, tokenPath(storage)), pod(storage))
	wantCalls(t, env, podenv.DefaultClientID, storage, 2)
}

// TestThrottlingPassthrough: Entra's 429 reaches the client as 429 with
// Retry-After (capped at 25 s).
func TestThrottlingPassthrough(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
	podenvtest.SetFault(t, env, entraemu.Fault{Status: http.StatusTooManyRequests, RetryAfter: 7 * time.Second})
	r := curlIMDS(t, env, tokenPath(vault))
	checkError(t, r, "HTTP/1.1 429 Too Many Requests", "too_many_requests", "")
	if got := r.Header.Values("Retry-After"); len(got) != 1 || got[0] != "7" {
		t.Errorf("Retry-After = %q, want [7]", got)
	}
	podenvtest.SetFault(t, env, entraemu.Fault{Status: http.StatusTooManyRequests, RetryAfter: 120 * time.Second})
	r = curlIMDS(t, env, tokenPath(storage))
	checkError(t, r, "HTTP/1.1 429 Too Many Requests", "too_many_requests", "")
	if got := r.Header.Values("Retry-After"); len(got) != 1 || got[0] != "25" {
		t.Errorf("Retry-After = %q, want [25] (capped)", got)
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	wantCalls(t, env, podenv.DefaultClientID, storage, 1)
}

// TestTokenFileRotation: kubelet rewrites the projected token; the running
// proxy uses the new one for its next exchange without a restart. The new
// token is for another service account, federated only with appC, so the
// emulator accepting appC proves it saw the new assertion, and rejecting
// the pod's old identity proves the old one is no longer sent.
func TestTokenFileRotation(t *testing.T) {
	t.Parallel()
	rotated := entraemu.App{ClientID: appC, Federations: []entraemu.Federation{{Subject: "system:serviceaccount:" + podenv.Namespace + ":rotated"}}}
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, Apps: []entraemu.App{rotated}})
	checkToken(t, curlIMDS(t, env, tokenPath(vault)), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	r := curlIMDS(t, env, tokenPath(vault, "client_id", appC))
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "Identity not found")

	if err := env.MintAndWriteToken(context.Background(), podenv.Namespace, "rotated", time.Hour); err != nil {
		t.Fatal(err)
	}
	// The negative cache entry for appC is cleared by the file change.
	checkToken(t, curlIMDS(t, env, tokenPath(vault, "client_id", appC)), wantToken{Resource: vault, ClientID: appC, Tenant: env.Tenant})
	r = curlIMDS(t, env, tokenPath(storage))
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "Identity not found")
	// The pod's cached token is still served.
	checkToken(t, curlIMDS(t, env, tokenPath(vault)), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	wantCalls(t, env, appC, vault, 2)
	wantCalls(t, env, podenv.DefaultClientID, storage, 1)

	// A missing token file is the proxy's own failure: 500 naming the path,
	// without an Entra call.
	const graph = "https://graph.microsoft.com/"
	if err := os.Remove(env.TokenFile); err != nil {
		t.Fatal(err)
	}
	r = curlIMDS(t, env, tokenPath(graph, "client_id", appC))
	checkError(t, r, "HTTP/1.1 500 Internal Server Error", "server_error", "")
	if !strings.Contains(r.Body, env.TokenFile) {
		t.Errorf("500 should name the token file %s: %s", env.TokenFile, r.Body)
	}
	wantCalls(t, env, appC, graph, 0)
	if err := env.MintAndWriteToken(context.Background(), podenv.Namespace, "rotated", time.Hour); err != nil {
		t.Fatal(err)
	}
	checkToken(t, curlIMDS(t, env, tokenPath(graph, "client_id", appC)), wantToken{Resource: graph, ClientID: appC, Tenant: env.Tenant})
	wantCalls(t, env, appC, graph, 1)

	// An expired projected token (kubelet stopped rotating it): Entra's
	// AADSTS700024; the proxy re-reads the file, tries once more, then
	// answers 400. Once the file is fresh again, the next request works.
	const arm = "https://management.azure.com/"
	if err := env.MintAndWriteToken(context.Background(), podenv.Namespace, "rotated", -time.Hour); err != nil {
		t.Fatal(err)
	}
	r = curlIMDS(t, env, tokenPath(arm, "client_id", appC))
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "")
	if !strings.Contains(r.Body, "AADSTS700024") {
		t.Errorf("expired assertion: description should name AADSTS700024: %s", r.Body)
	}
	wantCalls(t, env, appC, arm, 2)
	if err := env.MintAndWriteToken(context.Background(), podenv.Namespace, "rotated", time.Hour); err != nil {
		t.Fatal(err)
	}
	checkToken(t, curlIMDS(t, env, tokenPath(arm, "client_id", appC)), wantToken{Resource: arm, ClientID: appC, Tenant: env.Tenant})
	wantCalls(t, env, appC, arm, 3)
}

// TestInstanceMetadataPassthrough: /metadata/instance reaches the node's
// real IMDS through the proxy, whose own connection is exempted from the
// redirect by its UID 1501. UID 1501 itself bypasses the proxy.
func TestInstanceMetadataPassthrough(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
	const path = "/metadata/instance?api-version=2021-02-01"
	r := curlIMDS(t, env, path)
	if r.StatusLine != "HTTP/1.1 200 OK" || r.Body != podenv.InstanceMetadataBody {
		t.Fatalf("got %q %q, want 200 and the node's body", r.StatusLine, r.Body)
	}
	reqs := env.IMDSRequests()
	if len(reqs) != 1 {
		t.Fatalf("the node's IMDS received %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if got.RequestURI != path || got.Header.Get("Metadata") != "true" || got.Header.Get("X-Imds-Proxy-Hop") == "" || !strings.HasPrefix(got.RemoteAddr, podenv.PodAddr+":") {
		t.Errorf("forwarded request = %+v; want %s with Metadata: true and the hop marker, from %s", got, path, podenv.PodAddr)
	}
	if v := got.Header.Values("X-Forwarded-For"); len(v) != 0 {
		t.Errorf("forwarded request carries X-Forwarded-For %q", v)
	}

	// Without Metadata the proxy answers itself.
	r = curlAs(t, env, appUID, path)
	checkError(t, r, "HTTP/1.1 400 Bad Request", "invalid_request", "Required metadata header not specified")

	// UID 1501 is exempted from the redirect: it talks to the node directly.
	r = curlAs(t, env, podenv.DefaultProxyUID, path, "Metadata: true")
	if r.Body != podenv.InstanceMetadataBody {
		t.Errorf("UID 1501 got %q", r.Body)
	}
	reqs = env.IMDSRequests()
	if len(reqs) != 2 || reqs[1].Header.Get("X-Imds-Proxy-Hop") != "" {
		t.Errorf("UID 1501's request should reach the node directly, without the hop marker: %+v", reqs)
	}
	wantTotalCalls(t, env, 0)
}

// TestMeshCatchAllAfterInit: istio-init and linkerd's proxy-init append a
// rule to nat OUTPUT that sends all outgoing TCP to the mesh proxy. Behind
// proxy-init's jump it takes neither the app's metadata traffic, which still
// reaches our proxy, nor the proxy's own connection to the node's metadata
// service, which our rules accept for UID 1501. Nothing listens on the mesh
// port: a captured connection would fail the request.
func TestMeshCatchAllAfterInit(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
	want := wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant}
	// A token while the proxy can still reach Entra: the catch-all takes
	// the proxy's other traffic too, as a mesh would (its own proxy would
	// carry it on).
	cached := checkToken(t, curlIMDS(t, env, tokenPath(vault)), want)
	// No passthrough yet, so the proxy holds no connection to the node's
	// metadata service: the next one is new, and goes through nat.
	if got := env.IMDSRequests(); len(got) != 0 {
		t.Fatalf("the node's IMDS received %d requests before the mesh rule, want none", len(got))
	}
	podenvtest.Output(t, env.PodCommand(context.Background(), 0, nil,
		"iptables-nft", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"))
	output := podenvtest.Output(t, env.PodCommand(context.Background(), 0, nil, "iptables-nft", "-t", "nat", "-S", "OUTPUT"))
	if rules := strings.Split(strings.TrimSpace(output), "\n"); len(rules) != 3 || !strings.HasSuffix(rules[1], "-j IMDS_PROXY_OUTPUT") ||
		rules[2] != "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001" {
		t.Fatalf("nat OUTPUT = %q, want our jump, then the catch-all", rules)
	}

	const path = "/metadata/instance?api-version=2021-02-01"
	r := curlIMDS(t, env, path)
	if r.StatusLine != "HTTP/1.1 200 OK" || r.Body != podenv.InstanceMetadataBody {
		t.Errorf("passthrough behind the catch-all: got %q %q, want 200 and the node's body", r.StatusLine, r.Body)
	}
	reqs := env.IMDSRequests()
	if len(reqs) != 1 || reqs[0].RequestURI != path || reqs[0].Header.Get("X-Imds-Proxy-Hop") == "" {
		t.Errorf("the node's IMDS received %+v, want the proxy's request for %s with the hop marker", reqs, path)
	}
	// The app is still redirected to the proxy, which answers from its cache.
	if got := checkToken(t, curlIMDS(t, env, tokenPath(vault)), want); got != cached {
		t.Error("the token behind the catch-all is not the cached one")
	}
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	if err := env.RunInit(context.Background(), "--check"); err != nil {
		t.Errorf("proxy-init --check with a catch-all after our jump: %v", err)
	}
}

// TestLoopGuard: a pod-level runAsUser runs the proxy as a UID the rules do
// not exempt, so its passthrough request comes back to itself; it answers
// 508 and explains, and nothing reaches the node.
func TestLoopGuard(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, ProxyUID: 1502})
	r := curlIMDS(t, env, "/metadata/instance?api-version=2021-02-01")
	checkError(t, r, "HTTP/1.1 508 Loop Detected", "loop_detected", "")
	if !strings.Contains(r.Body, "runAsUser") {
		t.Errorf("508 body should explain the runAsUser cause: %s", r.Body)
	}
	if got := env.IMDSRequests(); len(got) != 0 {
		t.Errorf("the node's IMDS received %d requests, want none", len(got))
	}
	// It said so at start.
	if log, err := os.ReadFile(env.ProxyLog); err != nil || !strings.Contains(string(log), "runs as UID 1502") {
		t.Errorf("the proxy log should warn that it runs as UID 1502 (%v)", err)
	}
	// Tokens are still served.
	checkToken(t, curlIMDS(t, env, tokenPath(vault)), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	wantCalls(t, env, podenv.DefaultClientID, vault, 1)
}

// TestProbeBeforeProxy: the postStart hook `proxy --probe` may start before
// the proxy listens. It waits, then warms the cache with one token for the
// pod's identity, and exits 0; the app's request for that resource is then
// served without another Entra call.
func TestProbeBeforeProxy(t *testing.T) {
	t.Parallel()
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, DeferProxy: true})
	probe := env.ProbeCommand(context.Background())
	var out strings.Builder
	probe.Stdout, probe.Stderr = &out, &out
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	if err := env.StartProxy(context.Background()); err != nil {
		_ = probe.Process.Kill()
		_ = probe.Wait()
		t.Fatal(err)
	}
	if err := probe.Wait(); err != nil {
		t.Fatalf("probe: %v\n%s", err, out.String())
	}
	const warmup = "https://management.azure.com/"
	wantCalls(t, env, podenv.DefaultClientID, warmup, 1)
	checkToken(t, curlIMDS(t, env, tokenPath(warmup)), wantToken{Resource: warmup, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
	wantCalls(t, env, podenv.DefaultClientID, warmup, 1)
	wantTotalCalls(t, env, 1)
}

// TestProxyExit: the sidecar ends with exit status 0 both ways a pod ends
// it: POST /quitquitquit (a Job's last step on clusters without native
// sidecars) and SIGTERM. After it, nothing answers on 169.254.169.254.
func TestProxyExit(t *testing.T) {
	t.Parallel()
	t.Run("quitquitquit", func(t *testing.T) {
		t.Parallel()
		env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
		out := podenvtest.Output(t, env.PodCommand(context.Background(), appUID, nil,
			"curl", "-sS", "-i", "--max-time", "60", "-X", "POST", "-H", "Metadata: true", "http://127.0.0.1:8000/quitquitquit"))
		r := parseWire(t, out)
		if r.StatusLine != "HTTP/1.1 200 OK" || r.Body != `{"status":"shutting down"}` {
			t.Errorf("quitquitquit: got %q %q", r.StatusLine, r.Body)
		}
		if err := env.WaitProxy(t.Context()); err != nil {
			t.Errorf("proxy exit after /quitquitquit: %v, want status 0", err)
		}
		// curl exit 7: could not connect (the redirect leads nowhere now).
		err := env.PodCommand(context.Background(), appUID, nil, curlArgs(tokenPath(vault), "Metadata: true")...).Run()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 7 {
			t.Errorf("curl after the proxy exited: %v, want exit status 7 (connection refused)", err)
		}
		wantTotalCalls(t, env, 0)
	})
	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID, ProxyArgs: []string{"--shutdown-delay=0s"}})
		checkToken(t, curlIMDS(t, env, tokenPath(vault)), wantToken{Resource: vault, ClientID: podenv.DefaultClientID, Tenant: env.Tenant})
		if err := env.StopProxy(); err != nil {
			t.Errorf("proxy exit after SIGTERM: %v, want status 0", err)
		}
		wantCalls(t, env, podenv.DefaultClientID, vault, 1)
	})
}
