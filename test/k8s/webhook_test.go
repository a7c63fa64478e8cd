package k8s

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
)

// What the azure-workload-identity mutating webhook v1.6.0 does to a pod
// labelled azure.workload.identity/use: "true", reproduced from its source
// (https://github.com/Azure/azure-workload-identity/blob/v1.6.0/pkg/webhook/webhook.go,
// PodMutator.Handle, and pkg/webhook/consts.go), so that the API server
// judges exactly the pods the webhook would hand it, and the token the
// scenarios use is projected where v1.6 projects it.
//
// Token layouts, by webhook version:
//
//	v1.6: volume azure-workload-identity-reserved-<first 30 hex digits of
//	      sha256(pod name)>, mounted read-only at /var/run/secrets/azure/wi,
//	      file token/azure-identity-token
//	v1.5 (and v1.4): volume azure-identity-token, mounted read-only at
//	      /var/run/secrets/azure/tokens, file azure-identity-token
//	      (https://github.com/Azure/azure-workload-identity/blob/v1.5.1/pkg/webhook/consts.go)
//
// Both versions add the volume mount and the AZURE_* variables to every
// container not listed in azure.workload.identity/skip-containers, and
// never override a variable a container already sets.
const (
	useLabel              = "azure.workload.identity/use"
	clientIDAnnotation    = "azure.workload.identity/client-id"
	tenantIDAnnotation    = "azure.workload.identity/tenant-id"
	expirationAnnotation  = "azure.workload.identity/service-account-token-expiration"
	skipAnnotation        = "azure.workload.identity/skip-containers"
	injectProxyAnnotation = "azure.workload.identity/inject-proxy-sidecar"
	proxyPortAnnotation   = "azure.workload.identity/proxy-sidecar-port"

	v16VolumePrefix = "azure-workload-identity-reserved-"
	v16MountPath    = "/var/run/secrets/azure/wi"
	v16TokenPath    = "token/azure-identity-token"
	v16TokenFile    = v16MountPath + "/" + v16TokenPath

	// v15MountPath and v15TokenFile are webhook v1.5's layout, which the
	// hand-written manifests in deploy/examples use.
	v15MountPath = "/var/run/secrets/azure/tokens"
	v15TokenFile = v15MountPath + "/azure-identity-token"

	tokenAudience          = "api://AzureADTokenExchange"
	defaultTokenExpiration = 3600
	defaultProxyPort       = 8000
)

// webhookConfig is the webhook's own configuration.
type webhookConfig struct {
	tenantID       string // AZURE_TENANT_ID of the webhook (the cluster's tenant)
	authorityHost  string // https://login.microsoftonline.com/ for the public cloud
	proxyImage     string // PROXY_IMAGE
	proxyInitImage string // PROXY_INIT_IMAGE
	logLevel       string // the webhook's own log level, passed to the proxy
}

// v16VolumeName is the projected volume's name for a pod: the pod's name,
// or its generateName followed by " (prefix)" when it has none yet (a
// Deployment's pods), hashed.
func v16VolumeName(pod *corev1.Pod) string {
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + " (prefix)"
	}
	sum := sha256.Sum256([]byte(name))
	return v16VolumePrefix + fmt.Sprintf("%x", sum)[:63-len(v16VolumePrefix)]
}

