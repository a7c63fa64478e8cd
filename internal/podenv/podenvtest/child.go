package podenvtest

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
)

// The tests of what an interrupted or killed run leaves behind run a copy
// of their own test binary as the "run": a helper test that starts a
// harness, reports its processes and paths in a JSON file, and waits to be
// interrupted or killed. The parent then checks that nothing the report
// names is left.
//
//	func TestHelperThing(t *testing.T) {
//		report := podenvtest.ChildReport(t, thingEnv) // skips in a normal run
//		...start the harness...
//		podenvtest.WriteReport(t, report, info)
//		time.Sleep(5 * time.Minute) // the parent interrupts or kills us
//	}
//
//	func TestInterruptedThing(t *testing.T) {
//		var info thingInfo
//		cmd := podenvtest.StartChild(t, "TestHelperThing", thingEnv, &info)
//		_ = cmd.Process.Signal(os.Interrupt)
//		_ = cmd.Wait()
//		podenvtest.WantGone(t, info.PIDs, info.Dir)
//	}

// childReady bounds how long StartChild waits for the child's report: a
// cold build of the binaries happens before it, in the parent.
const childReady = 3 * time.Minute

// ChildReport returns the file the parent named in envVar, where this
// helper test writes its report, and skips t when envVar is unset: the
// helper test does nothing in a normal run.
func ChildReport(t testing.TB, envVar string) string {
	t.Helper()
	path := os.Getenv(envVar)
	if path == "" {
		t.Skip("helper run as a child by the lifecycle tests")
	}
	return path
}

// WriteReport writes v as JSON to path in one step (a temporary file
// renamed), so the parent never reads half a report.
func WriteReport(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// StartChild runs the helper test named test in a copy of this test binary,
// with envVar naming the report file, and returns the child once its report
// has been decoded into v. When t ends the child is killed if it still
// runs, and then each of afterKill runs (a CleanStale, typically), so a
// failed test leaves nothing behind either. The child's output is in the
// failure message when it reports nothing within three minutes.
func StartChild(t testing.TB, test, envVar string, v any, afterKill ...func() error) *exec.Cmd {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), envVar+"="+report)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for _, f := range afterKill {
			if err := f(); err != nil {
				t.Logf("cleaning up after the child: %v", err)
			}
		}
	})
	deadline := time.Now().Add(childReady)
	for {
		b, err := os.ReadFile(report)
		if err == nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatalf("the child's report %s: %v", b, err)
			}
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s reported nothing in %s:\n%s", test, childReady, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WantGone fails t for each process of pids (named by their keys) still
// running ten seconds on, and for each of paths that exists.
func WantGone(t testing.TB, pids map[string]int, paths ...string) {
	t.Helper()
	for name, pid := range pids {
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still runs", name, pid)
		}
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
}

// WantRunning fails t at once unless every process of pids runs: a test of
// a killed run's cleanup proves nothing if they died with the run.
func WantRunning(t testing.TB, pids map[string]int) {
	t.Helper()
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("%s (pid %d) died with the test binary (%v); the cleanup test would prove nothing", name, pid, err)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for exec's writer goroutine and a
// reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
