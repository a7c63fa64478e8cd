package exchange

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// staleRetryInterval is how long, after a failed exchange, requests for a
// key whose cached token is still inside the stale grace are answered from
// the cache without asking Entra again. Without it every request during an
// outage would wait for a failing (possibly timing out) exchange first.
const staleRetryInterval = 10 * time.Second

// cacheKey is (tenant, client id, scope). The tenant is fixed per Source
// but kept in the key to make that explicit.
type cacheKey struct {
	tenant, clientID, scope string
}

// entry is one cached token.
type entry struct {
	key cacheKey
	tok Token
	sum [sha256.Size]byte
	// seq identifies the fetch that produced tok (tokenCache.seq).
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

// cachePolicy are the Config values the cache applies.
type cachePolicy struct {
	minRemaining         time.Duration
	staleGrace           time.Duration
	negativeTTL          time.Duration
	forceRefreshInterval time.Duration
	maxEntries           int
}

// tokenCache holds the cached tokens, in an LRU bounded by maxEntries, and
// the remembered failures. It owns its lock: every method takes and
// releases it, none returns with it held. It is safe for concurrent use.
type tokenCache struct {
	policy cachePolicy
	// changed is signalled, without blocking, when an entry may have
	// become due earlier than sweep last computed: a token stored, a token
	// handed out for the first time since its fetch, a refresh ended. Run
	// waits on it besides its timer.
	changed chan struct{}

	mu       sync.Mutex
	entries  map[cacheKey]*entry
	lru      *list.List // of *entry, most recently used first
	negative map[cacheKey]negativeEntry
	seq      uint64 // last fetch sequence number handed to an entry
}

func newTokenCache(p cachePolicy) *tokenCache {
	return &tokenCache{
		policy:   p,
		changed:  make(chan struct{}, 1),
		entries:  make(map[cacheKey]*entry),
		lru:      list.New(),
		negative: make(map[cacheKey]negativeEntry),
	}
}

// lookupKind is how the cache answers one request.
type lookupKind int

const (
	// lookupMiss: no usable token; exchange.
	lookupMiss lookupKind = iota
	// lookupHit: a token with enough time left.
	lookupHit
	// lookupStale: a token below the floor but inside the stale grace,
	// while Entra is failing or throttling this key.
	lookupStale
	// lookupNegative: a remembered failure answers the request.
	lookupNegative
)

// lookupResult is the answer to one lookup.
type lookupResult struct {
	kind lookupKind
	// tok is the token to hand out (hit, stale).
	tok Token
	// err is the remembered failure (negative); for a throttle, a copy
	// whose RetryAfter is the wait left.
	err *Error
	// seen is the fetch sequence of the entry found (0 for none), for
	// exchanger.fetch.
	seen uint64
	// forced is set when a forced fetch was granted, even if a remembered
	// failure answers the request; forceRefused when one was asked for and
	// the rate limit refused it.
	forced, forceRefused bool
}

// lookup answers a request for k at now. When serve is set, a token handed
// out marks its entry as in use (refreshed ahead, kept from idle eviction).
func (c *tokenCache) lookup(k cacheKey, req Request, now time.Time, serve bool) lookupResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r lookupResult
	e := c.entries[k]
	if e != nil {
		r.seen = e.seq
		if req.ForceRefresh || (req.RefreshTokenSHA256 != "" && sumMatches(e.sum, req.RefreshTokenSHA256)) {
			if e.lastForced.IsZero() || now.Sub(e.lastForced) >= c.policy.forceRefreshInterval {
				r.forced = true
				e.lastForced = now
			} else {
				r.forceRefused = true
			}
		}
		if !r.forced && c.usable(e, now) {
			return c.serveLocked(r, lookupHit, e, now, serve)
		}
		if !r.forced && c.staleServable(e, now) && !e.lastFailure.IsZero() && now.Sub(e.lastFailure) < staleRetryInterval {
			return c.serveLocked(r, lookupStale, e, now, serve)
		}
	}
	if n, ok := c.negative[k]; ok {
		switch {
		case !now.Before(n.until):
			delete(c.negative, k)
		case n.err.Reason == ReasonThrottled:
			// Entra asked us to wait: serve the cached token if it is
			// still inside the stale grace, else pass on the wait left.
			if e != nil && c.staleServable(e, now) {
				return c.serveLocked(r, lookupStale, e, now, serve)
			}
			xe := *n.err
			xe.RetryAfter = max(n.until.Sub(now).Round(time.Second), time.Second)
			r.kind, r.err = lookupNegative, &xe
			return r
		default:
			r.kind, r.err = lookupNegative, n.err
			return r
		}
	}
	r.kind = lookupMiss // r.forced tells a granted forced refresh
	return r
}