// mutateV16 applies the webhook v1.6.0 mutation to pod, whose service
// account is sa, on an API server of version 1.32 or newer (native
// sidecars). It returns an error where the webhook answers one.
func mutateV16(pod *corev1.Pod, sa *corev1.ServiceAccount, cfg webhookConfig) error {
	if pod.Labels[useLabel] != "true" {
		return fmt.Errorf("pod lacks the label %s: \"true\"; the webhook's objectSelector would not send it", useLabel)
	}
	if _, ok := pod.Annotations[injectProxyAnnotation]; ok {
		if pod.Spec.HostNetwork {
			return fmt.Errorf("hostNetwork is set to true, cannot inject proxy sidecar")
		}
		port := int32(defaultProxyPort)
		if p, ok := pod.Annotations[proxyPortAnnotation]; ok {
			n, err := strconv.ParseInt(p, 10, 32)
			if err != nil {
				return fmt.Errorf("failed to parse proxy sidecar port: %w", err)
			}
			port = int32(n)
		}
		pod.Spec.InitContainers = injectProxyInit(pod.Spec.InitContainers, port, cfg)
		always := corev1.ContainerRestartPolicyAlways
		pod.Spec.InitContainers = injectProxySidecar(pod.Spec.InitContainers, port, &always, cfg)
	}
	expiration := int64(defaultTokenExpiration)
	for _, a := range []map[string]string{pod.Annotations, sa.Annotations} {
		if v := a[expirationAnnotation]; v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 3600 || n > 86400 {
				return fmt.Errorf("token expiration %q not valid. Expected value to be between 3600 and 86400", v)
			}
			expiration = n
			break
		}
	}
	clientID := sa.Annotations[clientIDAnnotation]
	tenantID, ok := sa.Annotations[tenantIDAnnotation]
	if !ok {
		tenantID = cfg.tenantID
	}
	skip := map[string]bool{}
	if s := pod.Annotations[skipAnnotation]; s != "" {
		for _, name := range strings.Split(s, ";") {
			skip[strings.TrimSpace(name)] = true
		}
	}
	volume := v16VolumeName(pod)
	for _, list := range []*[]corev1.Container{&pod.Spec.InitContainers, &pod.Spec.Containers} {
		for i := range *list {
			c := &(*list)[i]
			if skip[c.Name] {
				continue
			}
			addEnv(c, []corev1.EnvVar{
				{Name: "AZURE_CLIENT_ID", Value: clientID},
				{Name: "AZURE_TENANT_ID", Value: tenantID},
				{Name: "AZURE_FEDERATED_TOKEN_FILE", Value: v16TokenFile},
				{Name: "AZURE_AUTHORITY_HOST", Value: cfg.authorityHost},
			})
			mount := corev1.VolumeMount{Name: volume, MountPath: v16MountPath, ReadOnly: true}
			if j := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == volume }); j >= 0 {
				c.VolumeMounts[j] = mount
			} else {
				c.VolumeMounts = append(c.VolumeMounts, mount)
			}
		}
	}
	v := corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Path: v16TokenPath, ExpirationSeconds: &expiration, Audience: tokenAudience,
		}}},
	}}}
	if j := slices.IndexFunc(pod.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == volume }); j >= 0 {
		pod.Spec.Volumes[j] = v
	} else {
		pod.Spec.Volumes = append(pod.Spec.Volumes, v)
	}
	return nil
}

// addEnv appends each variable the container does not set yet, and only
// when its value is not empty (a service account without the client-id
// annotation gives no AZURE_CLIENT_ID).
func addEnv(c *corev1.Container, vars []corev1.EnvVar) {
	for _, v := range vars {
		set := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == v.Name })
		if !set && v.Value != "" {
			c.Env = append(c.Env, v)
		}
	}
}

// injectProxyInit appends azwi-proxy-init after the pod's own init
// containers, unless a container of that name exists.
func injectProxyInit(cs []corev1.Container, port int32, cfg webhookConfig) []corev1.Container {
	if slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == "azwi-proxy-init" }) {
		return cs
	}
	root, notNonRoot, privileged := int64(0), false, true
	return append(cs, corev1.Container{
		Name:            "azwi-proxy-init",
		Image:           cfg.proxyInitImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
			Privileged:   &privileged,
			RunAsNonRoot: &notNonRoot,
			RunAsUser:    &root,
		},
		Env: []corev1.EnvVar{{Name: "PROXY_PORT", Value: strconv.Itoa(int(port))}},
	})
}

