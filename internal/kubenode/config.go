package kubenode

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// layout is where every file of one node lives, all under its temporary
// directory (Node.Dir).
type layout struct {
	Dir string

	ContainerdConfig string // config.toml
	ContainerdRoot   string // persistent state: content store, snapshots
	ContainerdState  string // runtime state
	Socket           string // CRI and containerd API (gRPC)
	RuncRoot         string // runc's own state (--root)
	CNIConfDir       string // the conflist below, read by containerd's CRI plugin
	CNIDataDir       string // host-local's address leases

	KubeletConfig   string
	KubeletRoot     string // --root-dir: pods, volumes, plugins, checkpoints
	KubeletCertDir  string // --cert-dir: the kubelet's self-signed serving certificate
	ManifestsDir    string // staticPodPath
	PodLogsDir      string // podLogsDir: <namespace>_<pod>_<uid>/<container>/<restart>.log
	VolumePluginDir string // --volume-plugin-dir (flexvolume; unused, kept off the host)

	ContainerdLog string
	KubeletLog    string
}

func newLayout(dir string) layout {
	p := func(elem ...string) string { return filepath.Join(append([]string{dir}, elem...)...) }
	return layout{
		Dir:              dir,
		ContainerdConfig: p("containerd", "config.toml"),
		ContainerdRoot:   p("containerd", "root"),
		ContainerdState:  p("containerd", "state"),
		Socket:           p("containerd", "containerd.sock"),
		RuncRoot:         p("containerd", "runc"),
		CNIConfDir:       p("cni", "net.d"),
		CNIDataDir:       p("cni", "ipam"),
		KubeletConfig:    p("kubelet", "config.yaml"),
		KubeletRoot:      p("kubelet", "root"),
		KubeletCertDir:   p("kubelet", "pki"),
		ManifestsDir:     p("kubelet", "manifests"),
		PodLogsDir:       p("kubelet", "pod-logs"),
		VolumePluginDir:  p("kubelet", "volume-plugins"),
		ContainerdLog:    p("containerd.log"),
		KubeletLog:       p("kubelet.log"),
	}
}

// dirs are the directories Start creates before anything runs.
func (l layout) dirs() []string {
	return []string{
		filepath.Dir(l.ContainerdConfig), l.ContainerdRoot, l.ContainerdState, l.RuncRoot,
		l.CNIConfDir, l.CNIDataDir,
		filepath.Dir(l.KubeletConfig), l.KubeletRoot, l.KubeletCertDir, l.ManifestsDir, l.PodLogsDir, l.VolumePluginDir,
	}
}

// Binaries the node runs, from Debian's containerd, runc and
// containernetworking-plugins packages. containerd finds its shim on PATH.
const (
	containerdBin = "/usr/bin/containerd"
	shimBin       = "/usr/bin/containerd-shim-runc-v2"
	ctrBin        = "/usr/bin/ctr"
	runcBin       = "/usr/sbin/runc"
	cniBinDir     = "/usr/lib/cni"
)

// cniPlugins are the plugins the conflist uses (loopback is the one the CRI
// plugin runs for every sandbox's lo).
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// containerdConfig renders containerd's config.toml (version 2).
//
// Settings this machine kind needs, each found by a failure:
//   - restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so the
//     negative oom_score_adj runc writes for sandboxes by default is refused
//     and every sandbox fails with "can't get final child's PID from pipe".
//   - disable_apparmor: no AppArmor in this kernel.
//   - SystemdCgroup = false: no systemd; the kubelet uses the cgroupfs
//     driver too (containerd 1.6 cannot tell it, see kubeletConfig).
//
// Everything that would land in /var/lib or /etc lives under the node's
// directory; /run/containerd (shim sockets) is on the node's private tmpfs.
func containerdConfig(l layout, pauseImage string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = %q

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  disable_apparmor = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = %q
  Root = %q

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %q
  conf_dir = %q
`, l.ContainerdRoot, l.ContainerdState, l.Socket, pauseImage, runcBin, l.RuncRoot, cniBinDir, l.CNIConfDir)
	return b.String()
}

// cniConfig renders the node's CNI network: a bridge (cniBridge) holding the
// gateway address, host-local leases from subnet, a default route through
// the gateway, and no masquerading (the pods' traffic ends inside the node's
// namespace, which holds every address they talk to).
func cniConfig(l layout, subnet netip.Prefix, gateway netip.Addr) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "imds-proxy-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
`, cniBridge, subnet.String(), gateway.String(), l.CNIDataDir)
}

// cniBridge is the bridge the node's pods are attached to.
const cniBridge = "cni0"

// Kubelet ports, on 127.0.0.1 inside the node's network namespace.
const (
	kubeletPort        = 10250
	kubeletHealthzPort = 10248
)

// kubeletConfig renders the KubeletConfiguration.
//
// Settings this machine kind needs:
//   - cgroupDriver cgroupfs: there is no systemd, and containerd 1.6 does
//     not answer the CRI RuntimeConfig call that would tell the kubelet the
//     runtime's driver; the kubelet falls back to this setting (a fallback
//     removed after v1.34).
//   - cgroupRoot: the node's own cgroup (see cgroup.go), so pods of two
//     nodes, or of a killed run, never share "kubepods".
//   - enforceNodeAllocatable empty and evictionHard at 0%: a shared test
//     machine must not make the kubelet evict our pods or fence its memory.
//   - failSwapOn false: the kubelet's swap check is no business of a test.
//   - imageGC thresholds at 100%: nothing is pulled, so an image garbage
//     collected on a full disk would be gone for good.
//   - makeIPTablesUtilChains false and resolvConf "": the node's namespace
//     keeps no rules of the kubelet's, and pods get no host resolver.
//   - authentication anonymous with AlwaysAllow, on 127.0.0.1 only: the
//     kubelet API is reachable from the node's namespace alone.
func kubeletConfig(l layout, cgroupRoot string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: %s
enforceNodeAllocatable: []
failSwapOn: false
evictionHard:
  memory.available: "0%%"
  nodefs.available: "0%%"
  nodefs.inodesFree: "0%%"
  imagefs.available: "0%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
resolvConf: ""
staticPodPath: %s
fileCheckFrequency: 1s
podLogsDir: %s
`, kubeletPort, kubeletHealthzPort, l.Socket, l.Socket, cgroupRoot, l.ManifestsDir, l.PodLogsDir)
}

// kubeletArgs are the kubelet's command-line flags (the rest is in its
// configuration file).
func kubeletArgs(l layout, name, kubeconfig string) []string {
	args := []string{
		"--config=" + l.KubeletConfig,
		"--root-dir=" + l.KubeletRoot,
		"--cert-dir=" + l.KubeletCertDir,
		"--hostname-override=" + name,
		"--volume-plugin-dir=" + l.VolumePluginDir,
		"--v=2",
	}
	if kubeconfig != "" {
		args = append(args, "--kubeconfig="+kubeconfig)
	}
	return args
}
