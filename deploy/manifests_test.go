package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/gobuild"
)

// The webhook's container names (the same in v1.4 to v1.6), and the token
// layout the hand-written manifests use: webhook v1.5's (volume
// azure-identity-token at /var/run/secrets/azure/tokens, see
// https://github.com/Azure/azure-workload-identity/blob/v1.5.1/pkg/webhook/consts.go),
// not v1.6's (azure-workload-identity-reserved-<hash> at
// /var/run/secrets/azure/wi), because webhook v1.6 mounts its own volume at
// that path into every container of a labelled pod; test/k8s has the API
// server refuse the collision.
const (
	proxyName      = "azwi-proxy"
	initName       = "azwi-proxy-init"
	tokenVolume    = "azure-identity-token"
	tokenMountPath = "/var/run/secrets/azure/tokens"
	tokenFile      = tokenMountPath + "/azure-identity-token"
	tokenAudience  = "api://AzureADTokenExchange"
	authorityHost  = "https://login.microsoftonline.com/"

	useLabel         = "azure.workload.identity/use"
	clientIDAnnot    = "azure.workload.identity/client-id"
	tenantIDAnnot    = "azure.workload.identity/tenant-id"
	injectProxyAnnot = "azure.workload.identity/inject-proxy-sidecar"
	proxyPortAnnot   = "azure.workload.identity/proxy-sidecar-port"
)

// webhookLogLevels are the values the webhook passes as --log-level.
var webhookLogLevels = []string{"", "info", "debug", "trace", "all"}

// imageEnv parses build/image.env, the single source of truth for UID, paths
// and the port.
func imageEnv(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../build/image.env")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(v, `"'$ `) {
			t.Fatalf("build/image.env:%d: want a plain KEY=value line, got %q", n, line)
		}
		if _, dup := env[k]; dup {
			t.Fatalf("build/image.env:%d: %s set twice", n, k)
		}
		env[k] = v
	}
	for _, k := range []string{"PROXY_UID", "PROXY_GID", "PROXY_BIN", "INIT_BIN", "PROXY_PORT", "INIT_UID", "INIT_PACKAGES", "INIT_PATH", "CA_BUNDLE"} {
		if env[k] == "" {
			t.Fatalf("build/image.env: %s missing", k)
		}
	}
	return env
}

func envInt(t *testing.T, env map[string]string, k string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(env[k], 10, 64)
	if err != nil {
		t.Fatalf("build/image.env: %s=%q: %v", k, env[k], err)
	}
	return v
}

// decodeStrict decodes one YAML document into obj; unknown or duplicate
// fields are errors.
func decodeStrict(path string, obj any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(data, obj)
}