func (c *tokenCache) serveLocked(r lookupResult, kind lookupKind, e *entry, now time.Time, serve bool) lookupResult {
	if serve {
		c.touchLocked(e, now)
	}
	r.kind, r.tok = kind, e.tok
	return r
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

// usable applies the floor: a cached token is handed out only with at least
// min(minRemaining, lifetime/2) left, because clients treat a token with
// less than 5 minutes left as expired and would ask again in a loop.
func (c *tokenCache) usable(e *entry, now time.Time) bool {
	floor := min(c.policy.minRemaining, e.lifetime/2)
	return e.tok.ExpiresOn.Sub(now) >= floor
}

// staleServable: while Entra fails, a cached token is served until
// staleGrace before its expiry.
func (c *tokenCache) staleServable(e *entry, now time.Time) bool {
	return e.tok.ExpiresOn.Sub(now) > c.policy.staleGrace
}

func (c *tokenCache) touchLocked(e *entry, now time.Time) {
	if !e.served {
		e.served = true
		c.signal() // now due for a refresh at half-life
	}
	if now.After(e.lastUsed) {
		e.lastUsed = now
	}
	c.lru.MoveToFront(e.elem)
}

// serveStale returns k's cached token after a failed exchange, if it is
// still inside the stale grace.
func (c *tokenCache) serveStale(k cacheKey, now time.Time, serve bool) (Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e == nil || !c.staleServable(e, now) {
		return Token{}, false
	}
	if serve {
		c.touchLocked(e, now)
	}
	return e.tok, true
}

// markServed records that k's token was handed out, if it is still
// accessToken.
func (c *tokenCache) markServed(k cacheKey, accessToken string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil && e.tok.AccessToken == accessToken {
		c.touchLocked(e, now)
	}
}

// newer returns k's cached token if a fetch stored it after the one whose
// sequence number the caller saw (0: none).
func (c *tokenCache) newer(k cacheKey, seen uint64) (Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil && e.seq != seen {
		return e.tok, true
	}
	return Token{}, false
}

// store caches a freshly obtained token and forgets any failure remembered
// for k. It returns the token's lifetime and how many entries the LRU
// dropped to make room.
func (c *tokenCache) store(k cacheKey, tok Token, now time.Time) (lifetime time.Duration, evicted int) {
	lifetime = max(tok.ExpiresOn.Sub(now), time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e == nil {
		e = &entry{key: k, lastUsed: now}
		e.elem = c.lru.PushFront(e)
		c.entries[k] = e
		for len(c.entries) > c.policy.maxEntries {
			c.removeLocked(c.lru.Back().Value.(*entry))
			evicted++
		}
	} else {
		c.lru.MoveToFront(e.elem)
	}
	e.tok = tok
	e.sum = sha256.Sum256([]byte(tok.AccessToken))
	c.seq++
	e.seq = c.seq
	e.fetchedAt = now
	e.lifetime = lifetime
	e.served = false
	e.lastFailure = time.Time{}
	e.nextRefresh = time.Time{}
	delete(c.negative, k)
	c.signal()
	return lifetime, evicted
}

// signal tells Run that the schedule changed.
func (c *tokenCache) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *tokenCache) removeLocked(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
}

// recordFailure remembers a failed exchange for k: a transient failure
// starts staleRetryInterval for a cached token, a permanent one is
// remembered for negativeTTL, a throttling answer for its Retry-After.
func (c *tokenCache) recordFailure(k cacheKey, xerr *Error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil && !permanent(xerr) {
		e.lastFailure = now
	}
	ttl := time.Duration(0)
	switch {
	case permanent(xerr):
		ttl = c.policy.negativeTTL
	case xerr.Reason == ReasonThrottled:
		// Honour Retry-After for this key instead of asking again at
		// once: Entra answers repeated requests with loop detection
		// (AADSTS50196).
		ttl = xerr.RetryAfter
	}
	if ttl <= 0 {
		return
	}
	if len(c.negative) >= c.policy.maxEntries {
		c.purgeNegativeLocked(now)
	}
	c.negative[k] = negativeEntry{err: xerr, until: now.Add(ttl)}
}

func (c *tokenCache) purgeNegativeLocked(now time.Time) {
	for k, n := range c.negative {
		if !now.Before(n.until) {
			delete(c.negative, k)
		}
	}
	if len(c.negative) >= c.policy.maxEntries {
		clear(c.negative)
	}
}

// clearNegative forgets every remembered failure and returns how many
// there were.
func (c *tokenCache) clearNegative() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.negative)
	clear(c.negative)
	return n
}

