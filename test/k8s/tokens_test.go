package k8s

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// The namespace the workload runs in, and identities of the emulated
// tenant besides the service account's own (deploy/serviceaccount.yaml).
const (
	workloadNamespace = "legacy-apps"

	defaultOID = "d0d0d0d0-aaaa-4bbb-8ccc-ddddeeeeffff"
	appB       = "2c4e6a80-1b3d-4f5a-8c7e-9d0f1a2b3c4d"
	appBObject = "b0b0b0b0-1111-4222-8333-444455556666"
	appBMIRID  = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-b"
	// appWrongSubject's federated credential names the API server's issuer
	// and another service account.
	appWrongSubject = "3d5f7b91-2c4e-4a6b-9d8f-0e1a2b3c4d5e"
	// appOtherIssuer's federated credential names the right subject under
	// another issuer (the emulator's own).
	appOtherIssuer = "4e6a8c02-3d5f-4b7c-8e9a-1f2b3c4d5e6f"

	vault   = "https://vault.azure.net"
	storage = "https://storage.azure.com/"
)

// workload is a pod-shaped environment whose projected token comes from a
// real API server: the pod the webhook v1.6 makes of
// deploy/examples/deployment.yaml is stored by the API server, and its
// token is requested the way the kubelet requests it for the webhook's
// projected volume.
type workload struct {
	env     *podenv.Env
	cluster *kubeenv.Cluster
	pod     corev1.Pod // as the API server stored it
	subject string     // system:serviceaccount:<namespace>:<name>
}

// serviceAccount is deploy/serviceaccount.yaml.
func serviceAccount(t *testing.T) *corev1.ServiceAccount {
	t.Helper()
	var sa corev1.ServiceAccount
	decodeDeploy(t, "serviceaccount.yaml", &sa)
	return &sa
}

// federated is an app federated with the API server's issuer for subject.
func federated(clientID, objectID, resourceID, subject string) entraemu.App {
	return entraemu.App{ClientID: clientID, ObjectID: objectID, ResourceID: resourceID,
		Federations: []entraemu.Federation{{Issuer: kubeenv.Issuer, Subject: subject, Audience: tokenAudience}}}
}

// startWorkload starts the pod environment with the proxy deferred, a
// control plane in its node namespace, trusts the API server's issuer in
// the emulator, stores the workload's namespace, service account and pod,
// projects the token and starts the proxy. apps gets the workload's
// subject and returns the emulated tenant's apps.
func startWorkload(t *testing.T, apps func(subject string) []entraemu.App, proxyArgs ...string) *workload {
	t.Helper()
	ctx := context.Background()
	sa := serviceAccount(t)
	w := &workload{subject: "system:serviceaccount:" + workloadNamespace + ":" + sa.Name}
	w.env = podenvtest.Start(t, podenv.Options{
		Tenant:     sa.Annotations[tenantIDAnnotation],
		ClientID:   sa.Annotations[clientIDAnnotation],
		Apps:       apps(w.subject),
		ProxyArgs:  proxyArgs,
		DeferProxy: true,
	})
	w.cluster = kubeenvtest.Start(t, kubeenv.Options{Netns: w.env.Node})
	t.Logf("kube-apiserver ready %v after exec", w.cluster.Ready)
	if err := w.env.TrustIssuer(ctx, w.cluster.Issuer, w.cluster.CACertPEM); err != nil {
		t.Fatal(err)
	}
	if err := w.cluster.CreateNamespace(ctx, workloadNamespace, nil); err != nil {
		t.Fatal(err)
	}
	sa.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	if err := w.cluster.Create(ctx, workloadNamespace, sa, nil); err != nil {
		t.Fatal(err)
	}

	// The Deployment's pod as its ReplicaSet submits it, mutated by the
	// webhook configured with deploy/webhook/values.yaml.
	var d appsv1.Deployment
	decodeDeploy(t, "examples/deployment.yaml", &d)
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *d.Spec.Template.ObjectMeta.DeepCopy(),
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	pod.GenerateName = d.Name + "-5d8f7c9b6-"
	if err := mutateV16(pod, sa, shippedWebhookConfig(t, sa.Annotations[tenantIDAnnotation])); err != nil {
		t.Fatal(err)
	}
	if err := w.cluster.Create(ctx, workloadNamespace, pod, &w.pod); err != nil {
		t.Fatalf("storing the webhook-mutated pod: %v", err)
	}

	// The proxy runs with the environment the webhook gave azwi-proxy.
	proxy := w.pod.Spec.InitContainers[slices.IndexFunc(w.pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "azwi-proxy" })]
	got := map[string]string{}
	for _, e := range proxy.Env {
		got[e.Name] = e.Value
	}
	want := map[string]string{
		"AZURE_CLIENT_ID":            w.env.ClientID,
		"AZURE_TENANT_ID":            w.env.Tenant,
		"AZURE_FEDERATED_TOKEN_FILE": v16TokenFile,
		"AZURE_AUTHORITY_HOST":       "https://login.microsoftonline.com/",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("azwi-proxy env %s=%q, want %q (podenv runs the proxy with it)", k, got[k], v)
		}
	}
	w.project(t)
	if err := w.env.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

