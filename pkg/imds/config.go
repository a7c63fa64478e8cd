package imds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
	// DefaultPassthroughTimeout bounds one forwarded request, headers and
	// body.
	DefaultPassthroughTimeout = 5 * time.Second
	// DefaultShutdownDelay is how long the proxy keeps serving after
	// SIGTERM: apps shutting down beside a regular sidecar may still need
	// a token.
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
	// DefaultExemptUID is the UID of the proxy image (USER 1501:1501),
	// which proxy-init exempts from the redirect.
	DefaultExemptUID = 1501
)

// maxUID is the largest user ID; (uid_t)-1 means "no user".
const maxUID = 1<<32 - 2

// HopHeader marks requests the proxy forwards to the real IMDS. Seeing it on
// an incoming request means the forwarded request was redirected back to
// the proxy: the iptables rules do not exempt the proxy's UID.
const HopHeader = "X-Imds-Proxy-Hop"

// ProbeHeader marks the warm-up token request of `proxy --probe`. When such a
// request fails, the proxy logs the diagnosis at error level: kubelet
// discards the output of a postStart hook that exits 0, so the proxy's own
// log is where users look.
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
	// ExemptUID is the UID proxy-init exempts from the redirect, named by
	// the reply to a passthrough loop; 0 means DefaultExemptUID.
	ExemptUID int
	// IdentityHeader is the secret of the App Service endpoint, /msi/token
	// (docs/app-service.md): requests must carry it in X-IDENTITY-HEADER.
	// Empty turns the endpoint off (404). See CheckIdentityHeader for what
	// a valid secret is.
	IdentityHeader IdentityHeader
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

// withDefaults fills the zero fields that stand for a default. It
// validates nothing: New calls Validate on its result.
func (c Config) withDefaults() Config {
	if c.Upstream == "" {
		c.Upstream = DefaultUpstream
	}
	if c.InstanceMetadata == "" {
		c.InstanceMetadata = InstanceMetadataPassthrough
	}
	if c.PassthroughTimeout == 0 {
		c.PassthroughTimeout = DefaultPassthroughTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.ExemptUID == 0 {
		c.ExemptUID = DefaultExemptUID
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	return c
}

// FieldError is one invalid field of a Config: the same type as
// exchange.FieldError, so a command maps the problems of both configurations
// to its flags alike. Field names the Config field, Value is the offending
// value as text.
type FieldError = exchange.FieldError

// Validate reports every invalid field of c, each as a *FieldError, joined
// with errors.Join, or nil when c is valid. Zero values are valid where
// they stand for a default that New fills in, or for "off"
// (IdentityHeader); TenantID is required. No error carries the
// IdentityHeader.
func (c Config) Validate() error {
	var errs []error
	invalid := func(field, value string, err error) {
		errs = append(errs, &FieldError{Field: field, Value: value, Err: err})
	}
	if err := exchange.CheckTenantID(c.TenantID); err != nil {
		invalid("TenantID", c.TenantID, err)
	}
	if c.Upstream != "" {
		if _, err := parseUpstream(c.Upstream); err != nil {
			invalid("Upstream", c.Upstream, err)
		}
	}
	switch c.InstanceMetadata {
	case "", InstanceMetadataPassthrough, InstanceMetadataBlock:
	default:
		invalid("InstanceMetadata", string(c.InstanceMetadata),
			fmt.Errorf("must be %q or %q", InstanceMetadataPassthrough, InstanceMetadataBlock))
	}
	for _, d := range [...]struct {
		field string
		value time.Duration
	}{
		{"PassthroughTimeout", c.PassthroughTimeout},
		{"ShutdownDelay", c.ShutdownDelay},
		{"DrainTimeout", c.DrainTimeout},
	} {
		if d.value < 0 {
			invalid(d.field, d.value.String(), errNegative)
		}
	}
	if c.MaxConnections < 0 {
		invalid("MaxConnections", strconv.Itoa(c.MaxConnections), errNegative)
	}
	if c.ExemptUID < 0 || c.ExemptUID > maxUID {
		invalid("ExemptUID", strconv.Itoa(c.ExemptUID), fmt.Errorf("is not a UID (0 to %d)", maxUID))
	}
	if c.IdentityHeader != "" {
		if err := CheckIdentityHeader(string(c.IdentityHeader)); err != nil {
			// The value is the placeholder, never the secret.
			invalid("IdentityHeader", c.IdentityHeader.String(), err)
		}
	}
	return errors.Join(errs...)
}

var errNegative = errors.New("must not be negative")

// parseUpstream validates an upstream IMDS URL: http or https, a host, an
// optional port, and nothing but an optional "/" as path. Its errors do not
// repeat the value (FieldError names it).
func parseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return nil, errors.New("host is missing")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q is not a port number", p)
		}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		return nil, errors.New("must be scheme://host[:port] without path, query or credentials")
	}
	u.Path = ""
	return u, nil
}
