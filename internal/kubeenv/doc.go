// Package kubeenv runs a real Kubernetes control plane for tests: Debian's
// etcd and a kube-apiserver built from the k8s.io/kubernetes module
// (test/kubebin, see Build), on loopback inside a network namespace, so
// that service-account tokens come from the TokenRequest API, signed with
// the API server's own key and carrying its issuer and kubernetes.io
// claims, and manifests are judged by the API server's own validation and
// admission.
//
// Where it runs: in the network namespace Options.Netns names (typically a
// podenv.Env's node namespace, so the Entra emulator running there fetches
// the issuer's documents), or, when Netns is empty, in a namespace of its
// own with only loopback. Inside it:
//
//	etcd            127.0.0.1:2379 (client), 127.0.0.1:2380 (peer)
//	kube-apiserver  https://127.0.0.1:443, named kube-apiserver.test
//	                (podenv.APIServerHost, which every namespace podenv
//	                creates resolves to 127.0.0.1)
//
// The API server's identity and trust are generated per cluster: an ECDSA
// CA and a serving certificate for kube-apiserver.test, localhost,
// 127.0.0.1 and the in-cluster kubernetes.default.svc names (CACertPEM,
// CAFile); an RSA service-account signing key; an admin bearer token in the
// system:masters group (AdminToken, Kubeconfig). The service-account
// issuer is https://kube-apiserver.test (Issuer), its audiences include
// api://AzureADTokenExchange, and its discovery endpoints
// (/.well-known/openid-configuration, /openid/v1/jwks) answer anonymous
// requests: like a cluster that publishes its issuer, the ClusterRole
// system:service-account-issuer-discovery is bound to the group
// system:unauthenticated, so the emulator needs no credential to fetch
// them, as Entra needs none.
//
// Without a kube-controller-manager nothing creates ServiceAccounts
// ("default" included), the kube-root-ca.crt ConfigMap, the pods of a Job,
// or garbage-collects anything: tests create what they use, or name the
// controllers to run in Options.Controllers (kube-controller-manager with
// only those, on 127.0.0.1:10257).
//
// The harness process stays in the host namespace and reaches the API
// server through podenv.NetnsDialer (Do, Create, DryRun, RequestToken).
// Processes are started with `ip netns exec` and stopped by pid (Close);
// the cluster registers with podenv.Register, so podenv.Shutdown (Ctrl-C
// under podenvtest) stops it too, and its directory and namespace are named
// like podenv's, so podenv.CleanStale removes what a killed run left.
package kubeenv
