package k8s

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/test/e2e/clients"
)

// Pods the node runs, derived from deploy/ manifests. What the test bed
// changes, and why, is the same for all of them (forNode):
//   - images: the locally built ones (nothing is pulled; the pull policies
//     stay as written: the images are present);
//   - spec.nodeName: there is no scheduler;
//   - hostAliases for the emulator's Entra name: the pods have no DNS, and
//     the webhook's AZURE_AUTHORITY_HOST (or the manifest's, replaced) names
//     the emulator;
//   - app containers run the test's scripts on the app image instead of
//     docker.io/curlimages/curl; their security contexts stay.
//
// Everything imds-proxy-specific (the sidecar's args, hook, env names,
// security context, token volume, proxy-init's security context) is left
// as the webhook or the manifest writes it.

// vaultResource is what the app asks for.
const vaultResource = "https://vault.azure.net"

// appUID is the app containers' UID (deploy/examples: runAsUser 1000).
const appUID = 1000

// appScript is the legacy app: it asks IMDS for a token with curl and with
// the Go SDK (azidentity's ManagedIdentityCredential, given no identity:
// the pod's default), prints what it got without the token itself (its
// SHA-256 and claims only: logs must not carry tokens), then stays up.
const appScript = `set -u
echo "app: uid=$(id -u)"
url='http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=` + vaultResource + `'
out=$(curl -sS --max-time 60 -H Metadata:true -w ' HTTP_CODE=%{http_code}' "$url")
body=${out% HTTP_CODE=*}
tok=$(printf '%s' "$body" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
printf 'app: curl status=%s token_sha256=%s claims=%s body=%s\n' "${out##* HTTP_CODE=}" \
  "$(printf '%s' "$tok" | sha256sum | cut -d' ' -f1)" "$(printf '%s' "$tok" | cut -s -d. -f2)" \
  "$(printf '%s' "$body" | sed 's/"access_token":"[^"]*"/"access_token":"<redacted>"/')"
` + appClientPath + ` azidentity -scope ` + vaultResource + `/.default 2>&1 | sed 's/^/app: goclient /'
echo "app: done"
exec sleep infinity
`

// appInitScript is an app init container (a secret fetcher, say): it asks
// IMDS for a token once and prints the answer, whatever it is.
const appInitScript = `out=$(curl -sS --max-time 10 -H Metadata:true -w ' HTTP_CODE=%{http_code}' 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=` + vaultResource + `')
echo "app-init: status=${out##* HTTP_CODE=} body=${out% HTTP_CODE=*}"
`

// forNode applies the test bed's changes to a pod spec (see above).
func (b *nodeBed) forNode(spec *corev1.PodSpec) {
	spec.NodeName = b.node.Name
	spec.HostAliases = append(spec.HostAliases, corev1.HostAlias{IP: podenv.NodeAddr, Hostnames: []string{podenv.EntraHost}})
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			switch c := &list[i]; {
			case strings.Contains(c.Image, "/proxy-init:"):
				c.Image = b.images.init
			case strings.Contains(c.Image, "/proxy:"):
				c.Image = b.images.proxy
			case strings.HasPrefix(c.Image, "docker.io/curlimages/curl:"):
				c.Image = b.images.app
			}
		}
	}
}

// setAuthority points a hand-written manifest's AZURE_AUTHORITY_HOST at
// the emulator.
func (b *nodeBed) setAuthority(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	found := false
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			for j := range list[i].Env {
				if list[i].Env[j].Name == "AZURE_AUTHORITY_HOST" {
					list[i].Env[j].Value = b.env.AuthorityHost
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("manifest sets no AZURE_AUTHORITY_HOST")
	}
}

// webhookPod is the pod the webhook v1.6 makes of deploy/examples/
// deployment.yaml's template plus an app init container of the user's
// own, named name: the native sidecar azwi-proxy first (with its postStart
// --probe), then the app's init container, then azwi-proxy-init (appended
// after the pod's own init containers), then the app. The app container
// keeps its security context (UID 1000, read-only root file system, no
// capabilities) and runs appScript.
func (b *nodeBed) webhookPod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	var d appsv1.Deployment
	decodeDeploy(t, "examples/deployment.yaml", &d)
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *d.Spec.Template.ObjectMeta.DeepCopy(),
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	pod.Name = name
	app := container(t, pod.Spec.Containers, "app")
	app.Command, app.Args = []string{"/bin/sh", "-c"}, []string{appScript}
	appInit := app.DeepCopy()
	appInit.Name, appInit.Args = "app-init", []string{appInitScript}
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, *appInit)
	if err := mutateV16(pod, b.sa, b.webhook); err != nil {
		t.Fatal(err)
	}
	b.forNode(&pod.Spec)
	if got := containerNames(pod.Spec.InitContainers); !slices.Equal(got, []string{"azwi-proxy", "app-init", "azwi-proxy-init"}) {
		t.Fatalf("init containers %v, want the webhook's order", got)
	}
	return pod
}

// nativeSidecarPod is deploy/examples/pod-native-sidecar.yaml for this
// node, named name; extraProbeArgs are appended to azwi-proxy's postStart
// command.
func (b *nodeBed) nativeSidecarPod(t *testing.T, name string, extraProbeArgs ...string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	decodeDeploy(t, "examples/pod-native-sidecar.yaml", pod)
	pod.Name = name
	proxy := container(t, pod.Spec.InitContainers, "azwi-proxy")
	proxy.Lifecycle.PostStart.Exec.Command = append(proxy.Lifecycle.PostStart.Exec.Command, extraProbeArgs...)
	b.setAuthority(t, &pod.Spec)
	b.forNode(&pod.Spec)
	return pod
}