// refreshJob is one entry due for a refresh ahead of expiry.
type refreshJob struct {
	key  cacheKey
	seen uint64
}

// eviction is one entry sweep dropped.
type eviction struct {
	key   cacheKey
	cause string // "expired" or "idle", a label of the evictions metric
}

// sweep does the cache's side of one round of background work at now:
//   - an expired entry, or one not handed out for a whole lifetime, is
//     dropped;
//   - an entry handed out since its last fetch and past half its lifetime
//     is marked as refreshing and returned as due, unless a failed refresh
//     asked to wait (refreshDone) or Entra's Retry-After for the key has
//     not passed yet.
//
// Entries already refreshing are left alone. next is when the earliest of
// these events is due for the entries left (zero when there is none): what
// Run sleeps until, unless the cache signals a change first.
func (c *tokenCache) sweep(now time.Time) (due []refreshJob, evicted []eviction, next time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Back(); el != nil; {
		e := el.Value.(*entry)
		el = el.Prev()
		switch {
		case e.refreshing:
			continue // refreshDone signals when it ends
		case !now.Before(e.tok.ExpiresOn):
			c.removeLocked(e)
			evicted = append(evicted, eviction{e.key, "expired"})
			continue
		case now.Sub(e.lastUsed) >= e.lifetime:
			c.removeLocked(e)
			evicted = append(evicted, eviction{e.key, "idle"})
			continue
		case e.served && now.Sub(e.fetchedAt) >= e.lifetime/2 && !now.Before(e.nextRefresh):
			if until, ok := c.throttledLocked(e.key, now); ok {
				// Entra asked us to wait: the refresh waits too.
				e.nextRefresh = until
				break
			}
			e.refreshing = true
			due = append(due, refreshJob{e.key, e.seq})
			continue
		}
		if at := e.nextEvent(); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, evicted, next
}

// nextEvent is when sweep next has work for e: its expiry, its idle
// eviction, or, once handed out, its refresh at half-life (or later, when
// a failed refresh or a throttle asked to wait).
func (e *entry) nextEvent() time.Time {
	at := e.tok.ExpiresOn
	if idle := e.lastUsed.Add(e.lifetime); idle.Before(at) {
		at = idle
	}
	if e.served {
		refresh := e.fetchedAt.Add(e.lifetime / 2)
		if e.nextRefresh.After(refresh) {
			refresh = e.nextRefresh
		}
		if refresh.Before(at) {
			at = refresh
		}
	}
	return at
}

// throttledLocked returns until when Entra asked not to be asked again for
// k, if that is after now.
func (c *tokenCache) throttledLocked(k cacheKey, now time.Time) (time.Time, bool) {
	n, ok := c.negative[k]
	if !ok || n.err.Reason != ReasonThrottled || !now.Before(n.until) {
		return time.Time{}, false
	}
	return n.until, true
}

// refreshDone ends the refresh of k that sweep started. A non-zero retryAt
// delays the next refresh attempt until then.
func (c *tokenCache) refreshDone(k cacheKey, retryAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil {
		e.refreshing = false
		if !retryAt.IsZero() {
			e.nextRefresh = retryAt
		}
	}
	c.signal()
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// soonestExpiry returns the time left at now until the soonest-expiring
// cached token expires, and false when nothing is cached.
func (c *tokenCache) soonestExpiry(now time.Time) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var soonest time.Time
	for _, e := range c.entries {
		if soonest.IsZero() || e.tok.ExpiresOn.Before(soonest) {
			soonest = e.tok.ExpiresOn
		}
	}
	if soonest.IsZero() {
		return 0, false
	}
	return soonest.Sub(now), true
}
