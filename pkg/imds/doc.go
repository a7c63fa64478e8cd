// Package imds is the HTTP surface of the imds-proxy sidecar: it speaks the
// Azure Instance Metadata Service (IMDS) managed-identity protocol on the
// pod's loopback interface, and, when given a secret, the App Service
// managed-identity protocol on /msi/token beside it, for pods that cannot
// run the iptables redirect (docs/app-service.md).
//
// It owns request routing around a pure path normaliser, the validation
// order of token requests (docs/imds.md), the refusal of requests
// that would hold or tunnel a connection, the wire format of token replies
// and errors of both protocols, the mapping of token-source failures to
// HTTP statuses, the passthrough of the non-identity IMDS categories to the
// real IMDS, the health, metrics and quit endpoints, request metrics and
// per-request logs, the bounds on every connection (docs/security.md), and
// the graceful shutdown sequence. It obtains tokens through the small
// TokenSource interface it declares; pkg/exchange implements it. Both
// protocols share one TokenSource, so one cache and one exchange serve
// them.
//
// The package reads no environment variables or flags and keeps no global
// state: everything comes in through Config, the TokenSource, a logr.Logger
// and a prometheus.Registerer.
package imds
