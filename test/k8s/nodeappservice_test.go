package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/kubenode"
)

// capabilityFreeNamespace enforces Pod Security "restricted"; the pod's
// service account there is federated too.
const capabilityFreeNamespace = "capability-free"

// appServiceResource is what the capability-free app asks for: no other
// scenario asks for it, so the emulator's count for it is this pod's.
const appServiceResource = "api://imds-proxy-node/app-service"

// appServiceScript is the app of the capability-free layout: it asks the
// App Service endpoint with curl, as the SDKs do, with the two variables
// the manifest gives it, and with the Go SDK, which finds the same
// variables; it prints what appScript prints (never the token), then stays
// up.
const appServiceScript = `set -u
echo "app: uid=$(id -u)"
out=$(curl -sS --max-time 60 -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" -w ' HTTP_CODE=%{http_code}' "$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=` + appServiceResource + `")
body=${out% HTTP_CODE=*}
tok=$(printf '%s' "$body" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
printf 'app: curl status=%s token_sha256=%s claims=%s body=%s\n' "${out##* HTTP_CODE=}" \
  "$(printf '%s' "$tok" | sha256sum | cut -d' ' -f1)" "$(printf '%s' "$tok" | cut -s -d. -f2)" \
  "$(printf '%s' "$body" | sed 's/"access_token":"[^"]*"/"access_token":"<redacted>"/')"
` + appClientPath + ` azidentity -scope ` + appServiceResource + `/.default 2>&1 | sed 's/^/app: goclient /'
echo "app: done"
exec sleep infinity
`

