package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
	"github.com/imds-proxy/imds-proxy/internal/gobuild"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the proxy once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imds-proxy-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "proxy")
		buildErr = gobuild.Build(context.Background(), dir, "./cmd/proxy")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// projectedToken writes a JWT-shaped projected token and returns its path.
func projectedToken(t *testing.T) string {
	t.Helper()
	// {"alg":"RS256"}.{"iss":"https://oidc.example/","sub":"system:serviceaccount:ns:sa","aud":["api://AzureADTokenExchange"],"exp":1900000000}
	const tok = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL29pZGMuZXhhbXBsZS8iLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6c2EiLCJhdWQiOlsiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UiXSwiZXhwIjoxOTAwMDAwMDAwfQ.c2ln"
	p := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// proc is a running proxy with its log lines.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
	mu    sync.Mutex
	log   []string
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("proxy log:\n%s", strings.Join(p.log, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// listenAddr waits for the startup line and returns the listen address.
func (p *proc) listenAddr(t *testing.T) string {
	t.Helper()
	addr, _ := p.listenAddrs(t)
	return addr
}

// listenAddrs waits for the startup line and returns the listen address
// and the metrics listen address.
func (p *proc) listenAddrs(t *testing.T) (string, string) {
	t.Helper()
	for line := range p.lines {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "imds-proxy listening" {
			return m["listen"].(string), m["metricsListen"].(string)
		}
	}
	t.Fatal("the proxy exited without listening")
	return "", ""
}

func (p *proc) wait(t *testing.T) int {
	t.Helper()
	err := <-p.done
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func (p *proc) logLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// stop sends the proxy SIGTERM, as the kubelet does, and fails t unless it
// exits 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code = %d", code)
	}
}

// emulatorEnv starts the Entra emulator with opts, mints a projected
// token for system:serviceaccount:default:workload into a file, and
// returns the emulator, the environment the webhook gives the proxy for
// clientID (with the emulator's CA trusted) and the projected token. The
// emulator is closed when t ends.
func emulatorEnv(t *testing.T, opts entraemu.Options, clientID string) (emu *entraemu.Emulator, env []string, projected string) {
	t.Helper()
	emu, err := entraemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	sa, err := emu.MintServiceAccountToken("default", "workload", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	env = []string{
		"AZURE_TENANT_ID=" + opts.Tenant,
		"AZURE_FEDERATED_TOKEN_FILE=" + writeFile(t, sa),
		"AZURE_AUTHORITY_HOST=" + emu.AuthorityHost(),
		"AZURE_CLIENT_ID=" + clientID,
		// Go reads extra roots from SSL_CERT_FILE on Linux: the emulator's CA.
		"SSL_CERT_FILE=" + writeFile(t, string(emu.CACertPEM())),
	}
	return emu, env, sa
}

// writeFile writes content to a new file and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func serverEnv(t *testing.T) []string {
	return []string{"AZURE_TENANT_ID=72f988bf-86f1-41af-91ab-2d7cd011db47", "AZURE_FEDERATED_TOKEN_FILE=" + projectedToken(t)}
}

func TestBinaryServesOnLoopbackOnly(t *testing.T) {
	t.Parallel()
	p := start(t, serverEnv(t), "--proxy-port=0", "--log-level=info", "--shutdown-delay=0s", "--from-a-newer-webhook=1", "--metrics-addr=127.0.0.1:0")
	addr, metricsAddr := p.listenAddrs(t)
	host, port, _ := net.SplitHostPort(addr)
	if host != "127.0.0.1" {
		t.Fatalf("listening on %s", addr)
	}

	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("/readyz = %d %q", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + addr + "/metadata/identity/oauth2/token")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || string(body) != `{"error":"invalid_request","error_description":"Required metadata header not specified"}` {
		t.Fatalf("bare probe = %d %s", resp.StatusCode, body)
	}

	// The metrics listener serves /metrics and nothing else.
	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "imds_proxy_build_info") || !strings.Contains(string(body), "imds_proxy_token_cache_entries") {
		t.Fatalf("metrics listener /metrics = %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("metrics listener /readyz = %d; want 404", resp.StatusCode)
	}

	// Another loopback address on the same port must be refused: the
	// socket is bound to 127.0.0.1, not to a wildcard address.
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.2", port)); err == nil {
		c.Close()
		t.Errorf("127.0.0.2:%s accepted a connection", port)
	}
	// And the kernel agrees: every listening socket of that port is
	// bound to 127.0.0.1 (0100007F in /proc/net/tcp).
	if tcp, err := os.ReadFile("/proc/net/tcp"); err == nil {
		n, _ := strconv.Atoi(port)
		suffix := fmt.Sprintf(":%04X", n)
		for _, line := range strings.Split(string(tcp), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], suffix) && f[1] != "0100007F"+suffix {
				t.Errorf("listening socket %s", f[1])
			}
		}
	}
	if tcp6, err := os.ReadFile("/proc/net/tcp6"); err == nil {
		n, _ := strconv.Atoi(port)
		suffix := fmt.Sprintf(":%04X", n)
		for _, line := range strings.Split(string(tcp6), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], suffix) {
				t.Errorf("IPv6 listening socket %s", f[1])
			}
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d", code)
	}
	log := strings.Join(p.logLines(), "\n")
	for _, want := range []string{`"msg":"ignoring unknown flag","flag":"--from-a-newer-webhook"`, `"tokenIssuer":"https://oidc.example/"`, `"tokenSubject":"system:serviceaccount:ns:sa"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

func TestBinaryQuitQuitQuit(t *testing.T) {
	t.Parallel()
	// A long shutdown delay: /quitquitquit must not wait for it.
	p := start(t, serverEnv(t), "--proxy-port=0", "--log-level=info", "--shutdown-delay=1h")
	addr := p.listenAddr(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/quitquitquit", nil)
	req.Header.Set("Metadata", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("quit = %d", resp.StatusCode)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code = %d", code)
	}
}

func TestBinaryProbe(t *testing.T) {
	t.Parallel()
	p := start(t, serverEnv(t), "--proxy-port=0", "--log-level=info", "--shutdown-delay=0s")
	_, port, _ := net.SplitHostPort(p.listenAddr(t))
	// The postStart hook as the webhook writes it, without AZURE_CLIENT_ID:
	// ready, warm-up skipped, exit 0.
	out, err := exec.Command(binary(t), "--proxy-port="+port, "--probe", "--log-level=info").CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "skipping the warm-up") {
		t.Errorf("probe output: %s", out)
	}
	p.stop(t)
}

// TestBinarySingleDashOptions runs the sidecar and its postStart hook as a
// manifest written for the upstream proxy (Go's flag package) has them.
func TestBinarySingleDashOptions(t *testing.T) {
	t.Parallel()
	p := start(t, serverEnv(t), "-proxy-port=0", "-log-level", "info", "-shutdown-delay=0s", "-from-a-newer-webhook=1")
	addr := p.listenAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	if port == "8000" {
		t.Errorf("listening on %s: -proxy-port=0 was not read", addr)
	}
	out, err := exec.Command(binary(t), "-proxy-port="+port, "-probe", "-log-level=info").CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "skipping the warm-up") {
		t.Errorf("probe output: %s", out)
	}
	p.stop(t)
	log := strings.Join(p.logLines(), "\n")
	if !strings.Contains(log, `"msg":"ignoring unknown flag","flag":"-from-a-newer-webhook"`) {
		t.Errorf("log lacks the unknown option:\n%s", log)
	}
}

func TestBinaryConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no tenant", []string{"AZURE_FEDERATED_TOKEN_FILE=/x"}, "AZURE_TENANT_ID (--tenant-id) is not set"},
		{"no token file", []string{"AZURE_TENANT_ID=t", "AZURE_FEDERATED_TOKEN_FILE=/nonexistent/token"},
			`"err":"AZURE_FEDERATED_TOKEN_FILE /nonexistent/token: no such file or directory"`},
		// Both used to start listening and fail at the first exchange.
		{"tenant unusable in the authority URL", []string{"AZURE_TENANT_ID=a/b", "AZURE_FEDERATED_TOKEN_FILE=/x"},
			`"err":"invalid AZURE_TENANT_ID \"a/b\" (--tenant-id): contains '/'`},
		{"authority host with a query", []string{"AZURE_TENANT_ID=t", "AZURE_FEDERATED_TOKEN_FILE=/x", "AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/?slice=x"},
			`"err":"invalid AZURE_AUTHORITY_HOST \"https://login.microsoftonline.com/?slice=x\" (--authority-host): must not carry a query"`},
		// The App Service endpoint's secret: never shown, refused before
		// the proxy listens.
		{"short IDENTITY_HEADER", []string{"AZURE_TENANT_ID=t", "AZURE_FEDERATED_TOKEN_FILE=/x", "IDENTITY_HEADER=hunter2"},
			`"err":"invalid IDENTITY_HEADER (the App Service endpoint's secret): is 7 characters long; at least 32 are required (e.g. openssl rand -hex 32)"`},
		{"identity header file missing", []string{"AZURE_TENANT_ID=t", "AZURE_FEDERATED_TOKEN_FILE=" + projectedToken(t),
			"IMDS_PROXY_IDENTITY_HEADER_FILE=/nonexistent/identity-header"},
			`"err":"IMDS_PROXY_IDENTITY_HEADER_FILE /nonexistent/identity-header: no such file or directory"`},
		{"identity header file short", []string{"AZURE_TENANT_ID=t", "AZURE_FEDERATED_TOKEN_FILE=" + projectedToken(t),
			"IMDS_PROXY_IDENTITY_HEADER_FILE=" + writeFile(t, "hunter2\n")},
			`the secret is 7 characters long; at least 32 are required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, tt.env, "--proxy-port=0")
			if code := p.wait(t); code != 1 {
				t.Fatalf("exit code = %d; want 1", code)
			}
			lines := p.logLines()
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) || !strings.Contains(lines[0], `"level":"error"`) {
				t.Fatalf("stderr = %q; want one error line with %s", lines, tt.want)
			}
			if strings.Contains(lines[0], "hunter2") {
				t.Fatalf("stderr shows the secret: %s", lines[0])
			}
		})
	}
}

func TestBinaryVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary(t), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "imds-proxy ") {
		t.Fatalf("--version: %v %q", err, out)
	}
}
