package deploy_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The capability-free layout (docs/app-service.md): the proxy serves the
// App Service protocol and the apps are given IDENTITY_ENDPOINT and
// IDENTITY_HEADER; no azwi-proxy-init, nothing that Pod Security
// "restricted" refuses.
const (
	identityEndpoint  = "http://127.0.0.1:8000/msi/token"
	identitySecret    = "legacy-app-identity-header"
	identitySecretKey = "IDENTITY_HEADER"
)

// checkRestricted returns every way spec breaks the Pod Security
// Standards' "restricted" profile, which includes "baseline"
// (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
// the controls of Kubernetes v1.34), one line per problem naming the
// container and the field. The test bed's API server judges the same
// manifests server-side (test/k8s), which checks this function in turn.
func checkRestricted(spec corev1.PodSpec) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// Host namespaces.
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		bad("pod: hostNetwork, hostPID and hostIPC must be false")
	}
	// Volume types.
	for _, v := range spec.Volumes {
		s := v.VolumeSource
		if s.ConfigMap == nil && s.CSI == nil && s.DownwardAPI == nil && s.EmptyDir == nil && s.Ephemeral == nil &&
			s.PersistentVolumeClaim == nil && s.Projected == nil && s.Secret == nil {
			bad("volume %s: only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret are allowed", v.Name)
		}
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if len(psc.Sysctls) != 0 {
		bad("pod: sysctls set; only the safe set is allowed, and these examples need none")
	}
	if psc.WindowsOptions != nil && psc.WindowsOptions.HostProcess != nil && *psc.WindowsOptions.HostProcess {
		bad("pod: windowsOptions.hostProcess")
	}
	problems = append(problems, checkSELinuxAppArmor("pod", psc.SELinuxOptions, psc.AppArmorProfile)...)
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		bad("pod: runAsUser 0")
	}
	podSeccomp := psc.SeccompProfile != nil && (psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault ||
		psc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost)
	if psc.SeccompProfile != nil && !podSeccomp {
		bad("pod: seccompProfile %s; RuntimeDefault or Localhost", psc.SeccompProfile.Type)
	}
	podNonRoot := psc.RunAsNonRoot != nil && *psc.RunAsNonRoot

	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for _, c := range all {
		where := "container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("%s: privileged", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			bad("%s: capabilities must drop ALL", where)
		}
		if sc.Capabilities != nil {
			for _, add := range sc.Capabilities.Add {
				if add != "NET_BIND_SERVICE" {
					bad("%s: adds capability %s; only NET_BIND_SERVICE is allowed", where, add)
				}
			}
		}
		switch {
		case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot:
			bad("%s: runAsNonRoot false", where)
		case sc.RunAsNonRoot == nil && !podNonRoot:
			bad("%s: runAsNonRoot must be true, here or for the pod", where)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			bad("%s: runAsUser 0", where)
		}
		switch {
		case sc.SeccompProfile == nil && !podSeccomp:
			bad("%s: seccompProfile must be RuntimeDefault or Localhost, here or for the pod", where)
		case sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault &&
			sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost:
			bad("%s: seccompProfile %s; RuntimeDefault or Localhost", where, sc.SeccompProfile.Type)
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			bad("%s: procMount %s", where, *sc.ProcMount)
		}
		if sc.WindowsOptions != nil && sc.WindowsOptions.HostProcess != nil && *sc.WindowsOptions.HostProcess {
			bad("%s: windowsOptions.hostProcess", where)
		}
		problems = append(problems, checkSELinuxAppArmor(where, sc.SELinuxOptions, sc.AppArmorProfile)...)
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				bad("%s: hostPort %d", where, p.HostPort)
			}
		}
	}
	return problems
}