// injectProxySidecar prepends azwi-proxy, unless a container of that name
// exists.
func injectProxySidecar(cs []corev1.Container, port int32, restart *corev1.ContainerRestartPolicy, cfg webhookConfig) []corev1.Container {
	if slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == "azwi-proxy" }) {
		return cs
	}
	no, yes := false, true
	portArg, levelArg := fmt.Sprintf("--proxy-port=%d", port), "--log-level="+cfg.logLevel
	return append([]corev1.Container{{
		Name:            "azwi-proxy",
		Image:           cfg.proxyImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{portArg, levelArg},
		Ports:           []corev1.ContainerPort{{ContainerPort: port}},
		Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"/proxy", portArg, "--probe", levelArg},
		}}},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			Privileged:               &no,
			ReadOnlyRootFilesystem:   &yes,
			RunAsNonRoot:             &yes,
		},
		RestartPolicy: restart,
	}}, cs...)
}

func TestV16VolumeName(t *testing.T) {
	// Expected values from `printf %s NAME | sha256sum | cut -c1-30`.
	cases := []struct {
		pod  corev1.Pod
		want string
	}{
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "legacy-app-manual"}}, "azure-workload-identity-reserved-5fc031b698851fcdad82b5cfdadbc1"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "legacy-task-"}}, "azure-workload-identity-reserved-4e195087c259e2ac8acd5879e92d1b"},
	}
	for _, tc := range cases {
		if got := v16VolumeName(&tc.pod); got != tc.want || len(got) != 63 {
			t.Errorf("v16VolumeName(%q, %q) = %q, want %q (63 characters)", tc.pod.Name, tc.pod.GenerateName, got, tc.want)
		}
	}
}

// webhookCase is a pod as it reaches the webhook: a manifest's pod, or a
// controller's pod from a template (generateName, no name yet).
type webhookCase struct {
	file      string
	manual    bool   // hand-written azwi containers (path B)
	tokenFile string // AZURE_FEDERATED_TOKEN_FILE azwi-proxy must end up with
}

// podFor returns the pod a deploy/ manifest makes, as the webhook sees it.
func podFor(t *testing.T, file string, data []byte) *corev1.Pod {
	t.Helper()
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}}
	var tpl corev1.PodTemplateSpec
	var name string
	switch head.Kind {
	case "Pod":
		if err := yaml.UnmarshalStrict(data, pod); err != nil {
			t.Fatalf("deploy/%s: %v", file, err)
		}
		return pod
	case "Deployment":
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict(data, &d); err != nil {
			t.Fatalf("deploy/%s: %v", file, err)
		}
		tpl, name = d.Spec.Template, d.Name+"-5d8f7c9b6-"
	case "Job":
		var j batchv1.Job
		if err := yaml.UnmarshalStrict(data, &j); err != nil {
			t.Fatalf("deploy/%s: %v", file, err)
		}
		tpl, name = j.Spec.Template, j.Name+"-"
	default:
		t.Fatalf("deploy/%s: kind %s makes no pod", file, head.Kind)
	}
	pod.ObjectMeta, pod.Spec = tpl.ObjectMeta, tpl.Spec
	pod.GenerateName = name
	return pod
}

