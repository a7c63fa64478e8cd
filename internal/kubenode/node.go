package kubenode

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/imds-proxy/imds-proxy/internal/podenv"
)

// DefaultName is the node name when Options.Name is empty.
const DefaultName = "imds-proxy-node"

// DefaultPodSubnet is where pod addresses come from when
// Options.PodSubnet is unset: link-local, like every address of the test
// bed, and apart from podenv's 169.254.99.0/24.
var DefaultPodSubnet = netip.MustParsePrefix("169.254.200.0/24")

// Options shapes one node. Netns, KubeletBin and PauseImage are required.
type Options struct {
	// Netns is the network namespace the node lives in, by name (an Env's
	// node namespace, or one from podenv.NewNetns). Everything the node's
	// pods reach must be there: the node adds its CNI bridge to it.
	Netns string
	// KubeletBin is the kubelet binary (test/kubebin/build.sh).
	KubeletBin string
	// PauseImage is the sandbox image, e.g. localhost/imds-proxy-k8s/pause:1.
	// Nothing is pulled: import it with ImportImage before the first pod.
	PauseImage string
	// Name is the node name; default DefaultName.
	Name string
	// PodSubnet is the pods' /24 (or larger); its first address is the
	// bridge's, the pods' gateway. Default DefaultPodSubnet.
	PodSubnet netip.Prefix
	// Kubeconfig, when set, is the kubelet's kubeconfig file (e.g.
	// kubeenv.Cluster.Kubeconfig): the node registers with that API server
	// and runs the pods bound to it. Without it the kubelet runs static pods
	// only (WriteStaticPod).
	Kubeconfig string
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
}

// Node is a running node: containerd and the kubelet, in Options.Netns and
// in a mount namespace of their own (see the package documentation).
type Node struct {
	// Name is the node name.
	Name string
	// Netns is the network namespace it lives in.
	Netns string
	// Dir is the node's temporary directory: configuration, state, logs.
	// Close removes it.
	Dir string
	// Gateway is the bridge's address, the pods' default gateway.
	Gateway netip.Addr
	// ContainerdLog and KubeletLog are the daemons' logs.
	ContainerdLog, KubeletLog string
	// PodLogsDir is the kubelet's podLogsDir (see ContainerLog).
	PodLogsDir string
	// KubeletRoot is the kubelet's --root-dir (pods/<uid>/volumes/...).
	KubeletRoot string

	l          layout
	cgroup     string   // cgroupRoot, e.g. /imdsp-1234-node-567
	cgroupFS   []string // mount points of the cgroup hierarchies
	opts       Options
	unregister func()

	mu         sync.Mutex
	containerd *podenv.Process
	kubelet    *podenv.Process

	closeOnce sync.Once
	closeErr  error
}

