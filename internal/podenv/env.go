package podenv

import (
	"bytes"
	"context"
	"encoding/base64"
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
	"time"

	"github.com/imds-proxy/imds-proxy/internal/entraemu"
)

// Defaults of Options.
const (
	// DefaultTenant is the emulated tenant, AZURE_TENANT_ID of the pod.
	DefaultTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	// DefaultClientID is a client id tests use for the pod's identity.
	// Options.ClientID is not defaulted to it: an empty ClientID means a
	// pod without AZURE_CLIENT_ID.
	DefaultClientID = "0b9d3c5e-7a1f-4e2b-9c8d-1f2e3a4b5c6d"
	// DefaultProxyUID is the UID the init rules exempt and the proxy image
	// runs as.
	DefaultProxyUID = 1501
	// DefaultProxyPort is the proxy's port (PROXY_PORT, --proxy-port).
	DefaultProxyPort = 8000
	// Namespace and ServiceAccount name the pod's Kubernetes service
	// account; the projected token's subject is ServiceAccountSubject.
	Namespace             = "default"
	ServiceAccount        = "workload"
	ServiceAccountSubject = "system:serviceaccount:" + Namespace + ":" + ServiceAccount
)

// FederatedApp returns an emulator app federated with the pod's service
// account (issuer: the emulator's; audience: api://AzureADTokenExchange).
// objectID and resourceID may be empty.
func FederatedApp(clientID, objectID, resourceID string) entraemu.App {
	return entraemu.App{
		ClientID:    clientID,
		ObjectID:    objectID,
		ResourceID:  resourceID,
		Federations: []entraemu.Federation{{Subject: ServiceAccountSubject}},
	}
}

// Options shapes one pod environment. Only BinDir is required.
type Options struct {
	// BinDir holds proxy, proxy-init and entraemu, as written by Build.
	BinDir string
	// Tenant is AZURE_TENANT_ID and the emulated tenant; default
	// DefaultTenant.
	Tenant string
	// ClientID is the pod's AZURE_CLIENT_ID. Empty leaves the variable
	// unset (a service account without the client-id annotation). Unless
	// Apps already holds it, it is registered as FederatedApp(ClientID,
	// "", "").
	ClientID string
	// Apps are further identities registered in the emulated tenant, with
	// their federations (see FederatedApp).
	Apps []entraemu.App
	// InvalidResources are resources (without "/.default") the tenant does
	// not know (AADSTS500011).
	InvalidResources []string
	// TokenLifetime is the lifetime of access tokens the emulator issues;
	// default 1h.
	TokenLifetime time.Duration
	// TokenPadding adds a claim of this many bytes to issued access tokens
	// (tokens over 4 KB make Go servers chunk replies unless they set
	// Content-Length).
	TokenPadding int
	// SATokenLifetime is the lifetime of the projected service-account
	// token; default 1h.
	SATokenLifetime time.Duration
	// ProxyUID is the UID the proxy runs as; default DefaultProxyUID. The
	// init rules always exempt DefaultProxyUID (proxy-init's own default),
	// so another value reproduces a pod-level runAsUser (loop guard).
	ProxyUID int
	// ProxyArgs are appended to the proxy's arguments
	// (--proxy-port=8000 --log-level=debug).
	ProxyArgs []string
	// ProxyEnv is appended to the proxy's environment.
	ProxyEnv []string
	// SkipInit leaves the pod without proxy-init's rules.
	SkipInit bool
	// DeferProxy leaves the proxy unstarted: call StartProxy (for example
	// after starting ProbeCommand or an app init container).
	DeferProxy bool
	// Logf, when set, receives progress lines (the sandbox prints them).
	Logf func(format string, args ...any)
}

// Env is a running pod-shaped environment:
//
//   - node netns: veth0 169.254.99.1/24 and 169.254.169.254/32; the emulator
//     (Entra over TLS on :443 as login.emulator.test, the cluster issuer and
//     the admin API on :80 as oidc.emulator.test) and a fake real IMDS on
//     169.254.169.254:80 served by this process;
//   - pod netns: lo, eth0 169.254.99.2/24, default route via 169.254.99.1,
//     proxy-init's rules, and the proxy on 127.0.0.1:8000 as ProxyUID.
//
// Both namespaces see /etc/netns/<name>/{resolv.conf,hosts} under
// `ip netns exec`. Close tears everything down.
type Env struct {
	// Pod and Node are the network namespace names (ip netns).
	Pod, Node string
	// Dir is the environment's private directory (mode 0755), removed by
	// Close. It holds the logs, the CA, the token and HOME directories.
	Dir string
	// TokenFile is AZURE_FEDERATED_TOKEN_FILE (mode 0644).
	TokenFile string
	// CAFile is the emulator's CA certificate (PEM), the proxy's
	// SSL_CERT_FILE.
	CAFile string
	// ProxyLog, InitLog and EmulatorLog capture each program's output.
	ProxyLog, InitLog, EmulatorLog string
	// Tenant, ClientID, AuthorityHost and IssuerURL are what the proxy is
	// configured with; IssuerURL is the projected token's issuer.
	Tenant, ClientID, AuthorityHost, IssuerURL string
	// ProxyUID and ProxyPort are the proxy's UID and port.
	ProxyUID, ProxyPort int

	opts    Options
	admin   *http.Client
	podHTTP *http.Client // dials from inside the pod netns (readiness)

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards the fields below
	imds   *fakeIMDS
	emu    *process
	proxy  *process
	closed bool
}