func mustDecode(t *testing.T, path string, obj any, apiVersion, kind string) {
	t.Helper()
	if err := decodeStrict(path, obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	data, _ := os.ReadFile(path)
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		t.Fatalf("%s: apiVersion/kind = %s/%s, want %s/%s", path, tm.APIVersion, tm.Kind, apiVersion, kind)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"unknown field": "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n    securityContxt: {}\n",
		"duplicate key": "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    name: b\n    image: x\n",
		"wrong type":    "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n    args: --x\n",
	}
	for name, doc := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		var pod corev1.Pod
		if err := decodeStrict(p, &pod); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

type serviceAccount struct {
	name, clientID, tenantID string
}

func loadServiceAccount(t *testing.T) serviceAccount {
	t.Helper()
	var sa corev1.ServiceAccount
	mustDecode(t, "serviceaccount.yaml", &sa, "v1", "ServiceAccount")
	guid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	out := serviceAccount{name: sa.Name, clientID: sa.Annotations[clientIDAnnot], tenantID: sa.Annotations[tenantIDAnnot]}
	if out.name == "" {
		t.Fatal("serviceaccount.yaml: no name")
	}
	if !guid.MatchString(out.clientID) || !guid.MatchString(out.tenantID) {
		t.Fatalf("serviceaccount.yaml: client-id %q / tenant-id %q are not GUIDs", out.clientID, out.tenantID)
	}
	if len(sa.Annotations) != 2 {
		t.Errorf("serviceaccount.yaml: annotations %v, want only client-id and tenant-id", sa.Annotations)
	}
	return out
}

func TestServiceAccount(t *testing.T) { loadServiceAccount(t) }

// contract holds what every manifest must agree on.
type contract struct {
	env        map[string]string
	sa         serviceAccount
	port       string
	proxyUID   int64
	proxyGID   int64
	proxyImage string // repository:tag used by all examples
	initImage  string
}

func newContract(t *testing.T) contract {
	env := imageEnv(t)
	return contract{
		env:        env,
		sa:         loadServiceAccount(t),
		port:       env["PROXY_PORT"],
		proxyUID:   envInt(t, env, "PROXY_UID"),
		proxyGID:   envInt(t, env, "PROXY_GID"),
		proxyImage: valuesImage(t, "PROXY_IMAGE"),
		initImage:  valuesImage(t, "PROXY_INIT_IMAGE"),
	}
}

func valuesImage(t *testing.T, name string) string {
	t.Helper()
	var v struct {
		ExtraEnv []corev1.EnvVar `json:"extraEnv"`
	}
	if err := decodeStrict("webhook/values.yaml", &v); err != nil {
		t.Fatalf("webhook/values.yaml: %v", err)
	}
	for _, e := range v.ExtraEnv {
		if e.Name == name {
			return e.Value
		}
	}
	t.Fatalf("webhook/values.yaml: extraEnv has no %s", name)
	return ""
}

func TestWebhookValues(t *testing.T) {
	var v struct {
		ExtraEnv []corev1.EnvVar `json:"extraEnv"`
	}
	if err := decodeStrict("webhook/values.yaml", &v); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range v.ExtraEnv {
		names = append(names, e.Name)
		if e.ValueFrom != nil {
			t.Errorf("%s: valueFrom set; the webhook needs a literal image reference", e.Name)
		}
	}
	if want := []string{"PROXY_IMAGE", "PROXY_INIT_IMAGE"}; !slices.Equal(names, want) {
		t.Fatalf("extraEnv names = %v, want %v", names, want)
	}
	proxy, init := valuesImage(t, "PROXY_IMAGE"), valuesImage(t, "PROXY_INIT_IMAGE")
	ref := regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	for _, img := range []string{proxy, init} {
		if !ref.MatchString(img) {
			t.Errorf("%q is not a registry/repository:tag reference", img)
		}
	}
	// The examples use the registry `make images` (build/images.sh) pushes to.
	script, err := os.ReadFile("../build/images.sh")
	if err != nil {
		t.Fatal(err)
	}
	reg := regexp.MustCompile(`(?m)^REGISTRY=\$\{REGISTRY:-([^}]+)\}$`).FindSubmatch(script)
	if reg == nil || !strings.HasPrefix(proxy, string(reg[1])+"/proxy:") {
		t.Errorf("PROXY_IMAGE %q is not in build/images.sh's default registry %q", proxy, reg)
	}
	pRepo, pTag, _ := strings.Cut(proxy, ":")
	iRepo, iTag, _ := strings.Cut(init, ":")
	if !strings.HasSuffix(pRepo, "/proxy") || iRepo != strings.TrimSuffix(pRepo, "proxy")+"proxy-init" || pTag != iTag {
		t.Errorf("images %q and %q: want <registry>/proxy:<tag> and <registry>/proxy-init:<same tag>", proxy, init)
	}
}

// shellCommands returns the shell commands shown in a file: lines of
// fenced or comment blocks, with "#" comment markers stripped and "\"
// continuations joined.
func shellCommands(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		cmds = append(cmds, strings.Join(strings.Fields(cur.String()), " "))
		cur.Reset()
	}
	return cmds
}