// job is deploy/examples/job.yaml for this node, named name. With
// regularSidecar, azwi-proxy is moved from the native-sidecar place to the
// first regular container (the layout of clusters before native sidecars,
// and of the webhook on API servers older than 1.32) and the task ends
// with the POST /quitquitquit the manifest's comment prescribes.
func (b *nodeBed) job(t *testing.T, name string, regularSidecar bool) *batchv1.Job {
	t.Helper()
	var j batchv1.Job
	decodeDeploy(t, "examples/job.yaml", &j)
	j.Name = name
	spec := &j.Spec.Template.Spec
	b.setAuthority(t, spec)
	if regularSidecar {
		i := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == "azwi-proxy" })
		if i < 0 {
			t.Fatal("job.yaml has no azwi-proxy init container")
		}
		proxy := spec.InitContainers[i]
		proxy.RestartPolicy = nil
		spec.InitContainers = slices.Delete(spec.InitContainers, i, i+1)
		spec.Containers = append([]corev1.Container{proxy}, spec.Containers...)
		task := container(t, spec.Containers, "task")
		quit := regexp.MustCompile(`(?m)^#\s*(curl -sS -X POST -H Metadata:true http://127\.0\.0\.1:8000/quitquitquit)\s*$`).FindStringSubmatch(
			readDeployString(t, "examples/job.yaml"))
		if quit == nil {
			t.Fatal("job.yaml's comment no longer shows the /quitquitquit call")
		}
		task.Args[len(task.Args)-1] = strings.TrimRight(task.Args[len(task.Args)-1], "\n") + "\n" + quit[1] + "\n"
	}
	b.forNode(spec)
	return &j
}

func readDeployString(t *testing.T, name string) string {
	t.Helper()
	return string(readDeploy(t, name))
}

func container(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no container %s in %v", name, containerNames(cs))
	}
	return &cs[i]
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// status returns a container's status from either list.
func status(p *corev1.Pod, name string) (corev1.ContainerStatus, bool) {
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, s := range list {
			if s.Name == name {
				return s, true
			}
		}
	}
	return corev1.ContainerStatus{}, false
}

// stateString is a container state for messages: running, waiting
// (reason) or terminated (exit code, reason).
func stateString(s corev1.ContainerStatus) string {
	switch st := s.State; {
	case st.Running != nil:
		return fmt.Sprintf("running (restarts %d)", s.RestartCount)
	case st.Terminated != nil:
		return fmt.Sprintf("terminated %d %s (restarts %d)", st.Terminated.ExitCode, st.Terminated.Reason, s.RestartCount)
	case st.Waiting != nil:
		return fmt.Sprintf("waiting %s (restarts %d)", st.Waiting.Reason, s.RestartCount)
	}
	return "unknown"
}

// podSummary describes a pod's phase and every container's state.
func podSummary(p *corev1.Pod) string {
	parts := []string{string(p.Status.Phase)}
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, s := range list {
			parts = append(parts, s.Name+": "+stateString(s))
		}
	}
	return strings.Join(parts, "; ")
}

// appCurl is what appScript printed about its curl request.
type appCurl struct {
	status int
	sha256 string
	claims map[string]any
	body   map[string]string
}

var appCurlLine = regexp.MustCompile(`^app: curl status=(\d{3}) token_sha256=([0-9a-f]{64}) claims=(\S*) body=(.*)$`)

// parseAppCurl finds and decodes appScript's curl line.
func parseAppCurl(t *testing.T, lines []string) appCurl {
	t.Helper()
	for _, l := range lines {
		m := appCurlLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		var c appCurl
		c.status, _ = strconv.Atoi(m[1]) // three digits, by appCurlLine
		c.sha256 = m[2]
		if m[3] != "" {
			payload, err := base64.RawURLEncoding.DecodeString(m[3])
			if err != nil {
				t.Fatalf("claims %q: %v", m[3], err)
			}
			if err := json.Unmarshal(payload, &c.claims); err != nil {
				t.Fatalf("claims %s: %v", payload, err)
			}
		}
		if err := json.Unmarshal([]byte(m[4]), &c.body); err != nil {
			t.Fatalf("curl body %q: %v", m[4], err)
		}
		return c
	}
	t.Fatalf("no curl line in the app's log:\n%s", strings.Join(lines, "\n"))
	return appCurl{}
}

// parseGoClient finds and decodes appScript's goclient line
// (test/e2e/clients/goclient).
func parseGoClient(t *testing.T, lines []string) clients.Result {
	t.Helper()
	for _, l := range lines {
		if js, ok := strings.CutPrefix(l, "app: goclient "); ok {
			r, err := clients.ParseResult(js)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("no goclient line in the app's log:\n%s", strings.Join(lines, "\n"))
	return clients.Result{}
}

// jwtLike matches a JWT (header and payload are base64url JSON objects).
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

// jsonLines decodes the JSON log lines of a container's log, skipping
// others.
func jsonLines(lines []string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// logLine returns the first JSON line whose msg starts with prefix, or nil.
func logLine(lines []map[string]any, prefix string) map[string]any {
	for _, l := range lines {
		if msg, _ := l["msg"].(string); strings.HasPrefix(msg, prefix) {
			return l
		}
	}
	return nil
}
