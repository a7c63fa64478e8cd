package exchange

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

// Source produces Entra access tokens for IMDS requests and owns the one
// token cache of the proxy. It decides, per request, whether the cache
// answers or the exchanger asks Entra. It is safe for concurrent use.
type Source struct {
	cfg   Config
	log   logr.Logger
	clock Clock
	tf    *tokenFile
	m     *metrics
	cache *tokenCache
	ids   *identityMemory
	ex    *exchanger
}

// New builds a Source that exchanges through MSAL Go. It applies the
// defaults to cfg, then Validate. It makes no network call; the first Token
// call does.
func New(cfg Config, deps Deps) (*Source, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("exchange config: %w", err)
	}
	s, err := newSource(cfg, deps)
	if err != nil {
		return nil, err
	}
	acq, err := newMSALAcquirer(msalConfig{
		authority:         authorityURL(cfg.AuthorityHost, cfg.TenantID),
		instanceDiscovery: instanceDiscovery(cfg.AuthorityHost),
		httpClient:        deps.HTTPClient,
		maxClients:        cfg.MaxIdentities,
		defaultClientID:   s.cfg.DefaultClientID,
		assertion:         s.tf.read,
	})
	if err != nil {
		return nil, err
	}
	s.ex.acq = acq
	return s, nil
}

// newSource builds everything but the acquirer from a Config with its
// defaults applied; tests set their own acquirer. It normalises the
// default client id once (normalizeID), as every cache key holds it.
func newSource(cfg Config, deps Deps) (*Source, error) {
	if deps.Registerer == nil {
		return nil, errors.New("exchange: a prometheus Registerer is required")
	}
	cfg.DefaultClientID = normalizeID(cfg.DefaultClientID)
	clock := deps.Clock
	if clock == nil {
		clock = realClock{}
	}
	s := &Source{
		cfg:   cfg,
		log:   deps.Logger.WithName("exchange"),
		clock: clock,
		tf:    &tokenFile{path: cfg.TokenFile},
		cache: newTokenCache(cachePolicy{
			minRemaining:         cfg.MinRemaining,
			staleGrace:           cfg.StaleGrace,
			negativeTTL:          cfg.NegativeTTL,
			forceRefreshInterval: cfg.ForceRefreshInterval,
			maxEntries:           cfg.MaxEntries,
		}),
		ids: newIdentityMemory(cfg.MaxIdentities, cfg.MaxEntries),
	}
	s.tf.onChange = s.tokenFileChanged
	m, err := newMetrics(deps.Registerer, s)
	if err != nil {
		return nil, fmt.Errorf("exchange metrics: %w", err)
	}
	s.m = m
	s.ex = &exchanger{
		tf:      s.tf,
		cache:   s.cache,
		ids:     s.ids,
		clock:   clock,
		timeout: cfg.ExchangeTimeout,
		log:     s.log,
		m:       m,

		failures: newFailureLog(s.log, failureLogInterval, cfg.MaxEntries),
	}
	s.ex.flights = newFlightGroup(cfg.MaxConcurrentExchanges, cfg.ExchangeTimeout, m, s.ex.failed)
	return s, nil
}

// Token returns an access token for the request: from the cache when one
// with enough time left is there, else from one Entra exchange shared by
// all concurrent callers for the same identity and resource. ctx bounds
// only this caller's wait. Errors are *Error.
func (s *Source) Token(ctx context.Context, req Request) (Token, error) {
	scope := scopeFor(req.Resource)
	switch req.Identity.Kind {
	case SelectDefault:
		if s.cfg.DefaultClientID == "" {
			return Token{}, &Error{Reason: ReasonIdentityNotFound,
				Detail: "no default identity is configured: AZURE_CLIENT_ID is not set; annotate the service account with azure.workload.identity/client-id or name an identity in the request"}
		}
		return s.token(ctx, s.cfg.DefaultClientID, scope, req, false)
	case SelectClientID:
		if strings.TrimSpace(req.Identity.Value) == "" {
			return Token{}, &Error{Reason: ReasonIdentityNotFound, Detail: "empty client id"}
		}
		return s.token(ctx, normalizeID(req.Identity.Value), scope, req, false)
	case SelectObjectID, SelectResourceID:
		return s.resolveAndToken(ctx, req, scope)
	default:
		return Token{}, &Error{Reason: ReasonIdentityNotFound, Detail: fmt.Sprintf("unsupported identity selector %s", req.Identity.Kind)}
	}
}

