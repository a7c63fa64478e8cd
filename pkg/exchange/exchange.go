package exchange

import (
	"context"
	"time"

	"github.com/go-logr/logr"
)

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

// exchanger obtains tokens from Entra and writes the outcome to the cache:
// one exchange per key at a time, shared by every concurrent caller for
// that key, and a bounded number at once across keys (flightGroup); one
// retry when Entra finds the assertion expired; every failure classified
// into an *Error, remembered by the cache and logged, repeats folded
// (failureLog). It never reads the cache for a caller: Source decides when
// to call fetch.
type exchanger struct {
	acq      acquirer
	tf       *tokenFile
	cache    *tokenCache
	ids      *identityMemory
	clock    Clock
	timeout  time.Duration
	log      logr.Logger
	m        *metrics
	flights  *flightGroup
	failures *failureLog
}

// fetch returns a token for k from one exchange shared by all concurrent
// callers for k. The exchange runs on a context detached from the caller's
// (keeping its values) and bounded by the exchange timeout, so a caller
// giving up fails only itself and the token still reaches the cache.
//
// seen is the sequence number of the cached entry the caller found
// unusable (0 for none): if another fetch stored a newer token since, that
// token is returned instead of asking Entra again.
func (x *exchanger) fetch(ctx context.Context, k cacheKey, seen uint64) (Token, *Error) {
	return x.flights.do(ctx, k, true, func(ctx context.Context) (Token, *Error) { return x.run(ctx, k, seen) })
}

// refresh renews k's token through the same flights as foreground misses,
// so a concurrent miss and a refresh make one Entra call, and it takes its
// slot from the same cap. Unlike a foreground exchange it stays bound to
// ctx, so background work stops promptly when the proxy shuts down.
func (x *exchanger) refresh(ctx context.Context, k cacheKey, seen uint64) *Error {
	_, err := x.flights.do(ctx, k, false, func(ctx context.Context) (Token, *Error) { return x.run(ctx, k, seen) })
	return err
}

// failed records a failed exchange, or a flight that found no free slot
// within the exchange timeout: in the cache (negative entry, back-off, the
// stale grace) and in the folded failure log.
func (x *exchanger) failed(k cacheKey, xerr *Error) {
	now := x.clock.Now()
	x.cache.recordFailure(k, xerr, now)
	x.failures.failed(k, xerr, now)
}

// run is one flight's exchange: it asks Entra and stores the outcome.
func (x *exchanger) run(ctx context.Context, k cacheKey, seen uint64) (Token, *Error) {
	if tok, ok := x.cache.newer(k, seen); ok {
		return tok, nil
	}
	start := time.Now()
	res, xerr := x.acquire(ctx, k)
	x.m.observeExchange(time.Since(start), xerr)
	if xerr != nil {
		x.failed(k, xerr)
		return Token{}, xerr
	}
	now := x.clock.Now()
	c, _ := decodeClaims(res.AccessToken) // opaque tokens keep MSAL's expiry
	tok := newToken(k.clientID, res, c, now)
	lifetime, evicted := x.cache.store(k, tok, now)
	if evicted > 0 {
		x.m.evictions.WithLabelValues("lru").Add(float64(evicted))
	}
	x.ids.learn(k.clientID, c)
	x.log.V(1).Info("exchanged token", "clientID", k.clientID, "scope", k.scope,
		"expiresOn", tok.ExpiresOn, "lifetime", lifetime.String(), "duration", time.Since(start).String())
	return tok, nil
}

// acquire performs one exchange, retrying once when Entra finds the
// assertion outside its validity window: the assertion callback re-reads
// the token file, and kubelet may have rotated it meanwhile.
func (x *exchanger) acquire(ctx context.Context, k cacheKey) (acquired, *Error) {
	res, err := x.acq.acquire(ctx, k.clientID, k.scope)
	if err == nil {
		return res, nil
	}
	xerr := x.classify(err, k)
	if xerr.Code != "AADSTS700024" {
		return acquired{}, xerr
	}
	x.log.V(1).Info("assertion rejected as expired; re-reading the token file and retrying once", "clientID", k.clientID)
	res, err = x.acq.acquire(ctx, k.clientID, k.scope)
	if err != nil {
		return acquired{}, x.classify(err, k)
	}
	return res, nil
}

func (x *exchanger) classify(err error, k cacheKey) *Error {
	return classify(err, classifyInput{
		clientID:  k.clientID,
		scope:     k.scope,
		projected: x.tf.claims(),
		now:       x.clock.Now(),
		timeout:   x.timeout,
	})
}

// newToken builds the Token to cache from what Entra issued and the
// token's claims: the JWT exp and nbf win over MSAL's expiry and the fetch
// time.
func newToken(clientID string, res acquired, c claims, now time.Time) Token {
	tok := Token{
		AccessToken:  res.AccessToken,
		ClientID:     clientID,
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
	return tok
}
