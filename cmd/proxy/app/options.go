package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/imds-proxy/imds-proxy/internal/cli"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// Defaults that both the proxy and proxy-init must agree on.
const (
	// DefaultProxyPort is the webhook's default sidecar port.
	DefaultProxyPort = 8000
	// DefaultExemptUID is the UID of the proxy image (USER 1501:1501) that
	// proxy-init exempts from the redirect.
	DefaultExemptUID = 1501
)

// Options are the proxy's flags. Every option except the mode switches
// falls back to an environment variable, named in --help.
type Options struct {
	ProxyPort   int
	LogLevel    string
	Probe       bool
	ProbeStrict bool
	Version     bool

	TenantID      string
	TokenFile     string
	AuthorityHost string
	ClientID      string
	Identities    []string

	Upstream           string
	InstanceMetadata   string
	MetricsAddr        string
	ShutdownDelay      time.Duration
	DrainTimeout       time.Duration
	PassthroughTimeout time.Duration

	ExchangeTimeout      time.Duration
	MinRemaining         time.Duration
	StaleGrace           time.Duration
	NegativeTTL          time.Duration
	ForceRefreshInterval time.Duration
	MaxIdentities        int
	MaxEntries           int

	WarmupResource string
	ExemptUID      int
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		ProxyPort:            DefaultProxyPort,
		AuthorityHost:        exchange.DefaultAuthorityHost,
		Upstream:             imds.DefaultUpstream,
		InstanceMetadata:     string(imds.InstanceMetadataPassthrough),
		ShutdownDelay:        imds.DefaultShutdownDelay,
		DrainTimeout:         imds.DefaultDrainTimeout,
		PassthroughTimeout:   imds.DefaultPassthroughTimeout,
		ExchangeTimeout:      exchange.DefaultExchangeTimeout,
		MinRemaining:         exchange.DefaultMinRemaining,
		StaleGrace:           exchange.DefaultStaleGrace,
		NegativeTTL:          exchange.DefaultNegativeTTL,
		ForceRefreshInterval: exchange.DefaultForceRefreshInterval,
		MaxIdentities:        exchange.DefaultMaxIdentities,
		MaxEntries:           exchange.DefaultMaxEntries,
		ExemptUID:            DefaultExemptUID,
	}
}

