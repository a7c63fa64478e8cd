// Package podenv runs the real imds-proxy binaries in a pod-shaped pair of
// network namespaces on this machine, for the e2e suite, the sandbox and
// the benchmark. It does not import testing; podenvtest adapts it to tests.
//
// Topology (all addresses link-local, only inside namespaces we create):
//
//	pod netns  imdsp-<pid>-<n>-pod                node netns  imdsp-<pid>-<n>-node
//	  lo 127.0.0.1: proxy :8000 (UID 1501)          veth0 169.254.99.1/24
//	  eth0 169.254.99.2/24 ---------- veth ------      emulator: Entra TLS :443 (login.emulator.test),
//	  default via 169.254.99.1                          issuer + admin API :80 (oidc.emulator.test)
//	  proxy-init's nat rules                        veth0 169.254.169.254/32
//	                                                   fake real IMDS :80 (served by this process)
//
// Each namespace gets /etc/netns/<name>/resolv.conf (nameserver 127.0.0.1,
// so lookups fail at once and stay local) and hosts (the emulator's names),
// written before anything runs in it; every process is started with
// `ip netns exec`, which bind-mounts them. Processes that must not be root
// go through `setpriv --reuid --regid --clear-groups` (UID 1501 has no
// passwd entry, so runuser cannot be used).
//
// Processes:
//   - the emulator (test/emulator) runs as root in the node namespace, as its
//     own process, so its listeners and its fetches of the issuer's JWKS all
//     happen there;
//   - proxy-init runs as root in the pod (RunInit), the proxy as ProxyUID
//     (StartProxy), the --probe hook as ProxyUID (ProbeCommand), clients as
//     any UID with a clean environment (PodCommand).
//
// The harness process itself stays in the host namespace. To talk to
// something inside a namespace it switches one locked OS thread into it
// (setns), creates the socket there and switches back: a socket belongs to
// the namespace it was created in for its whole life. That is how it serves
// the fake IMDS on 169.254.169.254:80 in the node namespace, drives the
// emulator's admin API (Calls, CallStats, SetFault, SetTLSFault, AddApp,
// MintToken, MintAndWriteToken, IssuedTokens) and polls the proxy's /readyz
// and /metrics (ProxyMetrics), with no extra binary, port or socket file
// visible on the host.
//
// Faults of the node side: RefuseConnections adds a REJECT rule (TCP reset)
// to the node namespace's own filter table, so Entra or the node's IMDS
// refuses connections; SetIMDSLatency slows the fake IMDS. ProxyPID and
// ReadProcessStats read the proxy's memory, threads and file descriptors
// from /proc.
//
// Teardown (Close, also on a failed Start): the proxy and the emulator by
// pid, then whatever is left in the namespaces (by pid, from `ip netns
// pids`), the fake IMDS, the namespaces, their /etc/netns directories and
// the environment's directory. Start first removes namespaces with our
// prefix whose creating process is gone (CleanStale). CloseAll closes every
// open Env of the process, for signal handlers.
package podenv