// TestHelmCommandsPinVersions: every Helm install in the docs pins the
// chart with --version; those passing webhook/values.yaml pin chart 1.6.0
// or later (older charts have no extraEnv and would ignore it silently);
// and for webhooks v1.4-v1.5 the README sets the images on the webhook's
// Deployment with kubectl set env, naming the images values.yaml names.
func TestHelmCommandsPinVersions(t *testing.T) {
	proxy, init := valuesImage(t, "PROXY_IMAGE"), valuesImage(t, "PROXY_INIT_IMAGE")
	version := regexp.MustCompile(`--version (\d+)\.(\d+)\.(\d+)\b`)
	var helm int
	setEnv := false
	for _, path := range []string{"README.md", "webhook/values.yaml", "../README.md"} {
		for _, cmd := range shellCommands(t, path) {
			if strings.Contains(cmd, "kubectl") && strings.Contains(cmd, "set env deployment/azure-wi-webhook-controller-manager") &&
				strings.Contains(cmd, "PROXY_IMAGE="+proxy) && strings.Contains(cmd, "PROXY_INIT_IMAGE="+init) {
				setEnv = true
			}
			if !regexp.MustCompile(`^helm (upgrade|install)\b`).MatchString(cmd) {
				continue
			}
			helm++
			m := version.FindStringSubmatch(cmd)
			if m == nil {
				t.Errorf("%s: helm command without --version: %s", path, cmd)
				continue
			}
			major, _ := strconv.Atoi(m[1])
			minor, _ := strconv.Atoi(m[2])
			if strings.Contains(cmd, "webhook/values.yaml") && (major < 1 || major == 1 && minor < 6) {
				t.Errorf("%s: chart %s.%s has no extraEnv, so webhook/values.yaml would be ignored: %s", path, m[1], m[2], cmd)
			}
		}
	}
	if helm < 2 {
		t.Errorf("found %d helm commands, want the v1.6 and the v1.4-v1.5 installs", helm)
	}
	if !setEnv {
		t.Errorf("README.md lacks kubectl set env deployment/azure-wi-webhook-controller-manager PROXY_IMAGE=%s PROXY_INIT_IMAGE=%s", proxy, init)
	}
}

func env(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func hasResources(c corev1.Container) bool {
	r := c.Resources
	return !r.Requests.Cpu().IsZero() && !r.Requests.Memory().IsZero() && !r.Limits.Memory().IsZero()
}

func boolIs(p *bool, want bool) bool  { return p != nil && *p == want }
func intIs(p *int64, want int64) bool { return p != nil && *p == want }

// checkProxy asserts the azwi-proxy container: the webhook's shape plus an
// explicit runAsUser/runAsGroup and resources.
func (k contract) checkProxy(t *testing.T, where string, c corev1.Container, native bool) {
	t.Helper()
	if c.Image != k.proxyImage {
		t.Errorf("%s: image %q, want %q (webhook/values.yaml PROXY_IMAGE)", where, c.Image, k.proxyImage)
	}
	if len(c.Command) != 0 {
		t.Errorf("%s: command %v: the image ENTRYPOINT (%s) must run", where, c.Command, k.env["PROXY_BIN"])
	}
	if len(c.Args) != 2 || c.Args[0] != "--proxy-port="+k.port || !strings.HasPrefix(c.Args[1], "--log-level=") {
		t.Fatalf("%s: args %q, want [--proxy-port=%s --log-level=<level>]", where, c.Args, k.port)
	}
	level := strings.TrimPrefix(c.Args[1], "--log-level=")
	if !slices.Contains(webhookLogLevels, level) {
		t.Errorf("%s: log level %q is not one the webhook passes %q", where, level, webhookLogLevels)
	}
	if c.Lifecycle == nil || c.Lifecycle.PostStart == nil || c.Lifecycle.PostStart.Exec == nil {
		t.Fatalf("%s: no postStart exec hook", where)
	}
	wantHook := []string{k.env["PROXY_BIN"], "--proxy-port=" + k.port, "--probe", "--log-level=" + level}
	if got := c.Lifecycle.PostStart.Exec.Command; !slices.Equal(got, wantHook) {
		t.Errorf("%s: postStart %q, want %q", where, got, wantHook)
	}
	if len(c.Ports) != 1 || strconv.Itoa(int(c.Ports[0].ContainerPort)) != k.port {
		t.Errorf("%s: ports %v, want containerPort %s", where, c.Ports, k.port)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatalf("%s: no securityContext", where)
	case !boolIs(sc.AllowPrivilegeEscalation, false):
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("%s: privileged", where)
	case !boolIs(sc.ReadOnlyRootFilesystem, true):
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	case !boolIs(sc.RunAsNonRoot, true):
		t.Errorf("%s: runAsNonRoot must be true", where)
	case !intIs(sc.RunAsUser, k.proxyUID) || !intIs(sc.RunAsGroup, k.proxyGID):
		t.Errorf("%s: runAsUser/runAsGroup must be %d/%d (the UID proxy-init exempts)", where, k.proxyUID, k.proxyGID)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", where, sc.Capabilities)
	}
	e := env(c)
	wantEnv := map[string]string{
		"AZURE_CLIENT_ID":            k.sa.clientID,
		"AZURE_TENANT_ID":            k.sa.tenantID,
		"AZURE_FEDERATED_TOKEN_FILE": tokenFile,
		"AZURE_AUTHORITY_HOST":       authorityHost,
	}
	for name, want := range wantEnv {
		if e[name] != want {
			t.Errorf("%s: env %s=%q, want %q", where, name, e[name], want)
		}
	}
	if len(e) != len(wantEnv) {
		t.Errorf("%s: env %v, want exactly %v", where, e, wantEnv)
	}
	if want := []corev1.VolumeMount{{Name: tokenVolume, MountPath: tokenMountPath, ReadOnly: true}}; !slices.Equal(c.VolumeMounts, want) {
		t.Errorf("%s: volumeMounts %+v, want %+v", where, c.VolumeMounts, want)
	}
	if !hasResources(c) {
		t.Errorf("%s: want cpu and memory requests and a memory limit (ResourceQuota)", where)
	}
	switch {
	case native && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways):
		t.Errorf("%s: a native sidecar needs restartPolicy: Always", where)
	case !native && c.RestartPolicy != nil:
		t.Errorf("%s: restartPolicy set on a regular container", where)
	}
	if c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil {
		t.Errorf("%s: probes set; the postStart --probe hook is the readiness gate", where)
	}
}

