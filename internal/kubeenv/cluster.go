package kubeenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// Where the control plane listens inside its network namespace, and under
// which names.
const (
	// Host is the API server's DNS name (podenv.APIServerHost), in its
	// serving certificate and in Issuer.
	Host = podenv.APIServerHost
	// BindAddress is the loopback address etcd and the API server listen
	// on inside the namespace.
	BindAddress = "127.0.0.1"
	// Port is the API server's secure port; 443, so the issuer URL carries
	// no port, like the issuers of managed clusters.
	Port = 443
	// Issuer is the service-account issuer: the "iss" of every token the
	// API server issues, and the URL its discovery document lives under.
	Issuer = "https://" + Host
	// WorkloadIdentityAudience is the audience of projected tokens for
	// Entra workload identity federation; the API server accepts it in
	// --api-audiences.
	WorkloadIdentityAudience = "api://AzureADTokenExchange"

	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// Options shapes one cluster. Only BinDir is required.
type Options struct {
	// BinDir holds kube-apiserver, as Build returns it.
	BinDir string
	// Netns is the network namespace to run in, e.g. a podenv.Env's Node.
	// Empty: a namespace of the cluster's own, with only loopback, removed
	// by Close. Nothing else in the namespace may listen on 127.0.0.1:443,
	// :2379 or :2380.
	Netns string
	// APIServerArgs are appended to kube-apiserver's arguments (a later
	// flag wins over an earlier one).
	APIServerArgs []string
	// Controllers, when set, are the kube-controller-manager controllers to
	// run beside the API server (e.g. "job", "serviceaccount",
	// "root-ca-cert-publisher"); without them no controller runs. Nothing
	// else in the namespace may then listen on 127.0.0.1:10257.
	Controllers []string
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
}

// Cluster is a running etcd and kube-apiserver. Close stops them.
type Cluster struct {
	// Netns is the network namespace they run in.
	Netns string
	// Dir is the cluster's private directory, removed by Close: data,
	// keys, certificates, logs.
	Dir string
	// URL is the API server's URL, https://kube-apiserver.test; the name
	// resolves only inside namespaces podenv creates. Issuer is the same.
	URL string
	// Issuer is the service-account issuer URL (see the Issuer constant).
	Issuer string
	// CACertPEM is the CA that verifies the API server's serving
	// certificate; CAFile holds it (mode 0644).
	CACertPEM []byte
	CAFile    string
	// AdminToken is a bearer token of the user "admin" in group
	// system:masters.
	AdminToken string
	// Kubeconfig is a kubeconfig file for AdminToken whose server is
	// https://127.0.0.1:443 (no name lookup needed inside Netns), for a
	// kubelet or kubectl run there. It holds the token: mode 0600.
	Kubeconfig string
	// EtcdLog, APIServerLog and ControllerManagerLog capture each program's
	// output.
	EtcdLog, APIServerLog, ControllerManagerLog string
	// Ready is how long the API server took from exec to a ready /readyz
	// with the issuer's discovery endpoints open.
	Ready time.Duration

	ownNetns   bool
	client     *http.Client // dials BindAddress:Port inside Netns
	unregister func()

	closeOnce sync.Once
	closeErr  error

	mu                sync.Mutex // guards the fields below
	closed            bool
	etcd              *podenv.Process
	apiserver         *podenv.Process
	controllerManager *podenv.Process
	resources         map[string]apiResource // discovery cache, by apiVersion+"/"+kind
}

// Start creates the keys and certificates, starts etcd and the API server
// in the namespace, waits until the API server is ready, and opens the
// issuer's discovery endpoints to anonymous requests. It needs root. On
// error everything it started is stopped. The first Start of a process
// also removes what killed runs left behind (podenv.CleanStale).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("kubeenv needs root (network namespaces)")
	}
	if opts.BinDir == "" {
		return nil, errors.New("kubeenv: Options.BinDir is required (see Build)")
	}
	apiserverBin := filepath.Join(opts.BinDir, APIServerBin)
	if _, err := os.Stat(apiserverBin); err != nil {
		return nil, fmt.Errorf("kubeenv: %w (run Build first)", err)
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("kubeenv: etcd not found (Debian package etcd-server; hack/install-deps.sh installs it): %w", err)
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := podenv.CleanStale(); err != nil {
		opts.Logf("kubeenv: cleaning stale namespaces: %v", err)
	}

	dir, err := podenv.TempDir("kube")
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Netns:                opts.Netns,
		Dir:                  dir,
		URL:                  Issuer,
		Issuer:               Issuer,
		CAFile:               filepath.Join(dir, "ca.pem"),
		Kubeconfig:           filepath.Join(dir, "kubeconfig"),
		EtcdLog:              filepath.Join(dir, "etcd.log"),
		APIServerLog:         filepath.Join(dir, "kube-apiserver.log"),
		ControllerManagerLog: filepath.Join(dir, "kube-controller-manager.log"),
		resources:            map[string]apiResource{},
	}
	c.unregister = podenv.Register(c)
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if c.Netns == "" {
		if c.Netns, err = podenv.NewNetns(ctx, "kube"); err != nil {
			return nil, err
		}
		c.ownNetns = true
	}

	creds, err := newCredentials()
	if err != nil {
		return nil, err
	}
	c.CACertPEM = creds.caPEM
	if c.AdminToken, err = randomToken(); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(creds.caPEM)
	dial := podenv.NetnsDialer(c.Netns)
	addr := net.JoinHostPort(BindAddress, strconv.Itoa(Port))
	c.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:           nil,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			// Every request goes to the API server, whatever name the URL
			// uses; TLS still verifies that name against the certificate.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dial(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
	}

	files := map[string][]byte{
		c.CAFile:                              creds.caPEM,
		filepath.Join(dir, "serving.pem"):     creds.servingPEM,
		filepath.Join(dir, "serving-key.pem"): creds.servingKeyPEM,
		filepath.Join(dir, "sa-key.pem"):      creds.saKeyPEM,
		filepath.Join(dir, "tokens.csv"):      []byte(c.AdminToken + ",admin,admin-uid,system:masters\n"),
		c.Kubeconfig:                          []byte(kubeconfig(c.CAFile, "https://"+addr, c.AdminToken)),
	}
	for path, data := range files {
		mode := os.FileMode(0o600)
		if path == c.CAFile {
			mode = 0o644
		}
		if err := os.WriteFile(path, data, mode); err != nil {
			return nil, err
		}
	}

	opts.Logf("kubeenv: starting etcd in %s", c.Netns)
	if err := c.startEtcd(ctx, etcdBin); err != nil {
		return nil, err
	}
	opts.Logf("kubeenv: starting kube-apiserver in %s", c.Netns)
	if err := c.startAPIServer(ctx, apiserverBin, opts.APIServerArgs); err != nil {
		return nil, err
	}
	opts.Logf("kubeenv: kube-apiserver ready in %v", c.Ready.Round(time.Millisecond))
	if len(opts.Controllers) > 0 {
		opts.Logf("kubeenv: starting kube-controller-manager (%s)", strings.Join(opts.Controllers, ","))
		if err := c.startControllerManager(ctx, filepath.Join(opts.BinDir, ControllerManagerBin), opts.Controllers); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// randomToken returns 32 random hex characters.
func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// kubeconfig renders a kubeconfig for one cluster and one token user.
func kubeconfig(caFile, server, token string) string {
	return `apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster:
    server: ` + server + `
    certificate-authority: ` + caFile + `
    tls-server-name: ` + Host + `
users:
- name: admin
  user:
    token: ` + token + `
contexts:
- name: kubeenv
  context:
    cluster: kubeenv
    user: admin
current-context: kubeenv
`
}

func (c *Cluster) startEtcd(ctx context.Context, bin string) error {
	client := "http://" + net.JoinHostPort(BindAddress, strconv.Itoa(etcdClientPort))
	peer := "http://" + net.JoinHostPort(BindAddress, strconv.Itoa(etcdPeerPort))
	argv := podenv.NetnsExec(c.Netns, -1, bin,
		"--name=kubeenv",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kubeenv="+peer,
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=warn",
	)
	p, err := c.spawn(argv, c.EtcdLog, &c.etcd)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	// Ready once /health answers from inside the namespace.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: podenv.NetnsDialer(c.Netns), DisableKeepAlives: true,
	}}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return p.WaitReady(wctx, func() bool {
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, client+"/health", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "etcd", c.EtcdLog)
}

