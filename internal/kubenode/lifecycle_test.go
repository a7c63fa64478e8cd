package kubenode

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// childEnv makes the test binary run TestHelperNode as a child that starts
// a node with a running pod, describes it in the named file, and waits to
// be interrupted or killed.
const childEnv = "KUBENODE_TEST_NODE_INFO"

// nodeInfo is what the child reports about its node.
type nodeInfo struct {
	// PIDs are containerd's, the kubelet's and those of the pod's
	// containers (sandbox, sidecar, main): what must not outlive the node.
	PIDs   []int  `json:"pids"`
	Netns  string `json:"netns"`
	Dir    string `json:"dir"`
	Cgroup string `json:"cgroup"`
}

func TestHelperNode(t *testing.T) {
	out := os.Getenv(childEnv)
	if out == "" {
		t.Skip("helper for TestInterruptedNode and TestKilledNode")
	}
	n, ns, _ := startPausePod(t)
	containerd, kubelet := n.Pids()
	info := nodeInfo{PIDs: append([]int{containerd, kubelet}, cgroupPids(n.cgroupFS, n.cgroup)...), Netns: ns, Dir: n.Dir, Cgroup: n.cgroup}
	b, _ := json.Marshal(info)
	if err := os.WriteFile(out+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Minute) // the parent interrupts or kills us
}

// startChildNode runs TestHelperNode in a child test binary and returns it
// with what it reported once its pod runs.
func startChildNode(t *testing.T) (*exec.Cmd, nodeInfo) {
	t.Helper()
	skipUnlessNode(t)
	kubeletBin(t) // build (or find) the kubelet here, not in the child
	info := filepath.Join(t.TempDir(), "node.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNode$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+info)
	var out safeBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = CleanStale()
		_ = podenv.CleanStale()
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, err := os.ReadFile(info)
		if err == nil {
			var ni nodeInfo
			if err := json.Unmarshal(b, &ni); err != nil {
				t.Fatal(err)
			}
			// containerd, the kubelet, the sandbox, the sidecar and main.
			if len(ni.PIDs) != 5 {
				t.Fatalf("child reported pids %v, want 5", ni.PIDs)
			}
			return cmd, ni
		}
		if time.Now().After(deadline) {
			t.Fatalf("child node not running its pod in 3 minutes:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantNodeGone asserts that nothing of the child's node is left: no
// process, cgroup, namespace or directory.
func wantNodeGone(t *testing.T, ni nodeInfo) {
	t.Helper()
	for _, pid := range ni.PIDs {
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still runs", pid)
		}
	}
	mounts, err := hostCgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{ni.Dir, filepath.Join("/run/netns", ni.Netns), filepath.Join("/etc/netns", ni.Netns)}
	for _, m := range mounts {
		paths = append(paths, filepath.Join(m, ni.Cgroup))
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
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
	for _, pid := range ni.PIDs {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("pid %d died with the test binary (%v); the cleanup below would prove nothing", pid, err)
		}
	}
	if err := CleanStale(); err != nil {
		t.Fatal(err)
	}
	if err := podenv.CleanStale(); err != nil {
		t.Fatal(err)
	}
	wantNodeGone(t, ni)
}

// safeBuffer is a bytes.Buffer safe for exec's writer goroutine and a
// reader.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