// checkSELinuxAppArmor checks the SELinux options and AppArmor profile of
// the pod or a container, which baseline limits.
func checkSELinuxAppArmor(where string, se *corev1.SELinuxOptions, aa *corev1.AppArmorProfile) []string {
	var problems []string
	if se != nil {
		if !slices.Contains([]string{"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}, se.Type) {
			problems = append(problems, where+": seLinuxOptions.type "+se.Type)
		}
		if se.User != "" || se.Role != "" {
			problems = append(problems, where+": seLinuxOptions.user and role must be unset")
		}
	}
	if aa != nil && aa.Type == corev1.AppArmorProfileTypeUnconfined {
		problems = append(problems, where+": appArmorProfile Unconfined")
	}
	return problems
}

// The checker must be able to fail: the redirect layout breaks the
// profile exactly where azwi-proxy-init needs root and NET_ADMIN.
func TestCheckRestrictedRefusesTheRedirectLayout(t *testing.T) {
	var pod corev1.Pod
	mustDecode(t, "examples/pod-native-sidecar.yaml", &pod, "v1", "Pod")
	want := []string{
		"container azwi-proxy-init: privileged",
		"container azwi-proxy-init: allowPrivilegeEscalation must be false",
		"container azwi-proxy-init: adds capability NET_ADMIN; only NET_BIND_SERVICE is allowed",
		"container azwi-proxy-init: runAsNonRoot false",
		"container azwi-proxy-init: runAsUser 0",
	}
	if got := checkRestricted(pod.Spec); !slices.Equal(got, want) {
		t.Errorf("problems of pod-native-sidecar.yaml:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Each control on its own, on an otherwise restricted pod.
	var ok corev1.Pod
	mustDecode(t, "examples/pod-no-netadmin.yaml", &ok, "v1", "Pod")
	breakages := map[string]func(*corev1.PodSpec){
		"pod: hostNetwork, hostPID and hostIPC must be false":   func(s *corev1.PodSpec) { s.HostPID = true },
		"container app: allowPrivilegeEscalation must be false": func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil },
		"container app: capabilities must drop ALL": func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"}
		},
		"container app: runAsNonRoot must be true, here or for the pod":                                   func(s *corev1.PodSpec) { s.SecurityContext.RunAsNonRoot = nil },
		"container fetch-secret: seccompProfile must be RuntimeDefault or Localhost, here or for the pod": func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = nil },
		"container app: hostPort 80": func(s *corev1.PodSpec) {
			s.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		},
		"volume host: only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret are allowed": func(s *corev1.PodSpec) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		},
	}
	for want, edit := range breakages {
		p := ok.DeepCopy()
		edit(&p.Spec)
		if got := checkRestricted(p.Spec); !slices.Contains(got, want) {
			t.Errorf("after an edit: problems %q, want %q among them", got, want)
		}
	}
}

// checkAppServiceEnv asserts that a container is given the App Service
// endpoint and the shared secret, and nothing that would send its SDK to
// another managed-identity source: IMDS_ENDPOINT (Azure Arc),
// IDENTITY_SERVER_THUMBPRINT (Service Fabric), MSI_ENDPOINT and MSI_SECRET
// (App Service 2017, Azure ML, Cloud Shell).
func checkAppServiceEnv(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	var endpoint string
	var secret *corev1.SecretKeySelector
	for _, e := range c.Env {
		switch e.Name {
		case "IDENTITY_ENDPOINT":
			endpoint = e.Value
		case "IDENTITY_HEADER":
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("%s: IDENTITY_HEADER must come from the Secret, not a literal", where)
				continue
			}
			secret = e.ValueFrom.SecretKeyRef
		case "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET":
			t.Errorf("%s: %s would make the SDK pick another managed-identity source", where, e.Name)
		}
	}
	if endpoint != identityEndpoint {
		t.Errorf("%s: IDENTITY_ENDPOINT %q, want %q", where, endpoint, identityEndpoint)
	}
	if secret == nil || secret.Name != identitySecret || secret.Key != identitySecretKey || secret.Optional != nil {
		t.Errorf("%s: IDENTITY_HEADER from %+v, want Secret %s key %s, not optional", where, secret, identitySecret, identitySecretKey)
	}
}