// Start starts a node: its cgroup, the CNI bridge in Netns, containerd in
// a private mount namespace, and the kubelet, and returns once the
// kubelet's health endpoint answers. It needs root. On error everything
// created is removed.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("kubenode needs root (namespaces, cgroups, containerd)")
	}
	if opts.Netns == "" || opts.KubeletBin == "" || opts.PauseImage == "" {
		return nil, errors.New("kubenode: Options.Netns, KubeletBin and PauseImage are required")
	}
	if err := CheckTools(opts.KubeletBin); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if !opts.PodSubnet.IsValid() {
		opts.PodSubnet = DefaultPodSubnet
	}
	if opts.PodSubnet.Bits() > 30 || !opts.PodSubnet.Addr().Is4() {
		return nil, fmt.Errorf("kubenode: pod subnet %s: want IPv4, /30 or larger", opts.PodSubnet)
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := CleanStale(); err != nil {
		opts.Logf("kubenode: cleaning stale nodes: %v", err)
	}
	mounts, err := hostCgroupMounts()
	if err != nil {
		return nil, err
	}

	dir, err := podenv.TempDir("node")
	if err != nil {
		return nil, err
	}
	if shadowed(dir) {
		return nil, errors.Join(fmt.Errorf("kubenode: temporary directory %s is under a path the node's mount namespace hides (%s)", dir, strings.Join(privateMounts, ", ")), os.RemoveAll(dir))
	}
	subnet := opts.PodSubnet.Masked()
	n := &Node{
		Name:     opts.Name,
		Netns:    opts.Netns,
		Dir:      dir,
		Gateway:  subnet.Addr().Next(),
		l:        newLayout(dir),
		cgroup:   "/" + filepath.Base(dir),
		cgroupFS: mounts,
		opts:     opts,
	}
	n.ContainerdLog, n.KubeletLog = n.l.ContainerdLog, n.l.KubeletLog
	n.PodLogsDir, n.KubeletRoot = n.l.PodLogsDir, n.l.KubeletRoot
	// Registered before anything runs: a Ctrl-C from here on tears it down.
	n.unregister = podenv.Register(n)
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()

	if err := n.writeFiles(subnet); err != nil {
		return nil, err
	}
	if err := createCgroup(mounts, n.cgroup); err != nil {
		return nil, err
	}
	if err := n.addBridge(ctx, subnet); err != nil {
		return nil, err
	}
	opts.Logf("kubenode: starting containerd in %s", opts.Netns)
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	opts.Logf("kubenode: starting the kubelet (node %s)", opts.Name)
	if err := n.startKubelet(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// CheckTools reports the first missing program the node needs: Debian's
// containerd, runc, containernetworking-plugins and util-linux, and the
// kubelet at kubeletBin.
func CheckTools(kubeletBin string) error {
	paths := []string{kubeletBin, containerdBin, shimBin, ctrBin, runcBin}
	for _, p := range cniPlugins {
		paths = append(paths, filepath.Join(cniBinDir, p))
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("kubenode: %s missing or not executable (hack/install-deps.sh installs containerd, runc and containernetworking-plugins; test/kubebin/build.sh builds the kubelet)", p)
		}
	}
	for _, tool := range []string{"nsenter", "unshare", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("kubenode: %s not found (util-linux, iproute2)", tool)
		}
	}
	return nil
}

// privateMounts are the directories the node's mount namespace covers
// with empty tmpfs mounts before containerd starts, because containerd, the
// CNI plugins and the kubelet write to fixed paths below them
// (/run/containerd, /var/lib/cni, /var/lib/kubelet/device-plugins,
// /var/log/pods). The host's own directories stay untouched.
var privateMounts = []string{"/run", "/var/lib", "/var/log"}

// shadowed reports whether path lies under one of privateMounts (the node
// would not see it).
func shadowed(path string) bool {
	for _, m := range privateMounts {
		if path == m || strings.HasPrefix(path, m+"/") {
			return true
		}
	}
	return false
}