// addFlags registers the flags on fs and returns their environment
// fallbacks.
func (o *Options) addFlags(fs *pflag.FlagSet) *cli.Env {
	env := cli.NewEnv(fs)
	// The options the workload identity webhook passes: the sidecar gets
	// --proxy-port=N --log-level=L, its postStart hook adds --probe.
	fs.IntVar(&o.ProxyPort, "proxy-port", o.ProxyPort, "Port of the loopback listener (127.0.0.1 only); 0 picks a free port")
	env.Bind("proxy-port", "PROXY_PORT")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, `Log level: "" (warnings and errors), info, debug (one line per request), trace, all; unknown values warn and mean info`)
	env.Bind("log-level", "IMDS_PROXY_LOG_LEVEL")
	fs.BoolVar(&o.Probe, "probe", false, "Act as the postStart hook: wait for the running proxy's /readyz (up to 30s), then warm its cache with one token request (up to 10s); exits 0 even if the warm-up fails")
	fs.BoolVar(&o.ProbeStrict, "probe-strict", false, "With --probe, exit non-zero when the warm-up fails")
	fs.BoolVar(&o.Version, "version", false, "Print the version and exit")

	// The webhook's environment.
	fs.StringVar(&o.TenantID, "tenant-id", o.TenantID, "Microsoft Entra tenant of the pod's identities (required)")
	env.Bind("tenant-id", "AZURE_TENANT_ID")
	fs.StringVar(&o.TokenFile, "federated-token-file", o.TokenFile, "Projected service account token exchanged for Entra tokens (required)")
	env.Bind("federated-token-file", "AZURE_FEDERATED_TOKEN_FILE")
	fs.StringVar(&o.AuthorityHost, "authority-host", o.AuthorityHost, "Microsoft Entra authority host")
	env.Bind("authority-host", "AZURE_AUTHORITY_HOST")
	fs.StringVar(&o.ClientID, "client-id", o.ClientID, "Client id of the default identity, used when a request names none; without it such requests get 400 Identity not found")
	env.Bind("client-id", "AZURE_CLIENT_ID")

	// Ours.
	fs.StringArrayVar(&o.Identities, "identity", o.Identities,
		"Identity the pod may ask for by object_id or msi_res_id, repeatable: CLIENT_ID[,OBJECT_ID[,RESOURCE_ID]] or client_id=...,object_id=...,resource_id=...; the env form separates identities with ';' or blanks")
	env.BindList("identity", "IMDS_PROXY_IDENTITIES", splitIdentities)
	fs.StringVar(&o.Upstream, "upstream", o.Upstream, "Real instance metadata service for the passthrough categories")
	env.Bind("upstream", "IMDS_PROXY_UPSTREAM")
	fs.StringVar(&o.InstanceMetadata, "instance-metadata", o.InstanceMetadata,
		"What to do with /metadata/{instance,versions,attested,scheduledevents,loadbalancer}: passthrough or block (403)")
	env.Bind("instance-metadata", "IMDS_PROXY_INSTANCE_METADATA")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "Extra listener serving only /metrics, e.g. :9090 for scraping from outside the pod; empty disables it (/metrics is always on the loopback listener)")
	env.Bind("metrics-addr", "IMDS_PROXY_METRICS_ADDR")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "How long to keep serving after SIGTERM before draining")
	env.Bind("shutdown-delay", "IMDS_PROXY_SHUTDOWN_DELAY")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "How long to wait for in-flight requests after the shutdown delay")
	env.Bind("drain-timeout", "IMDS_PROXY_DRAIN_TIMEOUT")
	fs.DurationVar(&o.PassthroughTimeout, "passthrough-timeout", o.PassthroughTimeout, "Timeout of a request forwarded to the real instance metadata service")
	env.Bind("passthrough-timeout", "IMDS_PROXY_PASSTHROUGH_TIMEOUT")
	fs.DurationVar(&o.ExchangeTimeout, "exchange-timeout", o.ExchangeTimeout, "Timeout of one Entra token exchange")
	env.Bind("exchange-timeout", "IMDS_PROXY_EXCHANGE_TIMEOUT")
	fs.DurationVar(&o.MinRemaining, "min-remaining", o.MinRemaining, "Never hand out a cached token with less than min(this, lifetime/2) left")
	env.Bind("min-remaining", "IMDS_PROXY_MIN_REMAINING")
	fs.DurationVar(&o.StaleGrace, "stale-grace", o.StaleGrace, "While Entra fails, serve a cached token until this long before its expiry")
	env.Bind("stale-grace", "IMDS_PROXY_STALE_GRACE")
	fs.DurationVar(&o.NegativeTTL, "negative-ttl", o.NegativeTTL, "How long a permanent Entra failure (unknown identity, invalid resource) is remembered")
	env.Bind("negative-ttl", "IMDS_PROXY_NEGATIVE_TTL")
	fs.DurationVar(&o.ForceRefreshInterval, "force-refresh-interval", o.ForceRefreshInterval, "Minimum time between two forced fetches (bypass_cache, token_sha256_to_refresh) of one identity and resource")
	env.Bind("force-refresh-interval", "IMDS_PROXY_FORCE_REFRESH_INTERVAL")
	fs.IntVar(&o.MaxIdentities, "max-identities", o.MaxIdentities, "Most identities (MSAL clients) kept")
	env.Bind("max-identities", "IMDS_PROXY_MAX_IDENTITIES")
	fs.IntVar(&o.MaxEntries, "max-entries", o.MaxEntries, "Most tokens cached")
	env.Bind("max-entries", "IMDS_PROXY_MAX_ENTRIES")
	fs.StringVar(&o.WarmupResource, "warmup-resource", o.WarmupResource,
		"Resource of the --probe warm-up request; empty means the Resource Manager endpoint of the authority host's cloud")
	env.Bind("warmup-resource", "IMDS_PROXY_WARMUP_RESOURCE")
	fs.IntVar(&o.ExemptUID, "exempt-uid", o.ExemptUID, "UID that proxy-init exempts from the redirect; the proxy warns when it runs as another UID")
	env.Bind("exempt-uid", "PROXY_UID")
	return env
}

// splitIdentities cuts IMDS_PROXY_IDENTITIES into --identity values: they
// are separated by ';' or blanks (a resource id holds neither).
func splitIdentities(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' || r == '\n' || r == '\t' })
}

