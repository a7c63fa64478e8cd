package exchange

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New to zero fields of Config.
const (
	// DefaultAuthorityHost is the public-cloud Entra host, used when the
	// workload identity webhook injected no AZURE_AUTHORITY_HOST.
	DefaultAuthorityHost = "https://login.microsoftonline.com/"
	// DefaultExchangeTimeout bounds one exchange, the wait for a free slot
	// included.
	DefaultExchangeTimeout = 15 * time.Second
	// DefaultMinRemaining sets the floor: never hand out a token with less
	// than min(DefaultMinRemaining, lifetime/2) left. Clients treat a token
	// with less than 5 minutes left as expired and would ask again at once.
	DefaultMinRemaining = 10 * time.Minute
	// DefaultStaleGrace is how close to expiry a cached token is still served
	// while Entra is failing.
	DefaultStaleGrace = 5 * time.Minute
	// DefaultNegativeTTL is how long a permanent failure is remembered.
	DefaultNegativeTTL = 30 * time.Second
	// DefaultForceRefreshInterval is the minimum time between two forced
	// fetches (bypass_cache, token_sha256_to_refresh) of one identity and
	// resource: 30 s keeps a misbehaving client well below Entra's loop
	// detection (AADSTS50196).
	DefaultForceRefreshInterval = 30 * time.Second
	// DefaultMaxIdentities caps the MSAL clients (one per client id) and the
	// client ids remembered for object/resource id resolution.
	DefaultMaxIdentities = 64
	// DefaultMaxEntries caps the cached tokens.
	DefaultMaxEntries = 1024
	// DefaultMaxConcurrentExchanges caps the Entra exchanges in flight at
	// once. Azure's own IMDS allows 5 concurrent requests per VM; 8 leaves
	// room for background refreshes beside foreground misses.
	DefaultMaxConcurrentExchanges = 8
)

// Identity is one identity configured with --identity: a client id with the
// object id and Azure resource id it is known by, so object_id and
// msi_res_id selectors resolve without a trial exchange.
type Identity struct {
	ClientID   string
	ObjectID   string
	ResourceID string
}

// Config configures a Source. Zero durations and counts, and an empty
// AuthorityHost, take the defaults above; Validate reports what is invalid.
type Config struct {
	// TenantID is AZURE_TENANT_ID (GUID or domain). Required.
	TenantID string
	// AuthorityHost is AZURE_AUTHORITY_HOST, e.g.
	// "https://login.microsoftonline.com/"; the trailing slash is optional.
	// The authority is AuthorityHost + TenantID.
	AuthorityHost string
	// TokenFile is AZURE_FEDERATED_TOKEN_FILE. It is re-read on every
	// exchange because kubelet rotates it. Required.
	TokenFile string
	// DefaultClientID is AZURE_CLIENT_ID, used when a request names no
	// identity. It may be empty.
	DefaultClientID string
	// Identities are the identities configured with --identity.
	Identities []Identity
	// ExchangeTimeout bounds one Entra exchange, the wait for a free slot
	// included. The exchange runs on a context detached from the callers'.
	ExchangeTimeout time.Duration
	// MinRemaining sets the floor: a cached token with less than
	// min(MinRemaining, lifetime/2) left is not handed out.
	MinRemaining time.Duration
	// StaleGrace: while Entra fails, a cached token is served until
	// StaleGrace before its expiry.
	StaleGrace time.Duration
	// NegativeTTL is how long a permanent failure is remembered per
	// (client id, scope).
	NegativeTTL time.Duration
	// ForceRefreshInterval rate-limits forced fetches per (client id, scope).
	ForceRefreshInterval time.Duration
	// MaxIdentities caps the MSAL clients kept (LRU).
	MaxIdentities int
	// MaxEntries caps the cached tokens (LRU).
	MaxEntries int
	// MaxConcurrentExchanges caps the Entra exchanges in flight at once,
	// across all identities and resources, background refreshes included.
	// Further misses wait for a free slot, each bounded by its own context;
	// a whole exchange, waiting included, is bounded by ExchangeTimeout.
	MaxConcurrentExchanges int
}

// Clock tells the time. Tests inject a fake one; Run's timer is real time,
// but every decision it takes, and every due time it computes, reads the
// time from the Clock.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Deps are the collaborators a Source needs; only Registerer is required.
type Deps struct {
	// Logger receives per-exchange lines at V(1) and failures at error
	// level. It never receives a token or an assertion.
	Logger logr.Logger
	// Registerer receives the exchange and cache metrics. Required.
	Registerer prometheus.Registerer
	// HTTPClient carries every call to Entra; nil means MSAL's default.
	HTTPClient *http.Client
	// Clock is the time source; nil means the real clock.
	Clock Clock
}

// withDefaults returns cfg with its zero fields set to their defaults. It
// does not validate: New calls Validate on the result.
func (cfg Config) withDefaults() Config {
	if cfg.AuthorityHost == "" {
		cfg.AuthorityHost = DefaultAuthorityHost
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&cfg.ExchangeTimeout, DefaultExchangeTimeout)
	setDur(&cfg.MinRemaining, DefaultMinRemaining)
	setDur(&cfg.StaleGrace, DefaultStaleGrace)
	setDur(&cfg.NegativeTTL, DefaultNegativeTTL)
	setDur(&cfg.ForceRefreshInterval, DefaultForceRefreshInterval)
	if cfg.MaxIdentities == 0 {
		cfg.MaxIdentities = DefaultMaxIdentities
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxConcurrentExchanges == 0 {
		cfg.MaxConcurrentExchanges = DefaultMaxConcurrentExchanges
	}
	return cfg
}

// authorityURL joins a validated authority host and tenant into the
// authority MSAL is built with.
func authorityURL(host, tenant string) string {
	return strings.TrimSuffix(host, "/") + "/" + tenant
}