func (n *Node) writeFiles(subnet netip.Prefix) error {
	for _, d := range n.l.dirs() {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := []struct{ path, data string }{
		{n.l.ContainerdConfig, containerdConfig(n.l, n.opts.PauseImage)},
		{filepath.Join(n.l.CNIConfDir, "10-imds-proxy-node.conflist"), cniConfig(n.l, subnet, n.Gateway)},
		{n.l.KubeletConfig, kubeletConfig(n.l, n.cgroup)},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// addBridge creates the pods' bridge in the node's namespace, with the
// gateway address, before the first pod: the bridge plugin adopts it.
//
// The bridge gets a fixed MAC address. A Linux bridge whose address was
// never set takes the lowest of its ports' addresses and changes it when
// ports come and go, and the bridge plugin leaves it so. The pods' ARP
// entries for the gateway then name an address nobody answers to, and a
// running pod's new connections out of the node go unanswered until the
// entry goes stale, tens of seconds later: seen as a restarted sidecar
// that could not reach Entra while another pod's veth was deleted.
func (n *Node) addBridge(ctx context.Context, subnet netip.Prefix) error {
	gw := netip.PrefixFrom(n.Gateway, subnet.Bits()).String()
	for _, args := range [][]string{
		{"-n", n.Netns, "link", "add", cniBridge, "address", bridgeMAC(n.Gateway), "type", "bridge"},
		{"-n", n.Netns, "addr", "add", gw, "dev", cniBridge},
		{"-n", n.Netns, "link", "set", cniBridge, "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// bridgeMAC is the bridge's address: locally administered and unicast
// (02:00), then the gateway's IPv4 address.
func bridgeMAC(gw netip.Addr) string {
	a := gw.As4()
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
}

// daemonEnv is the environment of containerd and the kubelet: PATH for
// the shim, runc and mount helpers, nothing else of ours.
var daemonEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// startContainerd starts containerd in the node's network namespace and in
// a new mount namespace (slave propagation: host mounts still appear in it,
// its own never leave it) whose privateMounts are empty tmpfs. containerd's
// root (content store and unpacked snapshots, hundreds of megabytes for a
// Debian image) is a tmpfs of that namespace too: imports never wait on a
// shared disk, and it is gone at once with the namespace, where deleting
// its files takes tens of seconds on a busy machine. `ip netns exec` is
// not used: it remounts /sys, and runc then finds no cgroup mounts.
// nsenter, unshare and sh exec in place, so the pid is containerd's.
func (n *Node) startContainerd(ctx context.Context) error {
	var script strings.Builder
	for _, m := range privateMounts {
		fmt.Fprintf(&script, "mount -t tmpfs -o mode=0755 imds-proxy-node %s && ", m)
	}
	fmt.Fprintf(&script, "mount -t tmpfs -o mode=0700 imds-proxy-node %s && ", n.l.ContainerdRoot)
	fmt.Fprintf(&script, "exec %s --config %s", containerdBin, n.l.ContainerdConfig)
	argv := []string{
		"nsenter", "--net=" + filepath.Join("/run/netns", n.Netns), "--",
		"unshare", "--mount", "--propagation", "slave", "--",
		"sh", "-c", script.String(),
	}
	p, err := podenv.Spawn(argv, daemonEnv, n.l.ContainerdLog)
	if err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	n.mu.Lock()
	n.containerd = p
	n.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return p.WaitReady(wctx, func() bool {
		out, err := exec.CommandContext(wctx, ctrBin, "--address", n.l.Socket, "version").CombinedOutput()
		return err == nil && strings.Contains(string(out), "Server:")
	}, "containerd", n.l.ContainerdLog)
}

// startKubelet starts the kubelet in containerd's network and mount
// namespaces (it mounts the volumes containerd then bind-mounts into
// containers) and waits for its health endpoint.
func (n *Node) startKubelet(ctx context.Context) error {
	n.mu.Lock()
	cpid := n.containerd.Pid()
	n.mu.Unlock()
	argv := append([]string{"nsenter", "-t", strconv.Itoa(cpid), "-m", "-n", "--", n.opts.KubeletBin},
		kubeletArgs(n.l, n.Name, n.opts.Kubeconfig)...)
	p, err := podenv.Spawn(argv, daemonEnv, n.l.KubeletLog)
	if err != nil {
		return fmt.Errorf("start kubelet: %w", err)
	}
	n.mu.Lock()
	n.kubelet = p
	n.mu.Unlock()
	client := &http.Client{Transport: &http.Transport{DialContext: podenv.NetnsDialer(n.Netns), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(kubeletHealthzPort)) + "/healthz"
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	return p.WaitReady(wctx, func() bool {
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
		return resp.StatusCode == http.StatusOK && string(b) == "ok"
	}, "kubelet", n.l.KubeletLog)
}

// ImportImage loads an image archive (docker-archive or oci-archive, as
// `podman save` writes them) into containerd's k8s.io namespace, where the
// kubelet finds it: nothing is ever pulled.
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	out, err := exec.CommandContext(ctx, ctrBin, "--address", n.l.Socket, "-n", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", archive, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// WriteStaticPod writes a static pod manifest for the kubelet, atomically
// (the kubelet watches the directory and must never read half a file).
func (n *Node) WriteStaticPod(name string, manifest []byte) error {
	tmp, err := os.CreateTemp(n.l.Dir, ".manifest-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(manifest); err != nil {
		return errors.Join(err, tmp.Close(), os.Remove(tmp.Name()))
	}
	if err := tmp.Close(); err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	return os.Rename(tmp.Name(), filepath.Join(n.l.ManifestsDir, name+".yaml"))
}

// Pids returns the pids of containerd and the kubelet (0 when not
// running), for measurements.
func (n *Node) Pids() (containerd, kubelet int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.containerd != nil && !n.containerd.Exited() {
		containerd = n.containerd.Pid()
	}
	if n.kubelet != nil && !n.kubelet.Exited() {
		kubelet = n.kubelet.Pid()
	}
	return containerd, kubelet
}

// Close stops the node: the kubelet (so nothing restarts), every process
// of the node's cgroup (pods, containers), containerd, then whatever else
// runs in its mount namespace (runc's shims), all by pid; then removes the
// cgroup, the bridge and Dir. It is safe to call twice and from a signal
// handler (podenv.Shutdown calls it).
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	n.mu.Lock()
	containerd, kubelet := n.containerd, n.kubelet
	n.mu.Unlock()

	var errs []error
	if kubelet != nil {
		kubelet.Stop(5 * time.Second)
	}
	errs = append(errs, killCgroup(n.cgroupFS, n.cgroup, 20*time.Second))
	if containerd != nil {
		mntns := mountNamespace(containerd.Pid())
		containerd.Stop(5 * time.Second)
		errs = append(errs, killMountNamespace(mntns, 10*time.Second))
	}
	errs = append(errs, removeCgroup(n.cgroupFS, n.cgroup, 10*time.Second))
	if _, err := os.Stat(filepath.Join("/run/netns", n.Netns)); err == nil {
		if out, err := exec.Command("ip", "-n", n.Netns, "link", "del", cniBridge).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
			errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", cniBridge, err, strings.TrimSpace(string(out))))
		}
	}
	errs = append(errs, os.RemoveAll(n.Dir))
	if n.unregister != nil {
		n.unregister()
	}
	return errors.Join(errs...)
}

// mountNamespace returns the mount namespace of pid ("mnt:[4026532245]"),
// or "" once it is gone.
func mountNamespace(pid int) string {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return ""
	}
	return ns
}

// killMountNamespace sends SIGKILL, by pid, to every process in the mount
// namespace mntns (the node's own: only processes the node started live
// there) until none is left or timeout passes. The host's mount namespace
// is refused.
func killMountNamespace(mntns string, timeout time.Duration) error {
	if mntns == "" {
		return nil
	}
	if mntns == mountNamespace(os.Getpid()) {
		return errors.New("kubenode: refusing to kill the host mount namespace")
	}
	deadline := time.Now().Add(timeout)
	for {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid <= 1 {
				continue
			}
			if mountNamespace(pid) == mntns {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in the node's mount namespace after %s", pids, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CleanStale removes what nodes of killed runs left: it ends, by pid,
// their kubelets, containerd and shims, then every process of their
// cgroups, and removes those cgroups. Their namespaces and directories are
// podenv's (podenv.CleanStale): call this first, so no container outlives
// its node.
func CleanStale() error { return cleanStaleCgroups() }

// KubeletPods returns the pods the kubelet runs, with the status it sees,
// from its own API (/pods on 127.0.0.1:10250 in the node's namespace,
// anonymous, self-signed certificate): static pods included, with or
// without an API server.
func (n *Node) KubeletPods(ctx context.Context) ([]corev1.Pod, error) {
	client := &http.Client{
		Transport: &http.Transport{
			DialContext:       podenv.NetnsDialer(n.Netns),
			DisableKeepAlives: true,
			// The kubelet's serving certificate is self-signed, made at its
			// start, and reachable only inside the node's namespace.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
		},
		Timeout: 10 * time.Second,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(kubeletPort))+"/pods", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubelet /pods: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("kubelet /pods: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var list corev1.PodList
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("kubelet /pods: %w", err)
	}
	return list.Items, nil
}

// ReadFile reads a file as the node's processes see it, through
// containerd's mount namespace: the kubelet mounts volumes (projected
// tokens, secrets) there, and the host sees only their empty mount points.
func (n *Node) ReadFile(path string) ([]byte, error) {
	containerd, _ := n.Pids()
	if containerd == 0 {
		return nil, errors.New("kubenode: containerd is not running")
	}
	return os.ReadFile(filepath.Join("/proc", strconv.Itoa(containerd), "root", path))
}
