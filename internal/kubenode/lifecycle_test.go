package kubenode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// childEnv makes the test binary run TestHelperNode as a child that starts
// a node with a running pod, describes it in the named file, and waits to
// be interrupted or killed.
const childEnv = "KUBENODE_TEST_NODE_INFO"

// nodeInfo is what the child reports about its node.
type nodeInfo struct {
	// PIDs are containerd's, the kubelet's and those of the pod's
	// containers (sandbox, sidecar, main): what must not outlive the node.
	PIDs   map[string]int `json:"pids"`
	Netns  string         `json:"netns"`
	Dir    string         `json:"dir"`
	Cgroup string         `json:"cgroup"`
}

func TestHelperNode(t *testing.T) {
	report := podenvtest.ChildReport(t, childEnv)
	n, ns, _ := startPausePod(t)
	containerd, kubelet := n.Pids()
	pids := map[string]int{"containerd": containerd, "kubelet": kubelet}
	for i, pid := range cgroupPids(n.cgroupFS, n.cgroup) {
		pids[fmt.Sprintf("pod process %d", i+1)] = pid
	}
	podenvtest.WriteReport(t, report, nodeInfo{PIDs: pids, Netns: ns, Dir: n.Dir, Cgroup: n.cgroup})
	time.Sleep(5 * time.Minute) // the parent interrupts or kills us
}

// startChildNode runs TestHelperNode in a child test binary and returns it
// with what it reported once its pod runs.
func startChildNode(t *testing.T) (*exec.Cmd, nodeInfo) {
	t.Helper()
	skipUnlessNode(t)
	kubeletBin(t) // build (or find) the kubelet here, not in the child
	var ni nodeInfo
	cmd := podenvtest.StartChild(t, "TestHelperNode", childEnv, &ni, CleanStale, podenv.CleanStale)
	// containerd, the kubelet, the sandbox, the sidecar and main.
	if len(ni.PIDs) != 5 {
		t.Fatalf("child reported pids %v, want 5", ni.PIDs)
	}
	return cmd, ni
}

// wantNodeGone asserts that nothing of the child's node is left: no
// process, cgroup, namespace or directory.
func wantNodeGone(t *testing.T, ni nodeInfo) {
	t.Helper()
	mounts, err := hostCgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{ni.Dir, filepath.Join("/run/netns", ni.Netns), filepath.Join("/etc/netns", ni.Netns)}
	for _, m := range mounts {
		paths = append(paths, filepath.Join(m, ni.Cgroup))
	}
	podenvtest.WantGone(t, ni.PIDs, paths...)
}

// TestInterruptedNode: Ctrl-C (SIGINT) during a test run stops the node's
// pods, containerd and kubelet by pid and removes its cgroup, directory and
// namespace before the test binary exits. (Not parallel with
// TestKilledNode, whose CleanStale would hide leftovers.)
func TestInterruptedNode(t *testing.T) {
	cmd, ni := startChildNode(t)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	wantNodeGone(t, ni)
}

// TestKilledNode: a test run killed outright (SIGKILL) leaves its node
// running, containers included; the next run's CleanStale (which Start
// calls) ends the containers by their cgroup, and podenv.CleanStale the
// daemons in the namespace, the namespace and the directory.
func TestKilledNode(t *testing.T) {
	cmd, ni := startChildNode(t)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	podenvtest.WantRunning(t, ni.PIDs)
	if err := CleanStale(); err != nil {
		t.Fatal(err)
	}
	if err := podenv.CleanStale(); err != nil {
		t.Fatal(err)
	}
	wantNodeGone(t, ni)
}