// Config is everything the proxy needs, translated from Options.
type Config struct {
	// ListenAddr is the loopback listener, always 127.0.0.1:<port>.
	ListenAddr string
	// MetricsAddr is the optional metrics-only listener.
	MetricsAddr string
	IMDS        imds.Config
	Exchange    exchange.Config
	// ExemptUID is the UID proxy-init exempts.
	ExemptUID int
}

// ProbeConfig is what --probe needs; it needs no AZURE_* variable but the
// client id (to decide on the warm-up).
type ProbeConfig struct {
	// BaseURL is the running proxy, http://127.0.0.1:<port>.
	BaseURL string
	// ClientID is the default identity; empty skips the warm-up.
	ClientID string
	// Resource is the warm-up resource.
	Resource string
	// Strict makes a failed warm-up an error.
	Strict bool
}

// Validate checks the options of the serving mode and translates them into
// the package configurations. It does no I/O. All problems are reported in
// one error, one line.
func (o *Options) Validate() (*Config, error) {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if o.ProxyPort < 0 || o.ProxyPort > 65535 {
		add("--proxy-port (PROXY_PORT) %d is not a port number", o.ProxyPort)
	}
	if strings.TrimSpace(o.TenantID) == "" {
		add("AZURE_TENANT_ID (--tenant-id) is not set: the workload identity webhook injects it into pods whose service account is labelled azure.workload.identity/use")
	}
	if strings.TrimSpace(o.TokenFile) == "" {
		add("AZURE_FEDERATED_TOKEN_FILE (--federated-token-file) is not set: the workload identity webhook injects it with the projected service account token volume")
	}
	if err := checkHTTPSURL(o.AuthorityHost); err != nil {
		add("AZURE_AUTHORITY_HOST (--authority-host) %q %v", o.AuthorityHost, err)
	}
	if _, err := imds.ParseUpstream(o.Upstream); err != nil {
		add("--upstream (IMDS_PROXY_UPSTREAM): %v", err)
	}
	mode := imds.InstanceMetadataMode(o.InstanceMetadata)
	if mode != imds.InstanceMetadataPassthrough && mode != imds.InstanceMetadataBlock {
		add("--instance-metadata (IMDS_PROXY_INSTANCE_METADATA) %q is neither passthrough nor block", o.InstanceMetadata)
	}
	if o.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(o.MetricsAddr); err != nil || port == "" {
			add("--metrics-addr (IMDS_PROXY_METRICS_ADDR) %q is not host:port", o.MetricsAddr)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		zero bool
	}{
		{"--shutdown-delay", o.ShutdownDelay, true},
		{"--drain-timeout", o.DrainTimeout, false},
		{"--passthrough-timeout", o.PassthroughTimeout, false},
		{"--exchange-timeout", o.ExchangeTimeout, false},
		{"--min-remaining", o.MinRemaining, false},
		{"--stale-grace", o.StaleGrace, false},
		{"--negative-ttl", o.NegativeTTL, false},
		{"--force-refresh-interval", o.ForceRefreshInterval, false},
	} {
		if d.v < 0 || (d.v == 0 && !d.zero) {
			add("%s %v must be positive", d.name, d.v)
		}
	}
	if o.MaxIdentities < 1 {
		add("--max-identities %d must be at least 1", o.MaxIdentities)
	}
	if o.MaxEntries < 1 {
		add("--max-entries %d must be at least 1", o.MaxEntries)
	}
	if o.ExemptUID < 0 {
		add("--exempt-uid (PROXY_UID) %d is not a UID", o.ExemptUID)
	}
	ids := make([]exchange.Identity, 0, len(o.Identities))
	for _, s := range o.Identities {
		id, err := ParseIdentity(s)
		if err != nil {
			add("--identity (IMDS_PROXY_IDENTITIES) %q: %v", s, err)
			continue
		}
		ids = append(ids, id)
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	if len(ids) == 0 {
		ids = nil
	}
	tenant := strings.TrimSpace(o.TenantID)
	return &Config{
		ListenAddr:  net.JoinHostPort("127.0.0.1", fmt.Sprint(o.ProxyPort)),
		MetricsAddr: o.MetricsAddr,
		ExemptUID:   o.ExemptUID,
		IMDS: imds.Config{
			TenantID:           tenant,
			Upstream:           o.Upstream,
			InstanceMetadata:   mode,
			PassthroughTimeout: o.PassthroughTimeout,
			ShutdownDelay:      o.ShutdownDelay,
			DrainTimeout:       o.DrainTimeout,
		},
		Exchange: exchange.Config{
			TenantID:             tenant,
			AuthorityHost:        o.AuthorityHost,
			TokenFile:            o.TokenFile,
			DefaultClientID:      strings.TrimSpace(o.ClientID),
			Identities:           ids,
			ExchangeTimeout:      o.ExchangeTimeout,
			MinRemaining:         o.MinRemaining,
			StaleGrace:           o.StaleGrace,
			NegativeTTL:          o.NegativeTTL,
			ForceRefreshInterval: o.ForceRefreshInterval,
			MaxIdentities:        o.MaxIdentities,
			MaxEntries:           o.MaxEntries,
		},
	}, nil
}

// ProbeConfig translates the options of --probe. Only the port must be
// valid; no AZURE_* variable is required.
func (o *Options) ProbeConfig() (*ProbeConfig, error) {
	if o.ProxyPort < 1 || o.ProxyPort > 65535 {
		return nil, fmt.Errorf("--proxy-port (PROXY_PORT) %d is not a port number", o.ProxyPort)
	}
	resource := o.WarmupResource
	if resource == "" {
		resource = WarmupResource(o.AuthorityHost)
	}
	return &ProbeConfig{
		BaseURL:  "http://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(o.ProxyPort)),
		ClientID: strings.TrimSpace(o.ClientID),
		Resource: resource,
		Strict:   o.ProbeStrict,
	}, nil
}

func checkHTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return errors.New("is not an https URL")
	}
	return nil
}