// project does what the kubelet does for the webhook's projected volume:
// it requests a token bound to the pod with the volume's audience and
// expirationSeconds, and writes it to the file the proxy reads, which sits
// at the volume's path (token/azure-identity-token) under the mount. It
// returns the token's jti.
func (w *workload) project(t *testing.T) string {
	t.Helper()
	name := v16VolumeName(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: w.pod.GenerateName}})
	i := slices.IndexFunc(w.pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name })
	if i < 0 || w.pod.Spec.Volumes[i].Projected == nil || len(w.pod.Spec.Volumes[i].Projected.Sources) != 1 {
		t.Fatalf("stored pod has no projected volume %s: %+v", name, w.pod.Spec.Volumes)
	}
	src := w.pod.Spec.Volumes[i].Projected.Sources[0].ServiceAccountToken
	if src == nil || src.Path != v16TokenPath || src.Audience != tokenAudience || src.ExpirationSeconds == nil || *src.ExpirationSeconds != defaultTokenExpiration {
		t.Fatalf("projected source %+v, want %s, %s, %d s", src, v16TokenPath, tokenAudience, defaultTokenExpiration)
	}
	if !strings.HasSuffix(w.env.TokenFile, "/"+src.Path) {
		t.Fatalf("the proxy reads %s, not the volume's %s", w.env.TokenFile, src.Path)
	}
	tok, err := w.cluster.RequestToken(context.Background(), &w.pod, src.Audience, *src.ExpirationSeconds)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := podenv.DecodeClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	kube, _ := claims["kubernetes.io"].(map[string]any)
	bound, _ := kube["pod"].(map[string]any)
	if claims["iss"] != kubeenv.Issuer || claims["sub"] != w.subject || bound["name"] != w.pod.Name || bound["uid"] != string(w.pod.UID) {
		t.Fatalf("projected token iss %v sub %v pod %v; want %s, %s, bound to %s/%s", claims["iss"], claims["sub"], bound, kubeenv.Issuer, w.subject, w.pod.Name, w.pod.UID)
	}
	if err := w.env.WriteToken(tok); err != nil {
		t.Fatal(err)
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		t.Fatal("projected token has no jti")
	}
	return jti
}

// lastRequest returns the emulator's newest token request for clientID
// and resource.
func (w *workload) lastRequest(t *testing.T, clientID, resource string) entraemu.TokenRequest {
	t.Helper()
	reqs, err := w.env.Requests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	scope := resource + "/.default" // the proxy appends it verbatim
	for i := len(reqs) - 1; i >= 0; i-- {
		if strings.EqualFold(reqs[i].ClientID, clientID) && reqs[i].Scope == scope {
			return reqs[i]
		}
	}
	t.Fatalf("the emulator saw no token request for %s, %s: %+v", clientID, scope, reqs)
	return entraemu.TokenRequest{}
}

// proxyLogLine returns the first JSON line of the proxy's log whose msg
// starts with prefix.
func proxyLogLine(t *testing.T, env *podenv.Env, prefix string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(env.ProxyLog)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil {
			if msg, _ := line["msg"].(string); strings.HasPrefix(msg, prefix) {
				return line
			}
		}
	}
	t.Fatalf("no proxy log line starting %q in:\n%s", prefix, b)
	return nil
}