// checkWebhookV16Pods has the API server judge what webhook v1.6,
// configured with deploy/webhook/values.yaml, makes of every deploy/
// manifest that yields a pod labelled for it, and asserts what it adds:
// its own token volume, mounted into every container at
// /var/run/secrets/azure/wi, and the AZURE_* variables where a container
// does not set them. The hand-written manifests keep their own token (the
// v1.5 layout) for azwi-proxy; moved to v1.6's mount path it would
// collide with the webhook's volume, which the API server refuses.
func checkWebhookV16Pods(t *testing.T, c *kubeenv.Cluster, ns string) {
	sa := serviceAccount(t)
	cfg := shippedWebhookConfig(t, "cluster-tenant-is-not-used")
	cases := []webhookCase{
		{"examples/deployment.yaml", false, v16TokenFile},
		{"examples/job.yaml", true, v15TokenFile},
		{"examples/pod-manual.yaml", true, v15TokenFile},
		{"examples/pod-native-sidecar.yaml", true, v15TokenFile},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			pod := podFor(t, tc.file, readDeploy(t, tc.file))
			volume := v16VolumeName(pod)
			if err := mutateV16(pod, sa, cfg); err != nil {
				t.Fatal(err)
			}
			var stored corev1.Pod
			warnings, err := c.DryRun(context.Background(), ns, pod, &stored)
			if err != nil {
				t.Fatalf("the webhook's pod refused: %v", err)
			}
			if len(warnings) != 0 {
				t.Errorf("API server warnings %q", warnings)
			}
			i := slices.IndexFunc(stored.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == volume })
			if i < 0 {
				t.Fatalf("no volume %s among %+v", volume, stored.Spec.Volumes)
			}
			if src := stored.Spec.Volumes[i].Projected.Sources[0].ServiceAccountToken; src.Path != v16TokenPath || *src.ExpirationSeconds != 3600 || src.Audience != tokenAudience {
				t.Errorf("webhook volume source %+v", src)
			}
			var names []string
			for _, ctr := range append(slices.Clone(stored.Spec.InitContainers), stored.Spec.Containers...) {
				names = append(names, ctr.Name)
				want := corev1.VolumeMount{Name: volume, MountPath: v16MountPath, ReadOnly: true}
				if !slices.Contains(ctr.VolumeMounts, want) {
					t.Errorf("%s: no mount %+v among %+v", ctr.Name, want, ctr.VolumeMounts)
				}
				env := map[string]string{}
				for _, e := range ctr.Env {
					env[e.Name] = e.Value
				}
				wantFile := v16TokenFile
				if ctr.Name == "azwi-proxy" {
					wantFile = tc.tokenFile
				}
				if env["AZURE_FEDERATED_TOKEN_FILE"] != wantFile || env["AZURE_CLIENT_ID"] != sa.Annotations[clientIDAnnotation] ||
					env["AZURE_TENANT_ID"] != sa.Annotations[tenantIDAnnotation] || env["AZURE_AUTHORITY_HOST"] != cfg.authorityHost {
					t.Errorf("%s: AZURE_* env %v, want the service account's identity and token file %s", ctr.Name, env, wantFile)
				}
			}
			if !tc.manual {
				if len(stored.Spec.InitContainers) != 2 || stored.Spec.InitContainers[0].Name != "azwi-proxy" || stored.Spec.InitContainers[1].Name != "azwi-proxy-init" ||
					stored.Spec.InitContainers[0].RestartPolicy == nil || *stored.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Errorf("injected init containers %v: want the native sidecar azwi-proxy, then azwi-proxy-init", names)
				}
			}
		})
	}
	t.Run("own token volume at the v1.6 mount path", func(t *testing.T) {
		manual := string(readDeploy(t, "examples/pod-manual.yaml"))
		moved := strings.ReplaceAll(manual, v15MountPath, v16MountPath)
		if moved == manual {
			t.Fatalf("pod-manual.yaml does not mount %s", v15MountPath)
		}
		pod := podFor(t, "examples/pod-manual.yaml (moved)", []byte(moved))
		if err := mutateV16(pod, sa, cfg); err != nil {
			t.Fatal(err)
		}
		_, err := c.DryRun(context.Background(), ns, pod, nil)
		var apiErr *kubeenv.APIError
		want := `spec.containers[0].volumeMounts[1].mountPath: Invalid value: "` + v16MountPath + `": must be unique`
		if !errors.As(err, &apiErr) || apiErr.Code != 422 || !strings.Contains(apiErr.Message, want) {
			t.Errorf("got %v, want 422 with %q", err, want)
		}
	})
}
