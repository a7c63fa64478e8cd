package podenv_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

// TestNodeFaultsAndObservation: RefuseConnections makes the node refuse
// (curl: exit 7) and undoing it restores the service; SetIMDSLatency delays
// the fake IMDS past a client's timeout (curl: exit 28); ProxyPID,
// ReadProcessStats and ProxyMetrics see the running proxy. The requests go
// as UID 1501, which reaches the node directly.
func TestNodeFaultsAndObservation(t *testing.T) {
	env := podenvtest.Start(t, podenv.Options{ClientID: podenv.DefaultClientID})
	ctx := context.Background()
	curl := func(maxTime string) error {
		return env.PodCommand(ctx, podenv.DefaultProxyUID, nil, "curl", "-sS", "-o", "/dev/null", "--max-time", maxTime,
			"-H", "Metadata: true", "http://"+podenv.MetadataAddr+"/metadata/instance").Run()
	}
	wantExit := func(what string, err error, code int) {
		t.Helper()
		var ee *exec.ExitError
		switch {
		case code == 0 && err != nil:
			t.Errorf("%s: %v, want success", what, err)
		case code != 0 && (!errors.As(err, &ee) || ee.ExitCode() != code):
			t.Errorf("%s: %v, want curl exit status %d", what, err, code)
		}
	}
	wantExit("before any fault", curl("10"), 0)
	for range 2 { // twice: adding is idempotent
		if err := env.RefuseConnections(ctx, podenv.MetadataAddr, 80, true); err != nil {
			t.Fatal(err)
		}
	}
	wantExit("refused", curl("10"), 7)
	for range 2 {
		if err := env.RefuseConnections(ctx, podenv.MetadataAddr, 80, false); err != nil {
			t.Fatal(err)
		}
	}
	wantExit("refusal undone", curl("10"), 0)

	if err := env.SetIMDSLatency(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	wantExit("slow IMDS, 1 s client timeout", curl("1"), 28)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("curl --max-time 1 took %s", d)
	}
	if err := env.SetIMDSLatency(0); err != nil {
		t.Fatal(err)
	}
	wantExit("latency undone", curl("10"), 0)

	pid, err := env.ProxyPID()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err != nil || exe != env.Bin(podenv.ProxyBin) {
		t.Errorf("ProxyPID %d runs %q (%v), want %s", pid, exe, err, env.Bin(podenv.ProxyBin))
	}
	st, err := podenv.ReadProcessStats(pid)
	if err != nil || st.RSS <= 0 || st.FDs < 4 {
		t.Errorf("proxy process stats %+v (%v)", st, err)
	}
	m, err := env.ProxyMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := m.Sum("go_goroutines"); g < 2 {
		t.Errorf("go_goroutines = %v", g)
	}
	if n := m.Sum("imds_proxy_http_requests_total", `route="readyz"`, `code="200"`); n < 1 {
		t.Errorf("readyz requests = %v, want the harness's readiness poll counted", n)
	}
}
