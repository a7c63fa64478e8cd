package imds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-proxy/imds-proxy/pkg/exchange"
)

// TokenSource produces access tokens for IMDS token requests.
// *exchange.Source implements it; tests use fakes.
type TokenSource interface {
	// Token returns a token for req, or an error. Errors other than
	// *exchange.Error are answered 503.
	Token(ctx context.Context, req exchange.Request) (exchange.Token, error)
}

// InstanceMetadataMode says what happens to the non-identity IMDS categories.
type InstanceMetadataMode string

const (
	// InstanceMetadataPassthrough forwards /metadata/{instance,versions,
	// attested,scheduledevents,loadbalancer} to the real IMDS.
	InstanceMetadataPassthrough InstanceMetadataMode = "passthrough"
	// InstanceMetadataBlock answers them 403: VM metadata (tags, network,
	// userData) stays invisible to the pod.
	InstanceMetadataBlock InstanceMetadataMode = "block"
)

// Defaults applied by New to zero fields of Config.
const (
	// DefaultUpstream is the real IMDS.
	DefaultUpstream = "http://169.254.169.254"
	// DefaultPassthroughTimeout bounds one forwarded request (SPEC §3.6).
	DefaultPassthroughTimeout = 5 * time.Second
	// DefaultShutdownDelay is how long the proxy keeps serving after
	// SIGTERM (SPEC §3.1).
	DefaultShutdownDelay = 5 * time.Second
	// DefaultDrainTimeout bounds the wait for in-flight requests after the
	// shutdown delay. It exceeds the default exchange timeout (15 s), so a
	// token request waiting on Entra can finish.
	DefaultDrainTimeout = 20 * time.Second
	// DefaultMaxConnections bounds the connections the loopback listener
	// serves at once. Real pods open a few dozen at most (a keep-alive
	// pool per process). Each served connection holds a goroutine and
	// 15-20 KiB, about 32 KiB while a request head up to the header cap is
	// read (BenchmarkHostileConnections), so 1024 keeps a flood of
	// connections near 32 MiB, inside a sidecar's memory limit; further
	// connections wait in the kernel's accept queue (docs/security.md).
	DefaultMaxConnections = 1024
)

// HopHeader marks requests the proxy forwards to the real IMDS. Seeing it on
// an incoming request means the forwarded request was redirected back to
// the proxy (SPEC §3.6).
const HopHeader = "X-Imds-Proxy-Hop"

// ProbeHeader marks the warm-up token request of `proxy --probe`. When such a
// request fails, the proxy logs the diagnosis at error level: kubelet
// discards the output of a postStart hook that exits 0, so the proxy's own
// log is where users look (SPEC §3.7).
const ProbeHeader = "X-Imds-Proxy-Probe"

// Config configures a Server.
type Config struct {
	// TenantID is answered by /metadata/identity/info.
	TenantID string
	// Upstream is the real IMDS base URL; empty means DefaultUpstream.
	Upstream string
	// InstanceMetadata selects passthrough (the default) or block.
	InstanceMetadata InstanceMetadataMode
	// PassthroughTimeout bounds a forwarded request, headers and body.
	PassthroughTimeout time.Duration
	// UpstreamTransport carries forwarded requests; nil means a transport
	// that never uses an HTTP proxy (IMDS must not be reached through one).
	UpstreamTransport http.RoundTripper
	// ShutdownDelay is how long Serve keeps serving after its context ends.
	ShutdownDelay time.Duration
	// DrainTimeout bounds the wait for in-flight requests after the delay.
	DrainTimeout time.Duration
	// MaxConnections bounds the connections Serve serves at once; 0 means
	// DefaultMaxConnections. Further connections wait to be accepted.
	MaxConnections int
	// Gatherer is served on /metrics; nil answers /metrics with 404.
	Gatherer prometheus.Gatherer
	// ProbeDiagnostics returns extra key/value pairs for the error line
	// logged when a --probe warm-up fails, e.g. the projected token's
	// issuer, subject and audience. Optional.
	ProbeDiagnostics func() []any
	// Now tells the time for expires_in; nil means time.Now.
	Now func() time.Time
	// After waits for the shutdown delay; nil means time.After. Tests
	// inject a channel they control.
	After func(time.Duration) <-chan time.Time
}

// withDefaults fills zero fields and validates the rest.
func (c Config) withDefaults() (Config, *url.URL, error) {
	if c.Upstream == "" {
		c.Upstream = DefaultUpstream
	}
	if c.InstanceMetadata == "" {
		c.InstanceMetadata = InstanceMetadataPassthrough
	}
	if c.PassthroughTimeout <= 0 {
		c.PassthroughTimeout = DefaultPassthroughTimeout
	}
	if c.ShutdownDelay < 0 {
		c.ShutdownDelay = 0
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	var errs []error
	if c.TenantID == "" {
		errs = append(errs, errors.New("tenant id is required"))
	}
	switch c.InstanceMetadata {
	case InstanceMetadataPassthrough, InstanceMetadataBlock:
	default:
		errs = append(errs, fmt.Errorf("instance metadata mode %q is neither %q nor %q",
			c.InstanceMetadata, InstanceMetadataPassthrough, InstanceMetadataBlock))
	}
	u, err := ParseUpstream(c.Upstream)
	if err != nil {
		errs = append(errs, err)
	}
	return c, u, errors.Join(errs...)
}

// ParseUpstream validates an upstream IMDS URL: http or https, a host, and
// nothing but an optional "/" as path.
func ParseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("upstream %q: host is missing", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("upstream %q: must be scheme://host[:port] without path, query or credentials", s)
	}
	u.Path = ""
	return u, nil
}
