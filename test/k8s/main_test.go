// Package k8s runs imds-proxy against real Kubernetes parts: a
// kube-apiserver built from k8s.io/kubernetes (test/kubebin) with Debian's
// etcd, started by internal/kubeenv.
//
//   - The projected service-account token comes from the TokenRequest API,
//     bound to a pod the API server stored, signed with the API server's
//     key and carrying its issuer; the Entra emulator trusts that issuer
//     and verifies each assertion against the JWKS it fetches from the API
//     server over HTTPS (tokens_test.go).
//   - Every manifest in deploy/ is judged by that API server with a
//     server-side dry run, and so are deliberately broken copies and the
//     pods the workload-identity webhook v1.6 would make of them
//     (manifests_test.go, webhook_test.go).
//
// The tests need root (network namespaces) and skip in -short mode. The
// first run builds the Kubernetes binaries into a cache outside the
// repository (several minutes; make test-k8s does it first); later runs
// find them at once.
package k8s

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// TestMain removes the shared binary directory after the run, and makes
// Ctrl-C tear down every environment and control plane.
func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }

// readDeploy returns a file under deploy/.
func readDeploy(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeDeploy decodes a manifest under deploy/ into obj.
func decodeDeploy(t *testing.T, name string, obj any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(readDeploy(t, name), obj); err != nil {
		t.Fatalf("deploy/%s: %v", name, err)
	}
}

// shippedWebhookConfig is the webhook configured with
// deploy/webhook/values.yaml (our images) for tenant.
func shippedWebhookConfig(t *testing.T, tenant string) webhookConfig {
	t.Helper()
	var values struct {
		ExtraEnv []corev1.EnvVar `json:"extraEnv"`
	}
	decodeDeploy(t, "webhook/values.yaml", &values)
	cfg := webhookConfig{tenantID: tenant, authorityHost: "https://login.microsoftonline.com/", logLevel: "info"}
	for _, e := range values.ExtraEnv {
		switch e.Name {
		case "PROXY_IMAGE":
			cfg.proxyImage = e.Value
		case "PROXY_INIT_IMAGE":
			cfg.proxyInitImage = e.Value
		}
	}
	if cfg.proxyImage == "" || cfg.proxyInitImage == "" {
		t.Fatalf("deploy/webhook/values.yaml: extraEnv lacks PROXY_IMAGE or PROXY_INIT_IMAGE: %+v", values.ExtraEnv)
	}
	return cfg
}

// reply is one HTTP answer as curl in the pod received it.
type reply struct {
	code int
	body string
}

// curlIMDS asks http://169.254.169.254 for path from inside the pod as UID
// 1000 (an app container), with Metadata: true.
func curlIMDS(t *testing.T, env *podenv.Env, path string) reply {
	t.Helper()
	out := podenvtest.Output(t, env.PodCommand(context.Background(), 1000, nil,
		"curl", "-sS", "--max-time", "60", "-H", "Metadata: true", "-w", "\n%{http_code}", "http://169.254.169.254"+path))
	i := strings.LastIndex(out, "\n")
	n, err := strconv.Atoi(out[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("curl output %q ends with no status code", out)
	}
	return reply{code: n, body: out[:i]}
}

// tokenPath is the IMDS token path for resource with extra query pairs.
func tokenPath(resource string, extra ...string) string {
	q := "api-version=2018-02-01&resource=" + resource
	for i := 0; i+1 < len(extra); i += 2 {
		q += "&" + extra[i] + "=" + extra[i+1]
	}
	return "/metadata/identity/oauth2/token?" + q
}

// wantToken asserts a 200 token answer for resource from clientID (and,
// when set, object id oid), with the emulator's access token saying the
// same; it returns the access token.
func wantToken(t *testing.T, r reply, resource, clientID, oid string) string {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.code, r.body)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("token body %q: %v", r.body, err)
	}
	if body["resource"] != resource || body["client_id"] != clientID || body["token_type"] != "Bearer" {
		t.Errorf("token answer resource %q client_id %q token_type %q; want %q, %q, Bearer", body["resource"], body["client_id"], body["token_type"], resource, clientID)
	}
	claims, err := podenv.DecodeClaims(body["access_token"])
	if err != nil {
		t.Fatal(err)
	}
	if claims["appid"] != clientID || claims["aud"] != resource {
		t.Errorf("access token appid %v aud %v; want %s, %s", claims["appid"], claims["aud"], clientID, resource)
	}
	if oid != "" && claims["oid"] != oid {
		t.Errorf("access token oid %v, want %s", claims["oid"], oid)
	}
	return body["access_token"]
}

// wantIdentityNotFound asserts a 400 invalid_request answer whose
// description starts with "Identity not found" and names the AADSTS code.
func wantIdentityNotFound(t *testing.T, r reply, aadsts string) {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if r.code != http.StatusBadRequest || body["error"] != "invalid_request" ||
		!strings.HasPrefix(body["error_description"], "Identity not found") || !strings.Contains(body["error_description"], aadsts) {
		t.Errorf("got %d %s; want 400 invalid_request, Identity not found naming %s", r.code, r.body, aadsts)
	}
}
