package exchange

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// staleRetryInterval is how long, after a failed exchange, requests for a
// key whose cached token is still inside the stale grace are answered from
// the cache without asking Entra again. Without it every request during an
// outage would wait for a failing (possibly timing out) exchange first.
const staleRetryInterval = 10 * time.Second

// refreshRetryInterval spaces background refresh attempts for one key after
// a failure, so an Entra outage does not turn every tick into a burst.
const refreshRetryInterval = 30 * time.Second

// refreshConcurrency bounds the refresh-ahead exchanges one tick runs at once.
const refreshConcurrency = 4

// acquired is one token as Entra issued it, before the cache reads its
// claims.
type acquired struct {
	AccessToken string
	// ExpiresOn is MSAL's expiry (now + expires_in); the JWT exp wins.
	ExpiresOn time.Time
	// ExtExpiresIn is zero: MSAL Go v1.10.1 does not expose ext_expires_in
	// in AuthResult.
	ExtExpiresIn time.Duration
}

// acquirer performs one Entra exchange for (client id, scope). The MSAL
// implementation is msalAcquirer; tests use fakes. Errors are *Error (token
// file), *upstreamError (an Entra HTTP answer) or anything else (network).
type acquirer interface {
	acquire(ctx context.Context, clientID, scope string) (acquired, error)
}

// cacheKey is (tenant, client id, scope), SPEC §4. The tenant is fixed per
// Source but kept in the key to make that explicit.
type cacheKey struct {
	tenant, clientID, scope string
}

func (k cacheKey) flightKey() string { return k.clientID + "\x00" + k.scope }

// entry is one cached token.
type entry struct {
	key cacheKey
	tok Token
	sum [sha256.Size]byte
	// seq identifies the fetch that produced tok (Source.seq).
	seq uint64
	// fetchedAt is when the token was obtained, lifetime its expiry minus
	// fetchedAt.
	fetchedAt time.Time
	lifetime  time.Duration
	// lastUsed is when the token was last handed out (or fetched).
	lastUsed time.Time
	// served is true when the token was handed out since it was fetched;
	// only such entries are refreshed ahead. The request that caused a
	// foreground fetch counts (it was handed the token); a background
	// refresh resets it.
	served bool
	// lastForced is when a forced fetch was last granted for this key.
	lastForced time.Time
	// lastFailure is when an exchange for this key last failed.
	lastFailure time.Time
	// refreshing is set while a background refresh runs; nextRefresh delays
	// the next one after a failure.
	refreshing  bool
	nextRefresh time.Time
	elem        *list.Element
}

// negativeEntry remembers a failure for a key: a permanent one for
// NegativeTTL, a throttling answer for its Retry-After.
type negativeEntry struct {
	err   *Error
	until time.Time
}

// selectorKey is an object id or resource id selector, lower-cased.
type selectorKey struct {
	kind  SelectorKind
	value string
}

// Source produces Entra access tokens for IMDS requests and owns the one
// token cache of the proxy. It is safe for concurrent use.
type Source struct {
	cfg   Config
	log   logr.Logger
	clock Clock
	acq   acquirer
	tf    *tokenFile
	m     *metrics
	sf    singleflight.Group

	mu       sync.Mutex
	entries  map[cacheKey]*entry
	lru      *list.List // of *entry, most recently used first
	negative map[cacheKey]negativeEntry
	resolved map[selectorKey]string
	seen     []string // client ids that produced a token, oldest first
	seq      uint64   // last fetch sequence number handed to an entry
}

// New builds a Source that exchanges through MSAL Go. It makes no network
// call; the first Token call does.
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
		assertion:         s.tf.read,
	})
	if err != nil {
		return nil, err
	}
	s.acq = acq
	return s, nil
}

// newSource builds everything but the acquirer; tests set their own.
func newSource(cfg Config, deps Deps) (*Source, error) {
	if deps.Registerer == nil {
		return nil, errors.New("exchange: a prometheus Registerer is required")
	}
	clock := deps.Clock
	if clock == nil {
		clock = realClock{}
	}
	s := &Source{
		cfg:      cfg,
		log:      deps.Logger.WithName("exchange"),
		clock:    clock,
		tf:       &tokenFile{path: cfg.TokenFile},
		entries:  make(map[cacheKey]*entry),
		lru:      list.New(),
		negative: make(map[cacheKey]negativeEntry),
		resolved: make(map[selectorKey]string),
	}
	s.tf.onChange = s.tokenFileChanged
	m, err := newMetrics(deps.Registerer, s)
	if err != nil {
		return nil, fmt.Errorf("exchange metrics: %w", err)
	}
	s.m = m
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
		return s.token(ctx, normalizeID(s.cfg.DefaultClientID), scope, req, false)
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
	p, ok := s.acq.(prewarmer)
	if !ok || s.cfg.DefaultClientID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ExchangeTimeout)
	defer cancel()
	return p.prewarm(ctx, normalizeID(s.cfg.DefaultClientID))
}