// testNoNetAdminPod: deploy/examples/pod-no-netadmin.yaml, with its
// Secret, in a namespace that enforces Pod Security "restricted", on the
// real kubelet: admitted, no container needs a capability, the kubelet
// resolves IDENTITY_HEADER from the Secret for the proxy and the apps, the
// proxy's postStart probe holds the app init container back, and both the
// init container and the app (curl and azidentity, unchanged, as UID 1000)
// get the emulator's token through /msi/token, one Entra call for both of
// the app's. Neither the secret nor a token reaches the proxy's log.
func testNoNetAdminPod(t *testing.T, b *nodeBed) {
	ctx := context.Background()
	clientID := b.sa.Annotations[clientIDAnnotation]
	ns := capabilityFreeNamespace
	if err := b.cluster.CreateNamespace(ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}); err != nil {
		t.Fatal(err)
	}
	acct := b.sa.DeepCopy()
	acct.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	if err := b.cluster.Create(ctx, ns, acct, nil); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, time.Minute, "kube-root-ca.crt in "+ns, func() (bool, string) {
		err := b.cluster.Do(ctx, http.MethodGet, "/api/v1/namespaces/"+ns+"/configmaps/kube-root-ca.crt", nil, nil)
		return err == nil, fmt.Sprint(err)
	})
	// The identity trusts this namespace's account as well as the node
	// namespace's (an app may have several federated credentials).
	subject := "system:serviceaccount:" + ns + ":" + b.sa.Name
	app := federated(clientID, defaultOID, "", b.subject)
	app.Federations = append(app.Federations, federated(clientID, defaultOID, "", subject).Federations...)
	if err := b.env.AddApp(ctx, app); err != nil {
		t.Fatal(err)
	}

	// What `kubectl create secret generic ... --from-literal=IDENTITY_HEADER="$(openssl rand -hex 32)"` makes.
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	secret := hex.EncodeToString(raw)
	if err := b.cluster.Create(ctx, ns, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "legacy-app-identity-header"},
		StringData: map[string]string{"IDENTITY_HEADER": secret},
	}, nil); err != nil {
		t.Fatal(err)
	}

	pod := &corev1.Pod{}
	decodeDeploy(t, "examples/pod-no-netadmin.yaml", pod)
	b.setAuthority(t, &pod.Spec)
	b.forNode(&pod.Spec)
	appCtr := container(t, pod.Spec.Containers, "app")
	appCtr.Command, appCtr.Args = []string{"/bin/sh", "-c"}, []string{appServiceScript}
	if got := containerNames(pod.Spec.InitContainers); !slices.Equal(got, []string{"azwi-proxy", "fetch-secret"}) {
		t.Fatalf("init containers %v, want the proxy and the app's own", got)
	}
	p := b.createPod(t, ns, pod)
	appLog := b.waitLog(t, &p, "app", "app: done", 3*time.Minute)
	// The kubelet reports the status it saw a moment ago.
	b.waitFor(t, time.Minute, "the app container running in the pod's status", func() (bool, string) {
		p = b.pod(t, ns, p.Name)
		s, ok := status(&p, "app")
		return ok && s.State.Running != nil, podSummary(&p)
	})

	want := map[string]func(corev1.ContainerStatus) bool{
		"azwi-proxy":   func(s corev1.ContainerStatus) bool { return s.State.Running != nil && s.Started != nil && *s.Started },
		"fetch-secret": exitedZero,
		"app":          func(s corev1.ContainerStatus) bool { return s.State.Running != nil },
	}
	for name, ok := range want {
		if s, found := status(&p, name); !found || !ok(s) || s.RestartCount != 0 {
			t.Errorf("container %s: %s; pod: %s", name, stateString(s), podSummary(&p))
		}
	}
	// The app init container started once the probe's warm-up was done,
	// and got a token.
	proxyLog := b.containerLog(t, &p, "azwi-proxy")
	warm := firstLine(proxyLog, func(l kubenode.LogLine) bool { return strings.Contains(l.Text, `"msg":"warm-up token obtained"`) })
	initLines := b.containerLog(t, &p, "fetch-secret")
	first := firstLine(initLines, anyLine)
	if warm == nil || first == nil || !warm.Time.Before(first.Time) {
		t.Errorf("the warm-up (%v) did not come before the app init container's first line (%v)", warm, first)
	}
	if texts := kubenode.Texts(initLines); !slices.Contains(texts, "init container got an App Service token: HTTP 200") {
		t.Errorf("fetch-secret said %q", texts)
	}

	curl := parseAppCurl(t, appLog)
	if curl.status != http.StatusOK || curl.body["client_id"] != clientID || curl.body["resource"] != appServiceResource {
		t.Errorf("curl got %d %v; want 200 with client_id %s, resource %s", curl.status, curl.body, clientID, appServiceResource)
	}
	if _, ok := curl.body["refresh_token"]; ok {
		t.Errorf("curl got an IMDS-shaped body %v; want the App Service one", curl.body)
	}
	if curl.claims["appid"] != clientID || curl.claims["aud"] != appServiceResource || curl.claims["oid"] != defaultOID {
		t.Errorf("curl's access token claims %v; want appid %s, aud %s, oid %s", curl.claims, clientID, appServiceResource, defaultOID)
	}
	sdk := parseGoClient(t, appLog)
	if sdk.Calls != 2 || !sdk.SameToken || sdk.TokenSHA256 != curl.sha256 {
		t.Errorf("azidentity got %+v; want two calls and curl's token (sha256 %s) from the proxy's cache", sdk, curl.sha256)
	}
	stats, err := b.env.CallStats(ctx, clientID, appServiceResource+"/.default")
	if err != nil {
		t.Fatal(err)
	}
	if stats.Calls != 1 {
		t.Errorf("Entra calls for %s = %d, want 1", appServiceResource, stats.Calls)
	}
	reqs, err := b.env.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(reqs, func(r entraemu.TokenRequest) bool { return r.Scope == appServiceResource+"/.default" }); i < 0 || reqs[i].AssertionSubject != subject {
		t.Errorf("the emulator's requests %+v; want one for %s with an assertion for %s", reqs, appServiceResource, subject)
	}

	texts := kubenode.Texts(proxyLog)
	start := logLine(jsonLines(texts), "imds-proxy listening")
	if start == nil || start["appServiceEndpoint"] != "/msi/token, secret from IDENTITY_HEADER" {
		t.Errorf("the proxy's startup line %v; want appServiceEndpoint /msi/token, secret from IDENTITY_HEADER", start)
	}
	for _, l := range texts {
		if strings.Contains(l, secret) || jwtLike.MatchString(l) {
			t.Errorf("the proxy's log holds the secret or a token: %.120s...", l)
		}
	}
}
