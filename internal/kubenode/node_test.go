package kubenode

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/imds-proxy/imds-proxy/internal/gobuild"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }

// skipUnlessNode skips in -short mode and when not root, and fails when a
// tool the node needs is missing.
func skipUnlessNode(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the kubelet node test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: a kubelet node needs root (namespaces, cgroups, containerd); CI runs as root")
	}
	for _, tool := range []string{"buildah", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: hack/install-deps.sh installs the test dependencies", tool)
		}
	}
}

// kubeletBin builds (or finds in the cache) the pinned kubelet.
func kubeletBin(t *testing.T) string {
	t.Helper()
	dir, err := kubeenv.Build(context.Background(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, kubeenv.KubeletBin)
}

// pauseArchive builds test/podman/pause into a FROM scratch image written
// as a docker-archive named ref (buildah commits straight to the archive:
// nothing lands in the host's image storage).
func pauseArchive(t *testing.T, ref string) string {
	t.Helper()
	root, err := gobuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(root, "build/containers.conf"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := gobuild.Build(context.Background(), dir, "./test/podman/pause"); err != nil {
		t.Fatal(err)
	}
	c := run("buildah", "from", "scratch")
	run("buildah", "copy", "--quiet", "--chmod", "0555", c, bin, "/pause")
	run("buildah", "config", "--entrypoint", `["/pause"]`, c)
	archive := filepath.Join(dir, "pause.tar")
	run("buildah", "commit", "--quiet", "--rm", c, "docker-archive:"+archive+":"+ref)
	return archive
}

// startPausePod starts a node in a network namespace of its own and runs
// the static pod "lifecycle" on it (a native sidecar and a container, both
// the pause image), and returns once the kubelet reports it running. The
// node and the namespace are removed when t ends.
func startPausePod(t *testing.T) (*Node, string, corev1.Pod) {
	t.Helper()
	skipUnlessNode(t)
	podenvtest.CloseOnSignal()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kubelet := kubeletBin(t)
	ref := fmt.Sprintf("localhost/imds-proxy-kubenode/pause:t%d", time.Now().UnixNano())
	archive := pauseArchive(t, ref)

	ns, err := podenv.NewNetns(ctx, "node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = podenv.DeleteNetns(ns) })
	start := time.Now()
	n, err := Start(ctx, Options{Netns: ns, KubeletBin: kubelet, PauseImage: ref, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node start: %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{n.ContainerdLog, n.KubeletLog} {
				b, _ := os.ReadFile(f)
				t.Logf("--- %s:\n%s", f, tailLines(string(b), 80))
			}
		}
		_ = n.Close()
	})
	if err := n.ImportImage(ctx, archive); err != nil {
		t.Fatal(err)
	}

	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "lifecycle", Namespace: "default"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "sidecar", Image: ref, ImagePullPolicy: corev1.PullNever, RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)}},
			Containers:     []corev1.Container{{Name: "main", Image: ref, ImagePullPolicy: corev1.PullNever}},
		},
	}
	manifest, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := n.WriteStaticPod("lifecycle", manifest); err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	waitFor(t, ctx, 2*time.Minute, "the static pod running", func() (bool, string) {
		pods, err := n.KubeletPods(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods {
			if p.Name == "lifecycle-"+n.Name && p.Status.Phase == corev1.PodRunning && allRunning(p.Status.ContainerStatuses) && allRunning(p.Status.InitContainerStatuses) {
				got = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods: %s", len(pods), podSummary(pods))
	})
	t.Logf("static pod written -> running: %s", time.Since(start).Round(time.Millisecond))
	return n, ns, got
}

// TestNodeLifecycle runs a static pod (a native sidecar and a container)
// on a node in a namespace of its own, checks what the kubelet reports and
// what CNI made, then closes the node and checks that nothing is left:
// processes, cgroups, the bridge, the directory.
func TestNodeLifecycle(t *testing.T) {
	n, ns, got := startPausePod(t)
	ip, err := netip.ParseAddr(got.Status.PodIP)
	if err != nil || !DefaultPodSubnet.Contains(ip) || ip == n.Gateway {
		t.Errorf("pod IP %q, want an address of %s other than the gateway %s", got.Status.PodIP, DefaultPodSubnet, n.Gateway)
	}
	links, err := exec.Command("ip", "-n", ns, "-o", "link", "show", "master", cniBridge).Output()
	if err != nil || strings.Count(string(links), "\n") != 1 {
		t.Errorf("veths on %s: %q, %v; want the pod's one", cniBridge, links, err)
	}
	containerd, _ := n.Pids()
	mntns := mountNamespace(containerd)
	if mntns == "" || mntns == mountNamespace(os.Getpid()) {
		t.Fatalf("containerd's mount namespace %q is not a private one", mntns)
	}
	// pause (the sandbox), the sidecar and the main container.
	if pids := cgroupPids(n.cgroupFS, n.cgroup); len(pids) != 3 {
		t.Errorf("node cgroup holds pids %v, want 3 (sandbox, sidecar, main)", pids)
	}

	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, m := range n.cgroupFS {
		if _, err := os.Stat(filepath.Join(m, n.cgroup)); err == nil {
			t.Errorf("cgroup %s left in %s", n.cgroup, m)
		}
	}
	if err := killMountNamespace(mntns, 0); err != nil {
		t.Errorf("after Close: %v", err)
	}
	if _, err := os.Stat(n.Dir); err == nil {
		t.Errorf("%s left behind", n.Dir)
	}
	if out, _ := exec.Command("ip", "-n", ns, "-o", "link").Output(); strings.Contains(string(out), cniBridge) || strings.Contains(string(out), "veth") {
		t.Errorf("links left in %s:\n%s", ns, out)
	}
}

// TestCleanStale: a cgroup named after a process that is gone is a killed
// run's node; CleanStale ends what runs in it (by pid) and removes it. A
// cgroup of this process is left alone.
func TestCleanStale(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (cgroups)")
	}
	mounts, err := hostCgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("/imdsp-%d-node-test", done.Process.Pid)
	live := fmt.Sprintf("/imdsp-%d-node-test", os.Getpid())
	for _, cg := range []string{stale, live} {
		if err := createCgroup(mounts, cg+"/kubepods/pod1"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = removeCgroup(mounts, live, 5*time.Second); _ = removeCgroup(mounts, stale, 5*time.Second) })
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	// Into the stale pod's cgroup in every v1 hierarchy and in v2.
	for _, m := range mounts {
		procs := filepath.Join(m, stale, "kubepods/pod1/cgroup.procs")
		if err := os.WriteFile(procs, []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
			t.Logf("%s: %v", procs, err) // a v1 hierarchy may refuse; one is enough
		}
	}
	if len(cgroupPids(mounts, stale)) != 1 {
		t.Fatalf("the sleeper did not join %s", stale)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()

	if err := CleanStale(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("sleeper ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CleanStale left the stale node's process running")
	}
	for _, m := range mounts {
		if _, err := os.Stat(filepath.Join(m, stale)); err == nil {
			t.Errorf("stale cgroup left in %s", m)
		}
		if _, err := os.Stat(filepath.Join(m, live, "kubepods/pod1")); err != nil {
			t.Errorf("CleanStale removed this process's cgroup in %s: %v", m, err)
		}
	}
}

func allRunning(cs []corev1.ContainerStatus) bool {
	for _, c := range cs {
		if c.State.Running == nil {
			return false
		}
	}
	return len(cs) > 0
}

func podSummary(pods []corev1.Pod) string {
	var parts []string
	for _, p := range pods {
		parts = append(parts, fmt.Sprintf("%s %s", p.Name, p.Status.Phase))
	}
	return strings.Join(parts, ", ")
}

// waitFor polls cond every 200 ms until it holds, failing t after timeout
// with cond's last explanation.
func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting for %s: gave up after %s: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func ptr[T any](v T) *T { return &v }