// normalizeID lower-cases a client id: Entra application ids are GUIDs,
// which compare case-insensitively, and one cache entry per identity is
// the point.
func normalizeID(id string) string { return strings.ToLower(strings.TrimSpace(id)) }

// token serves (clientID, scope) from the cache or an exchange. A trial
// lookup (resolving an object or resource id) does not count as handing the
// token out: only the identity that matches is marked as in use, so tokens
// of the identities tried in vain are not refreshed ahead.
func (s *Source) token(ctx context.Context, clientID, scope string, req Request, trial bool) (Token, error) {
	k := cacheKey{tenant: s.cfg.TenantID, clientID: clientID, scope: scope}
	now := s.clock.Now()

	s.mu.Lock()
	e := s.entries[k]
	forced := false
	var seen uint64
	if e != nil {
		seen = e.seq
		if req.ForceRefresh || (req.RefreshTokenSHA256 != "" && sumMatches(e.sum, req.RefreshTokenSHA256)) {
			if e.lastForced.IsZero() || now.Sub(e.lastForced) >= s.cfg.ForceRefreshInterval {
				forced = true
				e.lastForced = now
			} else {
				s.log.V(1).Info("forced refresh rate-limited; serving the newest token", "clientID", clientID, "scope", scope)
			}
		}
		if !forced && s.usableLocked(e, now) {
			return s.serveLocked(e, now, trial, s.m.hit), nil
		}
		if !forced && s.staleServableLocked(e, now) && !e.lastFailure.IsZero() && now.Sub(e.lastFailure) < staleRetryInterval {
			return s.serveLocked(e, now, trial, s.m.stale), nil
		}
	}
	if n, ok := s.negative[k]; ok {
		if now.Before(n.until) {
			if n.err.Reason == ReasonThrottled {
				// Entra asked us to wait: serve the cached token if it is
				// still inside the stale grace, else pass on the wait left.
				if e != nil && s.staleServableLocked(e, now) {
					return s.serveLocked(e, now, trial, s.m.stale), nil
				}
				s.mu.Unlock()
				s.m.negative.Inc()
				xe := *n.err
				xe.RetryAfter = max(n.until.Sub(now).Round(time.Second), time.Second)
				return Token{}, &xe
			}
			s.mu.Unlock()
			// A new projected token may match a federation the old one
			// did not: a change of the file clears the negative cache
			// (SPEC §4).
			if !s.tf.changed() {
				s.m.negative.Inc()
				return Token{}, n.err
			}
			s.mu.Lock()
		} else {
			delete(s.negative, k)
		}
	}
	s.mu.Unlock()
	if forced {
		s.m.forced.Inc()
	} else {
		s.m.miss.Inc()
	}

	tok, ferr := s.fetchShared(ctx, k, seen)
	if ferr == nil {
		if !trial {
			s.markServed(k, tok.AccessToken)
		}
		return tok, nil
	}
	// Entra failed: serve the cached token while it is inside the stale
	// grace (SPEC §4). A definitive answer (the app or its federation is
	// gone, the resource is invalid) is not an outage and is passed on.
	now = s.clock.Now()
	s.mu.Lock()
	if cur := s.entries[k]; cur != nil && !permanent(ferr) && s.staleServableLocked(cur, now) {
		tok := s.serveLocked(cur, now, trial, s.m.stale)
		s.log.V(1).Info("serving a cached token while Entra fails", "clientID", clientID, "scope", scope, "reason", ferr.Reason.String(), "expiresOn", tok.ExpiresOn)
		return tok, nil
	}
	s.mu.Unlock()
	return Token{}, ferr
}

// serveLocked hands out e's token: unless the lookup is a trial, it marks
// the entry as in use; it releases s.mu and counts the answer on c.
func (s *Source) serveLocked(e *entry, now time.Time, trial bool, c prometheus.Counter) Token {
	if !trial {
		s.touchLocked(e, now)
	}
	tok := e.tok
	s.mu.Unlock()
	c.Inc()
	return tok
}

func sumMatches(sum [sha256.Size]byte, hexSum string) bool {
	if len(hexSum) != 2*sha256.Size {
		return false
	}
	var b [sha256.Size]byte
	if _, err := hex.Decode(b[:], []byte(hexSum)); err != nil {
		return false
	}
	return b == sum
}