// ParseIdentity parses one --identity value. Two forms are accepted:
// positional "CLIENT_ID[,OBJECT_ID[,RESOURCE_ID]]" (empty fields allowed,
// e.g. "cid,,/subscriptions/...") and keyed
// "client_id=...,object_id=...,resource_id=..." with the aliases
// principal_id, msi_res_id and mi_res_id. Azure resource ids contain no
// commas, so the comma is a safe separator.
func ParseIdentity(s string) (exchange.Identity, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return exchange.Identity{}, errors.New("empty identity")
	}
	fields := strings.Split(s, ",")
	var id exchange.Identity
	if strings.Contains(s, "=") {
		for _, f := range fields {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				return exchange.Identity{}, fmt.Errorf("field %q is not key=value", f)
			}
			v = strings.TrimSpace(v)
			var dst *string
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "client_id", "clientid":
				dst = &id.ClientID
			case "object_id", "objectid", "principal_id":
				dst = &id.ObjectID
			case "resource_id", "resourceid", "msi_res_id", "mi_res_id":
				dst = &id.ResourceID
			default:
				return exchange.Identity{}, fmt.Errorf("unknown key %q (want client_id, object_id, resource_id)", k)
			}
			if *dst != "" {
				return exchange.Identity{}, fmt.Errorf("key %q given twice", k)
			}
			*dst = v
		}
	} else {
		if len(fields) > 3 {
			return exchange.Identity{}, errors.New("more than three fields (CLIENT_ID,OBJECT_ID,RESOURCE_ID)")
		}
		dsts := []*string{&id.ClientID, &id.ObjectID, &id.ResourceID}
		for i, f := range fields {
			*dsts[i] = strings.TrimSpace(f)
		}
	}
	if id.ClientID == "" {
		return exchange.Identity{}, errors.New("client id is missing")
	}
	if id.ResourceID != "" && !strings.HasPrefix(strings.ToLower(id.ResourceID), "/subscriptions/") {
		return exchange.Identity{}, fmt.Errorf("resource id %q does not start with /subscriptions/", id.ResourceID)
	}
	return id, nil
}

// WarmupResource returns the Resource Manager endpoint of the cloud an
// authority host belongs to: the --probe warm-up asks for a token for it,
// which every identity may request. Unknown hosts (private clouds, test
// emulators) get the public cloud's endpoint; an invalid_resource answer
// still proves the federation works, and --warmup-resource overrides it.
func WarmupResource(authorityHost string) string {
	u, err := url.Parse(authorityHost)
	if err != nil {
		return "https://management.azure.com/"
	}
	switch strings.ToLower(u.Hostname()) {
	case "login.microsoftonline.us", "login-us.microsoftonline.com", "login.usgovcloudapi.net":
		return "https://management.usgovcloudapi.net/"
	case "login.chinacloudapi.cn", "login.partner.microsoftonline.cn":
		return "https://management.chinacloudapi.cn/"
	default:
		return "https://management.azure.com/"
	}
}
