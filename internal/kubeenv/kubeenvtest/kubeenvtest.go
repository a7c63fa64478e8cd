// Package kubeenvtest adapts kubeenv to Go tests: it skips when the test
// cannot run a control plane, builds (or finds in the cache) the
// Kubernetes binaries once per test binary, closes each cluster when its
// test ends, writes the logs of a failed test, and tears everything down on
// Ctrl-C (podenvtest's handler).
//
//	func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		env := podenvtest.Start(t, podenv.Options{DeferProxy: true})
//		cluster := kubeenvtest.Start(t, kubeenv.Options{Netns: env.Node})
//		...
//	}
package kubeenvtest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// SkipUnlessRoot skips t with a clear message in -short mode and when the
// test binary is not root, and fails it when etcd is not installed.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping Kubernetes control-plane test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: Kubernetes control-plane tests need root (network namespaces); run as root, as CI does (make test-k8s)")
	}
	for _, tool := range []string{"etcd", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with hack/install-deps.sh", tool)
		}
	}
}

// BinDir returns the directory holding kube-apiserver and kubelet, running
// kubeenv.Build once per test binary (warm: instant; cold: several
// minutes, its progress on stderr).
func BinDir(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		binDir, buildErr = kubeenv.Build(ctx, os.Stderr)
	})
	if buildErr != nil {
		t.Fatalf("building the Kubernetes binaries: %v", buildErr)
	}
	return binDir
}

// Start skips unless root, finds the binaries, starts a cluster and closes
// it when t ends; if t failed, the etcd and kube-apiserver logs are written
// to the test log first.
func Start(t testing.TB, opts kubeenv.Options) *kubeenv.Cluster {
	t.Helper()
	SkipUnlessRoot(t)
	if opts.BinDir == "" {
		opts.BinDir = BinDir(t)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	podenvtest.CloseOnSignal()
	c, err := kubeenv.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting the Kubernetes control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("stopping the Kubernetes control plane: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			DumpLogs(t, c)
		}
	})
	return c
}

// DumpLogs writes the tail of the etcd, kube-apiserver and (when it ran)
// kube-controller-manager logs to the test log.
func DumpLogs(t testing.TB, c *kubeenv.Cluster) {
	t.Helper()
	const keep = 16 << 10
	for _, f := range []struct{ name, path string }{
		{"etcd", c.EtcdLog},
		{"kube-apiserver", c.APIServerLog},
		{"kube-controller-manager", c.ControllerManagerLog},
	} {
		b, err := os.ReadFile(f.path)
		if errors.Is(err, os.ErrNotExist) && f.name == "kube-controller-manager" {
			continue
		}
		if err != nil {
			t.Logf("--- %s log: %v", f.name, err)
			continue
		}
		if len(b) > keep {
			b = b[len(b)-keep:]
		}
		t.Logf("--- %s log (%s, last %d bytes):\n%s", f.name, f.path, len(b), b)
	}
}
