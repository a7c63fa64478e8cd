package kubeenv_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }

// jwtParts decodes a JWT's header and claims and returns the signed input
// and the signature.
func jwtParts(t *testing.T, tok string) (header, claims map[string]any, signed string, sig []byte) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	return header, claims, parts[0] + "." + parts[1], sig
}

// TestStandaloneCluster: a cluster in a namespace of its own serves its
// version, its issuer's discovery document and JWKS to anonymous callers,
// issues pod-bound tokens through TokenRequest that verify against that
// JWKS, judges manifests server-side, and leaves nothing behind on Close.
func TestStandaloneCluster(t *testing.T) {
	c := kubeenvtest.Start(t, kubeenv.Options{})
	ctx := context.Background()
	t.Logf("kube-apiserver ready %v after exec", c.Ready)

	var version struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := c.Do(ctx, http.MethodGet, "/version", nil, &version); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(version.GitVersion, "v1.34.") {
		t.Errorf("server version %q, want v1.34.x (test/kubebin/go.mod)", version.GitVersion)
	}

	// The issuer's documents, as Entra fetches them: no credentials.
	anon := func(path string, out any) {
		t.Helper()
		status, body, err := c.GetAnonymous(ctx, path)
		if err != nil || status != http.StatusOK {
			t.Fatalf("anonymous GET %s: %d %s %v", path, status, body, err)
		}
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatal(err)
		}
	}
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	anon("/.well-known/openid-configuration", &disc)
	if disc.Issuer != kubeenv.Issuer || disc.JWKSURI != kubeenv.Issuer+"/openid/v1/jwks" {
		t.Errorf("discovery %+v, want issuer %s and its /openid/v1/jwks", disc, kubeenv.Issuer)
	}
	var set struct {
		Keys []struct{ Kty, Kid, Alg, Use, N, E string } `json:"keys"`
	}
	anon("/openid/v1/jwks", &set)
	if len(set.Keys) != 1 || set.Keys[0].Kty != "RSA" || set.Keys[0].Alg != "RS256" {
		t.Fatalf("JWKS %+v, want one RSA RS256 key", set.Keys)
	}

	const ns, sa = "wi-test", "workload"
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateServiceAccount(ctx, ns, sa, map[string]string{"azure.workload.identity/client-id": "0b9d3c5e-7a1f-4e2b-9c8d-1f2e3a4b5c6d"}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	manifest := []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  serviceAccountName: " + sa +
		"\n  automountServiceAccountToken: false\n  containers:\n  - name: app\n    image: registry.example/app:1\n")
	if err := c.Create(ctx, ns, manifest, &pod); err != nil {
		t.Fatal(err)
	}
	if pod.UID == "" || pod.Namespace != ns {
		t.Fatalf("created pod %s/%s uid %q", pod.Namespace, pod.Name, pod.UID)
	}
	before := time.Now().Unix()
	tok, err := c.RequestToken(ctx, &pod, kubeenv.WorkloadIdentityAudience, 3600)
	if err != nil {
		t.Fatal(err)
	}
	header, claims, signed, sig := jwtParts(t, tok)
	if header["alg"] != "RS256" || header["kid"] != set.Keys[0].Kid {
		t.Errorf("token header %v, want RS256 and kid %s", header, set.Keys[0].Kid)
	}
	n, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	e, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].E)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	digest := sha256.Sum256([]byte(signed))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("token does not verify against the published JWKS: %v", err)
	}
	if claims["iss"] != kubeenv.Issuer || claims["sub"] != "system:serviceaccount:"+ns+":"+sa {
		t.Errorf("iss %v sub %v", claims["iss"], claims["sub"])
	}
	if aud, _ := claims["aud"].([]any); len(aud) != 1 || aud[0] != kubeenv.WorkloadIdentityAudience {
		t.Errorf("aud %v, want [%s]", claims["aud"], kubeenv.WorkloadIdentityAudience)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if exp-iat != 3600 || int64(iat) < before-5 {
		t.Errorf("iat %v exp %v, want a 3600 s token issued now", iat, exp)
	}
	kube, _ := claims["kubernetes.io"].(map[string]any)
	boundPod, _ := kube["pod"].(map[string]any)
	if kube["namespace"] != ns || boundPod["name"] != "app" || boundPod["uid"] != string(pod.UID) {
		t.Errorf("kubernetes.io claim %v, want namespace %s and pod app/%s", kube, ns, pod.UID)
	}

	// Server-side dry run: a broken manifest gets the API server's message.
	bad := []byte(strings.Replace(string(manifest), "    image: registry.example/app:1\n", "    imagePullPolicy: Sometimes\n", 1))
	_, err = c.DryRun(ctx, ns, bad, nil)
	var apiErr *kubeenv.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 422 || apiErr.Reason != metav1.StatusReasonInvalid ||
		!strings.Contains(apiErr.Message, "spec.containers[0].image: Required value") ||
		!strings.Contains(apiErr.Message, `spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes"`) {
		t.Errorf("dry run of a broken pod: %v", err)
	}

	// Close stops both processes by pid and removes the namespace and the
	// directory.
	pids := c.PIDs()
	if len(pids) != 2 {
		t.Fatalf("PIDs %v, want etcd and kube-apiserver", pids)
	}
	for name, pid := range pids {
		t.Logf("%s: %s", name, memory(pid))
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after Close: %v", name, pid, err)
		}
	}
	for _, p := range []string{c.Dir, filepath.Join("/run/netns", c.Netns), filepath.Join("/etc/netns", c.Netns)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if !strings.HasPrefix(c.Netns, "imdsp-") || !strings.HasPrefix(filepath.Base(c.Dir), "imdsp-") {
		t.Errorf("netns %s / dir %s not named for podenv.CleanStale", c.Netns, c.Dir)
	}
}

// memory reports a process's resident set size now and at its peak, from
// /proc (figures for the log, not assertions).
func memory(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err.Error()
	}
	var rss, hwm string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwm = strings.TrimSpace(v)
		}
	}
	return "RSS " + rss + ", peak " + hwm
}