// usableLocked applies the floor: a cached token is handed out only with at
// least min(MinRemaining, lifetime/2) left, because clients treat < 5 min as
// expired and would ask again in a loop (imds-protocol.md §4 Q14).
func (s *Source) usableLocked(e *entry, now time.Time) bool {
	floor := min(s.cfg.MinRemaining, e.lifetime/2)
	return e.tok.ExpiresOn.Sub(now) >= floor
}

// staleServableLocked: while Entra fails, a cached token is served until
// StaleGrace before its expiry.
func (s *Source) staleServableLocked(e *entry, now time.Time) bool {
	return e.tok.ExpiresOn.Sub(now) > s.cfg.StaleGrace
}

// markServed records that the cached token of k was handed out, if it is
// still accessToken.
func (s *Source) markServed(k cacheKey, accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.entries[k]; cur != nil && cur.tok.AccessToken == accessToken {
		s.touchLocked(cur, s.clock.Now())
	}
}

func (s *Source) touchLocked(e *entry, now time.Time) {
	e.served = true
	if now.After(e.lastUsed) {
		e.lastUsed = now
	}
	s.lru.MoveToFront(e.elem)
}

// fetchShared runs one exchange per key at a time. The exchange runs on a
// context detached from the caller's (keeping its values) and bounded by
// ExchangeTimeout, so a caller giving up fails only itself.
//
// seen is the seq of the cached entry the caller found unusable (0 for
// none): if another fetch stored a newer token between the caller's cache
// check and the start of this flight, that token is returned instead of
// asking Entra again.
func (s *Source) fetchShared(ctx context.Context, k cacheKey, seen uint64) (Token, *Error) {
	ch := s.sf.DoChan(k.flightKey(), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ExchangeTimeout)
		defer cancel()
		return s.fetch(fctx, k, seen)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err.(*Error)
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, &Error{Reason: ReasonUnavailable, Detail: "the request ended before Entra ID answered", Err: ctx.Err()}
	}
}

// fetch performs one exchange (retrying once on an expired assertion) and
// stores the result. The returned error is nil or an *Error, never a typed
// nil.
func (s *Source) fetch(ctx context.Context, k cacheKey, seen uint64) (Token, error) {
	s.mu.Lock()
	if cur := s.entries[k]; cur != nil && cur.seq != seen {
		tok := cur.tok
		s.mu.Unlock()
		return tok, nil
	}
	s.mu.Unlock()
	start := time.Now()
	res, err := s.acq.acquire(ctx, k.clientID, k.scope)
	var xerr *Error
	if err != nil {
		xerr = s.classify(err, k)
		if xerr.Code == "AADSTS700024" {
			// The projected token expired or is not yet valid. The
			// callback re-reads the file, and kubelet may have rotated it
			// meanwhile: retry once (SPEC §3.5).
			s.log.V(1).Info("assertion rejected as expired; re-reading the token file and retrying once", "clientID", k.clientID)
			res, err = s.acq.acquire(ctx, k.clientID, k.scope)
			xerr = nil
			if err != nil {
				xerr = s.classify(err, k)
			}
		}
	}
	s.m.observeExchange(time.Since(start), xerr)
	now := s.clock.Now()
	if xerr != nil {
		s.recordFailure(k, xerr, now)
		return Token{}, xerr
	}
	tok, e := s.store(k, res, now)
	s.log.V(1).Info("exchanged token", "clientID", k.clientID, "scope", k.scope,
		"expiresOn", tok.ExpiresOn, "lifetime", e.lifetime.String(), "duration", time.Since(start).String())
	return tok, nil
}

func (s *Source) classify(err error, k cacheKey) *Error {
	return classify(err, classifyInput{
		clientID:  k.clientID,
		scope:     k.scope,
		projected: s.tf.claims(),
		now:       s.clock.Now(),
		timeout:   s.cfg.ExchangeTimeout,
	})
}

// recordFailure logs a failed exchange (raw upstream text goes here, never
// to the client) and remembers permanent failures.
func (s *Source) recordFailure(k cacheKey, xerr *Error, now time.Time) {
	// xerr's text is Reason, Code, Detail and the redacted cause.
	kv := []any{"clientID", k.clientID, "scope", k.scope, "reason", xerr.Reason.String(), "code", xerr.Code}
	var up *upstreamError
	if errors.As(xerr.Err, &up) {
		kv = append(kv, "status", up.Status, "body", redact(string(up.Body)))
	}
	s.log.Error(xerr, "token exchange failed", kv...)

	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[k]; e != nil && !permanent(xerr) {
		e.lastFailure = now
	}
	ttl := time.Duration(0)
	switch {
	case permanent(xerr):
		ttl = s.cfg.NegativeTTL
	case xerr.Reason == ReasonThrottled:
		// Honour Retry-After for this key instead of asking again at
		// once: Entra answers repeated requests with loop detection
		// (AADSTS50196, imds-protocol.md §6.5).
		ttl = xerr.RetryAfter
	}
	if ttl > 0 {
		if len(s.negative) >= s.cfg.MaxEntries {
			s.purgeNegativeLocked(now)
		}
		s.negative[k] = negativeEntry{err: xerr, until: now.Add(ttl)}
	}
}