// token serves (clientID, scope) from the cache or an exchange. A trial
// lookup (resolving an object or resource id) does not count as handing the
// token out: only the identity that matches is marked as in use, so tokens
// of the identities tried in vain are not refreshed ahead.
func (s *Source) token(ctx context.Context, clientID, scope string, req Request, trial bool) (Token, error) {
	k := cacheKey{tenant: s.cfg.TenantID, clientID: clientID, scope: scope}
	r := s.cache.lookup(k, req, s.clock.Now(), !trial)
	if r.forceRefused {
		s.log.V(1).Info("forced refresh rate-limited; serving the newest token", "clientID", clientID, "scope", scope)
	}
	switch r.kind {
	case lookupHit:
		s.m.hit.Inc()
		return r.tok, nil
	case lookupStale:
		s.m.stale.Inc()
		return r.tok, nil
	case lookupNegative:
		// A new projected token may match a federation the old one did
		// not: a change of the file clears the remembered failures
		// (tokenFileChanged) and this request asks Entra again.
		if r.err.Reason == ReasonThrottled || !s.tf.changed() {
			s.m.negative.Inc()
			return Token{}, r.err
		}
	}
	// A miss, a forced refresh, or a failure forgotten with the old token
	// file: ask Entra.
	if r.forced {
		s.m.forced.Inc()
	} else {
		s.m.miss.Inc()
	}
	return s.exchange(ctx, k, r.seen, trial)
}

// exchange fetches a token for k. When Entra fails, the cached token is
// served while it is inside the stale grace; a definitive answer (the app
// or its federation is gone, the resource is invalid) is not an outage and
// is passed on.
func (s *Source) exchange(ctx context.Context, k cacheKey, seen uint64, trial bool) (Token, error) {
	tok, xerr := s.ex.fetch(ctx, k, seen)
	if xerr == nil {
		if !trial {
			s.cache.markServed(k, tok.AccessToken, s.clock.Now())
		}
		return tok, nil
	}
	if !permanent(xerr) {
		if tok, ok := s.cache.serveStale(k, s.clock.Now(), !trial); ok {
			s.m.stale.Inc()
			s.log.V(1).Info("serving a cached token while Entra fails", "clientID", k.clientID, "scope", k.scope,
				"reason", xerr.Reason.String(), "expiresOn", tok.ExpiresOn)
			return tok, nil
		}
	}
	return Token{}, xerr
}

// prewarmer is implemented by acquirers that can prepare an identity's
// exchange without requesting a token.
type prewarmer interface {
	prewarm(ctx context.Context, clientID string) error
}

// Prewarm prepares the default identity's first exchange without requesting
// a token: it builds the identity's MSAL client and runs tenant discovery,
// which also opens the TLS connection to the authority host. The first token
// request then pays only the token POST. It does nothing without a default
// client id. It makes network calls: call it after the proxy listens, in
// the background, bounded by ctx. A failure only means the first exchange
// does the work itself (and reports any error then).
func (s *Source) Prewarm(ctx context.Context) error {
	p, ok := s.ex.acq.(prewarmer)
	if !ok || s.cfg.DefaultClientID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ExchangeTimeout)
	defer cancel()
	return p.prewarm(ctx, s.cfg.DefaultClientID)
}

// normalizeID lower-cases a client id: Entra application ids are GUIDs,
// which compare case-insensitively, and one cache entry per identity is
// the point.
func normalizeID(id string) string { return strings.ToLower(strings.TrimSpace(id)) }

// tokenFileChanged runs when the projected token file's content changes.
func (s *Source) tokenFileChanged() {
	n := s.cache.clearNegative()
	s.log.Info("projected service account token changed", "clearedNegativeEntries", n, "token", s.tf.claims().String())
}

func (s *Source) cacheLen() int { return s.cache.len() }

// SoonestExpiry returns the time left until the soonest-expiring cached
// token expires (negative once it has), and false when nothing is cached.
// It feeds the imds_proxy_token_soonest_expiry_seconds gauge.
func (s *Source) SoonestExpiry() (time.Duration, bool) {
	return s.cache.soonestExpiry(s.clock.Now())
}