// checkInit asserts azwi-proxy-init: the webhook's shape (no command or args,
// PROXY_PORT, privileged root with NET_ADMIN) plus resources, and that the
// UID it exempts is the proxy image's user.
func (k contract) checkInit(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	if c.Image != k.initImage {
		t.Errorf("%s: image %q, want %q (webhook/values.yaml PROXY_INIT_IMAGE)", where, c.Image, k.initImage)
	}
	if len(c.Command) != 0 || len(c.Args) != 0 {
		t.Errorf("%s: command %v args %v: the webhook runs the ENTRYPOINT with no args", where, c.Command, c.Args)
	}
	e := env(c)
	if e["PROXY_PORT"] != k.port {
		t.Errorf("%s: PROXY_PORT=%q, want %s", where, e["PROXY_PORT"], k.port)
	}
	exempt, ok := e["PROXY_UID"]
	if !ok {
		exempt = initDefaultUID
	}
	if exempt != k.env["PROXY_UID"] {
		t.Errorf("%s: exempts UID %s, proxy image runs as %s", where, exempt, k.env["PROXY_UID"])
	}
	for name := range e {
		if !slices.Contains([]string{"PROXY_PORT", "PROXY_UID"}, name) {
			t.Errorf("%s: unexpected env %s", where, name)
		}
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatalf("%s: no securityContext", where)
	case !intIs(sc.RunAsUser, 0) || !boolIs(sc.RunAsNonRoot, false):
		t.Errorf("%s: want runAsUser 0 and runAsNonRoot false (a pod-level runAsNonRoot must not block it)", where)
	case !boolIs(sc.Privileged, true):
		t.Errorf("%s: want privileged: true (the webhook's shape)", where)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("%s: capabilities %+v, want add [NET_ADMIN] drop [ALL]", where, sc.Capabilities)
	}
	if c.RestartPolicy != nil {
		t.Errorf("%s: restartPolicy set; proxy-init must run once and exit", where)
	}
	if !hasResources(c) {
		t.Errorf("%s: want cpu and memory requests and a memory limit", where)
	}
}

// initDefaultUID is proxy-init's PROXY_UID default; TestBinaryDefaults
// checks it against cmd/init.
const initDefaultUID = "1501"

// checkApp asserts a container that is not ours: no NET_ADMIN, not
// privileged, and not running as the exempted UID (it would bypass the
// redirect and reach the node's real IMDS).
func (k contract) checkApp(t *testing.T, where string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	if strings.HasPrefix(c.Name, "azwi-") {
		t.Errorf("%s: unexpected container %s", where, c.Name)
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if sc.Capabilities != nil && len(sc.Capabilities.Add) != 0 {
			t.Errorf("%s: adds capabilities %v; NET_ADMIN belongs to azwi-proxy-init only", where, sc.Capabilities.Add)
		}
	}
	uid := pod.SecurityContext.RunAsUser
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		uid = c.SecurityContext.RunAsUser
	}
	if uid == nil || *uid == k.proxyUID || *uid == 0 {
		t.Errorf("%s: runs as UID %v; want an explicit non-root UID other than %d", where, uid, k.proxyUID)
	}
	if c.Image == "" || strings.Contains(c.Image, "imds-proxy") {
		t.Errorf("%s: image %q", where, c.Image)
	}
}