// process is a child we started and must end by pid.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

var (
	liveMu sync.Mutex
	live   = map[*Env]bool{}
)

// CloseAll closes every harness registered with Register, then every Env
// of this process that is still open (see also Shutdown, for signal
// handlers).
func CloseAll() error {
	herr := closeHarnesses()
	liveMu.Lock()
	envs := make([]*Env, 0, len(live))
	for e := range live {
		envs = append(envs, e)
	}
	liveMu.Unlock()
	errs := []error{herr}
	for _, e := range envs {
		errs = append(errs, e.Close())
	}
	return errors.Join(errs...)
}

// Start builds the namespaces, starts the emulator and the fake IMDS,
// writes the CA and a projected token, runs proxy-init in the pod (unless
// SkipInit) and starts the proxy (unless DeferProxy) and waits until it is
// ready. It needs root. On error everything created is torn down.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("podenv needs root (network namespaces, iptables, setuid)")
	}
	if opts.BinDir == "" {
		return nil, errors.New("podenv: Options.BinDir is required (see Build)")
	}
	for _, bin := range []string{ProxyBin, InitBin, EmulatorBin} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("podenv: %w (run Build first)", err)
		}
	}
	if opts.Tenant == "" {
		opts.Tenant = DefaultTenant
	}
	if opts.ProxyUID == 0 {
		opts.ProxyUID = DefaultProxyUID
	}
	if opts.SATokenLifetime <= 0 {
		opts.SATokenLifetime = time.Hour
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := CleanStale(); err != nil {
		opts.Logf("podenv: cleaning stale namespaces: %v", err)
	}

	e, err := newEnv(opts)
	if err != nil {
		return nil, err
	}
	pod, node := e.Pod, e.Node
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()

	opts.Logf("podenv: creating netns %s and %s", pod, node)
	if err := createTopology(ctx, pod, node); err != nil {
		return nil, err
	}
	imds, err := startFakeIMDS(node)
	if err != nil {
		return nil, fmt.Errorf("fake IMDS: %w", err)
	}
	e.mu.Lock()
	e.imds = imds
	e.mu.Unlock()
	opts.Logf("podenv: starting the emulator in %s", node)
	if err := e.startEmulator(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(e.TokenFile), 0o755); err != nil {
		return nil, err
	}
	if err := e.MintAndWriteToken(ctx, Namespace, ServiceAccount, opts.SATokenLifetime); err != nil {
		return nil, err
	}
	if !opts.SkipInit {
		opts.Logf("podenv: running proxy-init in %s", pod)
		if err := e.RunInit(ctx); err != nil {
			return nil, err
		}
	}
	if !opts.DeferProxy {
		opts.Logf("podenv: starting the proxy as UID %d", opts.ProxyUID)
		if err := e.StartProxy(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// newEnv makes the environment's directory and registers the Env with
// CloseAll, unless Shutdown has begun.
func newEnv(opts Options) (*Env, error) {
	nsMu.Lock()
	defer nsMu.Unlock()
	if shuttingDown {
		return nil, errShuttingDown
	}
	dir, err := TempDir("env")
	if err != nil {
		return nil, err
	}
	pod, node := netnsPair()
	e := &Env{
		Pod:         pod,
		Node:        node,
		Dir:         dir,
		TokenFile:   filepath.Join(dir, "token", "azure-identity-token"),
		CAFile:      filepath.Join(dir, "emulator-ca.pem"),
		ProxyLog:    filepath.Join(dir, "proxy.log"),
		InitLog:     filepath.Join(dir, "proxy-init.log"),
		EmulatorLog: filepath.Join(dir, "emulator.log"),
		Tenant:      opts.Tenant,
		ClientID:    opts.ClientID,
		ProxyUID:    opts.ProxyUID,
		ProxyPort:   DefaultProxyPort,
		opts:        opts,
		admin:       &http.Client{Transport: &http.Transport{DialContext: netnsDialer(node), DisableKeepAlives: true}, Timeout: 30 * time.Second},
		podHTTP:     &http.Client{Transport: &http.Transport{DialContext: netnsDialer(pod), DisableKeepAlives: true}, Timeout: 5 * time.Second},
	}
	liveMu.Lock()
	live[e] = true
	liveMu.Unlock()
	return e, nil
}

// Bin returns the path of one of Build's binaries (ProxyBin, InitBin,
// EmulatorBin).
func (e *Env) Bin(name string) string { return filepath.Join(e.opts.BinDir, name) }

// netnsExec returns argv run in the named namespace, as uid when uid >= 0.
func netnsExec(ns string, uid int, argv ...string) []string {
	out := []string{"ip", "netns", "exec", ns}
	if uid >= 0 {
		u := strconv.Itoa(uid)
		out = append(out, "setpriv", "--reuid="+u, "--regid="+u, "--clear-groups", "--")
	}
	return append(out, argv...)
}

// RunInit runs proxy-init in the pod namespace as root (the init
// container), with PROXY_PORT set, and appends its output to InitLog. A
// non-zero exit is an error carrying the output.
func (e *Env) RunInit(ctx context.Context, args ...string) error {
	argv := netnsExec(e.Pod, -1, append([]string{e.Bin(InitBin)}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + safePath, "PROXY_PORT=" + strconv.Itoa(e.ProxyPort)}
	out, err := cmd.CombinedOutput()
	if werr := appendFile(e.InitLog, out); werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil {
		return fmt.Errorf("proxy-init %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

const safePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func appendFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// ProxyEnv returns the environment the proxy (and its --probe hook) gets:
// the webhook's AZURE_* variables and SSL_CERT_FILE for the emulator CA.
func (e *Env) ProxyEnv() []string {
	env := []string{
		"PATH=" + safePath,
		"AZURE_TENANT_ID=" + e.Tenant,
		"AZURE_FEDERATED_TOKEN_FILE=" + e.TokenFile,
		"AZURE_AUTHORITY_HOST=" + e.AuthorityHost,
		"SSL_CERT_FILE=" + e.CAFile,
	}
	if e.ClientID != "" {
		env = append(env, "AZURE_CLIENT_ID="+e.ClientID)
	}
	return append(env, e.opts.ProxyEnv...)
}

func (e *Env) proxyArgv() []string {
	argv := []string{e.Bin(ProxyBin), "--proxy-port=" + strconv.Itoa(e.ProxyPort), "--log-level=debug"}
	return netnsExec(e.Pod, e.ProxyUID, append(argv, e.opts.ProxyArgs...)...)
}

// StartProxy starts the proxy in the pod namespace as ProxyUID (the
// sidecar), its output appended to ProxyLog, and waits until /readyz
// answers 200. It fails if the proxy is already running or exits first.
func (e *Env) StartProxy(ctx context.Context) error {
	e.mu.Lock()
	if e.closed || e.proxy != nil && !e.proxy.exited() {
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return errors.New("podenv: environment closed")
		}
		return errors.New("podenv: proxy already running")
	}
	p, err := spawn(e.proxyArgv(), e.ProxyEnv(), e.ProxyLog)
	if err != nil {
		e.mu.Unlock()
		return fmt.Errorf("start proxy: %w", err)
	}
	e.proxy = p
	e.mu.Unlock()
	// Wait without the lock, so Close (a signal handler) is not held up.
	if err := e.waitReady(ctx, p); err != nil {
		p.stop(time.Second)
		return err
	}
	return nil
}

// spawn starts argv with env, its output appended to logPath, in a
// process group of its own: a Ctrl-C at the terminal reaches only us, and
// we stop our children in order.
func spawn(argv, env []string, logPath string) (*process, error) {
	nsMu.Lock()
	defer nsMu.Unlock()
	if shuttingDown {
		return nil, errShuttingDown
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return startProcess(cmd)
}

// waitReady polls the proxy's /readyz from inside the pod until it answers
// 200, the proxy exits, or 30 s pass.
func (e *Env) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.ProxyPort)) + "/readyz"
	return poll(ctx, p, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := e.podHTTP.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "proxy", e.ProxyLog)
}

// poll calls ready with a growing pause until it reports true, p exits, or
// ctx ends.
func poll(ctx context.Context, p *process, ready func() bool, what, logPath string) error {
	pause := 5 * time.Millisecond
	for {
		if ready() {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", what, p.err, tail(logPath))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w\n%s", what, ctx.Err(), tail(logPath))
		case <-p.done:
		case <-time.After(pause):
		}
		if pause < 200*time.Millisecond {
			pause *= 2
		}
	}
}

// tail returns the last lines of a log file for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const keep = 4000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// StopProxy sends the proxy SIGTERM and waits for it to exit (SIGKILL after
// 15 s). It returns the proxy's exit error, if any.
func (e *Env) StopProxy() error {
	e.mu.Lock()
	p := e.proxy
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	p.stop(15 * time.Second)
	return p.err
}

// WaitProxy waits until the proxy exits (or ctx ends) and returns its exit
// error: nil is exit status 0.
func (e *Env) WaitProxy(ctx context.Context) error {
	e.mu.Lock()
	p := e.proxy
	e.mu.Unlock()
	if p == nil {
		return errors.New("podenv: proxy not started")
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ProbeCommand returns the sidecar's postStart hook,
// `proxy --proxy-port=8000 --probe --log-level=debug [args]`, run in the pod
// as ProxyUID with the proxy's environment.
func (e *Env) ProbeCommand(ctx context.Context, args ...string) *exec.Cmd {
	argv := netnsExec(e.Pod, e.ProxyUID, append([]string{e.Bin(ProxyBin), "--proxy-port=" + strconv.Itoa(e.ProxyPort), "--probe", "--log-level=debug"}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = e.ProxyEnv()
	return cmd
}

// PodCommand returns argv run inside the pod namespace as uid (0 for root),
// in HOME (a directory of the environment owned by uid) with a clean
// environment: PATH, HOME, LANG=C.UTF-8, then env. No AZURE_* variable is set, so SDK
// clients really use IMDS. Its pid is argv's own (ip netns exec and setpriv
// exec in place), so exec.CommandContext's kill reaches it.
func (e *Env) PodCommand(ctx context.Context, uid int, env []string, argv ...string) *exec.Cmd {
	full := netnsExec(e.Pod, uid, argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	home, err := e.Home(uid)
	if err != nil {
		home = "/nonexistent"
	}
	cmd.Env = append([]string{"PATH=" + safePath, "HOME=" + home, "LANG=C.UTF-8"}, env...)
	cmd.Dir = home
	return cmd
}

// Home returns a home directory for uid inside Dir, created on first use
// and owned by uid.
func (e *Env) Home(uid int) (string, error) {
	home := filepath.Join(e.Dir, "home", strconv.Itoa(uid))
	if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(home, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return home, os.Chown(home, uid, uid)
}

// ShellCommand is the command line that opens a shell in the pod as uid
// (printed by the sandbox).
func (e *Env) ShellCommand(uid int) string {
	home, err := e.Home(uid)
	if err != nil {
		home = "/tmp"
	}
	return strings.Join(netnsExec(e.Pod, uid, "env", "-i", "PATH="+safePath, "HOME="+home, "TERM=xterm", "bash", "--norc"), " ")
}

// IMDSRequests returns the requests the fake real IMDS in the node
// namespace received, in order.
func (e *Env) IMDSRequests() []IMDSRequest {
	e.mu.Lock()
	imds := e.imds
	e.mu.Unlock()
	return imds.requests()
}

// Close stops the proxy and the emulator by pid, kills anything left in
// the namespaces, stops the fake IMDS, deletes the namespaces and their
// /etc/netns directories, and removes Dir. It is safe to call twice.
func (e *Env) Close() error {
	// Once: a concurrent caller (a signal handler and a test cleanup) waits
	// until the teardown is complete.
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Env) close() error {
	e.mu.Lock()
	e.closed = true
	proxy, emu, imds := e.proxy, e.emu, e.imds
	e.mu.Unlock()

	var errs []error
	if proxy != nil {
		proxy.stop(0) // no graceful --shutdown-delay wait at teardown
	}
	if emu != nil {
		emu.stop(2 * time.Second)
	}
	if imds != nil {
		errs = append(errs, imds.close())
	}
	errs = append(errs, deleteNetns(e.Pod), deleteNetns(e.Node))
	errs = append(errs, os.RemoveAll(e.Dir))
	liveMu.Lock()
	delete(live, e)
	liveMu.Unlock()
	return errors.Join(errs...)
}

// DecodeClaims returns the claims of a JWT (no signature check): the
// sandbox prints them and tests compare them with what was asked.
func DecodeClaims(jwt string) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT: %d segments", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT payload: %w", err)
	}
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("JWT payload: %w", err)
	}
	return claims, nil
}