func (s *Source) purgeNegativeLocked(now time.Time) {
	for k, n := range s.negative {
		if !now.Before(n.until) {
			delete(s.negative, k)
		}
	}
	if len(s.negative) >= s.cfg.MaxEntries {
		clear(s.negative)
	}
}

func (s *Source) tokenFileChanged() {
	s.mu.Lock()
	n := len(s.negative)
	clear(s.negative)
	s.mu.Unlock()
	s.log.Info("projected service account token changed", "clearedNegativeEntries", n, "token", s.tf.claims().String())
}

// store caches a freshly obtained token, learns which identity it belongs
// to, and returns it.
func (s *Source) store(k cacheKey, res acquired, now time.Time) (Token, *entry) {
	c, _ := decodeClaims(res.AccessToken) // opaque tokens keep MSAL's expiry
	tok := Token{
		AccessToken:  res.AccessToken,
		ClientID:     k.clientID,
		ExpiresOn:    c.Expiry,
		NotBefore:    c.NotBefore,
		ExtExpiresIn: res.ExtExpiresIn,
	}
	if tok.ExpiresOn.IsZero() {
		tok.ExpiresOn = res.ExpiresOn
	}
	if tok.NotBefore.IsZero() {
		tok.NotBefore = now
	}
	lifetime := tok.ExpiresOn.Sub(now)
	if lifetime < time.Second {
		lifetime = time.Second
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil {
		e = &entry{key: k, lastUsed: now}
		e.elem = s.lru.PushFront(e)
		s.entries[k] = e
		s.evictLRULocked()
	} else {
		s.lru.MoveToFront(e.elem)
	}
	e.tok = tok
	e.sum = sha256.Sum256([]byte(res.AccessToken))
	s.seq++
	e.seq = s.seq
	e.fetchedAt = now
	e.lifetime = lifetime
	e.served = false
	e.lastFailure = time.Time{}
	e.nextRefresh = time.Time{}
	delete(s.negative, k)

	s.rememberClientLocked(k.clientID)
	if c.ObjectID != "" {
		s.rememberResolutionLocked(selectorKey{SelectObjectID, strings.ToLower(c.ObjectID)}, k.clientID)
	}
	if c.ResourceID != "" {
		s.rememberResolutionLocked(selectorKey{SelectResourceID, strings.ToLower(c.ResourceID)}, k.clientID)
	}
	return tok, e
}

func (s *Source) evictLRULocked() {
	for len(s.entries) > s.cfg.MaxEntries {
		back := s.lru.Back()
		if back == nil {
			return
		}
		old := back.Value.(*entry)
		s.removeLocked(old)
		s.m.evictions.WithLabelValues("lru").Inc()
	}
}

func (s *Source) removeLocked(e *entry) {
	s.lru.Remove(e.elem)
	delete(s.entries, e.key)
}

// rememberClientLocked adds a client id that produced a token to the
// candidates for object/resource id resolution, capped at MaxIdentities.
func (s *Source) rememberClientLocked(clientID string) {
	for i, c := range s.seen {
		if c == clientID {
			if i != len(s.seen)-1 {
				copy(s.seen[i:], s.seen[i+1:])
				s.seen[len(s.seen)-1] = clientID
			}
			return
		}
	}
	if len(s.seen) >= s.cfg.MaxIdentities {
		copy(s.seen, s.seen[1:])
		s.seen = s.seen[:len(s.seen)-1]
	}
	s.seen = append(s.seen, clientID)
}

func (s *Source) rememberResolutionLocked(k selectorKey, clientID string) {
	if _, ok := s.resolved[k]; !ok && len(s.resolved) >= s.cfg.MaxEntries {
		clear(s.resolved)
	}
	s.resolved[k] = clientID
}

func (s *Source) cacheLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// SoonestExpiry returns the time left until the soonest-expiring cached
// token expires (negative once it has), and false when nothing is cached.
// It feeds the imds_proxy_token_soonest_expiry_seconds gauge.
func (s *Source) SoonestExpiry() (time.Duration, bool) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var soonest time.Time
	for _, e := range s.entries {
		if soonest.IsZero() || e.tok.ExpiresOn.Before(soonest) {
			soonest = e.tok.ExpiresOn
		}
	}
	if soonest.IsZero() {
		return 0, false
	}
	return soonest.Sub(now), true
}
