package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
)

// redirectViolations is how the API server's PodSecurity admission words
// the restricted profile's verdict on azwi-proxy-init as the
// hand-written examples and webhook v1.6 shape it (root, privileged,
// NET_ADMIN).
const redirectViolations = `violates PodSecurity "restricted:latest": privileged (container "azwi-proxy-init" must not set securityContext.privileged=true), ` +
	`allowPrivilegeEscalation != false (container "azwi-proxy-init" must set securityContext.allowPrivilegeEscalation=false), ` +
	`unrestricted capabilities (container "azwi-proxy-init" must not include "NET_ADMIN" in securityContext.capabilities.add), ` +
	`runAsNonRoot != true (container "azwi-proxy-init" must not set securityContext.runAsNonRoot=false), ` +
	`runAsUser=0 (container "azwi-proxy-init" must not set runAsUser=0)`

// TestNoNetAdminPassesRestricted has the API server's own PodSecurity
// admission judge the capability-free layout (docs/app-service.md) in a
// namespace that enforces, and warns about, the "restricted" profile:
// deploy/examples/pod-no-netadmin.yaml and the pods of
// deployment-no-netadmin.yaml are admitted, also as webhook v1.6 mutates
// them, and the Deployment draws no warning; the redirect layout
// (azwi-proxy-init with NET_ADMIN), as written in deploy/ and as the
// webhook injects it, is refused with the API server's message.
func TestNoNetAdminPassesRestricted(t *testing.T) {
	t.Parallel()
	c := kubeenvtest.Start(t, kubeenv.Options{})
	ctx := context.Background()
	const ns = "restricted-apps"
	if err := c.CreateNamespace(ctx, ns, map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		// Enforcement judges pods only; warn judges the pod templates of
		// Deployments too.
		"pod-security.kubernetes.io/warn": "restricted",
	}); err != nil {
		t.Fatal(err)
	}
	sa := serviceAccount(t)
	sa.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	if err := c.Create(ctx, ns, sa, nil); err != nil {
		t.Fatal(err)
	}
	cfg := shippedWebhookConfig(t, "cluster-tenant-is-not-used")

	for _, file := range []string{"examples/pod-no-netadmin.yaml", "examples/deployment-no-netadmin.yaml"} {
		t.Run("admitted/"+file, func(t *testing.T) {
			data := readDeploy(t, file)
			var stored map[string]any
			warnings, err := c.DryRun(ctx, ns, data, &stored)
			if err != nil {
				t.Fatalf("deploy/%s refused under restricted: %v", file, err)
			}
			if len(warnings) != 0 {
				t.Errorf("deploy/%s: warnings %q", file, warnings)
			}
			// The pod the manifest makes, as the Deployment's ReplicaSet
			// would create it, and as webhook v1.6 mutates it (its token
			// volume and AZURE_* variables in every container).
			pod := podFor(t, file, data)
			if warnings, err := c.DryRun(ctx, ns, pod, nil); err != nil || len(warnings) != 0 {
				t.Errorf("the pod of deploy/%s: %v, warnings %q", file, err, warnings)
			}
			mutated := podFor(t, file, data)
			if err := mutateV16(mutated, sa, cfg); err != nil {
				t.Fatal(err)
			}
			if len(mutated.Spec.Volumes) != 2 {
				t.Fatalf("webhook v1.6 added no token volume: %+v", mutated.Spec.Volumes)
			}
			var out corev1.Pod
			if warnings, err := c.DryRun(ctx, ns, mutated, &out); err != nil || len(warnings) != 0 {
				t.Errorf("the pod of deploy/%s as webhook v1.6 mutates it: %v, warnings %q", file, err, warnings)
			}
			for _, ctr := range out.Spec.InitContainers {
				if ctr.Name == "azwi-proxy-init" {
					t.Errorf("the webhook injected azwi-proxy-init into deploy/%s", file)
				}
			}
		})
	}

	t.Run("refused/redirect layout", func(t *testing.T) {
		for _, file := range []string{"examples/pod-native-sidecar.yaml", "examples/pod-manual.yaml"} {
			_, err := c.DryRun(ctx, ns, readDeploy(t, file), nil)
			wantForbidden(t, "deploy/"+file, err, redirectViolations)
		}
		// What the webhook makes of a pod that asks for the proxy
		// sidecar: its azwi-proxy-init is refused the same way.
		pod := podFor(t, "examples/deployment.yaml", readDeploy(t, "examples/deployment.yaml"))
		if err := mutateV16(pod, sa, cfg); err != nil {
			t.Fatal(err)
		}
		_, err := c.DryRun(ctx, ns, pod, nil)
		wantForbidden(t, "the webhook's pod of deploy/examples/deployment.yaml", err, redirectViolations)
	})

	t.Run("warned/redirect Deployment", func(t *testing.T) {
		// A Deployment is stored whatever its template says; the warn
		// label makes the API server say that its pods will be refused.
		d := strings.Replace(string(readDeploy(t, "examples/deployment-no-netadmin.yaml")),
			"      containers:\n", "      - name: azwi-proxy-init\n"+
				"        image: ghcr.io/imds-proxy/proxy-init:v0.1.0\n"+
				"        securityContext:\n"+
				"          capabilities:\n"+
				"            add: [\"NET_ADMIN\"]\n"+
				"            drop: [\"ALL\"]\n"+
				"      containers:\n", 1)
		warnings, err := c.DryRun(ctx, ns, []byte(d), nil)
		if err != nil {
			t.Fatalf("the Deployment was refused: %v", err)
		}
		want := `would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "azwi-proxy-init" must set securityContext.allowPrivilegeEscalation=false), ` +
			`unrestricted capabilities (container "azwi-proxy-init" must not include "NET_ADMIN" in securityContext.capabilities.add)`
		if len(warnings) != 1 || warnings[0] != want {
			t.Errorf("warnings %q\nwant [%q]", warnings, want)
		}
	})
}

// wantForbidden asserts a 403 Forbidden whose message ends with violation.
func wantForbidden(t *testing.T, what string, err error, violation string) {
	t.Helper()
	var apiErr *kubeenv.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 403 || apiErr.Reason != metav1.StatusReasonForbidden ||
		!strings.HasSuffix(apiErr.Message, violation) {
		t.Errorf("%s: got %v\nwant 403 Forbidden ending with %q", what, err, violation)
	}
}
