package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// TestBinaryAgainstEmulator runs the real binary against the in-repo Entra
// emulator (real MSAL, real signed tokens): the --probe warm-up fills the
// cache, a token request is served, a second one comes from the cache,
// object_id resolves by trial exchange, an unknown client id is 400
// Identity not found, and no token reaches the log.
func TestBinaryAgainstEmulator(t *testing.T) {
	t.Parallel()
	const (
		tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
		clientID = "11111111-1111-1111-1111-111111111111"
		objectID = "22222222-2222-2222-2222-222222222222"
	)
	bin := binary(t)
	emu, env, sa := emulatorEnv(t, entraemu.Options{
		Tenant: tenant,
		Apps: []entraemu.App{{
			ClientID:    clientID,
			ObjectID:    objectID,
			Federations: []entraemu.Federation{{Subject: "system:serviceaccount:default:workload"}},
		}},
		InvalidResources: []string{"https://invalid.example"},
	}, clientID)
	p := start(t, env, "--proxy-port=0", "--log-level=debug", "--shutdown-delay=0s", "--warmup-resource=https://vault.azure.net")
	addr := p.listenAddr(t)
	_, port, _ := net.SplitHostPort(addr)

	probe := exec.Command(bin, "--proxy-port="+port, "--probe", "--probe-strict", "--log-level=info", "--warmup-resource=https://vault.azure.net")
	probe.Env = env
	out, err := probe.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	if n := emu.TokenCalls(clientID, "https://vault.azure.net/.default"); n != 1 {
		t.Fatalf("Entra token calls after the warm-up = %d; want 1", n)
	}

	get := func(query string) (int, map[string]string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metadata/identity/oauth2/token?"+query, nil)
		req.Header.Set("Metadata", "true")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		return resp.StatusCode, m, resp.Header
	}
	vault := url.Values{"api-version": {"2018-02-01"}, "resource": {"https://vault.azure.net"}}.Encode()
	status, m, h := get(vault)
	if status != 200 || h.Get("Content-Length") == "" {
		t.Fatalf("token = %d %v %v", status, m, h)
	}
	claims, err := emu.VerifyAccessToken(m["access_token"])
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	if claims.AppID != clientID || claims.Audience != "https://vault.azure.net" || m["client_id"] != clientID ||
		m["resource"] != "https://vault.azure.net" || m["token_type"] != "Bearer" || m["expires_in"] == "" || m["expires_on"] == "" {
		t.Errorf("reply %v, claims %+v", m, claims)
	}
	access := m["access_token"]
	// Warm: no second Entra call.
	if status, m, _ = get(vault); status != 200 || m["access_token"] != access {
		t.Errorf("second request = %d", status)
	}
	if n := emu.TokenCalls(clientID, "https://vault.azure.net/.default"); n != 1 {
		t.Errorf("Entra token calls = %d; want 1", n)
	}
	// object_id with no --identity: resolved by a trial exchange.
	status, m, _ = get(vault + "&object_id=" + objectID)
	if status != 200 || m["client_id"] != clientID {
		t.Errorf("object_id = %d %v", status, m)
	}
	// Unknown client id: 400 Identity not found, which Azure CLI sniffs.
	status, m, _ = get(vault + "&client_id=99999999-9999-9999-9999-999999999999")
	if status != 400 || m["error"] != "invalid_request" || !strings.HasPrefix(m["error_description"], "Identity not found") {
		t.Errorf("unknown client = %d %v", status, m)
	}
	// An invalid resource is a permanent 400, not a 5xx.
	status, m, _ = get(url.Values{"api-version": {"2018-02-01"}, "resource": {"https://invalid.example"}}.Encode())
	if status != 400 || m["error"] != "invalid_resource" {
		t.Errorf("invalid resource = %d %v", status, m)
	}

	p.stop(t)
	log := strings.Join(p.logLines(), "\n")
	if strings.Contains(log, access) || strings.Contains(log, sa) {
		t.Error("the proxy log carries a token")
	}
	if !strings.Contains(log, `"msg":"request"`) {
		t.Error("no per-request lines at --log-level=debug")
	}
	// The background prewarm ran (Run waits for it before exiting) and
	// shared its tenant discovery with the default identity's exchanges:
	// one discovery for the default client, one for the unknown client id.
	if !strings.Contains(log, `"msg":"prewarm done"`) {
		t.Error("no prewarm line at --log-level=debug")
	}
	if n := emu.DiscoveryCalls(); n != 2 {
		t.Errorf("discovery GETs = %d; want 2 (default identity, unknown client id)", n)
	}
}
