package k8s

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
)

// deployFiles lists the YAML files under deploy/, relative to it, the
// ServiceAccount first (the pods name it, and the API server's
// ServiceAccount admission refuses a pod whose account does not exist).
func deployFiles(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "..", "deploy")
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(files, func(a, b string) int {
		if (a == "serviceaccount.yaml") != (b == "serviceaccount.yaml") {
			if a == "serviceaccount.yaml" {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	if len(files) == 0 || files[0] != "serviceaccount.yaml" {
		t.Fatalf("deploy/ files %v: want serviceaccount.yaml among them", files)
	}
	return files
}

// isHelmValues reports whether a deploy/ file is Helm values rather than
// a Kubernetes object (no apiVersion and kind).
func isHelmValues(t *testing.T, data []byte) bool {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		t.Fatal(err)
	}
	return head.APIVersion == "" && head.Kind == ""
}

// podSpecOf returns the pod spec of a stored Pod or Job (JSON from the API
// server), or nil for other kinds.
func podSpecOf(t *testing.T, kind string, stored []byte) *corev1.PodSpec {
	t.Helper()
	switch kind {
	case "Pod":
		var p corev1.Pod
		if err := yaml.Unmarshal(stored, &p); err != nil {
			t.Fatal(err)
		}
		return &p.Spec
	case "Job":
		var j batchv1.Job
		if err := yaml.Unmarshal(stored, &j); err != nil {
			t.Fatal(err)
		}
		return &j.Spec.Template.Spec
	}
	return nil
}

// TestDeployManifestsServerSide: the API server accepts every manifest in
// deploy/ with a server-side dry run and strict field validation, without
// a warning, and keeps the native sidecar's restartPolicy: Always;
// deliberately broken copies are refused with the API server's own
// message; the Pod Security levels deploy/README.md states hold.
func TestDeployManifestsServerSide(t *testing.T) {
	t.Parallel()
	c := kubeenvtest.Start(t, kubeenv.Options{})
	ctx := context.Background()
	const ns = "imds-proxy-deploy"
	// deploy/README.md: azwi-proxy-init needs the privileged level.
	if err := c.CreateNamespace(ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}); err != nil {
		t.Fatal(err)
	}

	for _, file := range deployFiles(t) {
		data := readDeploy(t, file)
		if isHelmValues(t, data) {
			if file != "webhook/values.yaml" {
				t.Errorf("deploy/%s is neither a Kubernetes object nor the webhook's Helm values", file)
			}
			continue // the "webhook v1.6" subtest judges the pods these values make
		}
		t.Run(file, func(t *testing.T) {
			var stored map[string]any
			warnings, err := c.DryRun(ctx, ns, data, &stored)
			if err != nil {
				t.Fatalf("deploy/%s refused: %v", file, err)
			}
			if len(warnings) != 0 {
				t.Errorf("deploy/%s: API server warnings %q", file, warnings)
			}
			raw, _ := yaml.Marshal(stored)
			if spec := podSpecOf(t, stored["kind"].(string), raw); spec != nil && len(spec.InitContainers) > 0 && spec.InitContainers[0].Name == "azwi-proxy" {
				if p := spec.InitContainers[0].RestartPolicy; p == nil || *p != corev1.ContainerRestartPolicyAlways {
					t.Errorf("deploy/%s: the API server dropped the native sidecar's restartPolicy: Always", file)
				}
			}
			if file == "serviceaccount.yaml" {
				if err := c.Create(ctx, ns, data, nil); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	// Broken copies: one edit each, refused with the API server's message.
	broken := []struct {
		name, file, old, new string
		code                 int
		reason               metav1.StatusReason
		message              string // a fragment of the API server's message
	}{
		{"misspelt native sidecar field", "examples/pod-native-sidecar.yaml",
			"    restartPolicy: Always\n", "    restartPolcy: Always\n",
			400, metav1.StatusReasonBadRequest, `strict decoding error: unknown field "spec.initContainers[0].restartPolcy"`},
		// The postStart --probe hook is allowed on a native sidecar only.
		{"sidecar without restartPolicy: Always", "examples/job.yaml",
			"        restartPolicy: Always\n", "",
			422, metav1.StatusReasonInvalid, `spec.template.spec.initContainers[0].lifecycle: Forbidden: may not be set for init containers without restartPolicy=Always`},
		{"proxy without image", "examples/pod-manual.yaml",
			"    image: ghcr.io/imds-proxy/proxy:v0.1.0\n", "",
			422, metav1.StatusReasonInvalid, `spec.containers[0].image: Required value`},
		{"port out of range", "examples/pod-manual.yaml",
			"    - containerPort: 8000\n", "    - containerPort: 80000\n",
			422, metav1.StatusReasonInvalid, `spec.containers[0].ports[0].containerPort: Invalid value: 80000: must be between 1 and 65535, inclusive`},
		{"job without restartPolicy", "examples/job.yaml",
			"      restartPolicy: Never\n", "",
			422, metav1.StatusReasonInvalid, `spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"`},
		{"misspelt deployment field", "examples/deployment.yaml",
			"  replicas: 2\n", "  replica: 2\n",
			400, metav1.StatusReasonBadRequest, `strict decoding error: unknown field "spec.replica"`},
		{"service account without name", "serviceaccount.yaml",
			"  name: legacy-app\n", "",
			422, metav1.StatusReasonInvalid, `metadata.name: Required value: name or generateName is required`},
	}
	for _, b := range broken {
		t.Run("broken/"+b.name, func(t *testing.T) {
			orig := string(readDeploy(t, b.file))
			if strings.Count(orig, b.old) != 1 {
				t.Fatalf("deploy/%s holds %q %d times, want once", b.file, b.old, strings.Count(orig, b.old))
			}
			_, err := c.DryRun(ctx, ns, []byte(strings.Replace(orig, b.old, b.new, 1)), nil)
			var apiErr *kubeenv.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("broken deploy/%s accepted (%v)", b.file, err)
			}
			if apiErr.Code != b.code || apiErr.Reason != b.reason || !strings.Contains(apiErr.Message, b.message) {
				t.Errorf("got %d %s %q\nwant %d %s and a message containing %q", apiErr.Code, apiErr.Reason, apiErr.Message, b.code, b.reason, b.message)
			}
		})
	}

	t.Run("webhook v1.6", func(t *testing.T) { checkWebhookV16Pods(t, c, ns) })

	t.Run("pod security", func(t *testing.T) {
		for _, level := range []string{"baseline", "restricted"} {
			if err := c.CreateNamespace(ctx, level, map[string]string{"pod-security.kubernetes.io/enforce": level}); err != nil {
				t.Fatal(err)
			}
			sa := serviceAccount(t)
			sa.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
			if err := c.Create(ctx, level, sa, nil); err != nil {
				t.Fatal(err)
			}
		}
		manual := string(readDeploy(t, "examples/pod-manual.yaml"))
		podSecurityRefuses(t, c, "baseline", []byte(manual),
			`violates PodSecurity "baseline:latest": non-default capabilities (container "azwi-proxy-init" must not include "NET_ADMIN" in securityContext.capabilities.add), privileged (container "azwi-proxy-init" must not set securityContext.privileged=true)`)
		// Without privileged: true, NET_ADMIN alone still needs the
		// privileged level.
		unprivileged := strings.Replace(manual, "      privileged: true\n", "", 1)
		podSecurityRefuses(t, c, "baseline", []byte(unprivileged),
			`violates PodSecurity "baseline:latest": non-default capabilities (container "azwi-proxy-init" must not include "NET_ADMIN" in securityContext.capabilities.add)`)
		// azwi-proxy alone meets restricted.
		var pod corev1.Pod
		decodeDeploy(t, "examples/pod-manual.yaml", &pod)
		pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		pod.Spec.InitContainers = nil
		pod.Spec.Containers = pod.Spec.Containers[:1]
		if pod.Spec.Containers[0].Name != "azwi-proxy" {
			t.Fatalf("pod-manual's first container is %s", pod.Spec.Containers[0].Name)
		}
		if w, err := c.DryRun(ctx, "restricted", &pod, nil); err != nil || len(w) != 0 {
			t.Errorf("azwi-proxy under restricted: %v, warnings %q", err, w)
		}
	})
}

// podSecurityRefuses asserts that the API server refuses manifest in
// namespace ns with 403 Forbidden and exactly the given PodSecurity
// violation.
func podSecurityRefuses(t *testing.T, c *kubeenv.Cluster, ns string, manifest []byte, violation string) {
	t.Helper()
	_, err := c.DryRun(context.Background(), ns, manifest, nil)
	var apiErr *kubeenv.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 403 || apiErr.Reason != metav1.StatusReasonForbidden ||
		!strings.HasSuffix(apiErr.Message, violation) {
		t.Errorf("in namespace %s: got %v\nwant 403 Forbidden ending with %q", ns, err, violation)
	}
}