// checkPod asserts what every hand-written pod shares.
func (k contract) checkPod(t *testing.T, where string, meta map[string]string, spec corev1.PodSpec) {
	t.Helper()
	if meta[useLabel] != "true" {
		t.Errorf("%s: label %s=%q, want \"true\"", where, useLabel, meta[useLabel])
	}
	if spec.ServiceAccountName != k.sa.name {
		t.Errorf("%s: serviceAccountName %q, want %q", where, spec.ServiceAccountName, k.sa.name)
	}
	if spec.HostNetwork {
		t.Errorf("%s: hostNetwork would rewrite the node's iptables", where)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsUser == nil || *spec.SecurityContext.RunAsUser == k.proxyUID {
		t.Errorf("%s: want a pod-level runAsUser other than %d (the examples show it cannot break the exemption)", where, k.proxyUID)
	}
	var vols []string
	for _, v := range spec.Volumes {
		vols = append(vols, v.Name)
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].Name != tokenVolume || spec.Volumes[0].Projected == nil {
		t.Fatalf("%s: volumes %v, want only the projected %s", where, vols, tokenVolume)
	}
	p := spec.Volumes[0].Projected
	if len(p.Sources) != 1 || p.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("%s: projected sources %+v, want one serviceAccountToken", where, p.Sources)
	}
	tok := p.Sources[0].ServiceAccountToken
	if tok.Path != "azure-identity-token" || tok.Audience != tokenAudience || !intIs(tok.ExpirationSeconds, 3600) {
		t.Errorf("%s: token projection %+v, want path azure-identity-token, audience %s, 3600 s", where, tok, tokenAudience)
	}
	if p.DefaultMode == nil || *p.DefaultMode != 0o644 {
		t.Errorf("%s: defaultMode %o, want 0644 (the webhook's)", where, *p.DefaultMode)
	}
	names := map[string]bool{}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if names[c.Name] {
			t.Errorf("%s: container name %s used twice", where, c.Name)
		}
		names[c.Name] = true
		for _, m := range c.VolumeMounts {
			if m.Name == tokenVolume && c.Name != proxyName {
				t.Errorf("%s: %s mounts the token; only azwi-proxy needs it", where, c.Name)
			}
		}
	}
}

func TestPodManual(t *testing.T) {
	k := newContract(t)
	var pod corev1.Pod
	mustDecode(t, "examples/pod-manual.yaml", &pod, "v1", "Pod")
	k.checkPod(t, "pod-manual", pod.Labels, pod.Spec)
	spec := pod.Spec
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != initName {
		t.Fatalf("initContainers: want exactly %s", initName)
	}
	k.checkInit(t, "pod-manual "+initName, spec.InitContainers[0])
	if len(spec.Containers) < 2 || spec.Containers[0].Name != proxyName {
		t.Fatalf("containers: want %s first, then the app", proxyName)
	}
	k.checkProxy(t, "pod-manual "+proxyName, spec.Containers[0], false)
	for _, c := range spec.Containers[1:] {
		k.checkApp(t, "pod-manual "+c.Name, spec, c)
	}
}

// nativeOrder asserts azwi-proxy (native sidecar), azwi-proxy-init, then app
// init containers, and no azwi container among the regular ones.
func (k contract) nativeOrder(t *testing.T, where string, spec corev1.PodSpec, minAppInits int) {
	t.Helper()
	ic := spec.InitContainers
	if len(ic) < 2+minAppInits || ic[0].Name != proxyName || ic[1].Name != initName {
		var names []string
		for _, c := range ic {
			names = append(names, c.Name)
		}
		t.Fatalf("%s: initContainers %v, want [%s %s] then at least %d app init container(s)", where, names, proxyName, initName, minAppInits)
	}
	k.checkProxy(t, where+" "+proxyName, ic[0], true)
	k.checkInit(t, where+" "+initName, ic[1])
	for _, c := range ic[2:] {
		if c.RestartPolicy != nil {
			t.Errorf("%s %s: app init container with restartPolicy", where, c.Name)
		}
		k.checkApp(t, where+" "+c.Name, spec, c)
	}
	if len(spec.Containers) == 0 {
		t.Fatalf("%s: no app container", where)
	}
	for _, c := range spec.Containers {
		k.checkApp(t, where+" "+c.Name, spec, c)
	}
}