func (c *Cluster) startAPIServer(ctx context.Context, bin string, extra []string) error {
	args := []string{
		bin,
		"--etcd-servers=http://" + net.JoinHostPort(BindAddress, strconv.Itoa(etcdClientPort)),
		"--bind-address=" + BindAddress,
		"--advertise-address=" + BindAddress,
		"--secure-port=" + strconv.Itoa(Port),
		"--tls-cert-file=" + filepath.Join(c.Dir, "serving.pem"),
		"--tls-private-key-file=" + filepath.Join(c.Dir, "serving-key.pem"),
		"--cert-dir=" + filepath.Join(c.Dir, "certs"),
		"--token-auth-file=" + filepath.Join(c.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--anonymous-auth=true",
		"--service-account-issuer=" + Issuer,
		"--service-account-jwks-uri=" + Issuer + "/openid/v1/jwks",
		"--service-account-key-file=" + filepath.Join(c.Dir, "sa-key.pem"),
		"--service-account-signing-key-file=" + filepath.Join(c.Dir, "sa-key.pem"),
		"--api-audiences=" + Issuer + "," + WorkloadIdentityAudience,
		// Clusters run the proxy-init container privileged.
		"--allow-privileged=true",
		// Service IPs are only allocated, never routed: no traffic leaves
		// the namespace.
		"--service-cluster-ip-range=10.96.0.0/24",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	args = append(args, extra...)
	start := time.Now()
	p, err := c.spawn(podenv.NetnsExec(c.Netns, -1, args...), c.APIServerLog, &c.apiserver)
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err = p.WaitReady(wctx, func() bool {
		status, _, err := c.do(wctx, http.MethodGet, "/readyz", "", nil, true)
		return err == nil && status == http.StatusOK
	}, "kube-apiserver", c.APIServerLog)
	if err != nil {
		return err
	}
	if err := c.openIssuerDiscovery(wctx); err != nil {
		return err
	}
	c.Ready = time.Since(start)
	return nil
}

// openIssuerDiscovery binds system:service-account-issuer-discovery to
// system:unauthenticated and waits until an anonymous request reads the
// discovery document (the binding reaches the authorizer's cache within
// moments).
func (c *Cluster) openIssuerDiscovery(ctx context.Context) error {
	crb := `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
"metadata":{"name":"service-account-issuer-discovery-unauthenticated"},
"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:service-account-issuer-discovery"},
"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"system:unauthenticated"}]}`
	if err := c.Create(ctx, "", []byte(crb), nil); err != nil {
		return fmt.Errorf("open the issuer discovery endpoints: %w", err)
	}
	pause := 10 * time.Millisecond
	for {
		status, body, err := c.do(ctx, http.MethodGet, "/.well-known/openid-configuration", "", nil, false)
		if err == nil && status == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("anonymous GET /.well-known/openid-configuration: %d %s %v: %w", status, body, err, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// spawn starts argv with a minimal environment and records the process in
// *slot, unless the cluster is closing.
func (c *Cluster) spawn(argv []string, logPath string, slot **podenv.Process) (*podenv.Process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("kubeenv: cluster closed")
	}
	p, err := podenv.Spawn(argv, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, logPath)
	if err != nil {
		return nil, err
	}
	*slot = p
	return p, nil
}

// PIDs returns the process ids of the running control plane, by program
// name ("etcd", "kube-apiserver", "kube-controller-manager").
func (c *Cluster) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	if c.etcd != nil && !c.etcd.Exited() {
		out["etcd"] = c.etcd.Pid()
	}
	if c.apiserver != nil && !c.apiserver.Exited() {
		out[APIServerBin] = c.apiserver.Pid()
	}
	if c.controllerManager != nil && !c.controllerManager.Exited() {
		out[ControllerManagerBin] = c.controllerManager.Pid()
	}
	return out
}

// Close stops the controller manager, the API server, then etcd (SIGTERM,
// SIGKILL after a few seconds), deletes the cluster's own namespace if it
// made one, and removes Dir. It is safe to call twice and from a signal handler.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Cluster) close() error {
	c.mu.Lock()
	controllerManager, apiserver, etcd := c.controllerManager, c.apiserver, c.etcd
	c.closed = true // no new process from now on
	c.mu.Unlock()
	if controllerManager != nil {
		controllerManager.Stop(5 * time.Second)
	}
	if apiserver != nil {
		apiserver.Stop(5 * time.Second)
	}
	if etcd != nil {
		etcd.Stop(5 * time.Second)
	}
	if c.client != nil {
		c.client.CloseIdleConnections()
	}
	var errs []error
	if c.ownNetns {
		errs = append(errs, podenv.DeleteNetns(c.Netns))
	}
	errs = append(errs, os.RemoveAll(c.Dir))
	if c.unregister != nil {
		c.unregister()
	}
	return errors.Join(errs...)
}
