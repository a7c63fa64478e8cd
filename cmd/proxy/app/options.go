package app

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/imds-proxy/imds-proxy/internal/cli"
	"github.com/imds-proxy/imds-proxy/pkg/exchange"
	"github.com/imds-proxy/imds-proxy/pkg/imds"
)

// DefaultProxyPort is the webhook's default sidecar port, which proxy-init
// must redirect to as well.
const DefaultProxyPort = 8000

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

	ExchangeTimeout        time.Duration
	MinRemaining           time.Duration
	StaleGrace             time.Duration
	NegativeTTL            time.Duration
	ForceRefreshInterval   time.Duration
	MaxIdentities          int
	MaxEntries             int
	MaxConcurrentExchanges int
	MaxConnections         int

	WarmupResource string
	ExemptUID      int

	// IdentityHeader is the App Service endpoint's secret, from the
	// environment variable IDENTITY_HEADER only (cli.Env.Secret).
	IdentityHeader     string
	IdentityHeaderFile string
}

// identityHeaderVar is the variable the App Service endpoint's secret comes
// from: the one the app is given too, so that one Kubernetes Secret feeds
// both containers.
const identityHeaderVar = "IDENTITY_HEADER"

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		ProxyPort:              DefaultProxyPort,
		AuthorityHost:          exchange.DefaultAuthorityHost,
		Upstream:               imds.DefaultUpstream,
		InstanceMetadata:       string(imds.InstanceMetadataPassthrough),
		ShutdownDelay:          imds.DefaultShutdownDelay,
		DrainTimeout:           imds.DefaultDrainTimeout,
		PassthroughTimeout:     imds.DefaultPassthroughTimeout,
		ExchangeTimeout:        exchange.DefaultExchangeTimeout,
		MinRemaining:           exchange.DefaultMinRemaining,
		StaleGrace:             exchange.DefaultStaleGrace,
		NegativeTTL:            exchange.DefaultNegativeTTL,
		ForceRefreshInterval:   exchange.DefaultForceRefreshInterval,
		MaxIdentities:          exchange.DefaultMaxIdentities,
		MaxEntries:             exchange.DefaultMaxEntries,
		MaxConcurrentExchanges: exchange.DefaultMaxConcurrentExchanges,
		MaxConnections:         imds.DefaultMaxConnections,
		ExemptUID:              imds.DefaultExemptUID,
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
	fs.IntVar(&o.MaxConcurrentExchanges, "max-concurrent-exchanges", o.MaxConcurrentExchanges,
		"Most Entra token exchanges in flight at once, across identities and resources; further misses wait for a slot within their exchange timeout")
	env.Bind("max-concurrent-exchanges", "IMDS_PROXY_MAX_CONCURRENT_EXCHANGES")
	fs.IntVar(&o.MaxConnections, "max-connections", o.MaxConnections,
		"Most open connections on the loopback listener; further ones wait in the kernel's accept queue")
	env.Bind("max-connections", "IMDS_PROXY_MAX_CONNECTIONS")
	fs.StringVar(&o.WarmupResource, "warmup-resource", o.WarmupResource,
		"Resource of the --probe warm-up request; empty means the Resource Manager endpoint of the authority host's cloud")
	env.Bind("warmup-resource", "IMDS_PROXY_WARMUP_RESOURCE")
	fs.IntVar(&o.ExemptUID, "exempt-uid", o.ExemptUID, "UID that proxy-init exempts from the redirect; the proxy warns when it runs as another UID")
	env.Bind("exempt-uid", "PROXY_UID")
	fs.StringVar(&o.IdentityHeaderFile, "identity-header-file", o.IdentityHeaderFile,
		"File holding the secret of the App Service endpoint /msi/token, read once at start; the secret may instead come from env "+identityHeaderVar+
			" (never a flag). Without either the endpoint is off")
	env.Bind("identity-header-file", "IMDS_PROXY_IDENTITY_HEADER_FILE")
	env.Secret(identityHeaderVar, &o.IdentityHeader)
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
	// IdentityHeaderFile is the file Run reads IMDS.IdentityHeader from,
	// when the secret does not come from IDENTITY_HEADER.
	IdentityHeaderFile string
	// IdentityHeaderSource names where the App Service endpoint's secret
	// comes from, for the start-up log and errors: "IDENTITY_HEADER",
	// the file option with its path, or "" when the endpoint is off.
	IdentityHeaderSource string
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
// the package configurations. It does no I/O. sources says which options
// came from the environment, so each problem names the variable or the flag
// its value came from. All problems are reported in one error, one line.
//
// The rules live where the values are used: Validate translates, then asks
// imds.Config.Validate and exchange.Config.Validate, and checks here only
// what no package sees (the listen addresses, the --identity syntax) and
// the zero values the packages would read as "use the default".
func (o *Options) Validate(sources cli.Sources) (*Config, error) {
	var errs []string
	invalid := func(flag string, value any, reason string) {
		errs = append(errs, invalidOption(sources, flag, fmt.Sprint(value), reason))
	}

	if o.ProxyPort < 0 || o.ProxyPort > 65535 {
		invalid("proxy-port", o.ProxyPort, "not a port number")
	}
	if o.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(o.MetricsAddr); err != nil || port == "" {
			invalid("metrics-addr", o.MetricsAddr, "not host:port")
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"drain-timeout", o.DrainTimeout},
		{"passthrough-timeout", o.PassthroughTimeout},
		{"exchange-timeout", o.ExchangeTimeout},
		{"min-remaining", o.MinRemaining},
		{"stale-grace", o.StaleGrace},
		{"negative-ttl", o.NegativeTTL},
		{"force-refresh-interval", o.ForceRefreshInterval},
	} {
		if d.v == 0 {
			invalid(d.flag, d.v, "must be positive")
		}
	}
	for _, c := range []struct {
		flag string
		v    int
	}{
		{"max-identities", o.MaxIdentities},
		{"max-entries", o.MaxEntries},
		{"max-concurrent-exchanges", o.MaxConcurrentExchanges},
		{"max-connections", o.MaxConnections},
	} {
		if c.v == 0 {
			invalid(c.flag, c.v, "must be at least 1")
		}
	}
	ids := make([]exchange.Identity, 0, len(o.Identities))
	for _, s := range o.Identities {
		id, err := ParseIdentity(s)
		if err != nil {
			invalid("identity", s, err.Error())
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		ids = nil
	}

	// The secret comes from one place: two would leave the reader
	// guessing which one the apps were given.
	headerSource := ""
	switch {
	case o.IdentityHeader != "" && o.IdentityHeaderFile != "":
		errs = append(errs, fmt.Sprintf("%s and %s are both set: give the App Service endpoint's secret in one of them",
			identityHeaderVar, sources.Name("identity-header-file")))
	case o.IdentityHeader != "":
		headerSource = identityHeaderVar
	case o.IdentityHeaderFile != "":
		headerSource = sources.Name("identity-header-file") + " " + o.IdentityHeaderFile
	}

	tenant := strings.TrimSpace(o.TenantID)
	cfg := &Config{
		ListenAddr:           net.JoinHostPort("127.0.0.1", fmt.Sprint(o.ProxyPort)),
		MetricsAddr:          o.MetricsAddr,
		ExemptUID:            o.ExemptUID,
		IdentityHeaderFile:   o.IdentityHeaderFile,
		IdentityHeaderSource: headerSource,
		IMDS: imds.Config{
			TenantID:           tenant,
			Upstream:           o.Upstream,
			InstanceMetadata:   imds.InstanceMetadataMode(o.InstanceMetadata),
			PassthroughTimeout: o.PassthroughTimeout,
			ShutdownDelay:      o.ShutdownDelay,
			DrainTimeout:       o.DrainTimeout,
			MaxConnections:     o.MaxConnections,
			ExemptUID:          o.ExemptUID,
			IdentityHeader:     imds.IdentityHeader(o.IdentityHeader),
		},
		Exchange: exchange.Config{
			TenantID:               tenant,
			AuthorityHost:          o.AuthorityHost,
			TokenFile:              o.TokenFile,
			DefaultClientID:        strings.TrimSpace(o.ClientID),
			Identities:             ids,
			ExchangeTimeout:        o.ExchangeTimeout,
			MinRemaining:           o.MinRemaining,
			StaleGrace:             o.StaleGrace,
			NegativeTTL:            o.NegativeTTL,
			ForceRefreshInterval:   o.ForceRefreshInterval,
			MaxIdentities:          o.MaxIdentities,
			MaxEntries:             o.MaxEntries,
			MaxConcurrentExchanges: o.MaxConcurrentExchanges,
		},
	}
	// The tenant is checked by both packages with one rule: report it once.
	reported := map[string]bool{}
	for _, err := range []error{cfg.IMDS.Validate(), cfg.Exchange.Validate()} {
		for _, fe := range fieldErrors(err) {
			flag := flagOfField(fe.Field)
			if reported[flag] {
				continue
			}
			reported[flag] = true
			errs = append(errs, describeFieldError(sources, flag, fe))
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return cfg, nil
}

// fieldErrors lists the *exchange.FieldError values err joins (both
// packages report their problems as that type).
func fieldErrors(err error) []*exchange.FieldError {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []*exchange.FieldError
	for _, e := range errs {
		var fe *exchange.FieldError
		if errors.As(e, &fe) {
			out = append(out, fe)
		} else {
			out = append(out, &exchange.FieldError{Field: "?", Err: e})
		}
	}
	return out
}

// flagOfField names the option a field of imds.Config or exchange.Config
// is set from. Fields of the same name in both packages come from the same
// option.
func flagOfField(field string) string {
	if strings.HasPrefix(field, "Identities[") {
		return "identity"
	}
	switch field {
	case "TenantID":
		return "tenant-id"
	case "TokenFile":
		return "federated-token-file"
	case "DefaultClientID":
		return "client-id"
	case "AuthorityHost":
		return "authority-host"
	case "Upstream":
		return "upstream"
	case "InstanceMetadata":
		return "instance-metadata"
	case "ExemptUID":
		return "exempt-uid"
	case "IdentityHeader":
		// The secret has no flag; describeFieldError names its variable.
		return identityHeaderVar
	default:
		// PassthroughTimeout -> passthrough-timeout, and so on.
		var b strings.Builder
		for i, r := range field {
			if 'A' <= r && r <= 'Z' {
				if i > 0 {
					b.WriteByte('-')
				}
				r += 'a' - 'A'
			}
			b.WriteRune(r)
		}
		return b.String()
	}
}

// describeFieldError words one problem a package found. A missing tenant
// or token file gets the hint that the workload identity webhook sets them:
// that is where a user looks first. A problem with the App Service
// endpoint's secret names its variable and never the value.
func describeFieldError(sources cli.Sources, flag string, fe *exchange.FieldError) string {
	if flag == identityHeaderVar {
		// Never the value: it is a secret.
		return "invalid " + identityHeaderVar + " (the App Service endpoint's secret): " + fe.Err.Error()
	}
	if fe.Value == "" || strings.TrimSpace(fe.Value) == "" {
		switch flag {
		case "tenant-id":
			return "AZURE_TENANT_ID (--tenant-id) is not set: the workload identity webhook injects it into pods whose service account is labelled azure.workload.identity/use"
		case "federated-token-file":
			return "AZURE_FEDERATED_TOKEN_FILE (--federated-token-file) is not set: the workload identity webhook injects it with the projected service account token volume"
		}
	}
	return invalidOption(sources, flag, fe.Value, fe.Err.Error())
}

// invalidOption words one invalid value as the environment fallbacks do
// (internal/cli): `invalid AZURE_TENANT_ID "a/b" (--tenant-id): reason` for
// a value from the environment, `invalid --tenant-id "a/b": reason` for one
// from the command line or the defaults.
func invalidOption(sources cli.Sources, flag, value, reason string) string {
	if name := sources.Name(flag); name != "--"+flag {
		return fmt.Sprintf("invalid %s %q (--%s): %s", name, value, flag, reason)
	}
	return fmt.Sprintf("invalid --%s %q: %s", flag, value, reason)
}

// ProbeConfig translates the options of --probe. Only the port must be
// valid; no AZURE_* variable is required.
func (o *Options) ProbeConfig() (*ProbeConfig, error) {
	if o.ProxyPort < 1 || o.ProxyPort > 65535 {
		return nil, errors.New(invalidOption(nil, "proxy-port", fmt.Sprint(o.ProxyPort), "not a port number"))
	}
	resource := o.WarmupResource
	if resource == "" {
		// An unknown host (a private cloud, an emulator) gets the public
		// cloud's endpoint: an invalid_resource answer still proves that the
		// federation works, and --warmup-resource overrides it.
		resource, _ = exchange.ResourceManagerFor(o.AuthorityHost)
	}
	return &ProbeConfig{
		BaseURL:  "http://" + net.JoinHostPort("127.0.0.1", fmt.Sprint(o.ProxyPort)),
		ClientID: strings.TrimSpace(o.ClientID),
		Resource: resource,
		Strict:   o.ProbeStrict,
	}, nil
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
