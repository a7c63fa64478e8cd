// Package podenvtest adapts podenv to Go tests: it skips when not root,
// builds the binaries once per test binary, registers teardown with
// t.Cleanup, dumps the logs of a failed test, and tears every environment
// down on SIGINT/SIGTERM.
//
// Use it from TestMain so the shared build directory is removed at the end:
//
//	func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
//		out := podenvtest.Run(t, env.PodCommand(t.Context(), 1000, nil, "curl", ...))
//	}
package podenvtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	sigOnce   sync.Once
	// teardown is held by the signal handler from the signal until it
	// exits the process, so Main cannot exit in the middle of it.
	teardown sync.Mutex
)

// Main runs the tests and removes the shared build directory afterwards.
// Call it from TestMain. After a SIGINT or SIGTERM it waits for the
// handler's teardown, which ends the process.
func Main(m *testing.M) int {
	code := m.Run()
	teardown.Lock()
	defer teardown.Unlock()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	return code
}

// SkipUnlessRoot skips t with a clear message in -short mode (make unit)
// and when the test binary is not root: the pod-shaped tests need network
// namespaces, iptables and setuid.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping pod-shaped e2e test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: pod-shaped e2e tests need root (network namespaces, iptables, setuid); run as root, as CI does")
	}
	for _, tool := range []string{"ip", "iptables", "setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the test dependencies with hack/install-deps.sh", tool)
		}
	}
}

// BinDir builds proxy, proxy-init and entraemu once per test binary and
// returns their directory.
func BinDir(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = podenv.TempDir("bin")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		buildErr = podenv.Build(ctx, binDir)
	})
	if buildErr != nil {
		t.Fatalf("building binaries: %v", buildErr)
	}
	return binDir
}

// Start skips unless root, builds the binaries, starts an environment and
// closes it when t ends; if t failed, the proxy, proxy-init and emulator
// logs are written to the test log first.
func Start(t testing.TB, opts podenv.Options) *podenv.Env {
	t.Helper()
	SkipUnlessRoot(t)
	if opts.BinDir == "" {
		opts.BinDir = BinDir(t)
	}
	CloseOnSignal()
	env, err := podenv.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting the pod environment: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("tearing down the pod environment: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			DumpLogs(t, env)
		}
	})
	return env
}

// CloseOnSignal installs, once per test binary, the handler that tears
// every environment and every harness registered with podenv.Register down
// on SIGINT or SIGTERM (Ctrl-C during go test), then exits. Start calls it;
// adapters of other harnesses call it too.
func CloseOnSignal() { sigOnce.Do(closeOnSignal) }

// closeOnSignal tears every environment down on SIGINT or SIGTERM (Ctrl-C
// during go test), then exits.
func closeOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-ch
		teardown.Lock() // never unlocked: os.Exit below
		fmt.Fprintf(os.Stderr, "podenvtest: %v: tearing down the pod environments\n", s)
		_ = podenv.Shutdown()
		if binDir != "" {
			_ = os.RemoveAll(binDir)
		}
		os.Exit(2)
	}()
}

// DumpLogs writes the proxy, proxy-init and emulator logs to the test log.
func DumpLogs(t testing.TB, env *podenv.Env) {
	t.Helper()
	for _, f := range []struct{ name, path string }{
		{"proxy-init", env.InitLog},
		{"proxy", env.ProxyLog},
		{"emulator", env.EmulatorLog},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Logf("--- %s log: %v", f.name, err)
			continue
		}
		t.Logf("--- %s log (%s):\n%s", f.name, f.path, b)
	}
}

// Output runs cmd and returns its stdout; a failure to start, a non-zero
// exit or a timeout (ctx) fails t with stderr.
func Output(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Calls returns the emulator's token-POST count for clientID and scope
// (e.g. "https://vault.azure.net/.default"), failing t on error.
func Calls(t testing.TB, env *podenv.Env, clientID, scope string) int {
	t.Helper()
	n, err := env.Calls(context.Background(), clientID, scope)
	if err != nil {
		t.Fatalf("emulator call count: %v", err)
	}
	return n
}

// SetFault injects f into the emulator's token endpoint, failing t on
// error; SetFault(t, env, entraemu.Fault{}) clears it.
func SetFault(t testing.TB, env *podenv.Env, f entraemu.Fault) {
	t.Helper()
	if err := env.SetFault(context.Background(), f); err != nil {
		t.Fatalf("emulator fault: %v", err)
	}
}
