package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
	"github.com/imds-proxy/imds-proxy/internal/kubenode"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// A node bed is the whole chain on one machine, every part real:
//
//	node network namespace (podenv.Env's)
//	  Entra emulator 169.254.99.1:443 (login.emulator.test), trusting the
//	    API server's issuer; fake real IMDS 169.254.169.254:80
//	  etcd, kube-apiserver (https://kube-apiserver.test = 127.0.0.1:443),
//	    kube-controller-manager (job, serviceaccount, root-ca-cert-publisher)
//	  containerd + kubelet (internal/kubenode); bridge cni0 169.254.200.1/24
//	    pods 169.254.200.x: their own network namespaces, made by CNI
//
// Images are built here with build/images-local.sh and buildah, pulling
// nothing, and imported into containerd.

// Namespaces of the node scenarios: the service account of
// deploy/serviceaccount.yaml is federated in nodeNamespace only, so the same
// account in misfederatedNamespace presents a subject no federated
// credential names.
const (
	nodeNamespace         = "legacy-apps"
	misfederatedNamespace = "misfederated"
)

// nodeControllers are the controllers the node bed runs: Jobs, and what
// every namespace gets in a cluster (its default ServiceAccount and the
// kube-root-ca.crt ConfigMap that each pod's API token volume reads).
var nodeControllers = []string{"job", "serviceaccount", "root-ca-cert-publisher"}

type nodeBed struct {
	env     *podenv.Env
	cluster *kubeenv.Cluster
	node    *kubenode.Node
	images  nodeImages
	sa      *corev1.ServiceAccount // deploy/serviceaccount.yaml
	subject string                 // its subject in nodeNamespace
	webhook webhookConfig          // deploy/webhook/values.yaml, with this bed's images and Entra
}

// skipUnlessNodeBed skips in -short mode and when not root, and fails when a
// tool is missing.
func skipUnlessNodeBed(t *testing.T) {
	t.Helper()
	kubeenvtest.SkipUnlessRoot(t)
	if err := kubenode.CheckTools(filepath.Join(kubeenvtest.BinDir(t), kubeenv.KubeletBin)); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"podman", "buildah", "debootstrap", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: hack/install-deps.sh installs the test dependencies", tool)
		}
	}
}

// startNodeBed starts the emulator, the control plane and the node, builds
// and imports the images, waits until the node is Ready, and creates the
// scenarios' namespaces and service accounts. Everything stops when t ends.
func startNodeBed(t *testing.T) *nodeBed {
	t.Helper()
	skipUnlessNodeBed(t)
	ctx := context.Background()
	// Containers of a killed run's node first, then (podenv.Start) its
	// namespaces and directories.
	if err := kubenode.CleanStale(); err != nil {
		t.Logf("cleaning stale nodes: %v", err)
	}
	sa := serviceAccount(t)
	b := &nodeBed{sa: sa, subject: "system:serviceaccount:" + nodeNamespace + ":" + sa.Name}
	clientID := sa.Annotations[clientIDAnnotation]
	b.env = podenvtest.Start(t, podenv.Options{
		Tenant:     sa.Annotations[tenantIDAnnotation],
		ClientID:   clientID,
		Apps:       []entraemu.App{federated(clientID, defaultOID, "", b.subject)},
		SkipInit:   true,
		DeferProxy: true, // the pods run their own proxies
	})
	t.Logf("pod environment (emulator, fake IMDS) ready")
	start := time.Now()
	b.cluster = kubeenvtest.Start(t, kubeenv.Options{Netns: b.env.Node, Controllers: nodeControllers})
	t.Logf("control plane (etcd, kube-apiserver, kube-controller-manager) ready: %s", time.Since(start).Round(time.Millisecond))
	if err := b.env.TrustIssuer(ctx, b.cluster.Issuer, b.cluster.CACertPEM); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	b.images = buildNodeImages(t, b.env.CAFile)
	t.Logf("images built: %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	node, err := kubenode.Start(ctx, kubenode.Options{
		Netns:      b.env.Node,
		KubeletBin: filepath.Join(kubeenvtest.BinDir(t), kubeenv.KubeletBin),
		PauseImage: b.images.pause,
		Kubeconfig: b.cluster.Kubeconfig,
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.node = node
	t.Cleanup(func() {
		if t.Failed() {
			dumpNodeLogs(t, node)
		}
		start := time.Now()
		if err := node.Close(); err != nil {
			t.Errorf("closing the node: %v", err)
		}
		t.Logf("node closed: %s", time.Since(start).Round(time.Millisecond))
	})
	t.Logf("kubelet healthy: %s after kubenode.Start", time.Since(start).Round(time.Millisecond))
	b.waitNodeReady(t)
	t.Logf("node start -> Ready in the API: %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	for _, a := range b.images.archives {
		if err := node.ImportImage(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("images imported into containerd: %s", time.Since(start).Round(time.Millisecond))

	for _, ns := range []string{nodeNamespace, misfederatedNamespace} {
		if err := b.cluster.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		acct := sa.DeepCopy()
		acct.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
		if err := b.cluster.Create(ctx, ns, acct, nil); err != nil {
			t.Fatal(err)
		}
		// The pods mount the namespace's API token volume, which needs the
		// controller manager's kube-root-ca.crt first.
		b.waitFor(t, time.Minute, "kube-root-ca.crt in "+ns, func() (bool, string) {
			err := b.cluster.Do(ctx, http.MethodGet, "/api/v1/namespaces/"+ns+"/configmaps/kube-root-ca.crt", nil, nil)
			return err == nil, fmt.Sprint(err)
		})
	}

	b.webhook = shippedWebhookConfig(t, sa.Annotations[tenantIDAnnotation])
	b.webhook.proxyImage, b.webhook.proxyInitImage = b.images.proxy, b.images.init
	// The webhook sets AZURE_AUTHORITY_HOST from the cloud it is configured
	// for; this bed's cloud is the emulator.
	b.webhook.authorityHost = b.env.AuthorityHost
	return b
}

// waitNodeReady waits until the kubelet has registered the node and
// reports it Ready.
func (b *nodeBed) waitNodeReady(t *testing.T) {
	t.Helper()
	b.waitFor(t, 2*time.Minute, "node "+b.node.Name+" Ready", func() (bool, string) {
		var n corev1.Node
		if err := b.cluster.Do(context.Background(), http.MethodGet, "/api/v1/nodes/"+b.node.Name, nil, &n); err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, c.Reason + ": " + c.Message
			}
		}
		return false, "no Ready condition yet"
	})
}

// waitFor polls cond every 250 ms until it holds, failing t after timeout
// with cond's last explanation.
func (b *nodeBed) waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %s: %s", what, timeout, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// pod returns a pod as the API server has it now.
func (b *nodeBed) pod(t *testing.T, namespace, name string) corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := b.cluster.Do(context.Background(), http.MethodGet, "/api/v1/namespaces/"+namespace+"/pods/"+name, nil, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// dumpNodeLogs writes the tails of containerd's and the kubelet's logs to
// the test log.
func dumpNodeLogs(t *testing.T, n *kubenode.Node) {
	t.Helper()
	const keep = 24 << 10
	for _, f := range []string{n.ContainerdLog, n.KubeletLog} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Logf("--- %s: %v", f, err)
			continue
		}
		if len(b) > keep {
			b = b[len(b)-keep:]
		}
		t.Logf("--- %s (last %d bytes):\n%s", f, len(b), b)
	}
}

// rssKiB returns a process's resident set size.
func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib int
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err != nil {
				return 0, err
			}
			return kib, nil
		}
	}
	return 0, errors.New("no VmRSS")
}