// checkNoNetAdmin asserts the capability-free layout of a pod spec:
// azwi-proxy as the first init container, a native sidecar in the shape of
// the other examples, given the shared secret; no azwi-proxy-init; every
// other container an app given the App Service endpoint and the same
// secret; the whole pod within the restricted profile.
func (k contract) checkNoNetAdmin(t *testing.T, where string, spec corev1.PodSpec) {
	t.Helper()
	ic := spec.InitContainers
	if len(ic) == 0 || ic[0].Name != proxyName {
		t.Fatalf("%s: the first init container must be %s", where, proxyName)
	}
	proxy := ic[0]
	// The proxy gets the secret, from the same Secret as the apps, and
	// otherwise exactly what the other examples give it.
	var rest []corev1.EnvVar
	var secret *corev1.SecretKeySelector
	for _, e := range proxy.Env {
		if e.Name == "IDENTITY_HEADER" && e.ValueFrom != nil {
			secret = e.ValueFrom.SecretKeyRef
			continue
		}
		if strings.HasPrefix(e.Name, "IDENTITY_") {
			t.Errorf("%s %s: %s set; the proxy needs only IDENTITY_HEADER", where, proxyName, e.Name)
		}
		rest = append(rest, e)
	}
	if secret == nil || secret.Name != identitySecret || secret.Key != identitySecretKey || secret.Optional != nil {
		t.Errorf("%s %s: IDENTITY_HEADER from %+v, want Secret %s key %s, not optional", where, proxyName, secret, identitySecret, identitySecretKey)
	}
	withoutSecret := *proxy.DeepCopy()
	withoutSecret.Env = rest
	k.checkProxy(t, where+" "+proxyName, withoutSecret, true)

	for _, c := range append(slices.Clone(ic[1:]), spec.Containers...) {
		if c.Name == initName {
			t.Errorf("%s: %s present; this layout has no redirect", where, initName)
			continue
		}
		if c.RestartPolicy != nil {
			t.Errorf("%s %s: app container with restartPolicy", where, c.Name)
		}
		k.checkApp(t, where+" "+c.Name, spec, c)
		checkAppServiceEnv(t, where+" "+c.Name, c)
	}
	if len(spec.Containers) == 0 {
		t.Fatalf("%s: no app container", where)
	}
	if problems := checkRestricted(spec); len(problems) != 0 {
		t.Errorf("%s breaks Pod Security \"restricted\":\n%s", where, strings.Join(problems, "\n"))
	}
}

func TestPodNoNetAdmin(t *testing.T) {
	k := newContract(t)
	var pod corev1.Pod
	mustDecode(t, "examples/pod-no-netadmin.yaml", &pod, "v1", "Pod")
	k.checkPod(t, "pod-no-netadmin", pod.Labels, pod.Spec)
	if _, ok := pod.Annotations[injectProxyAnnot]; ok {
		t.Errorf("pod-no-netadmin: %s would make the webhook inject %s", injectProxyAnnot, initName)
	}
	k.checkNoNetAdmin(t, "pod-no-netadmin", pod.Spec)
	if len(pod.Spec.InitContainers) < 2 {
		t.Fatal("pod-no-netadmin: want an app init container after the proxy")
	}
}

func TestDeploymentNoNetAdmin(t *testing.T) {
	k := newContract(t)
	var d appsv1.Deployment
	mustDecode(t, "examples/deployment-no-netadmin.yaml", &d, "apps/v1", "Deployment")
	tpl := d.Spec.Template
	k.checkPod(t, "deployment-no-netadmin", tpl.Labels, tpl.Spec)
	if _, ok := tpl.Annotations[injectProxyAnnot]; ok {
		t.Errorf("deployment-no-netadmin: %s would make the webhook inject %s", injectProxyAnnot, initName)
	}
	if d.Spec.Selector == nil || !mapSubset(d.Spec.Selector.MatchLabels, tpl.Labels) {
		t.Errorf("selector %v does not match template labels %v", d.Spec.Selector, tpl.Labels)
	}
	k.checkNoNetAdmin(t, "deployment-no-netadmin", tpl.Spec)

	// The Deployment's pods are the example pod's, but for the app init
	// container and the names.
	var pod corev1.Pod
	mustDecode(t, "examples/pod-no-netadmin.yaml", &pod, "v1", "Pod")
	if !slices.EqualFunc(tpl.Spec.InitContainers[:1], pod.Spec.InitContainers[:1], containersEqual) ||
		!slices.EqualFunc(tpl.Spec.Containers, pod.Spec.Containers, containersEqual) {
		t.Error("deployment-no-netadmin's containers differ from pod-no-netadmin's: keep the two examples alike")
	}
}

// containersEqual compares two containers by their rendering.
func containersEqual(a, b corev1.Container) bool { return a.String() == b.String() }
