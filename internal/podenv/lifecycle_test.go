package podenv_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }

// leftovers lists what of env still exists: namespaces, their /etc/netns
// directories, the environment directory.
func leftovers(env *podenv.Env) []string {
	var left []string
	for _, p := range []string{
		filepath.Join("/run/netns", env.Pod), filepath.Join("/run/netns", env.Node),
		filepath.Join("/etc/netns", env.Pod), filepath.Join("/etc/netns", env.Node),
		env.Dir,
	} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, p)
		}
	}
	return left
}

// TestStartClose starts a whole environment, checks the proxy runs as UID
// 1501 inside the pod namespace, and that Close leaves nothing behind: no
// process, namespace, /etc/netns entry or directory.
func TestStartClose(t *testing.T) {
	podenvtest.SkipUnlessRoot(t)
	bin := podenvtest.BinDir(t)
	env, err := podenv.Start(context.Background(), podenv.Options{BinDir: bin, ClientID: podenv.DefaultClientID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Close() })

	seen := podenvtest.Output(t, env.PodCommand(context.Background(), 0, nil, "sh", "-c", "ip netns identify $$; cat /etc/resolv.conf"))
	if want := env.Pod + "\nnameserver 127.0.0.1\n"; seen != want {
		t.Errorf("pod command sees %q, want %q", seen, want)
	}
	procs := strings.Fields(podenvtest.Output(t, env.PodCommand(context.Background(), 0, nil, "ip", "netns", "pids", env.Pod)))
	var proxyPID int
	for _, p := range procs {
		cmdline, _ := os.ReadFile("/proc/" + p + "/cmdline")
		if strings.HasPrefix(string(cmdline), env.Bin(podenv.ProxyBin)+"\x00") {
			proxyPID, _ = strconv.Atoi(p)
		}
	}
	if proxyPID == 0 {
		t.Fatalf("no proxy process in the pod namespace among %v", procs)
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(proxyPID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), "\nUid:\t1501\t1501\t1501\t1501\n") {
		t.Errorf("proxy is not running as UID 1501:\n%s", st)
	}

	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(proxyPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("proxy pid %d still exists after Close (%v)", proxyPID, err)
	}
	if left := leftovers(env); len(left) > 0 {
		t.Errorf("left behind after Close: %v", left)
	}
	if err := env.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestStartFailureTearsDown: a proxy that cannot start (no token file
// configured) fails Start with its log, and nothing is left behind.
func TestStartFailureTearsDown(t *testing.T) {
	podenvtest.SkipUnlessRoot(t)
	bin := podenvtest.BinDir(t)
	var created []string
	_, err := podenv.Start(context.Background(), podenv.Options{
		BinDir:   bin,
		ClientID: podenv.DefaultClientID,
		ProxyEnv: []string{"AZURE_FEDERATED_TOKEN_FILE="},
		Logf: func(format string, args ...any) {
			if strings.HasPrefix(format, "podenv: creating netns") {
				created = append(created, args[0].(string), args[1].(string))
			}
		},
	})
	if err == nil {
		t.Fatal("Start succeeded with an empty AZURE_FEDERATED_TOKEN_FILE")
	}
	if !strings.Contains(err.Error(), "proxy exited before it was ready") || !strings.Contains(err.Error(), "AZURE_FEDERATED_TOKEN_FILE") {
		t.Errorf("error should say the proxy exited and show its log naming AZURE_FEDERATED_TOKEN_FILE:\n%v", err)
	}
	if len(created) != 2 {
		t.Fatalf("namespaces created: %v", created)
	}
	for _, ns := range created {
		for _, p := range []string{filepath.Join("/run/netns", ns), filepath.Join("/etc/netns", ns)} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s left behind after a failed Start", p)
			}
		}
	}
}
