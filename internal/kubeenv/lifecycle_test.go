package kubeenv_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// childEnv makes the test binary run TestHelperCluster as a child that
// starts a cluster, describes it in the named file, and waits to be
// interrupted or killed.
const childEnv = "KUBEENV_TEST_CLUSTER_INFO"

// clusterInfo is what the child reports about its cluster.
type clusterInfo struct {
	PIDs  map[string]int `json:"pids"`
	Netns string         `json:"netns"`
	Dir   string         `json:"dir"`
}

func TestHelperCluster(t *testing.T) {
	report := podenvtest.ChildReport(t, childEnv)
	c := kubeenvtest.Start(t, kubeenv.Options{})
	podenvtest.WriteReport(t, report, clusterInfo{PIDs: c.PIDs(), Netns: c.Netns, Dir: c.Dir})
	time.Sleep(5 * time.Minute) // the parent interrupts or kills us
}

// startChild runs TestHelperCluster in a child test binary and returns it
// with what it reported once its cluster is ready.
func startChild(t *testing.T) (*exec.Cmd, clusterInfo) {
	t.Helper()
	kubeenvtest.SkipUnlessRoot(t)
	kubeenvtest.BinDir(t) // build (or find) the binaries here, not in the child
	var ci clusterInfo
	cmd := podenvtest.StartChild(t, "TestHelperCluster", childEnv, &ci, podenv.CleanStale)
	if len(ci.PIDs) != 2 {
		t.Fatalf("child reported pids %v", ci.PIDs)
	}
	return cmd, ci
}

// wantGone asserts that nothing of the child's cluster is left: no
// process, namespace or directory.
func wantGone(t *testing.T, ci clusterInfo) {
	t.Helper()
	podenvtest.WantGone(t, ci.PIDs, ci.Dir, filepath.Join("/run/netns", ci.Netns), filepath.Join("/etc/netns", ci.Netns))
}

// TestInterruptedRun: Ctrl-C (SIGINT) during a test run stops the
// cluster by pid and removes its namespace and directory before the test
// binary exits. (Not parallel with TestKilledRun, whose CleanStale would
// hide leftovers.)
func TestInterruptedRun(t *testing.T) {
	cmd, ci := startChild(t)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	wantGone(t, ci)
}

// TestKilledRun: a test run killed outright (SIGKILL) leaves etcd and
// kube-apiserver running in their namespace; the next run's
// podenv.CleanStale (which kubeenv.Start calls) kills them and removes the
// namespace and directory.
func TestKilledRun(t *testing.T) {
	cmd, ci := startChild(t)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	podenvtest.WantRunning(t, ci.PIDs)
	if err := podenv.CleanStale(); err != nil {
		t.Fatal(err)
	}
	wantGone(t, ci)
}
