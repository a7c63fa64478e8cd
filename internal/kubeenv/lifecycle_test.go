package kubeenv_test

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

	"github.com/imds-proxy/imds-proxy/internal/kubeenv"
	"github.com/imds-proxy/imds-proxy/internal/kubeenv/kubeenvtest"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
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
	out := os.Getenv(childEnv)
	if out == "" {
		t.Skip("helper for TestInterruptedRun and TestKilledRun")
	}
	c := kubeenvtest.Start(t, kubeenv.Options{})
	b, _ := json.Marshal(clusterInfo{PIDs: c.PIDs(), Netns: c.Netns, Dir: c.Dir})
	if err := os.WriteFile(out+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Minute) // the parent interrupts or kills us
}

// startChild runs TestHelperCluster in a child test binary and returns it
// with what it reported once its cluster is ready.
func startChild(t *testing.T) (*exec.Cmd, clusterInfo) {
	t.Helper()
	kubeenvtest.SkipUnlessRoot(t)
	kubeenvtest.BinDir(t) // build (or find) the binaries here, not in the child
	info := filepath.Join(t.TempDir(), "cluster.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCluster$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+info)
	var out safeBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = podenv.CleanStale()
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, err := os.ReadFile(info)
		if err == nil {
			var ci clusterInfo
			if err := json.Unmarshal(b, &ci); err != nil {
				t.Fatal(err)
			}
			if len(ci.PIDs) != 2 {
				t.Fatalf("child reported pids %v", ci.PIDs)
			}
			return cmd, ci
		}
		if time.Now().After(deadline) {
			t.Fatalf("child cluster not ready in 3 minutes:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantGone asserts that nothing of the child's cluster is left: no
// process, namespace or directory.
func wantGone(t *testing.T, ci clusterInfo) {
	t.Helper()
	for name, pid := range ci.PIDs {
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still runs", name, pid)
		}
	}
	for _, p := range []string{ci.Dir, filepath.Join("/run/netns", ci.Netns), filepath.Join("/etc/netns", ci.Netns)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
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
	for name, pid := range ci.PIDs {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("%s (pid %d) died with the test binary (%v); the cleanup below would prove nothing", name, pid, err)
		}
	}
	if err := podenv.CleanStale(); err != nil {
		t.Fatal(err)
	}
	wantGone(t, ci)
}

// safeBuffer is a bytes.Buffer safe for the writer goroutine of exec and a
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