// TestTokenRequestTokens: the proxy exchanges a token the API server
// issued through TokenRequest (pod-bound, the webhook v1.6 layout and
// lifetime), and the emulator verifies it against the JWKS it fetched from
// the API server over HTTPS: the default identity, client_id, object_id
// and msi_res_id selection, a federated credential with the wrong subject
// or issuer refused end to end with Identity not found, and rotation by
// writing a newly requested token over the file.
func TestTokenRequestTokens(t *testing.T) {
	t.Parallel()
	w := startWorkload(t, func(subject string) []entraemu.App {
		sa := serviceAccount(t)
		return []entraemu.App{
			federated(sa.Annotations[clientIDAnnotation], defaultOID, "", subject),
			federated(appB, appBObject, appBMIRID, subject),
			federated(appWrongSubject, "", "", "system:serviceaccount:"+workloadNamespace+":default"),
			{ClientID: appOtherIssuer, Federations: []entraemu.Federation{{Subject: subject}}},
		}
	}, "--identity="+appB+","+appBObject+","+appBMIRID)
	env := w.env
	ctx := context.Background()

	start := proxyLogLine(t, env, "imds-proxy listening")
	if start["tokenIssuer"] != kubeenv.Issuer || start["tokenSubject"] != w.subject {
		t.Errorf("proxy start line names issuer %v subject %v; want %s, %s", start["tokenIssuer"], start["tokenSubject"], kubeenv.Issuer, w.subject)
	}

	t.Run("default identity", func(t *testing.T) {
		for range 2 {
			wantToken(t, curlIMDS(t, env, tokenPath(vault)), vault, env.ClientID, defaultOID)
		}
		if n := podenvtest.Calls(t, env, env.ClientID, vault+"/.default"); n != 1 {
			t.Errorf("Entra calls for the default identity = %d, want 1 (the second answer is cached)", n)
		}
		r := w.lastRequest(t, env.ClientID, vault)
		if r.Status != 200 || r.AssertionIssuer != kubeenv.Issuer || r.AssertionSubject != w.subject {
			t.Errorf("the emulator saw %+v; want 200 for an assertion from %s, %s", r, kubeenv.Issuer, w.subject)
		}
		stats, err := env.CallStats(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if stats.IssuerFetches < 1 {
			t.Errorf("the emulator never fetched the issuer's keys: %+v", stats)
		}
	})
	t.Run("client_id", func(t *testing.T) {
		wantToken(t, curlIMDS(t, env, tokenPath(vault, "client_id", appB)), vault, appB, appBObject)
	})
	t.Run("object_id and msi_res_id", func(t *testing.T) {
		wantToken(t, curlIMDS(t, env, tokenPath(vault, "object_id", appBObject)), vault, appB, appBObject)
		wantToken(t, curlIMDS(t, env, tokenPath(vault, "msi_res_id", appBMIRID)), vault, appB, appBObject)
		if n := podenvtest.Calls(t, env, appB, vault+"/.default"); n != 1 {
			t.Errorf("Entra calls for app B = %d, want 1", n)
		}
		// The pod's own identity, found by the oid of a trial exchange.
		wantToken(t, curlIMDS(t, env, tokenPath(storage, "object_id", defaultOID)), storage, env.ClientID, defaultOID)
	})
	t.Run("federated credential with another subject", func(t *testing.T) {
		wantIdentityNotFound(t, curlIMDS(t, env, tokenPath(vault, "client_id", appWrongSubject)), "AADSTS700213")
		if r := w.lastRequest(t, appWrongSubject, vault); r.Status != 401 || r.ErrorCode != entraemu.CodeSubjectMismatch {
			t.Errorf("the emulator answered %+v, want 401 AADSTS700213", r)
		}
	})
	t.Run("federated credential with another issuer", func(t *testing.T) {
		wantIdentityNotFound(t, curlIMDS(t, env, tokenPath(vault, "client_id", appOtherIssuer)), "AADSTS700211")
	})
	t.Run("rotation", func(t *testing.T) {
		before := w.lastRequest(t, env.ClientID, vault).AssertionID
		jti := w.project(t)
		if jti == before {
			t.Fatalf("a new TokenRequest gave the same jti %s", jti)
		}
		const res = "https://management.azure.com/"
		wantToken(t, curlIMDS(t, env, tokenPath(res)), res, env.ClientID, defaultOID)
		if r := w.lastRequest(t, env.ClientID, res); r.AssertionID != jti || r.Status != 200 {
			t.Errorf("after rotation the emulator saw assertion %s (status %d), want the new token %s", r.AssertionID, r.Status, jti)
		}
	})
}

// TestProbeNamesAPIServerIssuer: when the default identity's federated
// credential does not match, the postStart hook's warm-up fails and the
// proxy logs the diagnosis with the API server's real issuer and subject,
// which is what the credential must name; the hook itself exits 0.
func TestProbeNamesAPIServerIssuer(t *testing.T) {
	t.Parallel()
	const staleSubject = "system:serviceaccount:" + workloadNamespace + ":legacy-app-old"
	w := startWorkload(t, func(string) []entraemu.App {
		return []entraemu.App{federated(serviceAccount(t).Annotations[clientIDAnnotation], "", "", staleSubject)}
	})
	out, err := w.env.ProbeCommand(context.Background()).CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	line := proxyLogLine(t, w.env, "warm-up token request from --probe failed")
	want := map[string]any{
		"level":        "error",
		"tokenIssuer":  kubeenv.Issuer,
		"tokenSubject": w.subject,
		"aadsts":       "AADSTS700213",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("diagnosis %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if aud, _ := line["tokenAudience"].([]any); len(aud) != 1 || aud[0] != tokenAudience {
		t.Errorf("diagnosis tokenAudience = %v, want [%s]", line["tokenAudience"], tokenAudience)
	}
	if e, _ := line["err"].(string); !strings.Contains(e, "issuer="+kubeenv.Issuer+", subject="+w.subject+", audience="+tokenAudience) {
		t.Errorf("diagnosis err %q does not name the presented issuer, subject and audience", e)
	}
}
