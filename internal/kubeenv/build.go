package kubeenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/imds-proxy/imds-proxy/internal/gobuild"
)

// Names of the binaries in the directory Build returns.
const (
	APIServerBin         = "kube-apiserver"
	ControllerManagerBin = "kube-controller-manager"
	KubeletBin           = "kubelet"
)

// Build runs test/kubebin/build.sh, which builds kube-apiserver,
// kube-controller-manager and kubelet from the version of
// k8s.io/kubernetes that test/kubebin/go.mod pins into a cache outside the repository ($IMDS_PROXY_CACHE, default
// /var/cache/imds-proxy), and returns that directory. A warm cache costs a
// hash and a stat; a cold one several minutes and about 2 GB of memory.
// The script's progress lines go to progress (may be nil). It runs the go
// command gobuild.GoCommand finds.
func Build(ctx context.Context, progress io.Writer) (string, error) {
	root, err := gobuild.ModuleRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "test", "kubebin", "build.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	// The script runs go from PATH: put the one gobuild finds first.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(gobuild.GoCommand())+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, lastLines(stderr.String(), 40))
	}
	dir := strings.TrimSpace(stdout.String())
	for _, bin := range []string{APIServerBin, ControllerManagerBin, KubeletBin} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s printed %q, which holds no %s: %w", script, dir, bin, err)
		}
	}
	return dir, nil
}

// lastLines returns at most n trailing lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