func TestPodNativeSidecar(t *testing.T) {
	k := newContract(t)
	var pod corev1.Pod
	mustDecode(t, "examples/pod-native-sidecar.yaml", &pod, "v1", "Pod")
	k.checkPod(t, "pod-native-sidecar", pod.Labels, pod.Spec)
	k.nativeOrder(t, "pod-native-sidecar", pod.Spec, 1)
	// The app init container must actually ask IMDS for a token and fail
	// without one.
	script := strings.Join(append(pod.Spec.InitContainers[2].Command, pod.Spec.InitContainers[2].Args...), " ")
	for _, want := range []string{"curl", "Metadata:true", "http://169.254.169.254/metadata/identity/oauth2/token?api-version="} {
		if !strings.Contains(script, want) {
			t.Errorf("app init container script %q lacks %q", script, want)
		}
	}
	if !regexp.MustCompile(`curl (-[A-Za-z]*f[A-Za-z]* |--fail )`).MatchString(script) {
		t.Errorf("app init container script %q: curl without -f would succeed on an error answer", script)
	}
}

func TestJob(t *testing.T) {
	k := newContract(t)
	var job batchv1.Job
	mustDecode(t, "examples/job.yaml", &job, "batch/v1", "Job")
	tpl := job.Spec.Template
	k.checkPod(t, "job", tpl.Labels, tpl.Spec)
	k.nativeOrder(t, "job", tpl.Spec, 0)
	if p := tpl.Spec.RestartPolicy; p != corev1.RestartPolicyNever && p != corev1.RestartPolicyOnFailure {
		t.Errorf("job restartPolicy %q", p)
	}
}

func TestDeploymentUsesWebhook(t *testing.T) {
	k := newContract(t)
	var d appsv1.Deployment
	mustDecode(t, "examples/deployment.yaml", &d, "apps/v1", "Deployment")
	tpl := d.Spec.Template
	if tpl.Labels[useLabel] != "true" {
		t.Errorf("pod template label %s=%q", useLabel, tpl.Labels[useLabel])
	}
	if _, ok := tpl.Annotations[injectProxyAnnot]; !ok {
		t.Errorf("pod template lacks %s", injectProxyAnnot)
	}
	if p, ok := tpl.Annotations[proxyPortAnnot]; ok && p != k.port {
		t.Errorf("%s=%q, want %s", proxyPortAnnot, p, k.port)
	}
	if d.Spec.Selector == nil || !mapSubset(d.Spec.Selector.MatchLabels, tpl.Labels) {
		t.Errorf("selector %v does not match template labels %v", d.Spec.Selector, tpl.Labels)
	}
	spec := tpl.Spec
	if spec.ServiceAccountName != k.sa.name {
		t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, k.sa.name)
	}
	// The webhook sets no runAsUser on azwi-proxy: a pod-level one would
	// replace the image's UID and defeat the exemption.
	if spec.SecurityContext != nil && spec.SecurityContext.RunAsUser != nil {
		t.Errorf("pod-level runAsUser %d would override the proxy image's UID %d", *spec.SecurityContext.RunAsUser, k.proxyUID)
	}
	if len(spec.InitContainers) != 0 {
		t.Errorf("init containers would run before the webhook's azwi-proxy-init and reach the node's real IMDS")
	}
	if len(spec.Volumes) != 0 {
		t.Errorf("volumes %v: the webhook adds the token volume", spec.Volumes)
	}
	for _, c := range spec.Containers {
		k.checkApp(t, "deployment "+c.Name, spec, c)
		if len(c.Env) != 0 || len(c.VolumeMounts) != 0 {
			t.Errorf("deployment %s: env/volumeMounts set; the webhook adds AZURE_* and the token", c.Name)
		}
	}
}

func mapSubset(sub, m map[string]string) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if m[k] != v {
			return false
		}
	}
	return true
}

