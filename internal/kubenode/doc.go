// Package kubenode runs a real Kubernetes node on this machine for tests:
// Debian's containerd 1.6 with runc, the standard CNI plugins (bridge,
// host-local, loopback, portmap) and a kubelet built from k8s.io/kubernetes
// (test/kubebin), with nothing pulled from any registry. Images are
// imported from archives (ImportImage). It does not import testing.
//
// Where things run (all of it inside namespaces and directories the node
// creates, so the host's links, routes, firewall, /run, /var/lib and
// /etc stay untouched):
//
//	network namespace Options.Netns (shared with the API server, the
//	Entra emulator and the fake IMDS of internal/podenv and internal/kubeenv)
//	  cni0  bridge, Gateway/24 (169.254.200.1 by default), a fixed MAC address
//	    veth ── pod network namespace (made by containerd through CNI):
//	            eth0 169.254.200.x, default route via the gateway
//	  containerd   ─┐ one private mount namespace: tmpfs over /run, /var/lib,
//	  kubelet       │ /var/log and containerd's root (images, snapshots);
//	  runc shims   ─┘ config, state, sockets, the kubelet's root and the
//	                  pods' logs under Dir
//
//	cgroup /imdsp-<pid>-node-<n> in every hierarchy: the kubelet's
//	cgroupRoot, so every pod and container of the node lives below it.
//
// Pods reach every address of the namespace through their gateway: the
// emulator, 169.254.169.254 (the fake real IMDS), an API server on the
// namespace's loopback only from the kubelet. Pod addresses are link-local;
// nothing is masqueraded or routed anywhere else.
//
// What this machine kind requires, and why (each found by a failure):
//   - No systemd, hybrid cgroups (v1 controllers and v2 at
//     /sys/fs/cgroup/unified): the cgroupfs driver for runc and the kubelet.
//     containerd 1.6 does not implement the CRI RuntimeConfig call, so the
//     kubelet falls back to its own cgroupDriver setting; that fallback is
//     gone after v1.34, hence the pinned kubelet version.
//   - Root lacks CAP_SYS_RESOURCE: containerd's restrict_oom_score_adj.
//   - `ip netns exec` remounts /sys and hides the cgroup mounts from runc:
//     containerd starts under nsenter --net and unshare --mount instead, and
//     the kubelet joins both its namespaces with nsenter.
//   - A link-local node address is refused by the kubelet, so the Node
//     object has no address and the API server cannot reach the kubelet:
//     `kubectl logs` and `kubectl exec` cannot work. ContainerLog reads the
//     kubelet's podLogsDir, the very files `kubectl logs` would stream.
//
// Teardown (Close, also on a failed Start and from podenv.Shutdown on
// Ctrl-C): the kubelet, then every process of the node's cgroup, then
// containerd, then whatever is left in its mount namespace (runc's
// shims), all by pid; then the cgroup, the bridge and Dir. A run that was
// killed leaves a cgroup named after its pid: CleanStale ends the daemons
// that name its directory and the processes of the cgroup, by pid, and
// removes it; podenv.CleanStale removes its namespaces and directories.
package kubenode
