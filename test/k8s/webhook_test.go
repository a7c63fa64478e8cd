package k8s

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
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