// TestEveryManifestIsTested fails when a YAML file is added under deploy/
// without a test above.
func TestEveryManifestIsTested(t *testing.T) {
	known := []string{
		"examples/deployment-no-netadmin.yaml", "examples/deployment.yaml", "examples/job.yaml", "examples/pod-manual.yaml",
		"examples/pod-native-sidecar.yaml", "examples/pod-no-netadmin.yaml", "serviceaccount.yaml", "webhook/values.yaml",
	}
	var found []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			found = append(found, filepath.ToSlash(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(found)
	if !slices.Equal(found, known) {
		t.Fatalf("manifests %v, tested %v", found, known)
	}
}

// dockerfile is the final stage of a Dockerfile: its FROM and the
// instructions after it, continuation lines joined.
type dockerfile struct {
	all   []string // every instruction, in order
	from  string
	final []string
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var df dockerfile
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		ins := strings.Join(strings.Fields(cur.String()), " ")
		cur.Reset()
		df.all = append(df.all, ins)
		if strings.HasPrefix(ins, "FROM ") {
			df.from = ins
			df.final = nil
			continue
		}
		df.final = append(df.final, ins)
	}
	return df
}

// only returns the single final-stage instruction with the given keyword.
func (d dockerfile) only(t *testing.T, keyword string) string {
	t.Helper()
	var hits []string
	for _, ins := range d.final {
		if strings.HasPrefix(ins, keyword+" ") {
			hits = append(hits, strings.TrimPrefix(ins, keyword+" "))
		}
	}
	if len(hits) != 1 {
		t.Fatalf("final stage has %d %s instructions %q, want 1", len(hits), keyword, hits)
	}
	return hits[0]
}

func jsonArray(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("%q is not exec (JSON array) form: %v", s, err)
	}
	return out
}

// checkBuildStage asserts the shared build stage: static, trimmed, version
// stamped, cross-compiled for TARGETARCH, output copied to dest.
func checkBuildStage(t *testing.T, d dockerfile, pkg, dest string) {
	t.Helper()
	all := strings.Join(d.all, "\n")
	for _, want := range []string{
		"FROM --platform=$BUILDPLATFORM golang:",
		"ARG TARGETARCH",
		"ARG TARGETOS",
		"CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH",
		"go build -trimpath",
		`-X github.com/imds-proxy/imds-proxy/pkg/version.Version=${VERSION}`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("build stage lacks %q", want)
		}
	}
	out := regexp.MustCompile(`(?m)-o (\S+) ` + regexp.QuoteMeta(pkg) + `$`).FindStringSubmatch(all)
	if out == nil {
		t.Fatalf("no `go build ... -o <out> %s`", pkg)
	}
	copyIns := d.only(t, "COPY")
	if want := "--from=build --chmod=0555 " + out[1] + " " + dest; copyIns != want {
		t.Errorf("COPY %s, want COPY %s", copyIns, want)
	}
}

func TestDockerfileProxy(t *testing.T) {
	env := imageEnv(t)
	d := parseDockerfile(t, "../Dockerfile.proxy")
	if !strings.Contains(d.from, "gcr.io/distroless/static") {
		t.Errorf("final stage %q: want a distroless static base (CA bundle, no shell)", d.from)
	}
	checkBuildStage(t, d, "./cmd/proxy", env["PROXY_BIN"])
	if got, want := d.only(t, "USER"), env["PROXY_UID"]+":"+env["PROXY_GID"]; got != want {
		t.Errorf("USER %s, want %s (numeric, build/image.env)", got, want)
	}
	if got := jsonArray(t, d.only(t, "ENTRYPOINT")); !slices.Equal(got, []string{env["PROXY_BIN"]}) {
		t.Errorf("ENTRYPOINT %q, want [%s]", got, env["PROXY_BIN"])
	}
	if got := jsonArray(t, d.only(t, "CMD")); len(got) != 0 {
		t.Errorf("CMD %q, want []", got)
	}
}

func TestDockerfileInit(t *testing.T) {
	env := imageEnv(t)
	d := parseDockerfile(t, "../Dockerfile.init")
	if !strings.Contains(d.from, "debian:"+env["DEBIAN_SUITE"]) {
		t.Errorf("final stage %q: want debian:%s like the local build", d.from, env["DEBIAN_SUITE"])
	}
	checkBuildStage(t, d, "./cmd/init", env["INIT_BIN"])
	run := d.only(t, "RUN")
	for _, pkg := range strings.Split(env["INIT_PACKAGES"], ",") {
		if !regexp.MustCompile(`apt-get install .*\b` + regexp.QuoteMeta(pkg) + `\b`).MatchString(run) {
			t.Errorf("RUN %q does not install %s", run, pkg)
		}
	}
	if got, want := d.only(t, "USER"), env["INIT_UID"]+":"+env["INIT_UID"]; got != want {
		t.Errorf("USER %s, want %s", got, want)
	}
	if got := jsonArray(t, d.only(t, "ENTRYPOINT")); !slices.Equal(got, []string{env["INIT_BIN"]}) {
		t.Errorf("ENTRYPOINT %q, want [%s]", got, env["INIT_BIN"])
	}
	// The webhook passes no args, so an inherited CMD (debian's "bash")
	// would become proxy-init's arguments.
	if got := jsonArray(t, d.only(t, "CMD")); len(got) != 0 {
		t.Errorf("CMD %q, want []", got)
	}
}

// TestLocalBuildUsesImageEnv: the local build takes every UID, path and
// entrypoint from build/image.env and spells none of them out itself.
func TestLocalBuildUsesImageEnv(t *testing.T) {
	env := imageEnv(t)
	data, err := os.ReadFile("../build/images-local.sh")
	if err != nil {
		t.Fatal(err)
	}
	script := string(data)
	if !strings.Contains(script, `. "$repo/build/image.env"`) {
		t.Error("images-local.sh does not source build/image.env")
	}
	for _, want := range []string{
		`--user "$PROXY_UID:$PROXY_GID"`,
		`--entrypoint "[\"$PROXY_BIN\"]"`,
		`"$work/proxy" "$PROXY_BIN"`,
		`"$CA_BUNDLE_SRC" "$CA_BUNDLE"`,
		`--change "ENTRYPOINT [\"$INIT_BIN\"]"`,
		`--change "USER $INIT_UID:$INIT_UID"`,
		`--change "ENV PATH=$INIT_PATH"`,
		`ensure_rootfs rootfs-init "$INIT_PACKAGES"`,
		`"$work/proxy-init" "$INIT_BIN"`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("images-local.sh lacks %s", want)
		}
	}
	code := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(script, "")
	for _, k := range []string{"PROXY_UID", "PROXY_GID", "PROXY_BIN", "INIT_BIN"} {
		if regexp.MustCompile(`(^|[^A-Za-z0-9_$])` + regexp.QuoteMeta(env[k]) + `([^A-Za-z0-9_-]|$)`).MatchString(code) {
			t.Errorf("images-local.sh spells out %s=%s; take it from build/image.env", k, env[k])
		}
	}
}

// TestBinaryDefaults: the defaults the binaries print in --help are the ones
// build/image.env and the manifests use, so the webhook's shape (no PROXY_UID
// on azwi-proxy-init, no runAsUser on azwi-proxy) keeps working.
func TestBinaryDefaults(t *testing.T) {
	env := imageEnv(t)
	cases := []struct {
		pkg   string
		flags map[string]string // flag -> default wanted
	}{
		{"./cmd/init", map[string]string{"proxy-uid": initDefaultUID, "proxy-port": env["PROXY_PORT"]}},
		{"./cmd/proxy", map[string]string{"proxy-port": env["PROXY_PORT"], "exempt-uid": env["PROXY_UID"]}},
	}
	if initDefaultUID != env["PROXY_UID"] {
		t.Errorf("initDefaultUID %s != build/image.env PROXY_UID %s", initDefaultUID, env["PROXY_UID"])
	}
	for _, tc := range cases {
		t.Run(strings.TrimPrefix(tc.pkg, "./"), func(t *testing.T) {
			dir := t.TempDir()
			if err := gobuild.Build(context.Background(), dir, tc.pkg); err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(dir, filepath.Base(tc.pkg))
			out, err := exec.Command(bin, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --help: %v\n%s", tc.pkg, err, out)
			}
			for flag, want := range tc.flags {
				re := regexp.MustCompile(`(?m)^\s+--` + regexp.QuoteMeta(flag) + `\b.*\(default "?([^")]*)"?\)\s*$`)
				m := re.FindSubmatch(out)
				if m == nil {
					t.Errorf("%s --help shows no default for --%s:\n%s", tc.pkg, flag, out)
					continue
				}
				if got := string(m[1]); got != want {
					t.Errorf("%s --%s default %q, want %q", tc.pkg, flag, got, want)
				}
			}
		})
	}
}
